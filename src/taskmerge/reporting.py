"""Paper-style reports of merge experiments: ``results.json`` files -> tables, plots, W&B.

    runs, skipped = collect_runs(["outputs/main-multirun/2025-01-01/12-00-00"])
    report = build_report(runs, skipped)
    print(render_markdown(report))
    files = write_report(report, "report_dir")   # report.md/.csv/.tex, val_curves.png, ...
    log_wandb(report, files, group="my-sweep")   # one W&B run: the table and the plots

One table per setting (model, pretrained weights, task list); rows are method x fine-tuning
mode (x evaluation forward where it is not the mode's own) x LiNeS, columns each task's Test
top-1, the means (absolute, normalized), the chosen hyperparameters, and the published figure
of the same setting (:mod:`taskmerge.published`) with the difference. ``report.py`` at the
repository root is the command line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskmerge.published import Figure, lookup

RESULTS_FILE = "results.json"
#: Display order of the methods (others follow, alphabetically).
METHOD_ORDER = (
    "zeroshot", "single_task", "average", "sum", "ties", "mag_masking", "tall_mask", "consensus",
    "TSVM", "TSVM_2", "TSVC", "iso_c", "iso_cts", "negation",
)  # fmt: skip
MODE_ORDER = ("standard", "linear", "attention", "pattern")
FINETUNED = "fine-tuned"
#: Natural bounds of swept keys, for results written before ``grid_edge`` existed.
_BOUNDS = {"scaling_coef": (0.0, None), "beta": (0.0, None), "alpha": (0.0, 1.0)}


# --------------------------------------------------------------------------- collecting
@dataclass
class Run:
    """One finished job: its directory, its results and the sweep it belongs to."""

    path: Path
    results: dict[str, Any]
    sweep: str

    @property
    def method(self) -> str:
        """The method's config name, without LiNeS' ``+lines`` suffix."""
        return str(self.results["method"]).removesuffix("+lines")

    @property
    def lines(self) -> bool:
        """Whether LiNeS was applied."""
        method_cfg = self.results.get("config", {}).get("method", {}) or {}
        return str(self.results["method"]).endswith("+lines") or bool(method_cfg.get("apply_lines"))

    @property
    def finetuning(self) -> str:
        """The fine-tuning mode (``standard`` for files that predate the field)."""
        return str(self.results.get("finetuning") or "standard")

    @property
    def forward(self) -> str:
        """The evaluation forward (the mode's own for files that predate the field)."""
        own = "linear" if self.finetuning == "linear" else "nonlinear"
        return str(self.results.get("eval_forward") or own)

    @property
    def mode(self) -> str:
        """The fine-tuning mode, with ``@forward`` when evaluated through another forward."""
        own = "linear" if self.finetuning == "linear" else "nonlinear"
        return self.finetuning if self.forward == own else f"{self.finetuning}@{self.forward}"

    @property
    def group(self) -> str:
        """The W&B group: the config's ``logger.group`` when set, else the sweep's name."""
        logger = self.results.get("config", {}).get("logger", {}) or {}
        return str(logger.get("group") or self.sweep)

    def overrides(self) -> list[str] | None:
        """The job's Hydra overrides (``.hydra/overrides.yaml``), None when unknown."""
        path = self.path / ".hydra" / "overrides.yaml"
        if not path.is_file():
            return None
        import yaml

        return [str(item) for item in yaml.safe_load(path.read_text()) or []]


@dataclass
class Skipped:
    """A job directory that holds no complete results, and why."""

    path: Path
    reason: str


def collect_runs(dirs: Iterable[str | Path]) -> tuple[list[Run], list[Skipped]]:
    """Every ``results.json`` under ``dirs`` (recursively; W&B and hidden directories are not
    searched), and the job directories without complete results: a Hydra job (``.hydra`` and
    ``main.log``) that wrote none, a file with ``complete`` false, or one that does not parse.

    Raises:
        FileNotFoundError: a directory does not exist.
    """
    runs: list[Run] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()  # a directory given twice, or inside another one, counts once
    for root in dirs:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a directory")
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            if here.resolve() in seen:
                dirnames[:] = []
                continue
            seen.add(here.resolve())
            is_job = ".hydra" in dirnames and "main.log" in filenames
            dirnames[:] = sorted(
                (d for d in dirnames if not d.startswith(".") and d != "wandb"), key=_natural
            )
            if RESULTS_FILE in filenames:
                run, reason = _load(here)
                if run is not None:
                    runs.append(run)
                else:
                    skipped.append(Skipped(here, reason))
            elif is_job:
                skipped.append(Skipped(here, "no results.json: the job did not finish"))
    return runs, skipped


def _load(run_dir: Path) -> tuple[Run | None, str]:
    try:
        results = json.loads((run_dir / RESULTS_FILE).read_text())
    except (OSError, ValueError) as exc:
        return None, f"results.json is unreadable ({exc})"
    if not isinstance(results, dict) or results.get("complete") is not True:
        return None, "results.json is incomplete (complete is not true)"
    missing = [key for key in ("method", "tasks", "test") if key not in results]
    if missing:
        return None, f"results.json lacks {missing}"
    return Run(run_dir, results, sweep_name(run_dir)), ""


def sweep_name(run_dir: Path) -> str:
    """The sweep of a job: its multirun directory's name (``<date>/<time>`` for Hydra's
    default timestamped directories); a single run is its own sweep."""
    parent = run_dir.parent
    sweep = parent if (parent / "multirun.yaml").is_file() else run_dir
    if sweep.name[:1].isdigit() and sweep.parent.name:
        return f"{sweep.parent.name}/{sweep.name}"
    return sweep.name


def _natural(name: str) -> list[Any]:
    """Sort key: numbers by value (job 10 after job 9)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


# --------------------------------------------------------------------------- the table
@dataclass
class Row:
    """One table row: a run (or the fine-tuned reference of a mode) and its figures."""

    label: str
    method: str
    mode: str
    lines: bool
    test: dict[str, float]
    mean_abs: float
    mean_norm: float | None
    chosen: str
    published: Figure | None
    run: Run | None = None
    edge: dict[str, Any] | None = None

    @property
    def diff_abs(self) -> float | None:
        """Ours minus published, absolute mean (percentage points)."""
        if self.published is None:
            return None
        return 100 * self.mean_abs - self.published.absolute

    @property
    def diff_norm(self) -> float | None:
        """Ours minus published, normalized mean (percentage points)."""
        if self.published is None or self.published.normalized is None or self.mean_norm is None:
            return None
        return 100 * self.mean_norm - self.published.normalized


@dataclass
class Table:
    """The rows of one setting: model, pretrained weights and task list."""

    model: str
    pretrained: str
    tasks: list[str]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        """E.g. ``ViT-B-32 (openai), 8 tasks``."""
        return f"{self.model} ({self.pretrained}), {len(self.tasks)} tasks"


@dataclass
class Report:
    """Every table, the runs they come from and the skipped job directories."""

    tables: list[Table]
    runs: list[Run]
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def modes(self) -> list[str]:
        """The fine-tuning modes (with forward) present, in display order."""
        return sorted({row.mode for t in self.tables for row in t.rows}, key=_mode_key)

    @property
    def edges(self) -> list[Row]:
        """Rows whose chosen value sits on an edge of the swept grid."""
        return [row for t in self.tables for row in t.rows if row.edge]

    @property
    def sources(self) -> list[str]:
        """The distinct sources of the published figures shown, in order of appearance."""
        out: list[str] = []
        for table in self.tables:
            for row in table.rows:
                if row.published and row.published.source not in out:
                    out.append(row.published.source)
        return out


def build_report(runs: Sequence[Run], skipped: Sequence[Skipped] = ()) -> Report:
    """Group the runs by setting and build each table's rows (plus one fine-tuned row per
    mode), with their published figures, grid-edge warnings and target/control notes."""
    settings: dict[tuple[str, str, tuple[str, ...]], list[Run]] = {}
    for run in runs:
        key = (
            str(run.results.get("model", "?")),
            str(run.results.get("pretrained", "?")),
            tuple(run.results["tasks"]),
        )
        settings.setdefault(key, []).append(run)
    tables = []
    for (model, pretrained, tasks), members in settings.items():
        members = sorted(members, key=_run_key)
        rows = [_row(run) for run in members]
        _disambiguate(rows)
        rows += _finetuned_rows(members)
        notes = [note for run in members if (note := _target_note(run))]
        tables.append(Table(model, pretrained, list(tasks), rows, notes))
    return Report(tables, list(runs), list(skipped))


def _run_key(run: Run) -> tuple:
    method = run.method
    order = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return (order, method, run.lines, _mode_key(run.mode), _natural(run.path.name))


def _mode_key(mode: str) -> tuple:
    base, _, forward = mode.partition("@")
    order = MODE_ORDER.index(base) if base in MODE_ORDER else len(MODE_ORDER)
    return (order, base, forward)


def _published(run: Run, method: str) -> Figure | None:
    return lookup(
        method,
        str(run.results.get("model")),
        run.results["tasks"],
        finetuning=run.finetuning,
        eval_forward=run.forward,
        lines=run.lines and method != "finetuned",
        pretrained=run.results.get("pretrained"),
    )


def _row(run: Run) -> Row:
    results, tasks = run.results, run.results["tasks"]
    test = results["test"]
    return Row(
        label=run.method,
        method=run.method,
        mode=run.mode,
        lines=run.lines,
        test={t: test[t]["top1"] for t in tasks if t in test},
        mean_abs=test["avg"]["top1"],
        mean_norm=test["avg"].get("normalized_top1"),
        chosen=format_hyperparameters(results.get("hyperparameters") or {}, tasks),
        published=_published(run, run.method),
        run=run,
        edge=grid_edge_of(run),
    )


def _finetuned_rows(runs: Sequence[Run]) -> list[Row]:
    """Per mode, each task's own fine-tuned model (from the first run of that mode)."""
    rows, seen = [], set()
    for run in sorted(runs, key=lambda r: _mode_key(r.mode)):
        if run.mode in seen:
            continue
        seen.add(run.mode)
        tasks = run.results["tasks"]
        test = {t: run.results["test"][t].get("finetuned_top1") for t in tasks}
        if any(value is None for value in test.values()):
            continue
        rows.append(
            Row(
                label=FINETUNED,
                method=FINETUNED,
                mode=run.mode,
                lines=False,
                test=test,  # type: ignore[arg-type]
                mean_abs=sum(test.values()) / len(test),  # type: ignore[arg-type]
                mean_norm=1.0,
                chosen="-",
                published=_published(run, "finetuned"),
            )
        )
    return rows


