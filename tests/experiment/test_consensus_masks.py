"""Consensus counts the TALL masks each task chose on its own Val (the reference's
``construct_consensus_mask``): from a recorded ``tall_mask`` run, or from running that per-task
selection first; the result equals Consensus given those lambdas explicitly."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from taskmerge.experiment.run import make_references, run_merge
from taskmerge.merging.build import build_method
from taskmerge.vectors.task_vector import TaskVector

TASKS = ["A", "B", "C"]


class SumReadout:
    """Accuracy of a task: how close the merged ``w``'s sum is to that task's target."""

    task_names = TASKS
    targets = {"A": 2.0, "B": -1.0, "C": 0.5}

    def accuracy(self, state: dict, task: str, split: str) -> float:
        return 1.0 / (1.0 + abs(float(state["w"].sum()) - self.targets[task]))


def _setup() -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(0)
    vectors = {t: TaskVector({"w": torch.randn(64, generator=g)}) for t in TASKS}
    return {"w": torch.zeros(64)}, vectors


def _references():
    finetuned = dict.fromkeys(TASKS, {"val_top1": 1.0, "test_top1": 1.0})
    return make_references(TASKS, finetuned, None)


def test_consensus_uses_the_lambdas_a_tall_mask_run_chose(tmp_path: Path) -> None:
    pretrained, vectors = _setup()
    tall = build_method("tall_mask", {"mask_dir": str(tmp_path)}).bind(None, TASKS)
    outcome = run_merge(tall, pretrained, vectors, SumReadout(), _references())
    chosen = outcome.chosen.hyperparameters["tall_mask_lambda"]
    assert len(set(chosen.values())) > 1  # the tasks chose different lambdas
    [record] = tmp_path.glob("*chosen*.json")
    assert json.loads(record.read_text()) == chosen

    options = {"mask_dir": str(tmp_path), "tall_mask_lambda": "chosen"}
    from_record = build_method("consensus", options).bind(None, TASKS)
    explicit = build_method("consensus", {"tall_mask_lambda": chosen, "save_mask": False})
    assert torch.equal(from_record.merge(vectors).vector["w"], explicit.merge(vectors).vector["w"])
    assert from_record.load_mask  # the masks that run saved were read, not rebuilt


def test_without_a_recorded_run_the_per_task_selection_runs_first(tmp_path: Path) -> None:
    pretrained, vectors = _setup()
    consensus = build_method("consensus", {"tall_mask_lambda": "chosen", "mask_dir": str(tmp_path)})
    consensus.bind(None, TASKS)
    run_merge(consensus, pretrained, vectors, SumReadout(), _references())
    tall = build_method("tall_mask", {"save_mask": False}).bind(None, TASKS)
    expected = run_merge(tall, pretrained, vectors, SumReadout(), _references())
    assert consensus.tall_mask_lambda == expected.chosen.hyperparameters["tall_mask_lambda"]
    assert list(tmp_path.glob("*chosen*.json"))  # recorded for the next run
