"""``merge_device``: the setting's one-line errors, and merges through the device view (reads
copied to the merge device tensor by tensor) giving the CPU path's result exactly."""

from __future__ import annotations

import pytest
import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.device import OnDevice, on_merge_device, resolve_merge_device
from taskmerge.merging.isotropic import IsoCTS
from taskmerge.merging.tensorwise import shape_of
from taskmerge.merging.ties import Ties
from taskmerge.merging.tsv import TSVMerge
from taskmerge.vectors.task_vector import TaskVector, apply_delta


def test_settings() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_merge_device("auto").type == expected
    assert resolve_merge_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^merge_device='gpu' is not a merge device: use auto"):
        resolve_merge_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"^merge_device=cuda: this machine has no CUDA"):
            resolve_merge_device("cuda")


def test_the_cpu_path_is_the_same_mapping() -> None:
    vectors = {"a": TaskVector({"w": torch.ones(2)})}
    assert on_merge_device(vectors, torch.device("cpu")) is vectors


def task_vectors(seed: int) -> dict[str, TaskVector]:
    gen = torch.Generator().manual_seed(seed)
    return {
        f"t{i}": TaskVector(
            {"blk.attn.weight": torch.randn(24, 16, generator=gen), "blk.bias": torch.randn(24)},
            mode="standard",
        )
        for i in range(3)
    }


@pytest.mark.parametrize(
    "make",
    [lambda: TSVMerge(scaling_coef=1.0), lambda: IsoCTS(scaling_coef=1.0),
     lambda: Ties(k=20, scaling_coef=1.0)],
    ids=["TSVM", "iso_cts", "ties"],
)  # fmt: skip
def test_merges_through_the_device_view_equal_the_cpu_path(make) -> None:
    vectors = task_vectors(0)
    # the device view on the CPU itself: the same reads, copies and code path as on a GPU
    viewed = {
        task: TaskVector(OnDevice(tv.vector, torch.device("cpu")), mode=tv.mode)
        for task, tv in vectors.items()
    }
    assert shape_of(viewed["t0"].vector, "blk.attn.weight") == torch.Size([24, 16])
    plain = make().merge(vectors).vector
    through = make().merge(viewed).vector
    assert set(plain) == set(through)
    assert all(torch.equal(plain[name], through[name]) for name in plain)
    assert viewed["t0"].mode == "standard"


def test_applying_a_delta_keeps_the_base_device_and_dtype() -> None:
    base = torch.zeros(3, dtype=torch.float16)
    merged = apply_delta(base, torch.ones(3), 2.0)
    assert merged.device == base.device and torch.equal(merged, torch.full((3,), 2.0).half())