def _disambiguate(rows: list[Row]) -> None:
    """Rows of one method, mode and LiNeS setting get the method keys that tell them apart."""
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        groups.setdefault((row.method, row.mode, row.lines), []).append(row)
    for group in groups.values():
        if len(group) < 2:
            continue
        configs = [_method_config(row.run) for row in group]
        keys = sorted({k for c in configs for k in c})
        differ = [
            k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1
        ]
        for row, config in zip(group, configs, strict=True):
            parts = [f"{k}={_short(config.get(k))}" for k in differ]
            if not parts and row.run is not None:
                parts = [row.run.path.name]
            row.label = f"{row.method} ({', '.join(parts)})"


def _method_config(run: Run | None) -> dict[str, Any]:
    config = dict((run.results.get("config", {}) if run else {}).get("method", {}) or {})
    config.pop("_target_", None)
    return config


def _short(value: Any) -> str:
    if isinstance(value, list) and len(value) > 4:
        return f"[{_num(value[0])}..{_num(value[-1])}]"
    if isinstance(value, list):
        return "[" + ",".join(_num(v) for v in value) + "]"
    return _num(value)


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"{value:g}"
    return str(value)


def format_hyperparameters(hyperparameters: Mapping[str, Any], tasks: Sequence[str]) -> str:
    """``scaling_coef=0.4``; per-task values (TALL masks) as ``per task 0.4/0.3/...`` in task
    order; ``-`` when nothing was chosen."""
    parts = []
    for key, value in hyperparameters.items():
        if isinstance(value, Mapping):
            values = "/".join(_num(value[t]) for t in tasks if t in value)
            parts.append(f"{key}=per task {values}")
        else:
            parts.append(f"{key}={_num(value)}")
    return ", ".join(parts) or "-"


