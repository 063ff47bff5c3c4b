"""Rendering a report as Markdown, CSV and LaTeX."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from taskmerge.reporting.cells import _fmt, _num, _pct
from taskmerge.reporting.runs import Report, Row, Table

#: The columns around the task columns (Markdown, LaTeX; CSV and W&B add a few).
HEAD = ["method", "fine-tuning", "LiNeS"]
TAIL = ["abs.", "norm.", "chosen", "pub. abs.", "pub. norm.", "Δ abs.", "Δ norm.", "src"]


def table_columns(table: Table) -> list[str]:
    """The rendered columns of a table."""
    return [*HEAD, *table.tasks, *TAIL]


def row_cells(table: Table, row: Row, sources: Sequence[str]) -> dict[str, str]:
    """Column -> rendered cell (%, one decimal; ``-`` where there is no value)."""
    pub = row.published
    return {
        "method": row.label,
        "fine-tuning": row.mode,
        "LiNeS": "yes" if row.lines else "-",
        **{task: _pct(row.test.get(task)) for task in table.tasks},
        "abs.": _pct(row.mean_abs),
        "norm.": _pct(row.mean_norm),
        "chosen": row.chosen + (" (edge)" if row.edge else ""),
        "pub. abs.": _fmt(pub.absolute if pub else None),
        "pub. norm.": _fmt(pub.normalized if pub else None),
        "Δ abs.": _fmt(row.diff_abs, "+.1f"),
        "Δ norm.": _fmt(row.diff_norm, "+.1f"),
        "src": f"[{sources.index(pub.source) + 1}]" if pub else "-",
    }


def _lines(report: Report) -> list[tuple[Table, Row, dict[str, str]]]:
    sources = report.sources
    return [(t, row, row_cells(t, row, sources)) for t in report.tables for row in t.rows]


def render_markdown(report: Report) -> str:
    """The report as Markdown: one table per setting, then notes, grid-edge warnings, the
    published figures' sources and the skipped jobs."""
    out = [
        "# taskmerge report",
        "",
        "Test top-1 (%) per task and mean; norm. = merged / fine-tuned top-1 per task, averaged "
        "(fine-tuned: each task's own checkpoint, same forward). Hyperparameters chosen on Val. "
        "pub. = the published figure of the same model, tasks and (standard) fine-tuning; "
        "Δ = ours - published.",
    ]
    lines = _lines(report)
    for table in report.tables:
        columns = table_columns(table)
        out += ["", f"## {table.title}", "", _md_row(columns), "|" + "---|" * len(columns)]
        out += [_md_row([c[k] for k in columns]) for t, _, c in lines if t is table]
        out += ["", *(f"- {note}" for note in table.notes)] if table.notes else []
    if report.edges:
        out += [
            "",
            "**Grid too small**: the chosen value sits on an edge of the swept grid, the optimum "
            "may lie beyond it; rerun with the override:",
            "",
            *(f"- {_edge_text(row)}" for row in report.edges),
        ]
    if report.sources:
        out += ["", "Sources of the published figures:", ""]
        out += [f"{i}. {source}" for i, source in enumerate(report.sources, 1)]
    if report.skipped:
        out += ["", f"Skipped {len(report.skipped)} incomplete job(s):", ""]
        out += [f"- `{item.path}`: {item.reason}" for item in report.skipped]
    return "\n".join(out) + "\n"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _edge_text(row: Row) -> str:
    edge = row.edge or {}
    grid = edge.get("grid") or []
    span = f" [{_num(grid[0])} .. {_num(grid[-1])}]" if grid else ""
    how = edge.get("command") or edge.get("override")
    return (
        f"{row.label} ({row.mode}{', LiNeS' if row.lines else ''}): {edge.get('key')}="
        f"{_num(edge.get('value'))} is the {edge.get('edge')} edge of the grid{span}: `{how}`"
    )


def _all_tasks(report: Report) -> list[str]:
    tasks: list[str] = []
    for table in report.tables:
        tasks += [t for t in table.tasks if t not in tasks]
    return tasks


#: CSV names of the rendered columns.
CSV_NAMES = {
    "abs.": "mean_abs", "norm.": "mean_norm", "pub. abs.": "published_abs",
    "pub. norm.": "published_norm", "Δ abs.": "diff_abs", "Δ norm.": "diff_norm",
}  # fmt: skip


def render_csv(report: Report) -> str:
    """One CSV line per row of every table: the setting, the rendered (rounded) cells, empty
    where there is no value, the full source, the grid-extending override, the run directory."""
    columns = ["model", "pretrained", "num_tasks", *HEAD, *_all_tasks(report)]
    columns += [CSV_NAMES.get(c, c) for c in TAIL[:-1]] + [
        "source",
        "grid_edge_override",
        "run_dir",
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for table, row, cells in _lines(report):
        edge = row.edge or {}
        writer.writerow(
            {CSV_NAMES.get(k, k): "" if value == "-" else value for k, value in cells.items()}
            | {
                "model": table.model,
                "pretrained": table.pretrained,
                "num_tasks": len(table.tasks),
                "LiNeS": "yes" if row.lines else "no",
                "source": row.published.source if row.published else "",
                "grid_edge_override": edge.get("command") or edge.get("override") or "",
                "run_dir": str(row.run.path) if row.run else "",
            }
        )
    return buffer.getvalue()


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "Δ": r"$\Delta$",
}  # fmt: skip


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def render_latex(report: Report) -> str:
    """One ``table`` (``tabular``, plain ``\\hline`` rules: no package needed) per setting."""
    out = []
    lines = _lines(report)
    for table in report.tables:
        columns = table_columns(table)
        spec = "lll" + "r" * (len(table.tasks) + 2) + "l" + "r" * 4 + "l"
        out += [
            r"\begin{table}[t]",
            r"\centering",
            r"\caption{" + latex_escape(f"Test top-1 (%), {table.title}") + "}",
            r"\begin{tabular}{" + spec + "}",
            r"\hline",
            " & ".join(latex_escape(c) for c in columns) + r" \\",
            r"\hline",
            *(
                " & ".join(latex_escape(c[k]) for k in columns) + r" \\"
                for t, _, c in lines
                if t is table
            ),
            r"\hline",
            r"\end{tabular}",
            r"\end{table}",
            "",
        ]
    out += [f"% [{i}] {source}" for i, source in enumerate(report.sources, 1)]
    return "\n".join(out) + "\n"
