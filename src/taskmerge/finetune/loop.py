"""The fine-tuning loop: AdamW, cosine schedule with warm-up, grad-norm clipping, a frozen head,
the mode's forward, resumable state and multi-process training."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from tqdm import tqdm

from taskmerge.errors import CheckpointError, ConfigError
from taskmerge.finetune.distributed import (
    ShardedBatches,
    WeightedSamples,
    check_data_size,
    free_port,
    init_process_group,
    launched_by_torchrun,
)
from taskmerge.finetune.modes import FinetuningMode
from taskmerge.finetune.state import (
    DataCursor,
    load_training_state,
    rng_state,
    save_training_state,
    set_rng_state,
    signature,
)
from taskmerge.hardware import resolve_workers
from taskmerge.models.forward import forward_module

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """Optimisation hyperparameters.

    The defaults are the reference protocol of the task-vector papers: AdamW, lr 1e-5, weight
    decay 0.1, batch 128 (ViT-L-14: 64 x 2 accumulation), cosine schedule with 500 warm-up
    steps, grad-norm clip 1.0; epochs come from each task.
    """

    lr: float = 1e-5
    weight_decay: float = 0.1
    batch_size: int = 128
    grad_accumulation: int = 1
    warmup_steps: int = 500
    max_grad_norm: float = 1.0
    epochs_scale: float = 1.0
    num_workers: int | str = 4
    seed: int = 0
    save_every: int = 200
    #: ``reshuffle`` every epoch, or the references' ``fixed`` permutation (see ShardedBatches).
    epoch_order: Literal["reshuffle", "fixed"] = "reshuffle"
    #: ``reference``: open_clip's training transform, as the references; ``eval``: the
    #: evaluation transform (:mod:`taskmerge.data.augment`).
    transform: Literal["reference", "eval"] = "reference"

    def __post_init__(self) -> None:
        self.num_workers = resolve_workers(self.num_workers)
        if self.transform not in ("reference", "eval"):
            raise ConfigError(f"train.transform={self.transform!r}: use reference or eval")
        if self.epoch_order not in ("reshuffle", "fixed"):
            raise ConfigError(f"train.epoch_order={self.epoch_order!r}: use reshuffle or fixed")
        checks = {
            "lr": self.lr > 0,
            "batch_size": self.batch_size >= 1,
            "grad_accumulation": self.grad_accumulation >= 1,
            "warmup_steps": self.warmup_steps >= 0,
            "max_grad_norm": self.max_grad_norm > 0,
            "epochs_scale": self.epochs_scale > 0,
            "num_workers": self.num_workers >= 0,
            "save_every": self.save_every >= 0,
            "weight_decay": self.weight_decay >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"train.{name}={getattr(self, name)}" for name in bad)
            raise ConfigError(
                f"{values}: batch sizes, accumulation and lr must be positive, the rest >= 0"
            )


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to 0 (as in the reference repos)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@dataclass
class TrainJob:
    """What one fine-tuning run trains (shared by every process of a distributed run)."""

    encoder: nn.Module
    head: nn.Module
    train_set: Dataset
    epochs: float
    settings: TrainSettings
    mode: FinetuningMode
    description: str = "fine-tuning"
    state_path: str | Path | None = None
    identity: str = ""


def finetune(
    encoder: nn.Module,
    head: nn.Module,
    train_set: Dataset,
    epochs: float,
    settings: TrainSettings,
    mode: FinetuningMode,
    device: str | torch.device,
    description: str = "fine-tuning",
    world_size: int = 1,
    state_path: str | Path | None = None,
    identity: str = "",
) -> dict[str, float]:
    """Fine-tune ``encoder`` in place on ``train_set`` with ``head`` frozen, through the mode's
    forward (linearized for ``linear``: theta0 is the encoder's weights on entry).

    With ``state_path``, the full training state is saved there every ``settings.save_every``
    steps and a rerun with the same ``identity`` resumes from it (:mod:`taskmerge.finetune.state`).

    ``world_size > 1`` trains with that many processes (DistributedDataParallel; see
    :mod:`taskmerge.finetune.distributed`), each on ``batch_size / world_size`` samples of
    every global batch; the result equals the single-process one up to float summation order. Under
    ``torchrun`` this process is one of the group.

    Returns:
        Statistics: optimizer steps, seconds, final training loss.
    """
    job = TrainJob(encoder, head, train_set, epochs, settings, mode, description, state_path,
                   identity)  # fmt: skip
    if launched_by_torchrun():
        size = int(os.environ["WORLD_SIZE"])
        check_data_size(size, len(train_set), description)  # type: ignore[arg-type]
        local_device = init_process_group(int(os.environ["RANK"]), size, str(device), None)
        try:
            return _train(job, local_device, dist.get_rank(), size)
        finally:
            dist.destroy_process_group()
    if world_size > 1:
        check_data_size(world_size, len(train_set), description)  # type: ignore[arg-type]
        return _spawn(job, str(device), world_size)
    return _train(job, device, 0, 1)


def _spawn(job: TrainJob, device: str, world_size: int) -> dict[str, float]:
    """Train in ``world_size`` spawned processes; load rank 0's result into ``job.encoder``."""
    with tempfile.TemporaryDirectory(prefix="taskmerge-ddp-") as tmp:
        out = Path(tmp)
        args = (world_size, free_port(), job, device, str(out))
        torch.multiprocessing.spawn(_worker, args=args, nprocs=world_size, join=True)
        job.encoder.load_state_dict(load_file(str(out / "weights.safetensors")))
        return json.loads((out / "stats.json").read_text())


def _worker(rank_: int, world_size: int, port: int, job: TrainJob, device: str, out: str) -> None:
    """One spawned process: join the group, train, rank 0 writes the weights and stats.

    The modules arrive through ``torch.multiprocessing``, which passes tensors in shared memory:
    without private copies every process would step the same weights.
    """
    job = replace(job, encoder=copy.deepcopy(job.encoder), head=copy.deepcopy(job.head))
    local_device = init_process_group(rank_, world_size, device, port)
    try:
        stats = _train(job, local_device, rank_, world_size)
        if rank_ == 0:
            state = {k: v.detach().cpu().contiguous() for k, v in job.encoder.state_dict().items()}
            save_file(state, str(Path(out) / "weights.safetensors"))
            (Path(out) / "stats.json").write_text(json.dumps(stats))
    finally:
        dist.destroy_process_group()


def _train(
    job: TrainJob, device: str | torch.device, rank_: int, world_size: int
) -> dict[str, float]:
    """The loop of one process (of ``world_size``); resumes from ``job.state_path`` when it
    holds a state of the same run (``job.identity``) and saves one there every
    ``settings.save_every`` steps (rank 0)."""
    encoder, head, train_set, settings, mode = (
        job.encoder, job.head, job.train_set, job.settings, job.mode
    )  # fmt: skip
    epochs, description, state_path = job.epochs, job.description, job.state_path
    torch.manual_seed(settings.seed)
    encoder.to(device).train()
    head.to(device).eval().requires_grad_(False)
    params = mode.select_trainable(encoder)
    model = forward_module(mode.forward, encoder)  # theta0 of linear: the weights on entry
    distributed = world_size > 1
    if distributed:
        ids = [torch.device(device).index] if str(device).startswith("cuda") else None
        model = DistributedDataParallel(model, device_ids=ids)
    generator = torch.Generator().manual_seed(settings.seed)
    sampler = ShardedBatches(
        train_set, settings.batch_size, generator, rank_, world_size,  # type: ignore[arg-type]
        fixed_order=settings.epoch_order == "fixed", seed=settings.seed,
    )  # fmt: skip
    loader = DataLoader(
        WeightedSamples(train_set) if distributed else train_set,
        batch_sampler=sampler,
        generator=generator,
        num_workers=loader_workers(train_set, settings.num_workers, device),
        pin_memory=torch.cuda.is_available(),
    )
    total_steps = max(
        1, math.ceil(epochs * settings.epochs_scale * len(loader) / settings.grad_accumulation)
    )
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = min(settings.warmup_steps, total_steps // 2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_with_warmup(step, warmup, total_steps)
    )
    cursor = DataCursor(loader, sampler, generator)
    identity = signature(run=job.identity, total_steps=total_steps, world_size=world_size)
    start, step, loss_value = time.time(), 0, float("nan")
    saved = load_training_state(state_path, identity, encoder.state_dict())
    if saved is not None:
        try:
            optimizer.load_state_dict(saved["optimizer"])  # checked before anything is changed
            encoder.load_state_dict(saved["encoder"])
            scheduler.load_state_dict(saved["scheduler"])
            cursor.load_state_dict(saved["cursor"])
            set_rng_state(saved["rng"])
            step, loss_value = int(saved["step"]), float(saved["loss"])
            log.info("%s: resumed at step %d of %d from %s", description, step, total_steps,
                     state_path)  # fmt: skip
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{state_path} cannot be resumed ({' '.join(str(exc).split())[:120]}): delete it "
                "and run the same command again to start this task over"
            ) from None
    progress = tqdm(total=total_steps, initial=step, desc=description, leave=False,
                    disable=rank_ != 0)  # fmt: skip
    batches = iter(cursor)
    while step < total_steps:
        for _ in range(settings.grad_accumulation):
            batch = next(batches)
            if distributed:
                loss, loss_value = _shared_loss(model, head, batch, device, world_size)
            else:
                images, labels = batch
                logits = head(model(images.to(device)))
                loss = F.cross_entropy(logits, torch.as_tensor(labels).to(device))
                loss_value = loss.item()
            (loss / settings.grad_accumulation).backward()
        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        progress.update()
        progress.set_postfix(loss=f"{loss_value:.3f}")
        due = settings.save_every and step % settings.save_every == 0 and step < total_steps
        if state_path is not None and due and rank_ == 0:
            save_training_state(state_path, {
                "signature": identity, "step": step, "loss": loss_value,
                "encoder": encoder.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "cursor": cursor.state_dict(),
                "rng": rng_state(),
            })  # fmt: skip
    progress.close()
    encoder.eval()
    return {"steps": step, "seconds": time.time() - start, "final_loss": loss_value}


