"""The fine-tuning loop: AdamW, cosine schedule with warm-up, grad-norm clipping, frozen head."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from taskmerge.data.datasets import make_loader
from taskmerge.finetuning import FinetuningMode


@dataclass
class TrainSettings:
    """Optimisation hyperparameters (defaults: the reference protocol of METHODS.md)."""

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


def _cycle(loader):  # noqa: ANN001, ANN202
    while True:
        yield from loader
