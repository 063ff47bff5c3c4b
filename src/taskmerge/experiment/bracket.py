"""The first maximum of a score over grid indices from a few evaluations: a bracket search
(parabolic steps through the best point and its evaluated neighbours, golden-section steps where
no parabola fits), then a certificate that the choice is the full grid's, else the full grid.

The grid's rule is :func:`taskmerge.experiment.selection.best_index`: the highest score, ties to
the first grid point. The search stops when the evaluated points prove that rule's answer for
any curve within ``tolerance / 2`` of a unimodal one (non-decreasing up to its maximum,
non-increasing after it), the model of a Val curve whose sampling noise makes small bumps:

* the best evaluated point ``c`` (the first of the highest) has both grid neighbours evaluated;
* every evaluated point tied with ``c`` is joined to it by evaluated points, and the point after
  the last of them is evaluated (a plateau at the top may hide a higher point inside it);
* no evaluated point lies deeper than ``tolerance`` below an evaluated point on each side (a
  deeper dip proves the curve is not such a curve: the rest of the grid is evaluated and the
  grid rule chooses, with one warning);
* every run of unevaluated points between two evaluated ones ``a < b`` (or between one and the
  grid's end) can hold no point above the best: ``max(f(a), f(b)) + tolerance`` is below
  ``f(c)`` (at most ``f(c)`` after ``c``), else the middle of the run is evaluated.

Why that suffices: let ``g`` be the unimodal curve within ``tolerance / 2``. A run not holding
g's maximum lies on one slope of ``g``, so its points are at most ``max(f(a), f(b)) + tolerance``.
A run holding g's maximum has an end ``a`` on the slope from ``c`` towards it, so
``f(a) >= g(a) - tolerance / 2 >= g(c) - tolerance / 2 >= f(c) - tolerance``: it fails the last
condition and is refined until it no longer holds that maximum. With ``tolerance = 0`` the model
is a unimodal curve and the certificate is the bracket's alone. An inadmissible point (no score)
counts as lower than every score, as for the grid rule, which never chooses one: inadmissible
tails (negation past its control threshold) are a curve's low ends. What no sparse search can
see is a bump larger than ``tolerance`` between evaluated points: that is what ``sweep=grid`` is
for.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

from taskmerge.experiment.selection import best_index

#: Grid index -> the selection score of that point (None: inadmissible).
Score = Callable[[int], float | None]
#: The golden-section fraction: a step into the larger gap this far from the best point.
GOLDEN = (3 - math.sqrt(5)) / 2
#: How far on each side of the choice every grid point is evaluated (1: its two neighbours;
#: 2 doubled the evaluations on the demo's curves).
REACH = 1
#: What an inadmissible point (no score) counts as: below every score.
LOWEST = -math.inf


@dataclass
class Search:
    """What a search evaluated and chose.

    Attributes:
        scores: Every evaluated grid index -> its score, in evaluation order.
        chosen: The chosen index (the grid rule's over the whole grid when ``full_grid``);
            None when no point is admissible.
        full_grid: Every point was evaluated (a fallback, a grid too short to search, or a
            curve that needed every point for its certificate).
        fallback: The evaluated scores were not unimodal, or none was admissible: the rest of
            the grid was evaluated and the grid rule chose.
        note: Why it stopped where it did (one line).
    """

    scores: dict[int, float | None]
    chosen: int | None
    full_grid: bool
    fallback: bool
    note: str


def search_first_max(size: int, score: Score, tolerance: float = 0.0) -> Search:
    """The grid rule's choice over ``size`` points, from as few calls of ``score`` as the
    certificate (module docstring) allows for curves within ``tolerance / 2`` of a unimodal
    one; falls back to every point when a dip deeper than ``tolerance`` shows the curve is not
    one, or none is admissible."""
    scores: dict[int, float | None] = {}

    def full_grid(note: str, fallback: bool = True) -> Search:
        for index in range(size):
            if index not in scores:
                scores[index] = score(index)
        return Search(scores, best_index([scores[i] for i in range(size)]), True, fallback, note)

    if size <= 3:
        return full_grid(
            f"a grid of {size} point{'s' if size > 1 else ''} is evaluated whole", fallback=False
        )
    for index in first_probes(size):
        scores[index] = score(index)
    while True:
        if all(s is None for s in scores.values()):
            return full_grid("no point evaluated so far is admissible: the full grid")
        # an inadmissible point (no score) is below every admissible one, as the grid rule has it
        known = {i: LOWEST if s is None else s for i, s in scores.items()}
        best = _first_max(known)
        dip = find_dip(known, tolerance)
        if dip is not None:
            return full_grid(
                f"the Val curve is not unimodal (grid index {dip} is below points on both "
                f"sides{f' by more than {tolerance:g}' if tolerance else ''}): the full grid"
            )
        step = next_probe(known, best, size)
        if step is None:
            step = hiding_place(known, best, size, tolerance)
        if step is None:
            return Search(
                scores, best, len(scores) == size, False,
                f"grid index {best} is the best of {len(scores)} of {size} points evaluated, "
                "its neighbours lower and the curve unimodal through them"
                + (f" within {tolerance:g}" if tolerance else ""),
            )  # fmt: skip
        scores[step] = score(step)


def first_probes(size: int) -> list[int]:
    """The first point evaluated: the middle (then golden-section steps towards the better side
    until three points give a parabola). Probing the ends too costs two evaluations that most
    curves do not need, and an end that is inadmissible adds nothing."""
    return [(size - 1) // 2]


def find_dip(scores: dict[int, float], tolerance: float = 0.0) -> int | None:
    """An evaluated index whose score is more than ``tolerance`` below that of an evaluated
    point on each side (no curve within ``tolerance / 2`` of a unimodal one goes through them;
    with 0, below both), else None."""
    order = sorted(scores)
    for position, index in enumerate(order[1:-1], start=1):
        before = max(scores[i] for i in order[:position])
        after = max(scores[i] for i in order[position + 1 :])
        if scores[index] < min(before, after) - tolerance:
            return index
    return None


def hiding_place(scores: dict[int, float], best: int, size: int, tolerance: float) -> int | None:
    """The middle of the first run of unevaluated indices where a curve within ``tolerance / 2``
    of a unimodal one could hold a point above the best (ties before it): its evaluated ends'
    higher score plus ``tolerance`` reaches the best's; None when no run can (always with
    ``tolerance = 0``, once :func:`next_probe` is done)."""
    if tolerance <= 0:
        return None
    top = scores[best]
    order = sorted(scores)
    edges = [-1, *order, size]
    for low, high in itertools.pairwise(edges):
        if high - low < 2:
            continue
        bound = max(scores[i] for i in (low, high) if 0 <= i < size) + tolerance
        if bound > top or (high <= best and bound >= top):
            return (low + high) // 2
    return None


def next_probe(scores: dict[int, float], best: int, size: int) -> int | None:
    """The next grid index to evaluate around the best one, or None when the certificate
    (module docstring) holds."""
    top = scores[best]
    tied = [i for i in scores if i > best and scores[i] == top]
    if tied:  # a plateau at the top: evaluate it, and the point after it, whole
        missing = [i for i in range(best + 1, min(max(tied) + 2, size)) if i not in scores]
        if missing:
            return _widest_gap_middle(scores, missing)
    reach = range(best - REACH, best + REACH + 1)
    needed = [i for i in reach if 0 <= i < size and i not in scores]
    if not needed:
        return None
    low = max((i for i in scores if i < best), default=-1)  # -1, size: nothing evaluated there
    high = min((i for i in scores if i > best), default=size)
    vertex = _parabola_vertex(scores, best)
    if vertex is not None:
        target = min(max(round(vertex), low + 1), high - 1)
        if target == best:
            target = best + 1 if vertex > best else best - 1
    elif best - low >= high - best:  # a golden-section step into the larger unevaluated side
        target = best - max(1, round(GOLDEN * (best - low)))
    else:
        target = best + max(1, round(GOLDEN * (high - best)))
    return target if 0 <= target < size and target not in scores else needed[0]


def _first_max(scores: dict[int, float]) -> int:
    order = sorted(scores)
    found = best_index([scores[i] for i in order])
    assert found is not None
    return order[found]


def _widest_gap_middle(scores: dict[int, float], missing: list[int]) -> int:
    """The middle of the longest run of consecutive missing indices."""
    runs: list[list[int]] = []
    for index in missing:
        if runs and runs[-1][-1] == index - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    run = max(runs, key=len)
    return run[len(run) // 2]


def _parabola_vertex(scores: dict[int, float], best: int) -> float | None:
    """The vertex of the parabola through the best point and its nearest evaluated neighbours
    (one on each side, or the two nearest on the one side that has any), when it opens
    downwards; else None."""
    left = sorted(i for i in scores if i < best)
    right = sorted(i for i in scores if i > best)
    if left and right:
        xs = (left[-1], best, right[0])
    elif len(left) >= 2:
        xs = (left[-2], left[-1], best)
    elif len(right) >= 2:
        xs = (best, right[0], right[1])
    else:
        return None
    (x0, x1, x2), (y0, y1, y2) = xs, (scores[x] for x in xs)
    if not all(math.isfinite(y) for y in (y0, y1, y2)):  # an inadmissible point: no parabola
        return None
    # second divided difference: the parabola's leading coefficient
    curvature = ((y2 - y1) / (x2 - x1) - (y1 - y0) / (x1 - x0)) / (x2 - x0)
    if curvature >= 0:
        return None
    slope = (y1 - y0) / (x1 - x0)  # y = y0 + slope (x - x0) + curvature (x - x0)(x - x1)
    return (x0 + x1) / 2 - slope / (2 * curvature)
