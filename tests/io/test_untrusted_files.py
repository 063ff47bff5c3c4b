"""A file that would run code when unpickled is refused by every path that reads checkpoints,
heads, masks or training states, and what it asked for never happens."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import taskmerge
from taskmerge.data.task_lists import get_task_spec
from taskmerge.errors import CheckpointError
from taskmerge.finetune.state import load_training_state
from taskmerge.interop.published_masks import read_tall_mask_file
from taskmerge.interop.readers import (
    read_head,
    read_state_dict,
    read_tall_masks_checkpoint,
    read_task_vectors_checkpoint,
)
from taskmerge.io.safe_pickle import load_legacy
from taskmerge.io.tensors import load_state_dict
from taskmerge.models.clip import resolve_pretrained
from taskmerge.models.heads import cached_zeroshot_head
from taskmerge.vectors.task_vector import TaskVector
from tests.helpers.reference_files import RunsCode


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """A torch.save file whose unpickling would create ``marker``, and the marker's path."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": RunsCode(os.system, f"touch {marker}")}, path)
    return path, marker


READERS = {
    "checkpoints.load_state_dict": load_state_dict,
    "TaskVector.from_checkpoints": lambda p: TaskVector.from_checkpoints({"w": torch.zeros(2)}, p),
    "merge(finetuned=path)": lambda p: taskmerge.merge(
        {"w": torch.zeros(2)}, {"a": p}, "sum", scaling_coef=1.0
    ),
    "merge(pretrained=path)": lambda p: taskmerge.merge(
        p, {"a": {"w": torch.ones(2)}}, "sum", scaling_coef=1.0
    ),
    "model.pretrained=path": lambda p: resolve_pretrained("ViT-B-32", str(p)),
    "legacy.load_legacy": load_legacy,
    "legacy.read_head": read_head,
    "legacy.read_state_dict": read_state_dict,
    "legacy.read_tall_masks_checkpoint": read_tall_masks_checkpoint,
    "legacy.read_task_vectors_checkpoint": read_task_vectors_checkpoint,
}


@pytest.mark.parametrize("reader", list(READERS))
def test_every_checkpoint_reader_refuses_code(evil: tuple[Path, Path], reader: str) -> None:
    path, marker = evil
    with pytest.raises(CheckpointError) as info:
        READERS[reader](path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()


def test_mask_files_and_training_states_refuse_code(
    evil: tuple[Path, Path], tmp_path: Path
) -> None:
    path, marker = evil
    npy = tmp_path / "TALL_mask_2task.npy"
    np.save(npy, np.array([RunsCode(os.system, f"touch {marker}")], dtype=object))
    with pytest.raises(CheckpointError):
        read_tall_mask_file(npy, {"visual.w": torch.zeros(2)})
    assert load_training_state(path, expected="anything") is None  # refused: start over
    assert not marker.exists()


def test_a_cached_head_that_is_not_safetensors_is_rebuilt_never_run(
    evil: tuple[Path, Path],
    tmp_path: Path,
    tiny_clip,
    caplog: pytest.LogCaptureFixture,  # noqa: ANN001
) -> None:
    path, marker = evil
    head = tmp_path / "heads" / "Digits.safetensors"
    head.parent.mkdir()
    head.write_bytes(path.read_bytes())
    spec = get_task_spec("Digits")
    rebuilt = cached_zeroshot_head(tiny_clip, spec, head)
    assert not marker.exists()  # the pickle never ran
    assert "unreadable" in caplog.text and "rebuilt from the text tower" in caplog.text
    assert rebuilt.weight.shape[0] == len(spec.classnames)
    again = cached_zeroshot_head(tiny_clip, spec, head)  # the rebuilt file is read back
    assert torch.equal(again.weight, rebuilt.weight)
