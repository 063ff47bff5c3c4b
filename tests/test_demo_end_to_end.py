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

from taskmerge.merging.registry import method_names

ROOT = Path(__file__).resolve().parents[1]
REDUCED: list[str] = []  # the full demo: its margins are what the assertions check


def _run(
    args: list[str], home: Path, cwd: Path, script: str = "main.py"
) -> subprocess.CompletedProcess:
    env = dict(os.environ, TASKMERGE_HOME=str(home), WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


#: Run in the first multirun, on every demo task (their margins are checked).
BASELINES = ["zeroshot", "single_task", "sum", "average"]
#: Every other registered method runs once on the demo (its math is checked in
#: test_merging_methods.py; here: it runs end to end and gives sane numbers). Negation is run
#: on its own below, with a coarser grid.
MERGERS = [m for m in method_names() if m not in {*BASELINES, "negation"}]
NEGATION_GRID = "[0.0,0.25,0.5,0.75,1.0]"
#: The other methods run on half of the demo tasks (they are checked for sanity, not margins).
SUBSET = ["Digits", "Colors", "Position", "Sizes"]
SUBSET_OVERRIDE = f"tasks.names=[{','.join(SUBSET)}]"


def _results(base: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(base.rglob("results.json"))]


def _subset_zeroshot(demo: dict) -> float:
    """Mean normalized zero-shot Test accuracy over the SUBSET tasks."""
    test = demo["multi"]["zeroshot"]["test"]
    return sum(test[t]["normalized_top1"] for t in SUBSET) / len(SUBSET)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run `python main.py` (fine-tunes the demo checkpoints), then a multirun of the methods."""
    home = tmp_path_factory.mktemp("home")
    cwd = tmp_path_factory.mktemp("cwd")
    _run([*REDUCED, "hydra.run.dir=" + str(cwd / "single")], home, cwd)
    _run(
        [
            "-m",
            f"method={','.join(BASELINES)}",
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
            SUBSET_OVERRIDE,
            "logger=none",
            "hydra.sweep.dir=" + str(cwd / "mergers"),
        ],
        home,
        cwd,
    )
    # task negation (a coarser grid than the reference's 21 points, to keep this short) and
    # LiNeS on task arithmetic
    negation = ["method=negation", f"method.grid={NEGATION_GRID}", SUBSET_OVERRIDE, "logger=none"]
    _run([*negation, "hydra.run.dir=" + str(cwd / "neg")], home, cwd)
    lines = ["method=sum", "method.apply_lines=true", SUBSET_OVERRIDE, "logger=none"]
    _run([*lines, "hydra.run.dir=" + str(cwd / "lines")], home, cwd)
    by_method = {r["method"]: r for r in _results(cwd / "multi")}
    mergers = {r["method"]: r for r in _results(cwd / "mergers")}
    mergers.update({r["method"]: r for d in ("neg", "lines") for r in _results(cwd / d)})
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
        metrics = json.loads((base / task / "metrics.json").read_text())["forwards"]["nonlinear"]
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
    # merging means something: task arithmetic closes at least 40% of the zero-shot ->
    # fine-tuned gap (ViT-B-32 on the 8 real tasks: 49%; this demo measured 53%)
    assert (merged["avg"]["normalized_top1"] - zs_norm) / (1 - zs_norm) >= 0.4
    assert zs_norm < runs["average"]["test"]["avg"]["normalized_top1"] < 1.0
    target = runs["single_task"]["tasks"][0]
    assert runs["single_task"]["test"][target]["normalized_top1"] == pytest.approx(1.0)


@pytest.mark.slow
def test_each_job_has_its_own_wandb_run(demo: dict) -> None:
    runs = list((Path(demo["cwd"]) / "multi").glob("*/wandb/offline-run-*"))
    assert len(runs) == 4


@pytest.mark.slow
def test_every_merge_method_runs_on_the_demo(demo: dict) -> None:
    runs = {m: r for m, r in demo["mergers"].items() if m in MERGERS}
    assert set(runs) == set(MERGERS)
    zeroshot = _subset_zeroshot(demo)
    for name, results in runs.items():
        assert results["complete"] is True, name
        assert 0.0 < results["test"]["avg"]["normalized_top1"] <= 1.1, name
        assert results["test"]["avg"]["normalized_top1"] > zeroshot - 0.1, name
    lambdas = runs["tall_mask"]["hyperparameters"]["tall_mask_lambda"]
    assert set(lambdas) == set(runs["tall_mask"]["tasks"])  # chosen per task on its own Val
    assert set(lambdas.values()) <= {0.2, 0.3, 0.4, 0.5, 0.6}


@pytest.mark.slow
def test_lines_on_the_demo(demo: dict) -> None:
    results = demo["mergers"]["sum+lines"]
    depth = json.loads(
        (ROOT / "src/taskmerge/models/model_configs/taskmerge-tiny.json").read_text()
    )["vision_cfg"]["layers"]
    assert results["report"]["lines"]["num_blocks"] == depth  # read from the model
    assert results["report"]["lines"]["block_path"] == "transformer.resblocks"
    tasks = len(results["tasks"])
    # task arithmetic: alpha = (||sum tau||_1 / ||sum tau||_1) / T = 1 / T
    assert [c["hyperparameters"]["alpha"] for c in results["sweep"]] == pytest.approx(
        [1 / tasks] * 10
    )
    betas = [c["hyperparameters"]["beta"] for c in results["sweep"]]
    assert betas == pytest.approx([0.1 * i for i in range(1, 11)])
    assert results["hyperparameters"]["beta"] in betas
    assert results["tasks"] == SUBSET
    assert _subset_zeroshot(demo) < results["test"]["avg"]["normalized_top1"] <= 1.1


@pytest.mark.slow
def test_negation_on_the_demo(demo: dict) -> None:
    results = demo["mergers"]["negation"]
    report, target = results["report"], results["tasks"][0]
    assert report["target_task"] == target and report["control_tasks"] == SUBSET[1:]
    val = report["val"]
    assert val["control/top1"] >= 0.95 * val["control/zeroshot_top1"]
    assert val["target/top1"] <= results["zeroshot"][target]["val_top1"]  # 0.0 is on the grid
    assert report["test"]["target/drop_from_finetuned"] > 0.05  # the fine-tuning is undone
    assert report["test"]["target/top1"] == results["test"][target]["top1"]
    assert results["hyperparameters"]["scaling_coef"] in json.loads(NEGATION_GRID)
    admissible = [c for c in results["sweep"] if c["val/selection_score"] is not None]
    best = min(c["val/target/top1"] for c in admissible)
    assert val["target/top1"] == best  # the reference rule: lowest admissible target accuracy


# --------------------------------------------------------------------------- fine-tuning modes
PAIR = ["Digits", "Colors"]
PAIR_OVERRIDE = f"DATASETS=[{','.join(PAIR)}]"


@pytest.fixture(scope="module")
def modes(demo: dict) -> dict:
    """Linear and attention-only fine-tuning (one epoch, two tasks) merged by sum and TSVM,
    post-hoc linearization of the standard checkpoints, and the disentanglement analysis."""
    home, cwd = demo["home"], demo["cwd"]
    quick = [PAIR_OVERRIDE, "train.epochs_scale=0.34", "logger=none"]
    _run(["-m", "finetuning=linear,attention", "method=sum,TSVM", *quick,
          "hydra.sweep.dir=" + str(cwd / "modes")], home, cwd)  # fmt: skip
    _run(["finetuning=standard", "eval_forward=linear", "method=sum", PAIR_OVERRIDE,
          "logger=none", "hydra.run.dir=" + str(cwd / "posthoc")], home, cwd)  # fmt: skip
    _run([PAIR_OVERRIDE, "analysis.modes=[standard,linear,standard@linear]",
          "analysis.grid_points=5", "logger=none", "hydra.run.dir=" + str(cwd / "analysis")],
         home, cwd, script="analyze.py")  # fmt: skip
    runs = {(r["finetuning"], r["method"]): r for r in _results(cwd / "modes")}
    return {
        "home": home,
        "runs": runs,
        "posthoc": _results(cwd / "posthoc")[0],
        "analysis": json.loads((cwd / "analysis" / "disentanglement.json").read_text()),
        "figure": cwd / "analysis" / "disentanglement.png",
    }


@pytest.mark.slow
def test_every_mode_and_method_cell_runs(modes: dict) -> None:
    assert set(modes["runs"]) == {(m, n) for m in ("linear", "attention") for n in ("sum", "TSVM")}
    for (mode, _), results in modes["runs"].items():
        assert results["eval_forward"] == ("linear" if mode == "linear" else "nonlinear")
        assert results["complete"] is True and results["tasks"] == PAIR
        assert 0.3 < results["test"]["avg"]["normalized_top1"] <= 1.1


@pytest.mark.slow
def test_fine_tuned_accuracy_is_measured_through_each_forward(modes: dict) -> None:
    base = Path(modes["home"]) / "checkpoints" / "taskmerge-tiny"
    linear = json.loads((base / "linear" / "Digits" / "metrics.json").read_text())
    assert set(linear["forwards"]) == {"linear"}
    standard = json.loads((base / "standard" / "Digits" / "metrics.json").read_text())
    assert set(standard["forwards"]) == {"nonlinear", "linear"}  # the post-hoc cast added one
    posthoc = modes["posthoc"]
    assert (posthoc["finetuning"], posthoc["eval_forward"]) == ("standard", "linear")
    assert (
        posthoc["finetuned"]["Digits"]["test_top1"] == standard["forwards"]["linear"]["test_top1"]
    )
    run = modes["runs"][("linear", "sum")]
    assert run["finetuned"]["Digits"]["test_top1"] == linear["forwards"]["linear"]["test_top1"]


@pytest.mark.slow
def test_disentanglement_analysis_on_the_demo(modes: dict) -> None:
    analysis = modes["analysis"]
    labels = [r["label"] for r in analysis["results"]]
    assert labels == ["standard", "linear", "standard (linear forward)"]
    for result in analysis["results"]:
        grid, xi = result["grid"], result["xi"]
        assert len(grid) == 5 and len(xi) == 5 and xi[2][2] == 0  # a1 = a2 = 0
        assert 0 <= result["mean_xi"] <= 2
    assert modes["figure"].is_file() and modes["figure"].stat().st_size > 10_000


# --------------------------------------------------------------------------- reuse and launchers
@pytest.mark.slow
def test_a_rerun_reuses_complete_results_and_force_redoes_them(demo: dict) -> None:
    home, cwd = demo["home"], demo["cwd"]
    args = ["method=ties", SUBSET_OVERRIDE, "logger=none"]
    _run([*args, "hydra.run.dir=" + str(cwd / "rerun")], home, cwd)
    rerun = _results(cwd / "rerun")[0]
    first = demo["mergers"]["ties"]
    assert rerun["reused"]["key"] == first["job_key"]
    assert rerun["test"] == first["test"] and rerun["sweep"] == first["sweep"]
    _run([*args, "force=true", "hydra.run.dir=" + str(cwd / "forced")], home, cwd)
    forced = _results(cwd / "forced")[0]
    assert "reused" not in forced and forced["test"] == first["test"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_launchers_give_the_serial_results(demo: dict, launcher: str) -> None:
    pytest.importorskip(f"hydra_plugins.hydra_{launcher.split('_')[0]}_launcher")
    home, cwd = demo["home"], demo["cwd"]
    out = cwd / f"launcher-{launcher}"
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    _run(
        ["-m", f"hydra/launcher={launcher}", *extra, "method=ties,TSVM", SUBSET_OVERRIDE,
         "logger=none", "force=true", "hydra.sweep.dir=" + str(out)],
        home, cwd,
    )  # fmt: skip
    parallel = {r["method"]: r for r in _results(out)}
    assert set(parallel) == {"ties", "TSVM"}
    for method, results in parallel.items():
        assert results["test"] == demo["mergers"][method]["test"], method


# --------------------------------------------------------------------------- determinism, faults
@pytest.mark.slow
def test_two_runs_give_identical_results(demo: dict) -> None:
    home, cwd = demo["home"], demo["cwd"]
    runs = []
    for name in ("det-a", "det-b"):
        args = ["method=consensus", SUBSET_OVERRIDE, "logger=none", "force=true"]
        _run([*args, "hydra.run.dir=" + str(cwd / name)], home, cwd)
        results = _results(cwd / name)[0]
        results.pop("seconds")
        runs.append(results)
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_a_sweep_killed_midway_leaves_nothing_taken_for_finished(demo: dict) -> None:
    import signal

    home, cwd = demo["home"], demo["cwd"]
    store = Path(home) / "cache" / "results"
    before = set(store.glob("*.json"))
    args = ["method=TSVM", SUBSET_OVERRIDE, "logger=none", "force=true"]
    env = dict(os.environ, TASKMERGE_HOME=str(home), WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    run_dir = cwd / "killed-sweep"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), *args, f"hydra.run.dir={run_dir}"],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen = ""
    while proc.poll() is None and "TSVM: Val: 2it" not in seen:
        seen += proc.stderr.read(64)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (run_dir / "results.json").exists()
    assert set(store.glob("*.json")) == before  # nothing a rerun could reuse
    _run([*args[:-1], f"hydra.run.dir={cwd / 'after-kill'}"], home, cwd)
    rerun = _results(cwd / "after-kill")[0]
    assert rerun["complete"] is True and rerun["test"] == demo["mergers"]["TSVM"]["test"]
