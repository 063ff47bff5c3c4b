"""Top-1 accuracy of an encoder and a head over a loader."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader


@torch.no_grad()
def top1_accuracy(
    encoder: nn.Module,
    head: nn.Module,
    loader: DataLoader,
    device: str | torch.device,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """Fraction of samples whose arg-max logit is the label (over the whole loader).

    ``prepare`` turns a batch into the encoder's input on ``device`` (default: move it there).
    """
    encoder.eval()
    correct = total = 0
    for images, labels in loader:
        inputs = prepare(images) if prepare else images.to(device, non_blocking=True)
        logits = head(encoder(inputs))
        correct += int((logits.argmax(dim=1).cpu() == torch.as_tensor(labels)).sum())
        total += len(labels)
    return correct / max(total, 1)
