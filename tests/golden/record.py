"""Record the golden demo numbers that ``tests/app/test_golden.py`` keeps checking.

    python tests/golden/record.py            # rewrites tests/golden/demo_small.json

Runs the command lines of :data:`RUNS` (the real entry points, in subprocesses, in a fresh
TASKMERGE_HOME) on two demo tasks fine-tuned for one epoch, and stores, for every run, the
chosen hyperparameters, every task's Test and Val top-1, the Val selection curve and the set of
``results.json`` keys. Re-record only when a change is meant to move the numbers, and say by how
much in the commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("demo_small.json")
TASKS = "DATASETS=[Digits,Colors]"
COMMON = [TASKS, "train.epochs_scale=0.34", "logger=none"]
METHODS = ("zeroshot,single_task,sum,average,ties,mag_masking,tall_mask,consensus,TSVM,TSVM_2,"
           "TSVC,iso_c,iso_cts")  # fmt: skip
#: name -> the command line's arguments (each a main.py multirun or run).
RUNS: dict[str, list[str]] = {
    "methods": ["-m", f"method={METHODS}"],
    "lines": ["-m", "method=sum,single_task", "method.apply_lines=true"],
    "negation": ["method=negation", "method.grid=[0.0,0.25,0.5,0.75,1.0]"],
    "modes": ["-m", "finetuning=linear,attention", "method=sum"],
    "posthoc": ["finetuning=standard", "eval_forward=linear", "method=sum"],
}
#: Issue 20, the data-free methods since the seeds: one multirun of their own; WUDI (400 Adam
#: steps per matrix by default) alone with fewer steps, to keep the golden runs short.
DATA_FREE = "model_stock,cart,emr,dare,dare_ties,breadcrumbs,magmax,pcb"
RUNS["data_free"] = ["-m", f"method={DATA_FREE}"]
RUNS["wudi"] = ["method=wudi", "method.iter_num=40"]


def keys_of(value: Any, prefix: str = "") -> list[str]:
    """Every key path of a results.json (lists: their first element; sweeps: their keys)."""
    if isinstance(value, dict):
        out = []
        for key, item in value.items():
            if key in ("config", "versions"):  # their contents are the config / environment
                out.append(f"{prefix}{key}")
                continue
            out += [f"{prefix}{key}", *keys_of(item, f"{prefix}{key}.")]
        return out
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return keys_of(value[0], f"{prefix}[].")
    return []


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """What the golden file keeps of one results.json."""
    return {
        "method": results["method"],
        "finetuning": results.get("finetuning"),
        "eval_forward": results.get("eval_forward"),
        "hyperparameters": results["hyperparameters"],
        "test": {t: v["top1"] for t, v in results["test"].items() if t != "avg"},
        "val": {t: v["top1"] for t, v in results["val"].items() if t != "avg"},
        "finetuned": results["finetuned"],
        "curve": [point.get("val/selection_score") for point in results["sweep"]],
        "keys": sorted(set(keys_of(results))),
    }


def run_all(home: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Run every command of :data:`RUNS` (home ``home``, outputs under ``out/<run name>``);
    return label -> the complete ``results.json``."""
    env = dict(os.environ, TASKMERGE_HOME=str(home), WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    found: dict[str, dict[str, Any]] = {}
    for name, args in RUNS.items():
        where = out / name
        target = "hydra.sweep.dir" if "-m" in args else "hydra.run.dir"
        proc = subprocess.run(
            [sys.executable, str(ROOT / "main.py"), *args, *COMMON, f"{target}={where}"],
            env=env, capture_output=True, text=True, timeout=1800, cwd=out,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed: {proc.stderr[-2000:]}")
        for path in sorted(where.rglob("results.json")):
            results = json.loads(path.read_text())
            label = f"{name}/{results['finetuning']}/{results['method']}"
            found[label] = results
    return found


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        found = {label: summary(r) for label, r in run_all(Path(tmp) / "home", Path(tmp)).items()}
    GOLDEN.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    print(f"{len(found)} runs -> {GOLDEN}")


if __name__ == "__main__":
    main()
