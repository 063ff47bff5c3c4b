"""Readers of the reference repos' checkpoint files, returning open_clip ``visual`` state dicts.

* tall_masks / LiNeS / TSV ``nonlinear_{finetuned,zeroshot}.pt``: a pickled dict (an
  ``ImageEncoder`` state dict: ``model.visual.*`` plus text leftovers, which are dropped).
* task_vectors / tangent ``{finetuned,zeroshot}.pt``: a whole pickled ``src.modeling.ImageEncoder``
  (read as a stand-in tree, see :mod:`taskmerge.io.safe_pickle`).
* tangent ``linear_{finetuned,zeroshot}.pt``: ``model.params.<i>`` / ``model.params0.<i>`` in the
  ``named_parameters()`` order of the linearized ``ImageEncoder`` (:func:`read_linear_checkpoint`).
* heads ``head_<Task>[Val].pt``: a pickled ``ClassificationHead`` (an ``nn.Linear``).
* plain open_clip state dicts (``.safetensors`` or weights-only ``.pt``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from taskmerge.errors import CheckpointError
from taskmerge.interop.keys import StateDict, shape_of, to_visual, visual_order
from taskmerge.io.safe_pickle import StandIn, legacy_name, load_legacy, module_state_dict


def read_raw(path: str | Path) -> StateDict:
    """Every tensor of a checkpoint under the name it was stored with (no prefix stripped).

    Accepts safetensors, a pickled dict of tensors (also ``{"state_dict": ...}``) or a pickled
    module; non-tensor entries (e.g. tangent's ``model_name``) are left out.
    """
    path = Path(path).expanduser()
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    obj = load_legacy(path)
    if isinstance(obj, StandIn):
        return module_state_dict(obj)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {legacy_name(obj)}, not a state dict or a module")
    return {key: value for key, value in obj.items() if isinstance(value, torch.Tensor)}


def read_state_dict(path: str | Path) -> StateDict:
    """An open_clip image tower from any supported file (keys with or without a visual prefix)."""
    return to_visual(read_raw(path), path)


def read_tall_masks_checkpoint(path: str | Path) -> StateDict:
    """``nonlinear_{finetuned,zeroshot}.pt`` of tall_masks / LiNeS / TSV as an open_clip tower."""
    return read_state_dict(path)


def read_task_vectors_checkpoint(path: str | Path) -> StateDict:
    """``{finetuned,zeroshot}.pt`` of task_vectors / tangent (a pickled ``ImageEncoder``)."""
    return read_state_dict(path)


@dataclass(frozen=True)
class LinearCheckpoint:
    """A tangent linearized checkpoint: ``params`` (theta) and ``params0`` (theta0), by name."""

    params: StateDict
    params0: StateDict
    model_name: str | None


_INDEXED = re.compile(r"^(.*?)(params0?)\.(\d+)$")


def _indexed(state: Mapping[str, Any], path: Path) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    lists: dict[str, dict[int, torch.Tensor]] = {"params": {}, "params0": {}}
    for key, value in state.items():
        match = _INDEXED.match(key)
        if match and isinstance(value, torch.Tensor):
            lists[match.group(2)][int(match.group(3))] = value
    out = []
    for name in ("params", "params0"):
        found = lists[name]
        if sorted(found) != list(range(len(found))) or not found:
            raise CheckpointError(
                f"{path} is not a tangent linearized checkpoint: its `{name}.<i>` entries "
                f"are {'missing' if not found else 'not numbered 0..n-1'}"
            )
        out.append([found[i] for i in range(len(found))])
    if [t.shape for t in out[0]] != [t.shape for t in out[1]]:
        raise CheckpointError(f"{path}: params and params0 differ in shapes")
    return out[0], out[1]


def read_linear_checkpoint(path: str | Path, reference: Mapping[str, Any]) -> LinearCheckpoint:
    """Name the parameter lists of a tangent ``linear_{finetuned,zeroshot}.pt``.

    The lists follow ``named_parameters()`` of the linearized ``ImageEncoder``: the CLIP's own
    parameters (``positional_embedding``, ``text_projection``, ``logit_scale``), then the whole
    ``visual`` tower, then ``token_embedding`` and ``ln_final`` (the text transformer is deleted).
    ``reference`` is the open_clip ``visual`` state dict of the same architecture (name -> tensor
    or shape). Standard ViT names are put in the tower's ``named_parameters`` order whatever their
    order in ``reference`` (other names keep theirs); the tower is then located as the one run of
    the lists whose shapes match the reference's, entry by entry.

    Raises:
        CheckpointError: if the file is not a linearized checkpoint or no single window matches.
    """
    path = Path(path).expanduser()
    obj = load_legacy(path)
    if isinstance(obj, StandIn):
        obj = module_state_dict(obj)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {legacy_name(obj)}, not a linearized state dict")
    params, params0 = _indexed(obj, path)
    names = visual_order(list(reference))
    shapes = [shape_of(reference[name]) for name in names]
    found = [tuple(t.shape) for t in params]
    starts = [
        start
        for start in range(len(found) - len(shapes) + 1)
        if found[start : start + len(shapes)] == shapes
    ]
    if len(starts) != 1:
        raise CheckpointError(
            f"{path}: {'no' if not starts else 'more than one'} run of its {len(found)} parameters "
            f"matches the {len(shapes)} tensors of the reference image tower: pass the open_clip "
            "visual state dict of the architecture it was fine-tuned from"
        )
    start = starts[0]
    model_name = obj.get("model_name")
    return LinearCheckpoint(
        params=dict(zip(names, params[start : start + len(names)], strict=True)),
        params0=dict(zip(names, params0[start : start + len(names)], strict=True)),
        model_name=model_name if isinstance(model_name, str) else None,
    )


def read_head(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight, bias)`` of a pickled ``ClassificationHead`` (or a dict with those two keys).

    The references' heads L2-normalise the image features first (``normalize=True``), as
    taskmerge's heads do; a head saved with ``normalize=False`` is refused.
    """
    path = Path(path).expanduser()
    obj = load_legacy(path)
    if isinstance(obj, StandIn):
        if obj.get("normalize", True) is not True:
            raise CheckpointError(
                f"{path}: a head with normalize={obj.get('normalize')!r}; taskmerge heads act on "
                "L2-normalised features, so this head cannot be imported as is"
            )
        obj = module_state_dict(obj)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("weight"), torch.Tensor):
        raise CheckpointError(f"{path} holds no classification head (no `weight` tensor)")
    weight = obj["weight"]
    bias = obj.get("bias")
    if weight.dim() != 2:
        raise CheckpointError(f"{path}: head weight has shape {tuple(weight.shape)}, expected 2-D")
    if bias is None:
        bias = torch.zeros(weight.shape[0], dtype=weight.dtype)
    return weight, bias
