"""Random state dicts and fine-tuned checkpoints in the project layout."""

from __future__ import annotations

from pathlib import Path

import torch

from taskmerge.io.tensors import save_state_dict

SHAPES = {
    "blocks.0.attn.weight": (6, 4),
    "blocks.0.mlp.weight": (5, 7),  # wide: TSV decomposes the transpose
    "blocks.0.bias": (5,),
    "conv1.weight": (2, 3, 2, 2),
    "text_projection": (4, 3),
    "class_embedding": (4,),
}


def random_state(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {name: torch.randn(shape, generator=gen) * scale for name, shape in SHAPES.items()}
    # ties in magnitude, exact zeros and opposite signs that cancel in the sign election
    state["blocks.0.attn.weight"][0] = torch.tensor([0.5, -0.5, 0.0, 0.25])
    state["position_ids"] = torch.arange(4)  # an integer buffer: not a weight
    return state


def write_checkpoints(root: Path, count: int) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    """A pretrained state dict and ``count`` fine-tuned checkpoints in the project layout."""
    pretrained = random_state(0)
    paths = {}
    for index in range(count):
        delta = random_state(index + 1, scale=0.1)
        tuned = {
            k: v + delta[k] if v.is_floating_point() else v.clone() for k, v in pretrained.items()
        }
        if index % 2:  # make some entries cancel across tasks
            tuned["blocks.0.bias"][0] = pretrained["blocks.0.bias"][0] - 0.125
        else:
            tuned["blocks.0.bias"][0] = pretrained["blocks.0.bias"][0] + 0.125
        path = root / "model" / "standard" / f"Task{index}" / "finetuned.safetensors"
        save_state_dict(tuned, path)
        paths[f"Task{index}"] = path
    return pretrained, paths
