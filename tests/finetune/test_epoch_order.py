"""``train.epoch_order=fixed``: one permutation reused every epoch, the order of the
references' ``DistributedSampler`` whose ``set_epoch`` is never called (torch's own sampler is
the independent answer)."""

from __future__ import annotations

import torch
from torch.utils.data import DistributedSampler, TensorDataset

from taskmerge.finetune.distributed import ShardedBatches


def _epochs(sampler: ShardedBatches, n: int = 3) -> list[list[int]]:
    return [[i for batch in sampler for i in batch] for _ in range(n)]


def test_fixed_order_is_distributed_samplers_without_set_epoch() -> None:
    data = TensorDataset(torch.arange(50))
    reference = list(DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0))
    fixed = ShardedBatches(data, 8, torch.Generator().manual_seed(123), fixed_order=True, seed=0)
    assert _epochs(fixed) == [reference] * 3


def test_reshuffle_draws_a_new_order_each_epoch() -> None:
    data = TensorDataset(torch.arange(50))
    sampler = ShardedBatches(data, 8, torch.Generator().manual_seed(0))
    first, second, _ = _epochs(sampler)
    assert sorted(first) == sorted(second) == list(range(50)) and first != second
