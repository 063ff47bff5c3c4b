"""Python API: merge any pretrained module with fine-tuned copies of it, without Hydra.

    import taskmerge
    merged = taskmerge.merge(pretrained, {"mnist": m1, "svhn": m2}, method="ties", k=20,
                             scaling_coef=0.4)

Keyword names are the method's YAML keys (``config/method/<name>.yaml``). Nothing is swept
here (there is no Val data): methods with a coefficient need ``scaling_coef``, TALL masks need
one ``tall_mask_lambda``. ``apply_lines=True`` (LiNeS) needs ``pretrained`` as an ``nn.Module``
(its residual blocks are read from it); ``scaling_coef`` is then beta (multi-task; alpha comes
from the norms) or alpha (``single_task`` editing; beta = 1 - alpha). The inputs are never
modified.

Linearized (tangent-space) models: :class:`taskmerge.LinearizedEncoder` computes the linearized
forward of any encoder around theta0; its state dict is the encoder's, so it merges like any
module, and loading a merged (or non-linearly fine-tuned) state dict into it evaluates it
linearly. Linearized and non-linear models are never merged together.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskmerge.adapt.model_data import ModelData
from taskmerge.errors import CheckpointError, ConfigError
from taskmerge.interop.keys import VISUAL_PREFIXES
from taskmerge.io.tensors import (
    StateDict,
    load_state_dict,
    read_metadata,
    save_state_dict,
    tensor_shapes,
    tensor_specs,
    verify_checksum,
)
from taskmerge.merging.base import MergeMethod
from taskmerge.merging.build import build_method
from taskmerge.merging.registry import method_names, method_spec
from taskmerge.models.linearized import LinearizedEncoder
from taskmerge.store.checkpoints import MERGED_FORMAT
from taskmerge.vectors.task_vector import TaskVector, check_same_mode

Model = nn.Module | Mapping[str, torch.Tensor]
Source = Model | str | Path

__all__ = ["make_method", "merge", "method_names"]
log = logging.getLogger("taskmerge")


def _state_dict(model: Model) -> StateDict:
    source = model.state_dict() if isinstance(model, nn.Module) else model
    return {key: value.detach().clone() for key, value in source.items()}


def _build(pretrained: Model, state: StateDict, return_state_dict: bool) -> Model:
    if return_state_dict or not isinstance(pretrained, nn.Module):
        return state
    module = copy.deepcopy(pretrained)
    module.load_state_dict(state)
    return module


def make_method(method: str, **hyperparameters: Any) -> MergeMethod:
    """Instantiate a merge method by its config name with its YAML keys (nothing swept).

    ``apply_lines`` / ``tradeoff_target_weight`` wrap it in LiNeS at the given ``scaling_coef``
    (multi-task: beta; ``single_task``: alpha); bind it to the model before use.
    """
    return build_method(method, hyperparameters, fixed=True)


def merge(
    pretrained: Source,
    finetuned: Mapping[str, Source],
    method: str = "sum",
    return_state_dict: bool = False,
    save_to: str | Path | None = None,
    overwrite: bool = False,
    data: Mapping[str, Iterable[Any]] | None = None,
    heads: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    device: str = "cpu",
    **hyperparameters: Any,
) -> Model | dict[str, Model]:
    """Merge fine-tuned versions of ``pretrained`` with one method and fixed hyperparameters.

    Args:
        pretrained: The common starting point: an ``nn.Module``, a state dict, or a checkpoint
            path (``.safetensors``, or a weights-only ``.pt`` state dict).
        finetuned: Task name -> fine-tuned module, state dict or checkpoint path of the same
            architecture. ``.safetensors`` paths are read lazily, one tensor at a time (the
            bounded-memory path of ``main.py``): merging many large checkpoints needs about
            three copies of one model, whatever their number.
        method: A config name of :mod:`taskmerge.merging.registry` (``method_names()``).
        return_state_dict: Return state dicts even when modules were given.
        save_to: Also write the result as a safetensors checkpoint there (atomically; for
            methods with one model per task, a directory of ``<task>.safetensors``). Its header
            says it is merged (method, hyperparameters, tasks): it is never taken for a
            fine-tuned checkpoint.
        overwrite: Replace an existing ``save_to`` file (never one of the inputs).
        data: For the methods that learn from data (``adamerging``, ``regmean``, ``fisher``):
            task -> an iterable of batches (tensors or ``(inputs, labels)``; labels are never
            read): AdaMerging's unlabeled adaptation images, RegMean's / Fisher's training
            images. ``pretrained`` must then be the ``nn.Module``.
        heads: With ``data``: task -> the module's features -> logits (e.g. a zero-shot head).
        device: Where those methods run the module.
        **hyperparameters: The method's YAML keys, e.g. ``k=20, scaling_coef=0.4``,
            ``apply_lines=True``, ``task_index=0`` (``negation``: theta0 - scaling_coef * tau).

    ``pretrained`` may be a whole CLIP (an open_clip model or its state dict, or a reference
    repo's ``ImageEncoder`` state dict) when the fine-tuned models are image towers: its image
    tower is used, said in one log line.

    Returns:
        The merged module (or state dict, also whenever ``pretrained`` is a path); for methods
        whose result is one model per task (``tall_mask``, ``mag_masking``, ``TSVC``), a dict
        task name -> module (or state dict).

    Raises:
        ConfigError: an argument of the wrong kind or a wrong hyperparameter (one line naming
            it); CheckpointError: a file missing, damaged or of another architecture;
            StorageError: ``save_to`` cannot be written.
    """
    check_arguments(pretrained, finetuned, method, return_state_dict, save_to, overwrite)
    linear = {name for name, model in finetuned.items() if isinstance(model, LinearizedEncoder)}
    if linear and len(linear) != len(finetuned):
        raise ConfigError(
            f"linearized models {sorted(linear)} and non-linear ones would be merged together: "
            "merge models of one fine-tuning mode (wrap all or none in LinearizedEncoder)"
        )
    spec = method_spec(method)
    editing = spec.lines == "editing" and hyperparameters.get("apply_lines")
    if (spec.scaled or editing) and hyperparameters.get("scaling_coef") is None:
        raise ConfigError(f"method {method!r} needs scaling_coef=<value> (nothing is swept here)")
    merger = make_method(method, **hyperparameters)
    targets = _save_targets(save_to, list(finetuned), spec.cls, overwrite)
    _refuse_inputs(targets, pretrained, finetuned)
    module = pretrained if isinstance(pretrained, nn.Module) else None
    base = _base_state(pretrained)
    tower = image_tower(base, _keys_of(next(iter(finetuned.values()))))
    if tower is not base:
        module = getattr(module, "visual", None)
        base = tower
    merger = merger.bind(module, list(finetuned))
    if spec.needs_data:
        merger.attach(_model_data(merger, module, finetuned, data, heads, device))  # type: ignore[attr-defined]
    task_vectors = {name: _task_vector(base, model) for name, model in finetuned.items()}
    check_same_mode(task_vectors)
    candidates = list(itertools.islice(merger.candidates(base, task_vectors), 2))
    if len(candidates) != 1:
        raise ConfigError(
            f"method {method!r} produced several candidates: give one value of each swept "
            "hyperparameter (e.g. tall_mask_lambda=0.4)"
        )
    candidate = candidates[0]
    metadata = {
        "format": MERGED_FORMAT,
        "method": method,
        "hyperparameters": json.dumps(candidate.hyperparameters, sort_keys=True, default=str),
        "tasks": json.dumps(list(finetuned)),
    }
    if candidate.per_task:
        merged = {}
        for task, state in candidate.per_task.items():
            state = dict(state)  # one task's model at a time
            if targets:
                save_state_dict(state, targets[task], metadata)
            merged[task] = _build(pretrained, state, return_state_dict)
        return merged
    state = dict(candidate.for_task(next(iter(finetuned))))
    if targets:
        save_state_dict(state, targets[""], metadata)
    return _build(module if module is not None else pretrained, state, return_state_dict)


def _model_data(
    method: MergeMethod, module: nn.Module | None, finetuned: Mapping[str, Any],
    data: Mapping[str, Iterable[Any]] | None, heads: Mapping[str, Callable] | None, device: str,
) -> ModelData:  # fmt: skip
    """The data of a method that learns from data, from the caller's loaders and heads."""
    name = method.name
    if module is None:
        raise ConfigError(f"method {name!r} runs the model: give pretrained as the nn.Module")
    if not isinstance(data, Mapping) or not isinstance(heads, Mapping):
        raise ConfigError(
            f"method {name!r} learns from data: pass data={{task: loader}} and "
            "heads={task: features -> logits} for every task"
        )
    missing = [t for t in finetuned if t not in data or t not in heads]
    if missing:
        raise ConfigError(f"method {name!r}: data and heads lack the tasks {missing}")
    copy_ = copy.deepcopy(module).requires_grad_(False)
    adaptation = getattr(method, "uses_adaptation_split", False)
    batches = {t: data[t] for t in finetuned}
    return ModelData(
        copy_, {t: heads[t] for t in finetuned}, adapt=batches if adaptation else None,
        train=None if adaptation else batches, device=device, adapt_on="given",
    )  # fmt: skip


def check_arguments(
    pretrained: Any, finetuned: Any, method: Any, return_state_dict: Any, save_to: Any,
    overwrite: Any,
) -> None:  # fmt: skip
    """Each argument of :func:`merge` is of a kind it takes.

    Raises:
        ConfigError: naming the argument, what it got and what it takes.
    """
    what = "an nn.Module, a state dict (name -> tensor) or a checkpoint path"
    if not _is_source(pretrained):
        raise ConfigError(f"pretrained={_short(pretrained)}: expected {what}")
    if not isinstance(finetuned, Mapping) or not finetuned:
        raise ConfigError(
            f"finetuned={_short(finetuned)}: expected a non-empty mapping task name -> model "
            f"({what}), e.g. {{'MNIST': m1, 'SVHN': m2}}"
        )
    for name, model in finetuned.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ConfigError(
                f"finetuned has the task name {name!r}: use non-empty names without /"
            )
        if not _is_source(model):
            raise ConfigError(f"finetuned[{name!r}]={_short(model)}: expected {what}")
    if not isinstance(method, str):
        raise ConfigError(f"method={_short(method)}: expected a method name ({method_names()})")
    for key, value in (("return_state_dict", return_state_dict), ("overwrite", overwrite)):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={_short(value)}: expected True or False")
    if save_to is not None and not isinstance(save_to, (str, Path)):
        raise ConfigError(f"save_to={_short(save_to)}: expected a file path")


def _is_source(value: Any) -> bool:
    if isinstance(value, (nn.Module, str, Path)):
        return bool(str(value)) if isinstance(value, str) else True
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(v, torch.Tensor) for v in value.values())
    )


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, nn.Module) else type(value).__name__
    return (text[:60] + "...") if len(text) > 60 else f"{text} ({type(value).__name__})"


