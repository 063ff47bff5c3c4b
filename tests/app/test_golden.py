"""Golden numbers of the demo: every entry point's results on two demo tasks, unchanged.

``tests/golden/record.py`` ran the command lines of its ``RUNS`` before the package redesign and
stored what they gave in ``tests/golden/demo_small.json``; the session's golden runs
(``small_demo``) run them again, and this test requires the same chosen hyperparameters, the same
Test and Val accuracies of every task, the same Val selection curve and the same
``results.json`` keys.
"""

from __future__ import annotations

import json

import pytest

from tests.app.conftest import SmallDemo
from tests.golden.record import GOLDEN, summary

pytestmark = pytest.mark.slow


def test_every_golden_run_is_reproduced(small_demo: SmallDemo) -> None:
    golden = json.loads(GOLDEN.read_text())
    fresh = {label: summary(results) for label, results in small_demo.results.items()}
    assert sorted(fresh) == sorted(golden)
    for label, expected in golden.items():
        got = fresh[label]
        assert got["keys"] == expected["keys"], label
        assert got["hyperparameters"] == expected["hyperparameters"], label
        for field in ("test", "val"):
            assert got[field] == pytest.approx(expected[field], abs=1e-9), (label, field)
        for task, accuracies in expected["finetuned"].items():
            assert got["finetuned"][task] == pytest.approx(accuracies, abs=1e-9), (label, task)
        assert len(got["curve"]) == len(expected["curve"]), label
        for a, b in zip(got["curve"], expected["curve"], strict=True):
            assert (a is None and b is None) or a == pytest.approx(b, abs=1e-9), label
