"""Accuracy, normalized accuracy and the selection of a hyperparameter on Val."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader


@torch.no_grad()
def top1_accuracy(
    encoder: nn.Module, head: nn.Module, loader: DataLoader, device: str | torch.device
) -> float:
    """Fraction of samples whose arg-max logit is the label."""
    encoder.eval()
    correct = total = 0
    for images, labels in loader:
        logits = head(encoder(images.to(device, non_blocking=True)))
        correct += int((logits.argmax(dim=1).cpu() == torch.as_tensor(labels)).sum())
        total += len(labels)
    return correct / max(total, 1)


def normalized_accuracy(accuracy: float, finetuned_accuracy: float) -> float:
    """Merged top-1 divided by the fine-tuned top-1 of the same task and split."""
    return accuracy / finetuned_accuracy if finetuned_accuracy > 0 else 0.0


def summarize(accuracies: Mapping[str, float], finetuned: Mapping[str, float]) -> dict[str, float]:
    """Mean absolute and mean normalized accuracy over the tasks of ``accuracies``."""
    names = list(accuracies)
    return {
        "top1": sum(accuracies[n] for n in names) / len(names),
        "normalized_top1": sum(normalized_accuracy(accuracies[n], finetuned[n]) for n in names)
        / len(names),
    }


def select_best(scores: Sequence[float]) -> int:
    """Index of the highest score; ties go to the first grid point."""
    best = 0
    for index, score in enumerate(scores):
        if score > scores[best]:
            best = index
    return best