def _keys_of(model: Source) -> list[str]:
    """The parameter names of a fine-tuned model (from the header, for a safetensors path)."""
    if isinstance(model, nn.Module):
        return list(model.state_dict())
    if isinstance(model, Mapping):
        return list(model)
    path = Path(model).expanduser()
    if path.suffix == ".safetensors" and path.is_file():
        return list(tensor_shapes(path))
    return []


def image_tower(base: StateDict, tuned_keys: list[str]) -> StateDict:
    """``base`` itself, or its image tower when it is a whole CLIP (an open_clip model or
    checkpoint, DDP's ``module.`` included, or a reference repo's ``ImageEncoder``) and the
    fine-tuned models are image towers.

    Raises:
        CheckpointError: ``base`` is a whole CLIP whose image tower lacks keys of the fine-tuned
            models (another architecture), naming the keys that differ.
    """
    if not tuned_keys or set(tuned_keys) <= set(base):
        return base
    for prefix in VISUAL_PREFIXES:
        tower = {k[len(prefix) :]: v for k, v in base.items() if k.startswith(prefix)}
        if not tower:
            continue
        missing = sorted(set(tuned_keys) - set(tower))
        if missing:
            unexpected = sorted(set(tower) - set(tuned_keys))
            raise CheckpointError(
                f"pretrained is a whole CLIP whose image tower ({prefix}*) does not match the "
                f"fine-tuned models: missing keys {_few(missing)}, unexpected keys "
                f"{_few(unexpected)}: give the pretrained model they were fine-tuned from"
            )
        log.info("pretrained is a whole CLIP: its image tower (%s*) is merged", prefix)
        return tower
    return base


