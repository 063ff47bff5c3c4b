"""The documentation's method and fine-tuning-mode tables, generated from the registry and the
configs: ``python -m taskmerge.app.tables`` rewrites them between their markers in the README and
the docs pages (``tests/app/test_tables.py`` fails when a table is stale)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from taskmerge.app.config import instantiate, register_resolvers
from taskmerge.merging.registry import method_specs

ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = ROOT / "config"
#: The files whose tables are generated.
DOCUMENTS = ("README.md", "docs/methods.md", "docs/finetuning_modes.md")


def _compose(overrides: Sequence[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose("config", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def _span(values: Sequence[float]) -> str:
    numbers = [float(v) for v in values]
    if len(numbers) == 1:
        return f"{numbers[0]:g}"
    return f"{min(numbers):g}..{max(numbers):g} ({len(numbers)} points)"


def _swept(name: str, node: DictConfig) -> str:
    spec = method_specs()[name]
    if spec.scaled and node.get("grid"):
        return f"`scaling_coef` {_span(node.grid)}"
    if getattr(spec.cls, "select_per_task", False):
        lists = [k for k, v in node.items() if OmegaConf.is_list(v)]
        return "; ".join(f"`{k}` {_span(node[k])}, per task" for k in lists) or "-"
    return "-"


def methods_table() -> str:
    """One row per registered method: its name, what it is, what is swept on Val, LiNeS."""
    rows = ["| method | what | swept on Val | LiNeS |", "|---|---|---|---|"]
    for name, spec in method_specs().items():
        node = _compose([f"method={name}"]).method
        lines = {"multitask": "multi-task", "editing": "editing (alpha 1.0..0.0)"}.get(
            str(spec.lines), "-"
        )
        rows.append(f"| `{name}` | {spec.summary} | {_swept(name, node)} | {lines} |")
    return "\n".join(rows)


def modes_table() -> str:
    """One row per fine-tuning mode config: its name, what trains, its forward."""
    rows = ["| `finetuning=` | what trains | forward |", "|---|---|---|"]
    paths = sorted((CONFIG_DIR / "finetuning").glob("*.yaml"))
    for path in paths:
        mode = instantiate(_compose([f"finetuning={path.stem}"]).finetuning)
        doc = (type(mode).__doc__ or "").strip().splitlines()[0].replace("``", "`")
        if mode.name != path.stem and mode.name in {p.stem for p in paths}:  # another name
            doc = f"The reference repos' name for `{mode.name}` (the same checkpoints)."
        rows.append(f"| `{path.stem}` | {doc} | {mode.forward} |")
    return "\n".join(rows)


#: Marker name -> the function rendering the table between ``<!-- name ... -->`` and
#: ``<!-- /name -->``.
TABLES: dict[str, Callable[[], str]] = {"methods-table": methods_table, "modes-table": modes_table}


def render(text: str) -> str:
    """``text`` with every marked table regenerated."""
    for marker, build in TABLES.items():
        pattern = re.compile(rf"(<!-- {marker}[^>]*-->\n)(.*?)(<!-- /{marker} -->)", re.S)
        if pattern.search(text):
            table = build()
            text = pattern.sub(lambda m, t=table: f"{m.group(1)}{t}\n{m.group(3)}", text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the tables of the given files (default: :data:`DOCUMENTS`)."""
    for name in argv or DOCUMENTS:
        path = ROOT / name if not Path(name).is_absolute() else Path(name)
        text = path.read_text()
        updated = render(text)
        if updated != text:
            path.write_text(updated)
            print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
