"""A benchmark's figures as JSON: ``--json PATH`` writes what it printed, machine-readable, for
``benchmarks/run_all.py`` (which turns every script's figures into one table).

    parser = argparse.ArgumentParser(...)
    add_json_flag(parser)
    ...
    write_figures(args.json, {"rows": rows, "total": total})
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from machine import machine_line  # benchmarks/machine.py


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """``--json PATH``: also write the figures there."""
    parser.add_argument(
        "--json", type=Path, default=None, metavar="PATH",
        help="also write the figures as JSON (benchmarks/run_all.py reads it)",
    )  # fmt: skip


def write_figures(path: Path | None, figures: dict[str, Any]) -> None:
    """Write ``{"machine": ..., "figures": figures}`` to ``path`` (nothing when None)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine_line(), "figures": figures}
    path.write_text(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
