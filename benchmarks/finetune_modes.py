"""Training-step time of each fine-tuning mode relative to ``standard``, same model and batch.

    python benchmarks/finetune_modes.py [--models tiny ViT-B-32] [--steps 6] [--rounds 3]

One optimizer step = forward through the mode's forward (linearized for ``linear``), cross
entropy on a frozen head, backward, grad-norm clip, AdamW. The modes run round-robin (``rounds``
times ``steps`` timed steps each, after two warm-up steps) so machine noise hits all of them
alike; the median step time of each mode is reported, and the ratios come from one run.
Models: ``tiny`` (the demo CLIP, batch 128 of 32 px images, its shipped weights) and the
open_clip ``ViT-B-32`` architecture (random weights, no download; 224 px, batch 16 on a CPU).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from machine import machine_line  # benchmarks/machine.py

from taskmerge.finetune.modes import AttentionOnly, FinetuningMode, Linearized
from taskmerge.models.forward import forward_module

MODES = {"standard": FinetuningMode(), "attention": AttentionOnly(), "linear": Linearized()}


def build(name: str, batch: int | None) -> tuple[torch.nn.Module, torch.Tensor, int]:
    """The image encoder, a batch of images and its size."""
    if name == "tiny":
        import tempfile

        from taskmerge.models.tiny import load_tiny_clip

        encoder, size, default = load_tiny_clip(tempfile.mkdtemp()).visual, 32, 128
    else:
        import open_clip

        model = open_clip.create_model(name, pretrained=None, force_quick_gelu=True)
        encoder, size, default = model.visual, model.visual.image_size[0], 16
    count = batch or default
    images = torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(0))
    return encoder, images, count


def make_step(encoder: torch.nn.Module, mode: FinetuningMode, images: torch.Tensor):  # noqa: ANN201
    """A closure running one training step of ``mode`` on a private copy of ``encoder``."""
    encoder = copy.deepcopy(encoder).train()
    params = mode.select_trainable(encoder)
    model = forward_module(mode.forward, encoder)
    with torch.no_grad():
        width = encoder(images[:1]).shape[-1]
    head = torch.nn.Linear(width, 10).requires_grad_(False)
    labels = torch.arange(len(images)) % 10
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.1)

    def step() -> None:
        loss = F.cross_entropy(head(model(images)), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure(name: str, steps: int, rounds: int, batch: int | None) -> dict[str, float]:
    """Median seconds per step of every mode on one model."""
    encoder, images, count = build(name, batch)
    runners = {mode: make_step(encoder, spec, images) for mode, spec in MODES.items()}
    for run in runners.values():  # warm-up
        run()
        run()
    times: dict[str, list[float]] = {mode: [] for mode in runners}
    for _ in range(rounds):
        for mode, run in runners.items():
            for _ in range(steps):
                start = time.perf_counter()
                run()
                times[mode].append(time.perf_counter() - start)
    print(f"\n{name}, batch {count}, {torch.get_num_threads()} threads")
    medians = {mode: statistics.median(values) for mode, values in times.items()}
    print("| mode | s / step | vs standard |\n|---|---|---|")
    for mode, seconds in medians.items():
        print(f"| {mode} | {seconds:.3f} | {seconds / medians['standard']:.2f}x |")
    return medians


def main() -> None:
    """Measure and print one table per model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "ViT-B-32"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=None, help="default: 128 tiny, 16 ViT")
    args = parser.parse_args()
    print(machine_line(), flush=True)  # the date and machine of these figures
    for name in args.models:
        measure(name, args.steps, args.rounds, args.batch)


if __name__ == "__main__":
    main()
