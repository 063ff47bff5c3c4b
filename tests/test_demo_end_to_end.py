"""The offline demo end to end, as a user runs it: main.py, then a multirun over the methods.

A reduced but real run: the shipped tiny CLIP, the generated tasks, real fine-tuning (fewer
epochs), the Val sweep, Test, the results JSON and the offline W&B runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REDUCED: list[str] = []  # the full demo: its margins are what the assertions check


def _run(args: list[str], home: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TASKMERGE_HOME=str(home), WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


#: The other merge methods, run once each on the demo (their math is checked in
#: test_merging_methods.py; here: they run end to end and give sane numbers).
MERGERS = ["ties", "TSVM", "TSVM_2", "consensus", "tall_mask", "mag_masking", "TSVC"]


def _results(base: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(base.rglob("results.json"))]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run `python main.py` (fine-tunes the demo checkpoints), then a multirun of the methods."""
    home = tmp_path_factory.mktemp("home")
    cwd = tmp_path_factory.mktemp("cwd")
    _run([*REDUCED, "hydra.run.dir=" + str(cwd / "single")], home, cwd)
    _run(
        [
            "-m",
            "method=zeroshot,single_task,sum,average",
            *REDUCED,
            "hydra.sweep.dir=" + str(cwd / "multi"),
        ],
        home,
        cwd,
    )
    _run(
        [
            "-m",
            f"method={','.join(MERGERS)}",
            "logger=none",
            "hydra.sweep.dir=" + str(cwd / "mergers"),
        ],
        home,
        cwd,
    )
    by_method = {r["method"]: r for r in _results(cwd / "multi")}
    mergers = {r["method"]: r for r in _results(cwd / "mergers")}
    return {
        "home": home,
        "cwd": cwd,
        "single": _results(cwd / "single")[0],
        "multi": by_method,
        "mergers": mergers,
    }


@pytest.mark.slow
def test_results_json_is_complete(demo: dict) -> None:
    results = demo["single"]
    assert results["complete"] is True and results["method"] == "sum"
    assert results["model"] == "taskmerge-tiny" and len(results["tasks"]) == 8
    assert [c["hyperparameters"]["scaling_coef"] for c in results["sweep"]] == pytest.approx(
        [0.1 * i for i in range(1, 11)]
    )
    chosen = results["hyperparameters"]["scaling_coef"]
    best = max(c["val/avg/normalized_top1"] for c in results["sweep"])
    first_best = next(c for c in results["sweep"] if c["val/avg/normalized_top1"] == best)
    assert first_best["hyperparameters"]["scaling_coef"] == chosen
    for task in results["tasks"]:
        row = results["test"][task]
        assert row["normalized_top1"] == pytest.approx(row["top1"] / row["finetuned_top1"])
    assert {"torch", "open_clip_torch", "git_commit"} <= set(results["versions"])
    assert results["config"]["method"]["_target_"].endswith("TaskArithmetic")
    run_dir = Path(demo["cwd"]) / "single"
    assert (run_dir / "sweep.png").is_file()
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.slow
def test_checkpoints_are_safetensors_in_the_documented_layout(demo: dict) -> None:
    base = Path(demo["home"]) / "checkpoints" / "taskmerge-tiny" / "standard"
    for task in demo["single"]["tasks"]:
        assert (base / task / "finetuned.safetensors").is_file()
        metrics = json.loads((base / task / "metrics.json").read_text())
        assert 0 < metrics["val_top1"] <= 1 and 0 < metrics["test_top1"] <= 1


@pytest.mark.slow
def test_finetuning_beats_zeroshot_and_merging_lies_between(demo: dict) -> None:
    runs = demo["multi"]
    assert set(runs) == {"zeroshot", "single_task", "sum", "average"}
    zeroshot, merged = runs["zeroshot"]["test"], runs["sum"]["test"]
    for task in runs["zeroshot"]["tasks"]:
        assert zeroshot[task]["finetuned_top1"] > zeroshot[task]["top1"] + 0.05, task
    zs_norm = zeroshot["avg"]["normalized_top1"]
    assert zs_norm < merged["avg"]["normalized_top1"] < 1.0
    assert zs_norm < runs["average"]["test"]["avg"]["normalized_top1"] < 1.0
    target = runs["single_task"]["tasks"][0]
    assert runs["single_task"]["test"][target]["normalized_top1"] == pytest.approx(1.0)


@pytest.mark.slow
def test_each_job_has_its_own_wandb_run(demo: dict) -> None:
    runs = list((Path(demo["cwd"]) / "multi").glob("*/wandb/offline-run-*"))
    assert len(runs) == 4


@pytest.mark.slow
def test_every_merge_method_runs_on_the_demo(demo: dict) -> None:
    runs = demo["mergers"]
    assert set(runs) == set(MERGERS)
    zeroshot = demo["multi"]["zeroshot"]["test"]["avg"]["normalized_top1"]
    for name, results in runs.items():
        assert results["complete"] is True, name
        assert 0.0 < results["test"]["avg"]["normalized_top1"] <= 1.1, name
        assert results["test"]["avg"]["normalized_top1"] > zeroshot - 0.1, name
    lambdas = runs["tall_mask"]["hyperparameters"]["tall_mask_lambda"]
    assert set(lambdas) == set(runs["tall_mask"]["tasks"])  # chosen per task on its own Val
    assert set(lambdas.values()) <= {0.2, 0.3, 0.4, 0.5, 0.6}
