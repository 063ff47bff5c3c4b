"""FusionBench's Hugging Face ``CLIPVisionModel`` checkpoints as open_clip ``visual`` state dicts.

FusionBench ships ``tanganke/clip-vit-{base-patch32,base-patch16,large-patch14}_<task>``:
``config.json`` + ``model.safetensors`` (fp32) of a ``transformers`` ``CLIPVisionModel`` (keys
``vision_model.*``; ``transformers`` 5 writes them without that prefix). It holds no visual
projection: the caller passes the (frozen) one of the openai base model. Key mapping, per layer
``encoder.layers.<i>.`` -> ``transformer.resblocks.<i>.``: ``self_attn.{q,k,v}_proj`` concatenated
in that order on dim 0 -> ``attn.in_proj_{weight,bias}``; ``self_attn.out_proj`` ->
``attn.out_proj``; ``layer_norm{1,2}`` -> ``ln_{1,2}``; ``mlp.fc{1,2}`` -> ``mlp.c_{fc,proj}``.
Outside the blocks: ``embeddings.class_embedding`` -> ``class_embedding``,
``embeddings.position_embedding.weight`` -> ``positional_embedding``,
``embeddings.patch_embedding.weight`` -> ``conv1.weight``, ``pre_layrnorm`` -> ``ln_pre``,
``post_layernorm`` -> ``ln_post``, ``visual_projection.weight`` transposed -> ``proj``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from taskmerge.errors import CheckpointError
from taskmerge.interop.keys import StateDict
from taskmerge.interop.readers import read_raw

# FusionBench task name -> taskmerge task name.
FUSION_BENCH_TASKS = {
    "sun397": "SUN397",
    "stanford-cars": "Cars",
    "resisc45": "RESISC45",
    "eurosat": "EuroSAT",
    "svhn": "SVHN",
    "gtsrb": "GTSRB",
    "mnist": "MNIST",
    "dtd": "DTD",
    "oxford_flowers102": "Flowers102",
    "pcam": "PCAM",
    "fer2013": "FER2013",
    "oxford-iiit-pet": "OxfordIIITPet",
    "stl10": "STL10",
    "cifar100": "CIFAR100",
    "cifar10": "CIFAR10",
    "food101": "Food101",
    "fashion_mnist": "FashionMNIST",
    "kmnist": "KMNIST",
    "rendered-sst2": "RenderedSST2",
}
# FusionBench tasks that have no taskmerge counterpart, with the reason.
FUSION_BENCH_REFUSED = {
    "emnist_letters": (
        "FusionBench's emnist_letters is the 26-class EMNIST letters task, not taskmerge's EMNIST "
        "(the 10-class digits split of the TALL 20-task list)"
    ),
}
# open_clip model name -> FusionBench / openai model name.
FUSION_BENCH_MODELS = {
    "ViT-B-32": "clip-vit-base-patch32",
    "ViT-B-16": "clip-vit-base-patch16",
    "ViT-L-14": "clip-vit-large-patch14",
}
FUSION_BENCH_ORG = "tanganke"

_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_OUTSIDE = {
    "embeddings.class_embedding": "class_embedding",
    "embeddings.position_embedding.weight": "positional_embedding",
    "embeddings.patch_embedding.weight": "conv1.weight",
    "pre_layrnorm.weight": "ln_pre.weight",
    "pre_layrnorm.bias": "ln_pre.bias",
    "post_layernorm.weight": "ln_post.weight",
    "post_layernorm.bias": "ln_post.bias",
}
_IN_LAYER = {
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "self_attn.out_proj.bias": "attn.out_proj.bias",
    "layer_norm1.weight": "ln_1.weight",
    "layer_norm1.bias": "ln_1.bias",
    "layer_norm2.weight": "ln_2.weight",
    "layer_norm2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.c_fc.weight",
    "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight",
    "mlp.fc2.bias": "mlp.c_proj.bias",
}
# Text tower, logit scale and the position-id buffer (persistent in older ``transformers``).
_IGNORED = re.compile(
    r"^(text_model\.|text_projection\.|logit_scale$|(vision_model\.)?embeddings\.position_ids$)"
)
_QKV = ("q_proj", "k_proj", "v_proj")


def fusion_bench_task(name: str) -> str:
    """The taskmerge task of a FusionBench task name (``stanford-cars`` -> ``Cars``).

    Raises:
        CheckpointError: for ``emnist_letters`` (a different task than taskmerge's EMNIST) and
            for unknown names.
    """
    if name in FUSION_BENCH_REFUSED:
        reason = FUSION_BENCH_REFUSED[name]
        raise CheckpointError(f"cannot import FusionBench task {name!r}: {reason}")
    if name not in FUSION_BENCH_TASKS:
        raise CheckpointError(
            f"unknown FusionBench task {name!r}; known: {', '.join(FUSION_BENCH_TASKS)}"
        )
    return FUSION_BENCH_TASKS[name]


def fusion_bench_repo(model: str, task: str) -> str:
    """The Hugging Face repo of a model / task (either naming): ``tanganke/clip-vit-..._<task>``."""
    if model not in FUSION_BENCH_MODELS:
        raise CheckpointError(f"FusionBench has no {model!r}; it has {list(FUSION_BENCH_MODELS)}")
    names = {ours: theirs for theirs, ours in FUSION_BENCH_TASKS.items()}
    theirs = task if task in FUSION_BENCH_TASKS else names.get(task)
    if theirs is None:
        fusion_bench_task(task)  # raises the right error (refused or unknown)
    return f"{FUSION_BENCH_ORG}/{FUSION_BENCH_MODELS[model]}_{theirs}"


def parse_fusion_bench_repo(name: str) -> tuple[str, str]:
    """``(open_clip model, taskmerge task)`` of a FusionBench repo id or folder name.

    Accepts ``tanganke/clip-vit-base-patch32_mnist``, ``clip-vit-base-patch32_mnist`` and the hub
    cache's ``models--tanganke--clip-vit-base-patch32_mnist``.
    """
    base = name.rstrip("/").split("/")[-1].split("--")[-1]
    for model, prefix in FUSION_BENCH_MODELS.items():
        if base.startswith(prefix + "_"):
            return model, fusion_bench_task(base[len(prefix) + 1 :])
    raise CheckpointError(f"{name!r} is not a FusionBench CLIP repo (clip-vit-<size>_<task>)")


def read_hf_config(directory: str | Path) -> dict[str, Any]:
    """The vision part of a ``transformers`` CLIP ``config.json`` (a CLIPModel's vision_config)."""
    path = Path(directory).expanduser() / "config.json"
    if not path.is_file():
        raise CheckpointError(f"no config.json in {path.parent}: not a Hugging Face model folder")
    config = json.loads(path.read_text())
    return config.get("vision_config", config) if config.get("model_type") == "clip" else config


def _load(source: str | Path | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    if isinstance(source, Mapping):
        return source
    path = Path(source).expanduser()
    if path.is_dir():
        config = read_hf_config(path)
        if config.get("hidden_act") != "quick_gelu":
            raise CheckpointError(
                f"{path}: hidden_act is {config.get('hidden_act')!r}; the openai CLIP towers "
                "taskmerge builds use QuickGELU, so this model would not match"
            )
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return read_raw(path / name)
        raise CheckpointError(f"{path} has no model.safetensors")
    return read_raw(path)


def convert_clip_vision(
    source: str | Path | Mapping[str, torch.Tensor],
    projection: torch.Tensor | None = None,
) -> StateDict:
    """An open_clip ``visual`` state dict from a ``transformers`` CLIP vision checkpoint.

    ``source`` is a state dict, a weight file or a model folder (``config.json`` must say
    ``hidden_act: quick_gelu``). ``projection`` is open_clip's ``proj`` (width x embed_dim), e.g.
    the openai base model's; it overrides a ``visual_projection.weight`` found in the source.
    Without either, the result has no ``proj`` key. Only the q/k/v concatenation copies memory.

    Raises:
        CheckpointError: on an unknown key, a missing layer entry or a projection of wrong width.
    """
    state = _load(source)
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in state) else ""
    outside: StateDict = {}
    layers: dict[int, dict[str, torch.Tensor]] = {}
    hf_projection = None
    for key, value in state.items():
        if _IGNORED.match(key):
            continue
        if key == "visual_projection.weight":
            hf_projection = value
            continue
        name = key[len(prefix) :] if prefix and key.startswith(prefix) else key
        if prefix and not key.startswith(prefix):
            raise CheckpointError(f"unexpected key {key!r} in a CLIP vision checkpoint")
        layer = _LAYER.match(name)
        if layer:
            layers.setdefault(int(layer.group(1)), {})[layer.group(2)] = value
        elif name in _OUTSIDE:
            outside[_OUTSIDE[name]] = value
        else:
            raise CheckpointError(f"unexpected key {key!r} in a CLIP vision checkpoint")
    missing = [k for k in _OUTSIDE.values() if k not in outside]
    if missing:
        raise CheckpointError(f"CLIP vision checkpoint lacks {', '.join(missing)}")
    if sorted(layers) != list(range(len(layers))):
        raise CheckpointError(f"CLIP vision checkpoint has layers {sorted(layers)}")
    if projection is None and hf_projection is not None:
        projection = hf_projection.T
    return _assemble(outside, layers, projection)


def _assemble(
    outside: StateDict, layers: dict[int, dict[str, torch.Tensor]], proj: torch.Tensor | None
) -> StateDict:
    width = outside["class_embedding"].shape[0]
    out: StateDict = {
        "class_embedding": outside["class_embedding"],
        "positional_embedding": outside["positional_embedding"],
    }
    if proj is not None:
        if proj.dim() != 2 or proj.shape[0] != width:
            raise CheckpointError(
                f"projection of shape {tuple(proj.shape)} does not fit width {width} "
                "(open_clip's proj is width x embed_dim)"
            )
        out["proj"] = proj.contiguous()
    out["conv1.weight"] = outside["conv1.weight"]
    out["ln_pre.weight"], out["ln_pre.bias"] = outside["ln_pre.weight"], outside["ln_pre.bias"]
    for index in range(len(layers)):
        out.update(_convert_layer(index, layers[index]))
    out["ln_post.weight"], out["ln_post.bias"] = outside["ln_post.weight"], outside["ln_post.bias"]
    return out


def _convert_layer(index: int, entries: dict[str, torch.Tensor]) -> StateDict:
    prefix = f"transformer.resblocks.{index}."
    qkv = {f"self_attn.{p}.{kind}" for p in _QKV for kind in ("weight", "bias")}
    expected = qkv | set(_IN_LAYER)
    unknown = sorted(set(entries) - expected)
    missing = sorted(expected - set(entries))
    if unknown or missing:
        detail = f"unexpected {unknown}" if unknown else f"missing {missing}"
        raise CheckpointError(f"CLIP vision layer {index}: {detail}")
    out: StateDict = {}
    out[prefix + "ln_1.weight"] = entries["layer_norm1.weight"]
    out[prefix + "ln_1.bias"] = entries["layer_norm1.bias"]
    for kind in ("weight", "bias"):
        parts = [entries[f"self_attn.{p}.{kind}"] for p in _QKV]
        out[f"{prefix}attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
    for theirs, ours in _IN_LAYER.items():
        if not theirs.startswith("layer_norm1"):
            out[prefix + ours] = entries[theirs]
    return out
