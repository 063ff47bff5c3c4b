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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskmerge.errors import CheckpointError, ConfigError
from taskmerge.io.tensors import StateDict, load_state_dict, read_metadata, save_state_dict
from taskmerge.merging.base import MergeMethod
from taskmerge.merging.build import build_method
from taskmerge.merging.registry import method_names, method_spec
from taskmerge.models.linearized import LinearizedEncoder
from taskmerge.vectors.task_vector import TaskVector, check_same_mode

Model = nn.Module | Mapping[str, torch.Tensor]
Source = Model | str | Path

__all__ = ["make_method", "merge", "method_names"]


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
            methods with one model per task, a directory of ``<task>.safetensors``).
        **hyperparameters: The method's YAML keys, e.g. ``k=20, scaling_coef=0.4``,
            ``apply_lines=True``, ``task_index=0`` (``negation``: theta0 - scaling_coef * tau).

    Returns:
        The merged module (or state dict, also whenever ``pretrained`` is a path); for methods
        whose result is one model per task (``tall_mask``, ``mag_masking``, ``TSVC``), a dict
        task name -> module (or state dict).
    """
    if not finetuned:
        raise ConfigError("merge needs at least one fine-tuned model: pass {name: model, ...}")
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
    module = pretrained if isinstance(pretrained, nn.Module) else None
    merger = merger.bind(module, list(finetuned))
    base = _base_state(pretrained)
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
        "format": "taskmerge/merged-image-encoder/v1",
        "method": method,
        "hyperparameters": json.dumps(candidate.hyperparameters, sort_keys=True, default=str),
        "tasks": json.dumps(list(finetuned)),
    }
    if candidate.per_task:
        merged = {}
        for task, state in candidate.per_task.items():
            state = dict(state)  # one task's model at a time
            if save_to is not None:
                save_state_dict(state, Path(save_to) / f"{task}.safetensors", metadata)
            merged[task] = _build(pretrained, state, return_state_dict)
        return merged
    state = dict(candidate.for_task(next(iter(finetuned))))
    if save_to is not None:
        save_state_dict(state, save_to, metadata)
    return _build(pretrained, state, return_state_dict)


def _base_state(pretrained: Source) -> StateDict:
    """The pretrained state dict (a private copy; read from disk for a path)."""
    if isinstance(pretrained, (str, Path)):
        return load_state_dict(pretrained)
    return _state_dict(pretrained)


def _task_vector(base: StateDict, model: Source) -> TaskVector:
    """One task vector: lazy for a safetensors path (its header's mode kept), else in memory."""
    if isinstance(model, (str, Path)):
        path = Path(model).expanduser()
        if path.suffix == ".safetensors":
            if not path.is_file():
                raise CheckpointError(f"checkpoint not found: {path}")
            mode = read_metadata(path).get("finetuning")
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
