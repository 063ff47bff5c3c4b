"""The adaptive sweep's search on synthetic Val curves: its choice is the full grid's
(``best_index``, ties to the first point) on every unimodal curve, plateaus and ties included,
from fewer evaluations; a dip or an inadmissible point makes it evaluate the whole grid."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from taskmerge.experiment.bracket import find_dip, search_first_max
from taskmerge.experiment.selection import best_index


def _search(curve: list[float | None], tolerance: float = 0.0):  # noqa: ANN202 - a Search
    calls: list[int] = []

    def score(index: int) -> float | None:
        calls.append(index)
        return curve[index]

    found = search_first_max(len(curve), score, tolerance)
    assert len(calls) == len(set(calls)) == len(found.scores)  # each point evaluated once
    assert all(found.scores[i] == curve[i] for i in calls)
    return found


def _unimodal(curve: list[int]) -> bool:
    peak = curve.index(max(curve))
    rising = all(a <= b for a, b in itertools.pairwise(curve[: peak + 1]))
    return rising and all(a >= b for a, b in itertools.pairwise(curve[peak:]))


@pytest.mark.parametrize("size", [4, 5, 6, 7, 8])
def test_every_unimodal_curve_of_four_levels_gets_the_grid_choice(size: int) -> None:
    # every curve over {0, 1, 2, 3}: plateaus, ties at the top, maxima at either end
    curves = [list(c) for c in itertools.product(range(4), repeat=size) if _unimodal(list(c))]
    evaluated = 0
    for curve in curves:
        found = _search(curve)
        assert found.chosen == best_index(curve), curve
        assert not found.fallback, curve
        evaluated += len(found.scores)
    assert evaluated < size * len(curves)  # fewer evaluations than the grid over them all


@pytest.mark.parametrize(
    ("size", "peak", "at_most"),
    [(10, 3.3, 5), (10, 6.7, 6), (20, 10.2, 6), (21, 14.6, 6), (25, 16.4, 7), (15, 2.0, 6)],
)
def test_a_smooth_peak_takes_a_few_evaluations(size: int, peak: float, at_most: int) -> None:
    curve = [1.0 - ((i - peak) / size) ** 2 for i in range(size)]
    found = _search(curve)
    assert found.chosen == best_index(curve) == round(peak)
    assert len(found.scores) <= at_most
    assert {found.chosen - 1, found.chosen + 1} <= set(found.scores)  # a verified local max


@pytest.mark.parametrize("size", [4, 10, 25])
def test_maxima_at_either_end_are_certified_by_their_neighbour(size: int) -> None:
    rising = [math.log(1 + i) for i in range(size)]
    found = _search(rising)
    assert found.chosen == size - 1 and {size - 2, size - 1} <= set(found.scores)
    assert len(found.scores) <= 5
    falling = rising[::-1]
    found = _search(falling)
    assert found.chosen == 0 and {0, 1} <= set(found.scores) and len(found.scores) <= 5


def test_a_flat_curve_is_evaluated_whole_and_ties_to_the_first_point() -> None:
    # a plateau at the top may hide a higher point inside it: every point is needed
    found = _search([0.5] * 7)
    assert found.chosen == 0 and found.full_grid and not found.fallback


def test_a_plateau_at_the_top_is_filled_and_the_first_of_it_chosen() -> None:
    curve = [0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5, 0.4, 0.2, 0.1, 0.0, 0.0]
    found = _search(curve)
    assert found.chosen == 3 == best_index(curve)
    assert set(range(2, 8)) <= set(found.scores)


def test_a_hidden_spike_in_a_plateau_is_found() -> None:
    curve = [0.2, 0.2, 0.2, 0.2, 0.9, 0.2, 0.2, 0.2, 0.2]  # unimodal, not strictly
    assert _search(curve).chosen == 4


def test_a_bimodal_curve_falls_back_to_the_grid_choice() -> None:
    curve = [0.3, 0.5, 0.7, 0.6, 0.5, 0.4, 0.5, 0.8, 0.6, 0.2]  # two peaks, a valley between
    found = _search(curve)
    assert found.fallback and found.full_grid and len(found.scores) == len(curve)
    assert found.chosen == best_index(curve) == 7
    assert "not unimodal" in found.note


def test_inadmissible_points_count_below_every_score() -> None:
    # negation past its control threshold: an inadmissible tail, as the grid rule sees it
    curve: list[float | None] = [0.1, 0.3, 0.5, 0.7, 0.8, 0.6, None, None, None, None]
    found = _search(curve)
    assert found.chosen == best_index(curve) == 4
    assert not found.fallback and len(found.scores) < len(curve)
    rising: list[float | None] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, None, None, None, None]
    found = _search(rising)
    assert found.chosen == best_index(rising) == 6 and {5, 7} <= set(found.scores)


@pytest.mark.parametrize("size", [4, 5, 6, 7])
def test_every_unimodal_curve_with_inadmissible_points_gets_the_grid_choice(size: int) -> None:
    levels = [None, 0, 1, 2]

    def low(x: int | None) -> float:
        return -math.inf if x is None else x

    for values in itertools.product(levels, repeat=size):
        curve = list(values)
        ranked = [low(x) for x in curve]
        peak = ranked.index(max(ranked))
        unimodal = all(a <= b for a, b in itertools.pairwise(ranked[: peak + 1])) and all(
            a >= b for a, b in itertools.pairwise(ranked[peak:])
        )
        if unimodal:
            assert _search(curve).chosen == best_index(curve), curve


def test_an_inadmissible_point_between_admissible_ones_is_a_dip() -> None:
    assert find_dip({0: 0.5, 2: -math.inf, 4: 0.7}) == 2


def test_no_admissible_point_chooses_none() -> None:
    found = _search([None] * 6)
    assert found.chosen is None and found.fallback and len(found.scores) == 6


@pytest.mark.parametrize("size", [1, 2, 3])
def test_grids_of_three_points_or_fewer_are_evaluated_whole(size: int) -> None:
    curve = [0.3, 0.1, 0.2][:size]
    found = _search(curve)
    assert found.full_grid and not found.fallback and found.chosen == 0
    assert len(found.scores) == size


def test_a_dip_is_a_point_below_one_on_each_side() -> None:
    assert find_dip({0: 1.0, 3: 0.5, 7: 0.8}) == 3
    assert find_dip({0: 0.1, 3: 0.5, 7: 0.8}) is None
    assert find_dip({0: 0.5, 3: 0.5, 7: 0.5}) is None  # a plateau is no dip


# The demo's TSV-M Val curve (offline demo, 8 tasks, grid 0.1..1.0, 1.2..3.0): its top is
# nearly flat, with a bump of 0.0004 at grid index 13 that a strict unimodal search takes for
# the peak while the grid's best is index 10.
TSVM_DEMO = [
    0.6119, 0.6496, 0.6843, 0.7131, 0.737, 0.7714, 0.7817, 0.7994, 0.8115, 0.8178,
    0.8326, 0.8321, 0.8263, 0.8267, 0.8236, 0.8179, 0.8111, 0.7992, 0.7899, 0.7706,
]  # fmt: skip


def test_a_noise_tolerance_finds_the_grid_choice_behind_a_small_bump() -> None:
    strict = _search(TSVM_DEMO)
    assert strict.chosen == 13 != best_index(TSVM_DEMO) == 10  # the bump hides the top
    tolerant = _search(TSVM_DEMO, tolerance=0.003)
    assert tolerant.chosen == 10 and not tolerant.fallback
    assert len(tolerant.scores) <= len(TSVM_DEMO) // 2
    assert "within 0.003" in tolerant.note


@pytest.mark.parametrize("tolerance", [0.002, 0.01, 0.05])
def test_every_curve_near_a_unimodal_one_gets_the_grid_choice(tolerance: float) -> None:
    # the certificate: any curve within tolerance / 2 of a unimodal curve, ties included
    rng = random.Random(7)
    evaluated = 0
    for trial in range(400):
        size = rng.randint(4, 31)
        peak = rng.uniform(-3, size + 3)
        width = rng.uniform(0.5, 2.0) * size
        unimodal = [round(1 - ((i - peak) / width) ** 2, 3) for i in range(size)]
        if trial % 5 == 0:  # flat tops and plateaus
            unimodal = [min(u, max(unimodal) - 0.01) for u in unimodal]
        curve = [u + rng.uniform(-tolerance / 2, tolerance / 2) for u in unimodal]
        if trial % 7 == 0:  # values on a lattice: ties between the bumps
            curve = [round(c / tolerance) * tolerance for c in unimodal]
        found = _search(curve, tolerance)
        assert found.chosen == best_index(curve), (curve, found)
        assert not found.fallback, curve  # no dip deeper than the tolerance
        evaluated += len(found.scores)
    assert evaluated < 0.8 * sum(range(4, 32)) / 28 * 400  # fewer evaluations than the grids


def test_a_dip_deeper_than_the_tolerance_falls_back_to_the_grid() -> None:
    curve = [0.3, 0.5, 0.7, 0.6, 0.5, 0.4, 0.5, 0.8, 0.6, 0.2]  # two peaks, a valley of 0.3
    found = _search(curve, tolerance=0.05)
    assert found.fallback and found.full_grid and found.chosen == 7
    assert "by more than 0.05" in found.note
    assert find_dip({0: 0.8, 3: 0.79, 7: 0.8}, tolerance=0.02) is None  # within the tolerance
    assert find_dip({0: 0.8, 3: 0.7, 7: 0.8}, tolerance=0.02) == 3