def grid_edge_of(run: Run) -> dict[str, Any] | None:
    """The run's ``grid_edge`` (computed as :func:`taskmerge.experiment.grid_edge` does for
    results that predate the field), with ``command``: the job's overrides plus the one that
    extends the grid."""
    results = run.results
    if "grid_edge" in results:
        edge = results["grid_edge"]
    elif len(results.get("sweep") or []) >= 3:
        from taskmerge.experiment import grid_edge

        edge = grid_edge(results["sweep"], results.get("hyperparameters") or {}, _BOUNDS)
    else:
        edge = None
    if not edge:
        return None
    edge = dict(edge)
    overrides = run.overrides()
    if overrides is not None:
        kept = [o for o in overrides if not o.lstrip("+~").startswith("method.grid=")]
        edge["command"] = shlex.join(["python", "main.py", *kept, edge["override"]])
    return edge


def _target_note(run: Run) -> str | None:
    """Negation and LiNeS editing: the target and control accuracies on Test."""
    details = run.results.get("report") or {}
    test = details.get("test") or {}
    if "target/top1" not in test:
        return None
    target = details.get("target_task")
    if target is None:
        index = (run.results.get("config", {}).get("method", {}) or {}).get("task_index", 0)
        target = run.results["tasks"][index]
    what = "negation" if run.method == "negation" else f"{run.results['method']} (editing)"
    chosen = format_hyperparameters(run.results.get("hyperparameters") or {}, [])
    text = f"{what} of {target} ({chosen}, {run.mode}): Test target {_pct(test['target/top1'])}%"
    extras = [
        f"{name} {_pct(test[key])}%"
        for name, key in (
            ("zero-shot", "target/zeroshot_top1"),
            ("fine-tuned", "target/finetuned_top1"),
        )
        if key in test
    ]
    if extras:
        text += f" ({', '.join(extras)})"
    if "control/top1" in test:
        text += f", controls {_pct(test['control/top1'])}%"
        if "control/zeroshot_top1" in test:
            text += f" (zero-shot {_pct(test['control/zeroshot_top1'])}%)"
    return text


