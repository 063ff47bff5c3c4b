"""Multi-process fine-tuning: the same batches as one process, and the same weights."""

from __future__ import annotations

import copy
import itertools
import os

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from taskmerge.data.image_datasets import make_loader
from taskmerge.errors import ConfigError
from taskmerge.finetune.distributed import (
    ShardedBatches,
    WeightedSamples,
    check_data_size,
    check_world_size,
    free_port,
)
from taskmerge.finetune.loop import TrainSettings, finetune
from taskmerge.finetune.modes import AttentionOnly, Linearized
from taskmerge.models.heads import ClassificationHead
from taskmerge.models.tiny import load_tiny_clip


class Indices(Dataset):
    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[int, int]:
        return index, 0


def _batches(loader: DataLoader, count: int) -> list[list[int]]:
    def cycle():  # noqa: ANN202 - as the training loop re-iterates the loader
        while True:
            yield from loader

    return [batch[0].tolist() for batch in itertools.islice(cycle(), count)]


def test_one_shard_is_the_single_process_loader_and_shards_partition_it() -> None:
    data, size, batch, seed = Indices(45), 45, 8, 3
    expected = _batches(make_loader(data, batch, shuffle=True, seed=seed), 14)  # ~2.5 epochs
    shards = []
    for rank in range(3):
        generator = torch.Generator().manual_seed(seed)
        sampler = ShardedBatches(data, batch, generator, rank=rank, world_size=3)
        loader = DataLoader(WeightedSamples(data), batch_sampler=sampler, generator=generator)
        shards.append([(b[0].tolist(), b[2].tolist()) for b in itertools.islice(loader, 6)])
        assert len(sampler) == -(-size // batch)
    generator = torch.Generator().manual_seed(seed)
    single = DataLoader(
        WeightedSamples(data),
        batch_sampler=ShardedBatches(data, batch, generator),
        generator=generator,
    )
    assert _batches(single, 14) == expected
    for step in range(6):
        merged = sorted(i for shard in shards for i, w in zip(*shard[step], strict=True) if w)
        assert merged == sorted(expected[step]), step
    # the last batch of an epoch has 45 - 5 * 8 = 5 samples: every rank gets some
    assert all(len(shard[5][0]) >= 1 for shard in shards)


def test_a_rank_with_nothing_left_gets_a_zero_weight_sample() -> None:
    data = Indices(9)  # batches of 8 then 1: ranks 1 and 2 have nothing in the second
    shares = [
        list(ShardedBatches(data, 8, torch.Generator().manual_seed(0), rank, 3))
        for rank in range(3)
    ]
    assert [len(s[1]) for s in shares] == [1, 1, 1]
    assert shares[0][1][0] >= 0 and shares[1][1][0] < 0 and shares[2][1][0] < 0
    assert WeightedSamples(data)[shares[1][1][0]][2] == 0.0


def test_world_size_mistakes_are_one_clear_error_each() -> None:
    check_world_size(1, 128, "cpu")
    with pytest.raises(ConfigError, match="does not divide train.batch_size=10"):
        check_world_size(3, 10, "cpu")
    with pytest.raises(ConfigError, match="CPU cores"):
        check_world_size(1024, 1024, "cpu")
    with pytest.raises(ConfigError, match="GPUs"):
        check_world_size(torch.cuda.device_count() + 2, 64, "cuda")
    with pytest.raises(ConfigError, match="at least 1"):
        check_world_size(0, 128, "cpu")
    with pytest.raises(ConfigError, match="larger than the 3 training samples"):
        check_data_size(4, 3, "Digits")
    assert 0 < free_port() < 65536


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores")
@pytest.mark.parametrize("mode", [AttentionOnly(), Linearized()], ids=["attention", "linear"])
def test_two_processes_give_the_single_process_weights(tmp_path, mode) -> None:  # noqa: ANN001
    """DDP with gloo, 2 CPU processes, batch 16 = 2 x 8, on 60 demo-sized images (the last
    global batch has 12): the same weights as one process with batch 16."""
    bundle = load_tiny_clip(cache_dir=str(tmp_path))
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(60, 3, 32, 32, generator=gen), torch.arange(60) % 4)
    head = ClassificationHead(torch.nn.functional.normalize(torch.randn(4, 128, generator=gen)))
    settings = TrainSettings(lr=1e-3, batch_size=16, warmup_steps=2, num_workers=0)
    results = []
    for world in (1, 2):
        encoder = copy.deepcopy(bundle.visual)
        stats = finetune(encoder, head, data, 2, settings, mode, "cpu", world_size=world)
        assert stats["steps"] == 8  # ceil(60 / 16) batches x 2 epochs
        results.append(encoder.state_dict())
    # Adam divides by sqrt(v): float summation-order noise in near-zero gradient entries shows
    # in single entries, so the updates are compared as vectors. The key bias (middle third of
    # in_proj_bias) has an exactly zero gradient (softmax ignores a shift shared by all keys):
    # its Adam update is rounding noise in both runs and is left out.
    base, changed = bundle.visual.state_dict(), 0
    for name, value in results[0].items():
        if name.endswith("in_proj_bias"):
            third = value.shape[0] // 3
            keep = torch.cat([torch.arange(third), torch.arange(2 * third, 3 * third)])
            value, results[1][name], base[name] = (
                t[keep] for t in (value, results[1][name], base[name])
            )
        update = value - base[name]
        difference = (results[1][name] - value).norm()
        assert difference <= 1e-3 * update.norm() + 1e-7, (name, difference, update.norm())
        changed += bool(update.norm() > 0)
    assert changed >= 8  # the mode's parameters moved
