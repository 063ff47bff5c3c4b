"""Golden numbers of the demo: every entry point's results on three demo tasks, unchanged.

``tests/golden/record.py`` ran the command lines of its ``RUNS`` before the package redesign and
stored what they gave in ``tests/golden/demo_small.json``; this test runs them again and
requires the same chosen hyperparameters, the same Test and Val accuracies of every task, the
same Val selection curve and the same ``results.json`` keys.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "golden"))
from record import GOLDEN, run_all  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("golden")
    return run_all(tmp / "home", tmp)


def test_every_golden_run_is_reproduced(fresh: dict) -> None:
    golden = json.loads(GOLDEN.read_text())
    assert sorted(fresh) == sorted(golden)
    for label, expected in golden.items():
        got = fresh[label]
        assert got["keys"] == expected["keys"], label
        assert got["hyperparameters"] == expected["hyperparameters"], label
        for field in ("test", "val", "finetuned"):
            assert got[field] == pytest.approx(expected[field], abs=1e-9), (label, field)
        assert len(got["curve"]) == len(expected["curve"]), label
        for a, b in zip(got["curve"], expected["curve"], strict=True):
            assert (a is None and b is None) or a == pytest.approx(b, abs=1e-9), label
