"""Key names: from the prefixes the reference repos store to open_clip's ``visual`` names."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from taskmerge.errors import CheckpointError

StateDict = dict[str, torch.Tensor]

# Most specific first: the linear-2 repo's wrapper around an ImageEncoder (kyrie-23
# src/linearize.py ``ReluEncoder.save``: ``image_encoder.model.visual.``), an ImageEncoder's
# ``model.visual.``, a CLIP's ``visual.``, DDP's ``module.``.
VISUAL_PREFIXES = ("image_encoder.model.visual.", "module.model.visual.", "model.visual.",
                   "module.visual.", "visual.")  # fmt: skip
REQUIRED_VISUAL_KEYS = ("conv1.weight", "class_embedding", "positional_embedding")

# ``state_dict`` (= ``named_parameters``) order of open_clip's ViT tower: its own parameters first,
# then the submodules in the order they are registered; inside a block likewise.
_TOP = ("class_embedding", "positional_embedding", "proj", "conv1", "ln_pre", "transformer")
_TOP += ("ln_post",)
_IN_BLOCK = ("ln_1", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj", "ln_2")
_IN_BLOCK += ("mlp.c_fc", "mlp.c_proj")
_LEAVES = ("", ".weight", ".bias")
_BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")


def _slot(order: Sequence[str], name: str) -> tuple[int, int] | None:
    for index, head in enumerate(order):
        if name.startswith(head) and name[len(head) :] in _LEAVES:
            return index, _LEAVES.index(name[len(head) :])
    return None


def _position(name: str) -> tuple[int, int, int, int] | None:
    """Sort key of a tower entry; None for a name outside the standard ViT tower."""
    block = _BLOCK.match(name)
    if block is None:
        slot = _slot(_TOP, name)
        return None if slot is None else (slot[0], -1, *slot)
    slot = _slot(_IN_BLOCK, block.group(2))
    return None if slot is None else (_TOP.index("transformer"), int(block.group(1)), *slot)


def visual_order(names: Sequence[str]) -> list[str]:
    """``names`` in the ``state_dict`` order of an open_clip ViT (unchanged if one is unknown)."""
    ranks = [_position(name) for name in names]
    if any(rank is None for rank in ranks):
        return list(names)
    return [name for _, name in sorted(zip(ranks, names, strict=True))]


def visual_prefix(keys: Sequence[str]) -> str | None:
    """The prefix under which the image tower's keys lie, or None for bare ``visual`` keys."""
    for prefix in VISUAL_PREFIXES:
        if any(key.startswith(prefix) for key in keys):
            return prefix
    return None


def to_visual(state: Mapping[str, Any], source: str | Path = "state dict") -> StateDict:
    """The open_clip ``visual`` state dict inside ``state``: prefix stripped, other keys dropped.

    Text-tower keys, ``logit_scale``, a ``model_name`` string and the like are dropped; keys
    without any known prefix are taken as bare ``visual`` keys. The tensors are not copied.

    Raises:
        CheckpointError: if no image-tower keys are found or one of them is not a tensor.
    """
    keys = list(state)
    prefix = visual_prefix(keys)
    if prefix is None:
        out = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    else:
        out = {key[len(prefix) :]: state[key] for key in keys if key.startswith(prefix)}
    bad = [key for key, value in out.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: {bad[0]} is not a tensor")
    missing = [key for key in REQUIRED_VISUAL_KEYS if key not in out]
    if missing:
        raise CheckpointError(
            f"{source} holds no open_clip image tower (missing {', '.join(missing)}; "
            f"keys start with {sorted({k.split('.')[0] for k in keys})[:6]}): "
            "point taskmerge at an image-encoder checkpoint"
        )
    return {key: out[key] for key in visual_order(list(out))}


def shape_of(value: Any) -> tuple[int, ...]:
    """The shape of a tensor / array, or ``value`` itself read as a shape."""
    shape = getattr(value, "shape", value)
    return tuple(int(size) for size in shape)
