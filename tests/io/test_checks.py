"""The finiteness check every read tensor goes through: a sum first, every entry when the sum
overflowed."""

from __future__ import annotations

import pytest
import torch

from taskmerge.errors import CheckpointError
from taskmerge.io.checks import all_finite, check_finite


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_all_finite(dtype: torch.dtype) -> None:
    big = torch.finfo(dtype).max
    assert all_finite(torch.randn(64, 8).to(dtype))
    assert all_finite(torch.full((4,), big, dtype=dtype))  # the sum overflows: every entry checked
    for bad in (float("nan"), float("inf"), -float("inf")):
        tensor = torch.randn(64, 8).to(dtype)
        tensor[5, 3] = bad
        assert not all_finite(tensor)
    both = torch.tensor([float("inf"), -float("inf")], dtype=dtype)  # a NaN sum
    assert not all_finite(both)


def test_check_finite_names_the_file_and_the_key() -> None:
    tensor = torch.ones(3)
    assert check_finite(tensor, "w", "a.safetensors") is tensor
    assert check_finite(torch.tensor([1, 2]), "ids", "a.safetensors") is not None  # integers
    tensor[1] = float("nan")
    with pytest.raises(CheckpointError, match="a.safetensors: tensor w holds NaN or Inf"):
        check_finite(tensor, "w", "a.safetensors")
