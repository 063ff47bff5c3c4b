"""Reusing finished work: job keys, stored results, the fine-tuning lock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch

from taskmerge.io.tensors import save_state_dict
from taskmerge.store.locks import task_lock
from taskmerge.store.results import ResultStore, checkpoint_fingerprint, job_key


def _checkpoints(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for task in ("A", "B"):
        paths[task] = tmp_path / task / "finetuned.safetensors"
        save_state_dict({"w": torch.full((2,), float(ord(task)))}, paths[task], {"task": task})
    return paths


def test_job_key_depends_on_config_and_checkpoints_only(tmp_path: Path) -> None:
    paths = _checkpoints(tmp_path)
    config = {"method": {"_target_": "x.Sum", "grid": [0.1, 0.2]}, "logger": {"mode": "offline"}}
    key = job_key(config, paths)
    assert key == job_key({**config, "logger": {"mode": "online"}, "force": True}, paths)
    assert key != job_key({**config, "method": {"_target_": "x.Sum", "grid": [0.1]}}, paths)
    before = checkpoint_fingerprint(paths["B"])
    time.sleep(0.01)
    save_state_dict({"w": torch.zeros(2)}, paths["B"], {"task": "B"})  # re-fine-tuned
    assert checkpoint_fingerprint(paths["B"]) != before and job_key(config, paths) != key


def test_only_complete_results_are_stored_and_found(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results")
    assert store.get("k") is None
    store.put("k", {"complete": False, "test": {}})
    assert store.get("k") is None and not store.path("k").exists()
    complete = {"complete": True, "method": "sum", "tasks": ["A"], "hyperparameters": {},
                "val": {"avg": {"top1": 0.4}}, "sweep": [],
                "test": {"avg": {"top1": 0.5, "normalized_top1": 0.6}}}  # fmt: skip
    store.put("k", complete)
    assert store.get("k")["test"]["avg"]["top1"] == 0.5
    store.put("m", {"complete": True, "test": {"avg": {"top1": 0.5}}})  # an older layout
    assert store.get("m") is None
    store.path("j").write_text("{truncated")  # a killed writer can't leave this (atomic), but
    assert store.get("j") is None  # a damaged file is never taken for a result


def test_the_second_job_waits_for_the_lock_then_reuses(tmp_path: Path) -> None:
    checkpoint = tmp_path / "Task" / "finetuned.safetensors"
    events: list[str] = []

    def job(name: str) -> None:
        with task_lock(checkpoint.parent):
            if checkpoint.is_file():
                events.append(f"{name} reused")
                return
            events.append(f"{name} trains")
            time.sleep(0.3)
            save_state_dict({"w": torch.ones(1)}, checkpoint)
            events.append(f"{name} wrote")

    first = threading.Thread(target=job, args=("first",))
    first.start()
    time.sleep(0.05)
    second = threading.Thread(target=job, args=("second",))
    second.start()
    first.join()
    second.join()
    assert events == ["first trains", "first wrote", "second reused"]
