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
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from taskmerge.checkpoints import StateDict
from taskmerge.errors import ConfigError
from taskmerge.merging import MergeMethod, with_lines
from taskmerge.merging.lines import LINES_KEYS
from taskmerge.merging.registry import method_names, method_spec
from taskmerge.task_vectors import TaskVector

Model = nn.Module | Mapping[str, torch.Tensor]

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
    """Instantiate a merge method by its config name with its YAML keys.

    ``apply_lines`` / ``tradeoff_target_weight`` wrap it in LiNeS at the given ``scaling_coef``
    (multi-task: beta; ``single_task``: alpha); bind it to the model before use.
    """
    spec = method_spec(method)
    lines = {key: hyperparameters.pop(key) for key in LINES_KEYS if key in hyperparameters}
    coef = hyperparameters.get("scaling_coef")
    merger = spec.factory(**hyperparameters)
    return with_lines(merger, **lines, grid=[coef] if coef is not None else None)


def merge(
    pretrained: Model,
    finetuned: Mapping[str, Model],
    method: str = "sum",
    return_state_dict: bool = False,
    **hyperparameters: Any,
) -> Model | dict[str, Model]:
    """Merge fine-tuned versions of ``pretrained`` with one method and fixed hyperparameters.

    Args:
        pretrained: The common starting point, an ``nn.Module`` or a state dict.
        finetuned: Task name -> fine-tuned module or state dict of the same architecture.
        method: A config name of :mod:`taskmerge.merging.registry` (``method_names()``).
        return_state_dict: Return state dicts even when modules were given.
        **hyperparameters: The method's YAML keys, e.g. ``k=20, scaling_coef=0.4``,
            ``apply_lines=True``, ``task_index=0`` (``negation``: theta0 - scaling_coef * tau).

    Returns:
        The merged module (or state dict); for methods whose result is one model per task
        (``tall_mask``, ``mag_masking``, ``TSVC``), a dict task name -> module (or state dict).
    """
    if not finetuned:
        raise ConfigError("merge needs at least one fine-tuned model: pass {name: model, ...}")
    spec = method_spec(method)
    editing = spec.lines == "editing" and hyperparameters.get("apply_lines")
    if (spec.scaled or editing) and hyperparameters.get("scaling_coef") is None:
        raise ConfigError(f"method {method!r} needs scaling_coef=<value> (nothing is swept here)")
    merger = make_method(method, **hyperparameters)
    module = pretrained if isinstance(pretrained, nn.Module) else None
    merger = merger.bind(module, list(finetuned))
    base = _state_dict(pretrained)
    task_vectors = {
        name: TaskVector.from_state_dicts(base, _state_dict(model))
        for name, model in finetuned.items()
    }
    candidates = list(merger.candidates(base, task_vectors))
    if len(candidates) != 1:
        raise ConfigError(
            f"method {method!r} produced {len(candidates)} candidates: give one value of each "
            "swept hyperparameter (e.g. tall_mask_lambda=0.4)"
        )
    candidate = candidates[0]
    if candidate.per_task:
        return {
            task: _build(pretrained, state, return_state_dict)
            for task, state in candidate.per_task.items()
        }
    return _build(pretrained, candidate.for_task(next(iter(finetuned))), return_state_dict)