def _few(keys: list[str], shown: int = 5) -> str:
    """``keys`` as a list, the first ``shown`` of them and how many more."""
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"{keys[:shown]}{more}"


def _save_targets(
    save_to: str | Path | None, tasks: list[str], cls: type, overwrite: bool
) -> dict[str, Path]:
    """Where the result goes ('' -> the file; task -> its file for per-task methods), checked
    not to replace an existing file unless ``overwrite``."""
    if save_to is None:
        return {}
    root = Path(save_to).expanduser()
    per_task = bool(getattr(cls, "per_task_result", False))
    targets = {t: root / f"{t}.safetensors" for t in tasks} if per_task else {"": root}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"save_to: {existing[0]} exists: choose another file, or pass overwrite=True "
            "(--overwrite) to replace it"
        )
    return targets


def _refuse_inputs(targets: Mapping[str, Path], pretrained: Source, finetuned: Mapping) -> None:
    """No target is one of the merge's own input files (whatever ``overwrite`` says)."""
    inputs = [m for m in (pretrained, *finetuned.values()) if isinstance(m, (str, Path))]
    for target in targets.values():
        for source in inputs:
            source = Path(source).expanduser()
            same = target.exists() and source.exists() and os.path.samefile(target, source)
            if same or target.resolve() == source.resolve():
                raise ConfigError(
                    f"save_to: {target} is one of the merge's inputs ({source}): write the "
                    "merged model elsewhere (never into a fine-tuned checkpoint's folder)"
                )


