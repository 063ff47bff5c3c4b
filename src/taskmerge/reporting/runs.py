"""Collecting finished runs and building the report's tables: rows, chosen hyperparameters,
grid edges, published figures."""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskmerge.reporting.cells import _pct, _short, format_hyperparameters
from taskmerge.reporting.published import Figure, lookup

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
    def precision(self) -> str:
        """The evaluation precision (``fp32`` for files that predate the field)."""
        return str(self.results.get("eval_precision") or "fp32")

    @property
    def mode(self) -> str:
        """The fine-tuning mode, with ``@forward`` when evaluated through another forward and
        ``+precision`` when not evaluated in fp32."""
        own = "linear" if self.finetuning == "linear" else "nonlinear"
        mode = self.finetuning if self.forward == own else f"{self.finetuning}@{self.forward}"
        return mode if self.precision == "fp32" else f"{mode}+{self.precision}"

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
        notes += [note for run in members for note in _data_notes(run)]
        tables.append(Table(model, pretrained, list(tasks), rows, notes))
    return Report(tables, list(runs), list(skipped))


def _run_key(run: Run) -> tuple:
    method = run.method
    order = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return (order, method, run.lines, _mode_key(run.mode), _natural(run.path.name))


def _mode_key(mode: str) -> tuple:
    mode, _, precision = mode.partition("+")
    base, _, forward = mode.partition("@")
    order = MODE_ORDER.index(base) if base in MODE_ORDER else len(MODE_ORDER)
    return (order, base, forward, precision)


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
    # adaptation on the unlabeled Test images (AdaMerging's protocol) is marked in the table
    label = f"{run.method} (transductive)" if results.get("transductive") else run.method
    return Row(
        label=label,
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
    config.pop("_target_", None)  # results written before methods were named
    config.pop("name", None)
    return config


def grid_edge_of(run: Run) -> dict[str, Any] | None:
    """The run's ``grid_edge`` (computed as :func:`taskmerge.experiment.grid_edge` does for
    results that predate the field), with ``command``: the job's overrides plus the one that
    extends the grid."""
    results = run.results
    if "grid_edge" in results:
        edge = results["grid_edge"]
    elif len(results.get("sweep") or []) >= 3:
        from taskmerge.experiment.grid_edges import grid_edge

        points = [point.get("hyperparameters", {}) for point in results["sweep"]]
        edge = grid_edge(points, results.get("hyperparameters") or {}, _BOUNDS)
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


def _data_notes(run: Run) -> list[str]:
    """A run on a subset (``limit_samples``) or on a known split variant is flagged: its
    numbers are not those of the reference splits."""
    label = f"{run.results.get('method')} ({run.path.name})"
    notes = []
    if run.results.get("subset"):
        notes.append(f"{label}: a subset run (the first {run.results['subset']} samples of each "
                     "split): not comparable to published figures")  # fmt: skip
    for task, variant in (run.results.get("split_variants") or {}).items():
        notes.append(f"{label}: {task} is {variant}")
    return notes


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
