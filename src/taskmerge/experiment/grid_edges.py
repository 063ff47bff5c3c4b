"""Say when a swept grid was too small: the chosen value on an edge that is not a natural
bound, and the override that extends the grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Hyperparameters = Mapping[str, Any]


def swept_key(points: Sequence[Hyperparameters]) -> str | None:
    """The first hyperparameter that varies along a sweep (what a plot's x-axis shows), given
    each point's hyperparameters; None for a single point or when nothing varies."""
    if len(points) < 2:
        return None
    for key in points[0]:
        if len({repr(p.get(key)) for p in points}) > 1:
            return key
    return None


def grid_edge(
    points: Sequence[Hyperparameters],
    chosen: Hyperparameters,
    bounds: Mapping[str, tuple[float | None, float | None]],
) -> dict[str, Any] | None:
    """Whether the chosen value of the swept hyperparameter is the first or last of at least
    three grid values and that edge is not a natural bound; then the edge and the override
    that extends the grid (five more steps of the grid's last spacing, within the bounds)."""
    key = swept_key(points)
    if key is None:
        return None
    values = sorted({p.get(key) for p in points} - {None}, key=float)
    value = chosen.get(key)
    if len(values) < 3 or not isinstance(value, (int, float)):
        return None
    low, high = bounds.get(key, (None, None))
    if value == values[-1] and (high is None or value < high):
        step, edge, sign = values[-1] - values[-2], "upper", 1
    elif value == values[0] and (low is None or value > low):
        step, edge, sign = values[1] - values[0], "lower", -1
    else:
        return None
    extra = [round(value + sign * step * i, 10) for i in range(1, 6)]
    extra = [x for x in extra if (low is None or x >= low) and (high is None or x <= high)]
    grid = sorted({*values, *extra})
    override = "method.grid=[" + ",".join(f"{x:g}" for x in grid) + "]"
    return {"key": key, "value": value, "edge": edge, "grid": values, "override": override}