def _base_state(pretrained: Source) -> StateDict:
    """The pretrained state dict (a private copy; read from disk for a path, checked)."""
    if isinstance(pretrained, (str, Path)):
        path = Path(pretrained).expanduser()
        if path.suffix == ".safetensors" and path.is_file():
            tensor_specs(path)  # one line for an empty, truncated or foreign file
            verify_checksum(path, fix="use an intact copy")
        return load_state_dict(path)
    return _state_dict(pretrained)


def _task_vector(base: StateDict, model: Source) -> TaskVector:
    """One task vector: lazy for a safetensors path (its header's mode kept), else in memory."""
    if isinstance(model, (str, Path)):
        path = Path(model).expanduser()
        if path.suffix == ".safetensors":
            if not path.is_file():
                raise CheckpointError(f"checkpoint not found: {path}")
            header = read_metadata(path)
            if header.get("format") == MERGED_FORMAT:
                raise CheckpointError(
                    f"{path} is a merged model ({header.get('method')} of {header.get('tasks')}),"
                    " not a fine-tuned one: merge the fine-tuned checkpoints themselves"
                )
            verify_checksum(path, fix="use an intact copy")
            mode = header.get("finetuning")
            return TaskVector.lazy(base, path, mode=mode)
        try:
            return TaskVector.from_state_dicts(base, load_state_dict(path))
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - a key/shape mismatch names the file
            raise CheckpointError(f"{path}: {exc}") from None
    mode = "linear" if isinstance(model, LinearizedEncoder) else None
    vector = TaskVector.from_state_dicts(base, _state_dict(model))
    vector.mode = mode
    return vector
