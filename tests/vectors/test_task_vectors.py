"""TaskVector algebra against hand-computed answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from taskmerge import TaskVector
from taskmerge.errors import CheckpointError
from taskmerge.io.tensors import save_state_dict


def _sd(**tensors: list[float]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v) for k, v in tensors.items()}


def test_from_state_dicts_is_difference_and_skips_integer_buffers() -> None:
    base = _sd(w=[1.0, 2.0], b=[0.5]) | {"ids": torch.tensor([1, 2])}
    tuned = _sd(w=[2.0, 0.0], b=[1.5]) | {"ids": torch.tensor([1, 2])}
    tv = TaskVector.from_state_dicts(base, tuned)
    assert set(tv.keys()) == {"w", "b"}
    assert torch.equal(tv.vector["w"], torch.tensor([1.0, -2.0]))
    assert torch.equal(tv.vector["b"], torch.tensor([1.0]))


def test_operators_match_closed_form() -> None:
    a = TaskVector(_sd(w=[1.0, -2.0]))
    b = TaskVector(_sd(w=[3.0, 4.0]))
    assert torch.equal((a + b).vector["w"], torch.tensor([4.0, 2.0]))
    assert torch.equal((a - b).vector["w"], torch.tensor([-2.0, -6.0]))
    assert torch.equal((-a).vector["w"], torch.tensor([-1.0, 2.0]))
    assert torch.equal((0.5 * b).vector["w"], torch.tensor([1.5, 2.0]))
    assert torch.equal((b * 2).vector["w"], torch.tensor([6.0, 8.0]))
    assert torch.equal(sum([a, b, b]).vector["w"], torch.tensor([7.0, 6.0]))
    assert torch.equal((b / 2).vector["w"], torch.tensor([1.5, 2.0]))


def test_norms() -> None:
    tv = TaskVector(_sd(w=[3.0, -4.0], b=[12.0]))
    assert tv.norm() == pytest.approx(13.0)
    assert tv.norm(1) == pytest.approx(19.0)
    assert tv.norm(float("inf")) == pytest.approx(12.0)
    assert tv.numel() == 3


def test_mismatched_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="different parameter names"):
        TaskVector(_sd(w=[1.0])) + TaskVector(_sd(v=[1.0]))


def test_apply_to_module_and_state_dict_scale_once() -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1.0]]))
        model.bias.zero_()
    tv = TaskVector({"weight": torch.tensor([[2.0, -2.0]]), "bias": torch.tensor([1.0])})
    merged = tv.apply_to_state_dict(model.state_dict(), scaling_coef=0.5)
    assert torch.equal(merged["weight"], torch.tensor([[2.0, 0.0]]))
    assert torch.equal(model.weight, torch.tensor([[1.0, 1.0]]))  # input untouched
    tv.apply_to(model, scaling_coef=0.5)
    assert torch.equal(model.weight.detach(), torch.tensor([[2.0, 0.0]]))
    assert torch.equal(model.bias.detach(), torch.tensor([0.5]))


def test_from_checkpoints_round_trip(tmp_path) -> None:  # noqa: ANN001
    base, tuned = _sd(w=[1.0, 1.0]), _sd(w=[0.0, 3.0])
    save_state_dict(base, tmp_path / "base.safetensors")
    save_state_dict(tuned, tmp_path / "tuned.safetensors")
    tv = TaskVector.from_checkpoints(tmp_path / "base.safetensors", tmp_path / "tuned.safetensors")
    assert torch.equal(tv.vector["w"], torch.tensor([-1.0, 2.0]))
    assert torch.equal(tv.apply_to_state_dict(base)["w"], tuned["w"])


def test_shape_mismatch_is_a_clear_error(tmp_path) -> None:  # noqa: ANN001
    save_state_dict(_sd(w=[1.0, 1.0, 1.0]), tmp_path / "tuned.safetensors")
    with pytest.raises(CheckpointError, match="shape"):
        TaskVector.from_checkpoints(_sd(w=[1.0, 1.0]), tmp_path / "tuned.safetensors")
