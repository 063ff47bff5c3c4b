"""Fine-tuning: the loop (AdamW, cosine schedule with warm-up, grad-norm clipping, frozen head)
and :func:`finetune_task`, which fine-tunes one task and stores the checkpoint and its metrics."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from taskmerge.data.datasets import make_loader
from taskmerge.errors import CheckpointError
from taskmerge.evaluation import TaskEvaluator
from taskmerge.finetuning import FinetuningMode
from taskmerge.store import CheckpointStore

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
    num_workers: int = 4
    seed: int = 0


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to 0 (as in the reference repos)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def finetune(
    encoder: nn.Module,
    head: nn.Module,
    train_set: Dataset,
    epochs: float,
    settings: TrainSettings,
    mode: FinetuningMode,
    device: str | torch.device,
    description: str = "fine-tuning",
) -> dict[str, float]:
    """Fine-tune ``encoder`` in place on ``train_set`` with ``head`` frozen.

    Returns:
        Statistics: optimizer steps, seconds, final training loss.
    """
    torch.manual_seed(settings.seed)
    encoder.to(device).train()
    head.to(device).eval().requires_grad_(False)
    params = mode.select_trainable(encoder)
    loader = make_loader(
        train_set,
        settings.batch_size,
        shuffle=True,
        num_workers=settings.num_workers,
        seed=settings.seed,
    )
    total_steps = max(
        1, math.ceil(epochs * settings.epochs_scale * len(loader) / settings.grad_accumulation)
    )
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = min(settings.warmup_steps, total_steps // 2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_with_warmup(step, warmup, total_steps)
    )
    start, step, loss_value = time.time(), 0, float("nan")
    progress = tqdm(total=total_steps, desc=description, leave=False)
    batches = _cycle(loader)
    while step < total_steps:
        for _ in range(settings.grad_accumulation):
            images, labels = next(batches)
            logits = head(mode.forward(encoder, images.to(device)))
            loss = F.cross_entropy(logits, torch.as_tensor(labels).to(device))
            (loss / settings.grad_accumulation).backward()
            loss_value = loss.item()
        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        progress.update()
        progress.set_postfix(loss=f"{loss_value:.3f}")
    progress.close()
    encoder.eval()
    return {"steps": step, "seconds": time.time() - start, "final_loss": loss_value}


def finetune_task(
    task: str,
    pretrained_encoder: nn.Module,
    evaluator: TaskEvaluator,
    store: CheckpointStore,
    settings: TrainSettings,
    mode: FinetuningMode,
    overwrite: bool = False,
) -> dict[str, float]:
    """Fine-tune a copy of ``pretrained_encoder`` on one task, store the checkpoint (atomically)
    and its fine-tuned Val/Test top-1.

    Raises:
        CheckpointError: the checkpoint exists and ``overwrite`` is false (checked first).
    """
    if store.path(task).is_file() and not overwrite:
        raise CheckpointError(f"{store.path(task)} exists: pass overwrite=true to replace it")
    encoder = copy.deepcopy(pretrained_encoder)
    stats = finetune(
        encoder,
        evaluator.head(task),
        evaluator.train_set(task),
        evaluator.specs[task].epochs,
        settings,
        mode,
        evaluator.device,
        description=f"fine-tuning {task}",
    )
    state = {key: value.detach().cpu() for key, value in encoder.state_dict().items()}
    store.save(task, state, overwrite=overwrite)
    metrics = {
        "val_top1": evaluator.accuracy(state, task, "val"),
        "test_top1": evaluator.accuracy(state, task, "test"),
        **{f"train_{key}": value for key, value in stats.items()},
    }
    store.write_metrics(task, metrics)
    log.info("fine-tuned %s: val %.4f test %.4f", task, metrics["val_top1"], metrics["test_top1"])
    return metrics


def _cycle(loader):  # noqa: ANN001, ANN202
    while True:
        yield from loader


def finetuned_accuracies(
    store: CheckpointStore, evaluator: TaskEvaluator, tasks: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Task -> fine-tuned ``val_top1`` / ``test_top1``, measured by this project on the same
    splits: read from the store, or measured now (e.g. for copied checkpoints) and stored."""
    accuracies = {}
    for task in tasks:
        metrics = store.metrics(task)
        if metrics is None:
            state = store.load(task)
            metrics = {
                "val_top1": evaluator.accuracy(state, task, "val"),
                "test_top1": evaluator.accuracy(state, task, "test"),
            }
            store.write_metrics(task, metrics)
        accuracies[task] = {"val_top1": metrics["val_top1"], "test_top1": metrics["test_top1"]}
    return accuracies
