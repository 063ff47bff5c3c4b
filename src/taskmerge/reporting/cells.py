"""Formatting of report cells: numbers, percentages, hyperparameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


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


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)
