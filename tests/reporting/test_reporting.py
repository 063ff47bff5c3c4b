"""The report command: results.json files -> tables (Markdown, CSV, LaTeX), plots, W&B."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from taskmerge.data.spec import STANDARD_TASKS
from taskmerge.reporting import (
    build_report,
    collect_runs,
    format_hyperparameters,
    log_wandb,
    render_csv,
    render_latex,
    render_markdown,
    write_report,
)
from taskmerge.reporting.published import lookup, standard_task_count

ROOT = Path(__file__).resolve().parents[2]
TASKS = list(STANDARD_TASKS[:8])
GRID = [round(0.1 * i, 1) for i in range(1, 11)]
EDGE_OVERRIDE = "method.grid=[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1,1.1,1.2,1.3,1.4,1.5]"


def fake_results(
    method: str,
    top1: list[float],
    finetuning: str = "standard",
    hyperparameters: dict[str, Any] | None = None,
    finetuned: float = 0.9,
    **extra: Any,
) -> dict[str, Any]:
    """A results.json as experiment.report writes it (ViT-B-32, the first 8 standard tasks)."""
    hyperparameters = {"scaling_coef": 0.3} if hyperparameters is None else hyperparameters
    test = {
        t: {"top1": a, "normalized_top1": a / finetuned, "finetuned_top1": finetuned}
        for t, a in zip(TASKS, top1, strict=True)
    }
    mean = sum(top1) / len(top1)
    test["avg"] = {"top1": mean, "normalized_top1": mean / finetuned}
    sweep = [
        {
            "hyperparameters": {"scaling_coef": c},
            "val/avg/top1": mean - abs(c - 0.3) / 10,
            "val/avg/normalized_top1": (mean - abs(c - 0.3) / 10) / finetuned,
            "val/selection_score": (mean - abs(c - 0.3) / 10) / finetuned,
        }
        for c in GRID
    ]
    results = {
        "method": method,
        "hyperparameters": hyperparameters,
        "model": "ViT-B-32",
        "pretrained": "openai",
        "finetuning": finetuning,
        "eval_forward": "linear" if finetuning == "linear" else "nonlinear",
        "config": {"method": {"_target_": "x", "apply_lines": method.endswith("+lines")}},
        "tasks": TASKS,
        "test": test,
        "val": {"avg": {"top1": mean, "normalized_top1": mean / finetuned}},
        "sweep": sweep,
        "finetuned": {t: {"val_top1": finetuned, "test_top1": finetuned} for t in TASKS},
        "grid_edge": None,
        "complete": True,
        "seconds": 1.0,
    }
    results.update(extra)
    return results


def write_job(sweep: Path, name: str, results: dict | None, overrides: list[str]) -> Path:
    """One Hydra job directory (``.hydra/overrides.yaml``, ``main.log``, results.json)."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / "main.log").write_text("")
    if results is not None:
        (job / "results.json").write_text(json.dumps(results))
    return job


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A multirun: sum (two modes), sum + LiNeS, ties on a grid edge, TALL masks, negation,
    a job that did not finish and one whose results are incomplete."""
    root = tmp_path / "my_sweep"
    root.mkdir()
    (root / "multirun.yaml").write_text("hydra: {}\n")
    sum_top1 = [0.7234, 0.70, 0.74, 0.71, 0.73, 0.72, 0.7166, 0.72]  # mean 0.72
    write_job(root, "0_method=sum", fake_results("sum", sum_top1), ["method=sum"])
    write_job(
        root,
        "1_finetuning=linear,method=sum",
        fake_results("sum", [0.76] * 8, finetuning="linear"),
        ["finetuning=linear", "method=sum"],
    )
    write_job(
        root,
        "2_method=sum,method.apply_lines=true",
        fake_results("sum+lines", [0.75] * 8, hyperparameters={"beta": 0.6}),
        ["method=sum", "method.apply_lines=true"],
    )
    edge = {
        "key": "scaling_coef",
        "value": 1.0,
        "edge": "upper",
        "grid": GRID,
        "override": EDGE_OVERRIDE,
    }
    write_job(
        root,
        "3_method=ties",
        fake_results("ties", [0.65] * 8, hyperparameters={"scaling_coef": 1.0}, grid_edge=edge),
        ["method=ties", "method.grid=[0.1,1.0]"],
    )
    lambdas = {t: (0.4 if i % 2 else 0.2) for i, t in enumerate(TASKS)}
    write_job(
        root,
        "4_method=tall_mask",
        fake_results("tall_mask", [0.85] * 8, hyperparameters={"tall_mask_lambda": lambdas}),
        ["method=tall_mask"],
    )
    details = {
        "target_task": "Cars",
        "test": {
            "target/top1": 0.2,
            "target/zeroshot_top1": 0.6,
            "target/finetuned_top1": 0.78,
            "control/top1": 0.5,
            "control/zeroshot_top1": 0.51,
        },
    }
    write_job(
        root,
        "5_method=negation",
        fake_results("negation", [0.5] * 8, hyperparameters={"scaling_coef": 0.5}, report=details),
        ["method=negation"],
    )
    write_job(root, "6_method=TSVM", None, ["method=TSVM"])  # killed before results.json
    write_job(root, "7_method=average", fake_results("average", [0.6] * 8, complete=False), ["x=1"])
    return root


def test_collect_skips_incomplete_runs(sweep: Path) -> None:
    runs, skipped = collect_runs([sweep])
    assert [run.path.name for run in runs] == [
        "0_method=sum",
        "1_finetuning=linear,method=sum",
        "2_method=sum,method.apply_lines=true",
        "3_method=ties",
        "4_method=tall_mask",
        "5_method=negation",
    ]
    assert {run.sweep for run in runs} == {"my_sweep"}
    reasons = {item.path.name: item.reason for item in skipped}
    assert set(reasons) == {"6_method=TSVM", "7_method=average"}
    assert "did not finish" in reasons["6_method=TSVM"]
    assert "incomplete" in reasons["7_method=average"]
    again, _ = collect_runs([sweep, sweep / "0_method=sum"])  # given twice: counted once
    assert len(again) == len(runs)
    with pytest.raises(FileNotFoundError):
        collect_runs([sweep / "missing"])


def _markdown_rows(markdown: str) -> dict[tuple[str, str, str], list[str]]:
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| method"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[(cells[0], cells[1], cells[2])] = cells
    return rows


def test_markdown_table(sweep: Path) -> None:
    report = build_report(*collect_runs([sweep]))
    markdown = render_markdown(report)
    assert "## ViT-B-32 (openai), 8 tasks" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| method"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[3:11] == TASKS
    assert columns[11:] == [
        "abs.", "norm.", "chosen", "pub. abs.", "pub. norm.", "Δ abs.", "Δ norm.", "src"
    ]  # fmt: skip
    rows = _markdown_rows(markdown)
    # sum, standard: per-task values rounded as rendered, means, the published figure (TSV
    # repository: 70.8 (76.5)) and the difference ours - published
    assert rows["sum", "standard", "-"][3:] == [
        "72.3", "70.0", "74.0", "71.0", "73.0", "72.0", "71.7", "72.0",
        "72.0", "80.0", "scaling_coef=0.3", "70.8", "76.5", "+1.2", "+3.5", "[1]",
    ]  # fmt: skip
    # another mode, and LiNeS: no published figure
    assert rows["sum", "linear", "-"][11:] == [
        "76.0", "84.4", "scaling_coef=0.3", "-", "-", "-", "-", "-"
    ]  # fmt: skip
    assert rows["sum", "standard", "yes"][13:] == ["beta=0.6", "-", "-", "-", "-", "-"]
    assert rows["ties", "standard", "-"][13] == "scaling_coef=1 (edge)"
    assert rows["tall_mask", "standard", "-"][13] == (
        "tall_mask_lambda=per task 0.2/0.4/0.2/0.4/0.2/0.4/0.2/0.4"
    )
    # one fine-tuned row per mode, with the published fine-tuned mean (standard only)
    assert rows["fine-tuned", "standard", "-"][11:18] == [
        "90.0", "100.0", "-", "92.8", "-", "-2.8", "-"
    ]  # fmt: skip
    assert rows["fine-tuned", "linear", "-"][14] == "-"
    # the grid edge with the job's command line plus the override (its old grid dropped)
    assert "**Grid too small**" in markdown
    assert f"`python main.py method=ties '{EDGE_OVERRIDE}'`" in markdown
    assert "negation of Cars" in markdown and "Test target 20.0%" in markdown
    assert "Task Singular Vectors" in markdown and "arXiv:2412.00081" in markdown
    assert "Skipped 2 incomplete job(s)" in markdown and "6_method=TSVM" in markdown


def test_csv_and_latex(sweep: Path) -> None:
    report = build_report(*collect_runs([sweep]))
    lines = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert len(lines) == 8  # 6 runs + 2 fine-tuned rows
    first = lines[0]
    assert first["method"] == "sum" and first["fine-tuning"] == "standard"
    assert first["Cars"] == "72.3" and first["mean_abs"] == "72.0"
    assert (first["published_abs"], first["diff_abs"], first["diff_norm"]) == (
        "70.8",
        "+1.2",
        "+3.5",
    )
    assert "arXiv:2412.00081" in first["source"]
    ties = next(line for line in lines if line["method"] == "ties")
    assert ties["grid_edge_override"].endswith(f"'{EDGE_OVERRIDE}'")
    assert next(line for line in lines if line["LiNeS"] == "yes")["published_abs"] == ""

    latex = render_latex(report)
    assert latex.count(r"\begin{tabular}") == 1 and r"\end{tabular}" in latex
    assert r"tall\_mask" in latex and r"$\Delta$ abs." in latex
    assert r"72.3 & 70.0" in latex


def test_write_report_and_plots(sweep: Path, tmp_path: Path) -> None:
    report = build_report(*collect_runs([sweep]))
    files = write_report(report, tmp_path / "out")
    assert set(files) == {
        "report.md", "report.csv", "report.tex", "val_curves.png", "per_task.png", "modes.png"
    }  # fmt: skip
    for path in files.values():
        assert path.is_file() and path.stat().st_size > 0
    for name in ("val_curves.png", "per_task.png", "modes.png"):
        assert files[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_single_mode_has_no_mode_plot(tmp_path: Path) -> None:
    write_job(tmp_path / "one", "0", fake_results("TSVM", [0.8] * 8), ["method=TSVM"])
    report = build_report(*collect_runs([tmp_path / "one"]))
    assert "modes.png" not in write_report(report, tmp_path / "out")


def test_precisions_are_rows_of_their_own(tmp_path: Path) -> None:
    """A bf16 evaluation of the same method and mode is its own row, after the fp32 one."""
    root = tmp_path / "precisions"
    write_job(root, "0", fake_results("sum", [0.72] * 8, eval_precision="bf16"),
              ["method=sum", "eval_precision=bf16"])  # fmt: skip
    write_job(root, "1", fake_results("sum", [0.7] * 8), ["method=sum"])
    report = build_report(*collect_runs([root]))
    (table,) = report.tables
    rows = [(row.mode, round(row.mean_abs, 2)) for row in table.rows if row.method == "sum"]
    assert rows == [("standard", 0.7), ("standard+bf16", 0.72)]


def test_grid_edge_of_older_results(tmp_path: Path) -> None:
    """Results written before the grid_edge field: the edge is computed from the sweep."""
    results = fake_results("sum", [0.7] * 8, hyperparameters={"scaling_coef": 1.0})
    del results["grid_edge"], results["eval_forward"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps(results))
    report = build_report(*collect_runs([tmp_path / "old"]))
    (row,) = report.edges
    assert row.edge["edge"] == "upper" and row.edge["override"].startswith("method.grid=[0.1,")
    assert "command" not in row.edge  # no .hydra/overrides.yaml: the override alone
    assert row.mode == "standard" and row.published is not None


def test_published_lookup() -> None:
    figure = lookup("sum", "ViT-B-32", STANDARD_TASKS[:8])
    assert figure is not None
    assert (figure.absolute, figure.normalized, figure.method) == (70.8, 76.5, "Task arithmetic")
    assert "task_singular_vectors" in figure.source
    tsvm = lookup("TSVM", "ViT-L-14", STANDARD_TASKS[:20])
    assert tsvm is not None and (tsvm.absolute, tsvm.normalized) == (87.7, 92.5)
    assert lookup("iso_cts", "ViT-B-32", STANDARD_TASKS[:14]).absolute == 81.7  # type: ignore[union-attr]
    assert "Marczak" in lookup("iso_c", "ViT-L-14", STANDARD_TASKS[:8]).source  # type: ignore[union-attr]
    assert lookup("zeroshot", "ViT-B-32", STANDARD_TASKS[:8]).absolute == 48.3  # type: ignore[union-attr]
    assert lookup("finetuned", "ViT-L-14", STANDARD_TASKS[:14]).absolute == 94.3  # type: ignore[union-attr]
    # settings without a published figure
    assert lookup("ties", "ViT-B-32", STANDARD_TASKS[:8]) is None
    assert lookup("sum", "ViT-B-16", STANDARD_TASKS[:8]) is None
    assert lookup("sum", "ViT-B-32", STANDARD_TASKS[1:9]) is None
    assert lookup("sum", "ViT-B-32", STANDARD_TASKS[:8], finetuning="linear") is None
    assert lookup("sum", "ViT-B-32", STANDARD_TASKS[:8], eval_forward="linear") is None
    assert lookup("sum", "ViT-B-32", STANDARD_TASKS[:8], lines=True) is None
    assert lookup("sum+lines", "ViT-B-32", STANDARD_TASKS[:8]) is None
    assert lookup("sum", "ViT-B-32", STANDARD_TASKS[:8], pretrained="laion2b") is None
    assert [standard_task_count(STANDARD_TASKS[:n]) for n in (8, 14, 20, 5)] == [8, 14, 20, None]


def test_format_hyperparameters() -> None:
    assert format_hyperparameters({}, TASKS) == "-"
    assert format_hyperparameters({"alpha": 0.30000000000000004, "beta": 0.7}, TASKS) == (
        "alpha=0.3, beta=0.7"
    )


def test_wandb_offline_run(sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    report = build_report(*collect_runs([sweep]))
    files = write_report(report, tmp_path / "out")
    run_dir = log_wandb(report, files, group="my_sweep")
    assert run_dir.parent == tmp_path / "wb" / "wandb"
    assert run_dir.name.startswith("offline-run-")
    assert list(run_dir.glob("*.wandb"))
    media = run_dir / "files" / "media"
    assert len(list(media.glob("images/**/*.png"))) == 3  # val curves, per task, modes
    (table,) = media.glob("table/**/*.table.json")
    table = json.loads(table.read_text())
    assert table["columns"][:4] == ["setting", "method", "fine-tuning", "LiNeS"]
    assert ["ViT-B-32 (openai), 8 tasks", "sum", "standard", False] in [
        row[:4] for row in table["data"]
    ]
    assert table["data"][0][-5:-1] == [70.8, 76.5, 1.2, 3.5]


def test_report_command(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("report_cli", ROOT / "report.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    assert module.main([str(sweep), "--out", str(tmp_path / "out")]) == 0
    assert "| sum | standard | - | 72.3 |" in capsys.readouterr().out
    assert (tmp_path / "out" / "report.md").is_file()
    assert module.main([str(tmp_path / "empty_missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert module.main([str(tmp_path / "empty")]) == 1

    # two sweeps to W&B: one offline run each, in the sweep's group
    write_job(tmp_path / "other", "0", fake_results("TSVM", [0.8] * 8), ["method=TSVM"])
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    args = [str(sweep), str(tmp_path / "other"), "--out", str(tmp_path / "out2"), "--wandb"]
    assert module.main(args) == 0
    assert len(list((tmp_path / "wb" / "wandb").glob("offline-run-*"))) == 2
    assert "W&B run of my_sweep" in capsys.readouterr().err


def test_published_figures_of_issue_20_methods_only_where_published() -> None:
    from taskmerge.reporting.published import table

    pcb = lookup("pcb", "ViT-B-32", STANDARD_TASKS[:8])
    assert pcb is not None and (pcb.absolute, pcb.normalized) == (76.3, None)
    assert "FusionBench" in pcb.source
    assert lookup("magmax", "ViT-B-32", STANDARD_TASKS[:8]).absolute == 71.1  # type: ignore[union-attr]
    assert lookup("magmax", "ViT-B-32", STANDARD_TASKS[:14]) is None  # not published
    assert lookup("pcb", "ViT-L-14", STANDARD_TASKS[:8]) is None
    listed = {(f.method, f.num_tasks) for f in table()}
    assert ("MagMax", 8) in listed and ("MagMax", 14) not in listed