# --------------------------------------------------------------------------- rendering
#: The columns around the task columns (Markdown, LaTeX; CSV and W&B add a few).
HEAD = ["method", "fine-tuning", "LiNeS"]
TAIL = ["abs.", "norm.", "chosen", "pub. abs.", "pub. norm.", "Δ abs.", "Δ norm.", "src"]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


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


# --------------------------------------------------------------------------- plots
def _figure(width: float, height: float):  # noqa: ANN202 - a matplotlib Figure
    """A figure outside pyplot (no global backend state: safe in notebooks and threads)."""
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height))


def swept_key(curve: Sequence[Mapping[str, Any]]) -> str | None:
    """The first hyperparameter that varies along a sweep (None: a single point)."""
    if len(curve) < 2:
        return None
    for key in curve[0].get("hyperparameters", {}):
        if len({repr(c["hyperparameters"].get(key)) for c in curve}) > 1:
            return key
    return None


def plot_val_curves(report: Report, path: str | Path) -> Path:
    """Mean normalized Val top-1 against the swept hyperparameter, every run on one figure
    (one panel per setting); the chosen point is a star; unswept runs are dashed levels."""
    fig = _figure(9, 4.2 * len(report.tables))
    axes = fig.subplots(len(report.tables), 1, squeeze=False)[:, 0]
    for ax, table in zip(axes, report.tables, strict=True):
        runs = [row for row in table.rows if row.run is not None]
        for index, row in enumerate(runs):
            color = _color(index, len(runs))
            curve = row.run.results.get("sweep") or []  # type: ignore[union-attr]
            key = swept_key(curve)
            label = _plot_label(row, report) + (
                f" ({key})" if key not in (None, "scaling_coef") else ""
            )
            points = sorted(
                (c["hyperparameters"][key], c["val/avg/normalized_top1"])
                for c in curve
                if key and isinstance(c["hyperparameters"].get(key), (int, float))
            )
            val = (row.run.results.get("val") or {}).get("avg", {}).get("normalized_top1")  # type: ignore[union-attr]
            if len(points) >= 2:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, [100 * y for y in ys], marker=".", color=color, label=label)
                chosen = (row.run.results.get("hyperparameters") or {}).get(key)  # type: ignore[union-attr]
                if isinstance(chosen, (int, float)) and val is not None:
                    ax.plot([chosen], [100 * val], marker="*", markersize=12, color=color)
            elif val is not None:
                ax.axhline(100 * val, linestyle="--", linewidth=1, color=color, label=label)
        ax.set_title(f"Val, {table.title}")
        ax.set_xlabel("swept hyperparameter (scaling_coef; LiNeS: beta / alpha)")
        ax.set_ylabel("mean normalized top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_per_task(report: Report, path: str | Path) -> Path:
    """Test top-1 per task (and the mean) of every row: grouped bars, one panel per setting."""
    fig = _figure(
        max(9, 1.3 * max(len(t.tasks) + 1 for t in report.tables)), 4.2 * len(report.tables)
    )
    axes = fig.subplots(len(report.tables), 1, squeeze=False)[:, 0]
    for ax, table in zip(axes, report.tables, strict=True):
        groups = [*table.tasks, "mean"]
        width = 0.85 / max(1, len(table.rows))
        for index, row in enumerate(table.rows):
            values = [row.test.get(t) for t in table.tasks] + [row.mean_abs]
            xs = [g + (index - (len(table.rows) - 1) / 2) * width for g in range(len(groups))]
            ys = [100 * v if v is not None else 0.0 for v in values]
            color = "black" if row.method == FINETUNED else _color(index, len(table.rows))
            ax.bar(xs, ys, width, color=color, label=_plot_label(row, report))
        ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
        ax.set_ylabel("Test top-1 (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"Test, {table.title}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_modes(report: Report, path: str | Path) -> Path | None:
    """Mean Test top-1, absolute and normalized, of each method in each fine-tuning mode
    (grouped bars); None (nothing written) when the runs have a single mode."""
    modes = report.modes
    if len(modes) < 2:
        return None
    rows = [
        (_method_label(row, table, report), row) for table in report.tables for row in table.rows
    ]
    methods: list[str] = []
    for name, _ in rows:
        if name not in methods:
            methods.append(name)
    fig = _figure(max(9, 0.9 * len(methods) * len(modes) ** 0.5), 7)
    axes = fig.subplots(2, 1)
    width = 0.85 / len(modes)
    for ax, attr, what in ((axes[0], "mean_abs", "absolute"), (axes[1], "mean_norm", "normalized")):
        for index, mode in enumerate(modes):
            values = {}
            for name, row in rows:
                if row.mode == mode and getattr(row, attr) is not None:
                    values.setdefault(name, 100 * getattr(row, attr))
            xs = [m + (index - (len(modes) - 1) / 2) * width for m in range(len(methods))]
            ax.bar(
                xs,
                [values.get(m, 0.0) for m in methods],
                width,
                label=mode,
                color=_color(index, len(modes)),
            )
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_ylabel(f"mean Test top-1, {what} (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(
            fontsize=8,
            title="fine-tuning\n(@forward)",
            loc="center left",
            bbox_to_anchor=(1.01, 0.5),
        )
    axes[0].set_title("Fine-tuning modes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def _method_label(row: Row, table: Table, report: Report) -> str:
    label = row.label + (" + LiNeS" if row.lines else "")
    return f"{label} [{table.model}, {len(table.tasks)} tasks]" if len(report.tables) > 1 else label


def _plot_label(row: Row, report: Report) -> str:
    label = row.label + (" + LiNeS" if row.lines else "")
    return f"{label}, {row.mode}" if len(report.modes) > 1 else label


def _color(index: int, count: int) -> Any:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if count > 10 else "tab10"]
    return cmap(index % cmap.N)


# --------------------------------------------------------------------------- output
def write_report(report: Report, out: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.csv``, ``report.tex``, ``val_curves.png``,
    ``per_task.png`` and (several modes) ``modes.png`` into ``out``; name -> path."""
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, text in (
        ("report.md", render_markdown(report)),
        ("report.csv", render_csv(report)),
        ("report.tex", render_latex(report)),
    ):
        (out / name).write_text(text)
        files[name] = out / name
    if report.tables:
        files["val_curves.png"] = plot_val_curves(report, out / "val_curves.png")
        files["per_task.png"] = plot_per_task(report, out / "per_task.png")
        modes = plot_modes(report, out / "modes.png")
        if modes is not None:
            files["modes.png"] = modes
    return files


def wandb_table_data(report: Report) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the W&B Table: the setting, then the cells (numbers as floats,
    None where there is none), and the full source."""
    columns = ["setting", *HEAD, *_all_tasks(report), *TAIL[:-1], "source"]
    data = []
    for table, row, cells in _lines(report):
        cells = {key: _number(value) for key, value in cells.items()}
        cells |= {"setting": table.title, "LiNeS": row.lines, "chosen": cells["chosen"]}
        cells["source"] = row.published.source if row.published else ""
        data.append([cells.get(column) for column in columns])
    return columns, data


def _number(text: str) -> Any:
    if text == "-":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def log_wandb(
    report: Report,
    files: Mapping[str, Path],
    group: str,
    project: str = "taskmerge",
    mode: str | None = None,
    entity: str | None = None,
    directory: str | Path | None = None,
    name: str | None = None,
) -> Path:
    """Log the table (a ``wandb.Table``) and the plots to one W&B run in ``group`` (the sweep's
    runs' group), offline unless ``mode`` (or ``WANDB_MODE``) says otherwise; returns the run's
    local directory (``wandb sync`` it to upload an offline run)."""
    import wandb

    from taskmerge.tracking import WandbTracker

    tracker = WandbTracker(
        project=project,
        mode=mode or os.environ.get("WANDB_MODE") or "offline",
        entity=entity,
        group=group,
        name=name or f"report-{group}".replace("/", "-"),
        tags=["report"],
        dir=str(directory) if directory else os.environ.get("WANDB_DIR"),
        run_config={"runs": [str(run.path) for run in report.runs]},
    )
    try:
        run_dir = Path(tracker.run.dir).parent
        columns, data = wandb_table_data(report)
        tracker.run.log({"report/table": wandb.Table(columns=columns, data=data)})
        for key, path in files.items():
            if key.endswith(".png"):
                tracker.log_image(f"report/{key.removesuffix('.png')}", path)
        tracker.summary(
            {
                _summary_key(table, row): row.mean_abs
                for table in report.tables
                for row in table.rows
            }
        )
    finally:
        tracker.finish()
    return run_dir


def _summary_key(table: Table, row: Row) -> str:
    lines = "+lines" if row.lines else ""
    return (
        f"report/{table.model}/{len(table.tasks)}tasks/{row.label}{lines}/{row.mode}/test_avg_top1"
    )
