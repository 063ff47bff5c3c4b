"""Multi-process fine-tuning: process groups, sharded batches, spawning, a free port.

``finetune.py world_size=N`` spawns N processes (``torch.multiprocessing.spawn``) that train one
``DistributedDataParallel`` model: ``gloo`` on the CPU, ``nccl`` on GPUs (one per process).
Under ``torchrun`` (``WORLD_SIZE`` / ``RANK`` / ``MASTER_ADDR`` in the environment) the
processes already exist and join its group. The rendezvous port of a spawned group is a free
one picked by the OS (the reference's fixed 12355 collides when several jobs share a machine).

The data order is the single-process one: every process draws the same seeded permutation and
batches it exactly as ``DataLoader(shuffle=True, generator=seeded)`` does, then keeps every
``world_size``-th index of each global batch (:class:`ShardedBatches`). Each process's loss is its
share of the global batch mean, so after DDP averages the gradients the step equals the
single-process step on the same global batch (up to float summation order).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sized

import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, Dataset, RandomSampler, Sampler

from taskmerge.errors import ConfigError


def free_port() -> int:
    """A TCP port on localhost nobody listens on now (chosen by the OS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launched_by_torchrun() -> bool:
    """Whether this process belongs to a group started by ``torchrun`` (or another launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def is_main_process() -> bool:
    """Rank 0 (or no process group): the process that evaluates and writes."""
    return rank() == 0


def check_world_size(world_size: int, batch_size: int, device: str) -> None:
    """Fail before any work if ``world_size`` cannot work with the batch size or the devices.

    Raises:
        ConfigError: not a positive integer, not dividing the batch, or more processes than
            GPUs (on CUDA) or CPU cores (on the CPU).
    """
    if world_size < 1:
        raise ConfigError(f"world_size={world_size} must be at least 1")
    if world_size == 1:
        return
    if batch_size % world_size:
        raise ConfigError(
            f"world_size={world_size} does not divide train.batch_size={batch_size}: the "
            "per-process batch is batch / world_size; pick a divisor"
        )
    if str(device).startswith("cuda"):
        available = torch.cuda.device_count()
        if world_size > available:
            raise ConfigError(
                f"world_size={world_size} needs {world_size} GPUs, {available} visible: lower "
                "world_size or set CUDA_VISIBLE_DEVICES"
            )
    elif world_size > (os.cpu_count() or 1):
        raise ConfigError(
            f"world_size={world_size} is more than the {os.cpu_count()} CPU cores: lower it"
        )


def check_data_size(world_size: int, size: int, task: str) -> None:
    """Every process needs at least one sample of the training set."""
    if world_size > size:
        raise ConfigError(
            f"world_size={world_size} is larger than the {size} training samples of {task}: "
            "lower world_size"
        )


class ShardedBatches(Sampler[list[int]]):
    """One process's share of the single-process batches.

    Wraps the batch sampler ``DataLoader(dataset, batch_size, shuffle=True, generator=g)`` would
    build (the same ``RandomSampler`` on the same generator ``g``, which the loader must also be
    given), and yields indices ``rank, rank + world_size, ...`` of each global batch. A process
    whose share of a short last batch is empty gets the batch's first index marked as padding
    (``-1 - index``, weight 0, see :class:`WeightedSamples`), so every process takes every step.

    ``fixed_order=True`` reuses one permutation, ``torch.randperm(n)`` on a generator seeded
    with ``seed``, every epoch: the references' order (``nik-dim/tall_masks`` and
    ``gortizji/tangent_task_arithmetic`` ``src/finetune.py`` wrap the data in a
    ``DistributedSampler`` whose ``set_epoch`` is never called, so each epoch draws
    ``randperm(n, seed + 0)``; equal to it on one process).
    """

    def __init__(
        self,
        data: Sized,
        batch_size: int,
        generator: torch.Generator,
        rank: int = 0,
        world_size: int = 1,
        fixed_order: bool = False,
        seed: int = 0,
    ) -> None:
        order: Sampler | list[int]
        if fixed_order:
            fixed = torch.Generator().manual_seed(seed)
            order = torch.randperm(len(data), generator=fixed).tolist()
        else:
            order = RandomSampler(data, generator=generator)
        self.batches = BatchSampler(order, batch_size, False)
        self.rank, self.world_size = rank, world_size
        #: Batches to drop at the start of the next pass (resuming inside an epoch: the same
        #: random draws happen, only the indices of the batches already trained on are skipped).
        self.skip = 0

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        for position, batch in enumerate(self.batches):
            if position < skip:
                continue
            share = batch[self.rank :: self.world_size]
            yield share if share else [-1 - batch[0]]

    def __len__(self) -> int:
        return len(self.batches)


class WeightedSamples(Dataset):
    """``(image, label, weight)``: weight 1, or 0 for a padding index (``-1 - index``)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple:
        if index < 0:
            image, label = self.base[-1 - index]
            return image, label, 0.0
        image, label = self.base[index]
        return image, label, 1.0


def init_process_group(rank_: int, world_size: int, device: str, port: int | None) -> str:
    """Join the group (``env://`` under torchrun, else ``tcp://127.0.0.1:<port>``); return this
    process's device."""
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    if launched_by_torchrun():
        dist.init_process_group(backend)
    else:
        dist.init_process_group(
            backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank_, world_size=world_size
        )
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", rank_))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"
