"""Contrastive pretraining of the tiny CLIP on captioned demo images (offline, CPU, minutes).

The corpus plays the part of CLIP's web data: images from the demo generators drawn in random
styles (a domain shift from every task's own look) with captions built from the task templates.
Identical captions in a batch are treated as positives of each other (soft targets).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from taskmerge.data.demo_tasks import DEMO_TASKS, random_style


def caption_corpus(images_per_task: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Images (uint8 NHWC) and captions for every demo task, each chunk in a random style."""
    rng = np.random.default_rng(seed)
    images, captions = [], []
    chunk = 500
    for task_index, task in enumerate(DEMO_TASKS.values()):
        for part in range(math.ceil(images_per_task / chunk)):
            chunk_seed = seed * 100_003 + task_index * 1_000 + part
            batch, labels = task.generate(chunk_seed, chunk, style=random_style(rng))
            images.append(batch)
            captions += [
                task.templates[rng.integers(len(task.templates))].format(task.classnames[label])
                for label in labels
            ]
    return np.concatenate(images), captions


def contrastive_loss(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss; samples with the same caption are positives of each other."""
    image_features = F.normalize(model.encode_image(images), dim=-1)
    text_features = F.normalize(model.encode_text(tokens), dim=-1)
    logits = model.logit_scale.exp() * image_features @ text_features.T
    same = (tokens[:, None, :] == tokens[None, :, :]).all(-1).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def pretrain_clip(
    model: nn.Module,
    preprocess_batch,  # noqa: ANN001 - callable uint8 NHWC array -> normalised float tensor
    tokenizer,  # noqa: ANN001
    steps: int = 1500,
    batch_size: int = 256,
    lr: float = 5e-4,
    images_per_task: int = 4000,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Train ``model`` contrastively on the demo caption corpus; returns it on the CPU in eval
    mode."""
    torch.manual_seed(seed)
    images, captions = caption_corpus(images_per_task, seed)
    pixels = preprocess_batch(images).to(device)
    tokens = tokenizer(captions).to(device)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    start = time.time()
    for _ in tqdm(range(steps), desc="pretraining tiny CLIP", leave=False):
        index = torch.randint(len(pixels), (batch_size,), generator=generator).to(device)
        loss = contrastive_loss(model, pixels[index], tokens[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval().cpu()
    model.pretraining_seconds = time.time() - start  # type: ignore[attr-defined]
    return model
