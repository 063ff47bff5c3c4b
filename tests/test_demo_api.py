"""The offline demo from Python (``taskmerge.load_demo``), checked against the pieces it wraps:
its evaluation is the evaluator's, its checkpoints the store's, a quick fine-tuning changes
the weights and stays in memory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import taskmerge
from taskmerge.errors import ConfigError


@pytest.fixture
def demo_home(tmp_path: Path, fabricated_home: Path, tiny_cache: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(fabricated_home, home)
    return home


def test_load_demo_reads_the_checkpoints_and_evaluates(demo_home: Path, one_thread) -> None:  # noqa: ANN001
    demo = taskmerge.load_demo(["Digits", "Colors"], home=demo_home)
    before = {k: v.clone() for k, v in demo.pretrained.state_dict().items()}
    finetuned = demo.finetuned()
    assert "checkpoints" in demo.finetuned_from
    store = demo.store()
    for task in ("Digits", "Colors"):
        assert all(torch.equal(finetuned[task][k], v) for k, v in store.load(task).items())
    merged = taskmerge.merge(demo.pretrained, finetuned, method="sum", scaling_coef=0.3)
    top1 = demo.evaluate(merged, "val")
    evaluator = demo.evaluator
    assert top1 == {t: evaluator.accuracy(merged.state_dict(), t, "val") for t in demo.tasks}
    each = demo.evaluate_each(finetuned, "test")
    assert each == {t: evaluator.accuracy(finetuned[t], t, "test") for t in demo.tasks}
    assert all(0.0 <= v <= 1.0 for v in [*top1.values(), *each.values()])
    assert all(torch.equal(v, before[k]) for k, v in demo.pretrained.state_dict().items())


def test_an_unknown_task_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Digitz"):
        taskmerge.load_demo(["Digitz"], home=tmp_path)