def loader_workers(train_set: Dataset, configured: int, device: str | torch.device) -> int:
    """Loader worker processes for ``train_set``: none for tensors already in memory, and none
    on a CPU for a split that says it is ``in_memory`` (decoded once, only cropped per batch:
    a worker would take the cores the training step runs on for work that costs ~1% of a step,
    and restart every epoch); else ``configured``."""
    if isinstance(train_set, TensorDataset):
        return 0
    base = train_set
    while isinstance(base, Subset):
        base = base.dataset
    if getattr(base, "in_memory", False) and torch.device(device).type == "cpu":
        return 0
    return configured


def _shared_loss(
    model: nn.Module, head: nn.Module, batch: Sequence, device: str | torch.device, world: int
) -> tuple[torch.Tensor, float]:
    """This process's share of the global batch's mean loss, times ``world`` (DDP averages the
    gradients over the processes, so the step is the global mean's)."""
    images, labels, weights = batch
    weights = torch.as_tensor(weights, dtype=torch.float32, device=device)
    logits = head(model(images.to(device)))
    losses = F.cross_entropy(logits, torch.as_tensor(labels).to(device), reduction="none")
    count = weights.sum().detach().clone()
    dist.all_reduce(count)
    total = (losses * weights).sum()
    return total * world / count, float(total.detach() / count.clamp(min=1) * world)
