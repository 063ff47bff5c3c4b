"""``sweep=adaptive`` on the demo pipeline, as a user runs it: ``main.py`` on the golden runs'
home (two demo tasks fine-tuned for one epoch) chooses what ``sweep=grid`` chose there, with the
same Val and Test accuracies, from fewer Val evaluations where the method's curve allows, and
records them in ``results.json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app.conftest import SmallDemo
from tests.golden.record import COMMON

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

#: Golden job -> the arguments that rerun it with sweep=adaptive.
JOBS = {
    "methods/standard/sum": ["method=sum"],
    "methods/standard/ties": ["method=ties"],
    "methods/standard/TSVM": ["method=TSVM"],
    "methods/standard/iso_cts": ["method=iso_cts"],
    "data_free/standard/pcb": ["method=pcb"],
    "data_free/standard/cart": ["method=cart"],
    "lines/standard/sum+lines": ["method=sum", "method.apply_lines=true"],
    "negation/standard/negation": ["method=negation", "method.grid=[0.0,0.25,0.5,0.75,1.0]"],
}


@pytest.fixture(scope="module")
def adaptive(small_demo: SmallDemo, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("adaptive")
    env = dict(os.environ, TASKMERGE_HOME=str(small_demo.home), WANDB_MODE="offline",
               HF_HUB_OFFLINE="1")  # fmt: skip
    found = {}
    for label, args in JOBS.items():
        where = out / label.replace("/", "-")
        proc = subprocess.run(
            [sys.executable, str(ROOT / "main.py"), *args, *COMMON, "sweep=adaptive",
             f"hydra.run.dir={where}"],
            cwd=out, env=env, capture_output=True, text=True, timeout=1200,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        found[label] = json.loads((where / "results.json").read_text())
    return found


@pytest.mark.parametrize("label", list(JOBS))
def test_adaptive_chooses_what_the_grid_chose(
    adaptive: dict, small_demo: SmallDemo, label: str
) -> None:
    got, grid = adaptive[label], small_demo.results[label]
    assert got["hyperparameters"] == grid["hyperparameters"]
    for split in ("val", "test"):
        for task, values in grid[split].items():
            assert got[split][task] == pytest.approx(values, abs=1e-12), (split, task)
    evaluations = got["evaluations"]
    assert evaluations["sweep"] == "adaptive"
    assert evaluations["grid_points"] == len(grid["sweep"]) == grid["evaluations"]["candidates"]
    assert evaluations["candidates"] == len(got["sweep"]) <= evaluations["grid_points"]
    # every evaluated point is the grid's point, with the grid's score
    scores = {json.dumps(p["hyperparameters"]): p["val/selection_score"] for p in grid["sweep"]}
    for point in got["sweep"]:
        assert point["val/selection_score"] == scores[json.dumps(point["hyperparameters"])]


def test_adaptive_evaluates_fewer_points_over_the_jobs(adaptive: dict) -> None:
    spent = sum(r["evaluations"]["candidates"] for r in adaptive.values())
    grid = sum(r["evaluations"]["grid_points"] for r in adaptive.values())
    assert spent < 0.75 * grid, (spent, grid)
