"""Checkpoint files: atomic safetensors writes, safe reading, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from taskmerge.errors import CheckpointError
from taskmerge.io.digest import fingerprint
from taskmerge.io.tensors import (
    CHECKSUM_KEY,
    load_state_dict,
    read_metadata,
    save_state_dict,
    tensors_digest,
)
from taskmerge.store.layout import CheckpointLayout


def test_save_is_atomic_and_keeps_metadata(tmp_path: Path) -> None:
    path = tmp_path / "a" / "finetuned.safetensors"
    save_state_dict({"w": torch.ones(2)}, path, {"task": "MNIST", "epochs": 5})
    assert load_state_dict(path)["w"].tolist() == [1.0, 1.0]
    header = read_metadata(path)
    assert header == {
        "task": "MNIST",
        "epochs": "5",
        CHECKSUM_KEY: tensors_digest({"w": torch.ones(2)}),
    }
    assert [p.name for p in path.parent.iterdir()] == ["finetuned.safetensors"]  # no temp left


def test_failed_write_leaves_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_state_dict({"w": torch.zeros(1)}, path)
    with pytest.raises(Exception):  # noqa: B017 - a tensor safetensors cannot store
        save_state_dict({"w": "not a tensor"}, path)  # type: ignore[dict-item]
    assert load_state_dict(path)["w"].tolist() == [0.0]
    assert len(list(tmp_path.iterdir())) == 1


def test_weights_only_pt_state_dict_loads(tmp_path: Path) -> None:
    torch.save({"state_dict": {"w": torch.ones(1)}}, tmp_path / "ck.pt")
    assert load_state_dict(tmp_path / "ck.pt")["w"].item() == 1.0


def test_pickled_module_is_refused_not_unpickled(tmp_path: Path) -> None:
    torch.save(nn.Linear(1, 1), tmp_path / "module.pt")  # what the legacy repos ship
    with pytest.raises(CheckpointError, match="pickled module"):
        load_state_dict(tmp_path / "module.pt")


def test_missing_checkpoint_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.safetensors"):
        load_state_dict(tmp_path / "nope.safetensors")


def test_layout_and_fingerprint() -> None:
    layout = CheckpointLayout(Path("/ck"), "ViT-B-32", "standard")
    assert layout.task_dir("MNIST") == Path("/ck/ViT-B-32/standard/MNIST")
    assert layout.finetuned("MNIST") == Path("/ck/ViT-B-32/standard/MNIST/finetuned.safetensors")
    a = {"w": torch.ones(3)}
    assert fingerprint(a) == fingerprint({"w": torch.ones(3)})
    assert fingerprint(a) != fingerprint({"w": torch.ones(3) * 2})
