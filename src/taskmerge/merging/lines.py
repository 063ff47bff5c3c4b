"""LiNeS: layer-increasing network scaling (Wang et al., arXiv:2410.17146).

A (merged) task vector is scaled per residual block: block l of L (0-based) by
``alpha + beta * l / (L - 1)``, every parameter outside the blocks (embeddings, stem, final norm,
projection) by ``alpha``. Shallow layers thus stay near the pretrained weights.

Reference: ``wang-kee/LiNeS`` ``src/eval/eval.py`` ``LiNeS_scaling``, which finds the block of a
parameter by the substring ``".{l}."`` and hard-codes ``L = 12`` (24 for ViT-L-14). Here the
blocks come from the model's structure (:func:`find_residual_blocks`), so any depth works.

* Multi-task: ``alpha = (||sum_t tau_t||_1 / ||tau_merged||_1) / T``, ``beta`` swept on the
  method's grid, then applied at coefficient 1 (:func:`multitask_alpha`).
* Single-task editing: ``alpha`` in 1.0, 0.9, ..., 0.0 and ``beta = 1 - alpha``
  (:func:`editing_grid`), chosen on Val by ``w * target normalized + control normalized``
  (``w = tradeoff_target_weight``, 2.0; control accuracies normalized by their zero-shot ones),
  ties to the first grid point, i.e. the larger alpha (reference ``find_optimal_coef_tradeoff``).

Which methods take ``apply_lines``: those whose result is one merged task vector applied with a
coefficient (``lines="multitask"`` in :mod:`taskmerge.merging.registry`), and ``single_task``
for editing (``lines="editing"``). As in the reference,
where ``apply_lines`` is ignored whenever evaluation masks are used, the per-task methods
(``tall_mask``, ``mag_masking``, ``TSVC``) and ``zeroshot`` / ``negation`` refuse it.
``average`` takes it with beta = 1 (its only coefficient), which is the reference's
``average`` (alpha = beta = 1/T on the sum).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskmerge.errors import ConfigError
from taskmerge.io.tensors import StateDict
from taskmerge.merging.base import AffineFamily, Derived, GridSource, Hyper, MergeMethod
from taskmerge.merging.registry import lines_methods, method_specs
from taskmerge.merging.target_control import (
    target_and_controls,
    target_control_metrics,
    tradeoff_score,
)
from taskmerge.metrics import Reference, SplitMetrics
from taskmerge.vectors.task_vector import TaskVector

Vector = Mapping[str, torch.Tensor]


def _parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def find_residual_blocks(module: nn.Module) -> tuple[str, int]:
    """The path and length of the model's sequence of residual blocks.

    That is the ``nn.ModuleList`` / ``nn.Sequential`` with the most children (at least 2) all of
    one class (e.g. open_clip's ``transformer.resblocks``, Hugging Face's ``encoder.layers``);
    ties go to the one with more parameters (a full CLIP's image tower over its text tower).

    Raises:
        ValueError: The module has no such sequence.
    """
    best: tuple[int, int, str] | None = None
    for name, sub in module.named_modules():
        if not isinstance(sub, (nn.ModuleList, nn.Sequential)) or len(sub) < 2:
            continue
        if len({type(child) for child in sub}) != 1:
            continue
        key = (len(sub), _parameter_count(sub), name)
        if best is None or key[:2] > best[:2]:
            best = key
    if best is None:
        raise ValueError(
            f"{type(module).__name__} has no ModuleList/Sequential of identical blocks for LiNeS"
        )
    return best[2], best[0]


def block_index_map(module: nn.Module, prefix: str = "") -> dict[str, int | None]:
    """State-dict name -> residual block index (0..L-1), or None outside the blocks.

    Args:
        module: The model whose task vector is scaled (e.g. the image encoder).
        prefix: Prepended to every name, when the task vector's keys carry one the module's
            state dict lacks (e.g. ``"model."``).
    """
    path, count = find_residual_blocks(module)
    head = f"{path}." if path else ""
    index: dict[str, int | None] = {}
    for name in module.state_dict(keep_vars=True):
        block = None
        if name.startswith(head):
            first = name[len(head) :].split(".", 1)[0]
            if first.isdigit() and int(first) < count:
                block = int(first)
        index[prefix + name] = block
    return index


def layer_scale(block: int | None, num_blocks: int, alpha: float, beta: float) -> float:
    """``alpha + beta * block / (num_blocks - 1)``; ``alpha`` outside the blocks."""
    if block is None:
        return alpha
    return alpha + beta * block / (num_blocks - 1)


def lines_scale(
    task_vector: Vector,
    block_index: Mapping[str, int | None],
    num_blocks: int,
    alpha: float,
    beta: float,
) -> dict[str, torch.Tensor]:
    """Scale each tensor of a task vector by its block's LiNeS coefficient.

    Raises:
        ValueError: ``num_blocks < 2``, or a name of the task vector is unknown to
            ``block_index`` (mismatched prefixes would otherwise silently scale all by alpha).
    """
    if num_blocks < 2:
        raise ValueError(f"LiNeS needs at least 2 residual blocks, got {num_blocks}")
    missing = [name for name in task_vector if name not in block_index]
    if missing:
        raise ValueError(
            f"LiNeS block map has no entry for {missing[:3]}: build it with "
            "block_index_map(module, prefix=...) on the module the task vector comes from"
        )
    return {
        name: tensor * layer_scale(block_index[name], num_blocks, alpha, beta)
        for name, tensor in task_vector.items()
    }


def l1_norm(vector: Vector) -> float:
    """Sum of absolute values of all entries, tensor by tensor."""
    return sum(float(t.abs().sum()) for t in vector.values())


def multitask_alpha(vectors: Sequence[Vector], merged: Vector) -> float:
    """``(||sum_t tau_t||_1 / ||tau_merged||_1) / T`` (LiNeS multi-task alpha)."""
    summed = sum(
        float(torch.stack([v[name] for v in vectors]).sum(0).abs().sum()) for name in vectors[0]
    )
    return summed / l1_norm(merged) / len(vectors)


def editing_grid() -> list[tuple[float, float]]:
    """Single-task editing pairs ``(alpha, beta)``: alpha = 1.0, 0.9, ..., 0.0, beta = 1 - alpha."""
    return [(round(1 - i / 10, 10), round(i / 10, 10)) for i in range(11)]


#: The YAML keys of the LiNeS option. They sit in the method's config but belong to the LiNeS
#: wrapper (:func:`with_lines`), not to the method's class.
LINES_KEYS = ("apply_lines", "tradeoff_target_weight")


class LiNeS(MergeMethod):
    """LiNeS applied to another merge method (arXiv:2410.17146).

    The residual blocks come from the model: pass ``block_index`` / ``num_blocks`` (from
    :func:`block_index_map` / :func:`find_residual_blocks`), or call :meth:`bind` with the
    module whose state dict is merged.

    Args:
        method: The method whose merged task vector is scaled.
        block_index: From :func:`block_index_map` on the merged model.
        num_blocks: L, from :func:`find_residual_blocks` (never hard-coded).
        editing: Single-task editing (alpha chosen, beta = 1 - alpha) instead of multi-task
            (alpha from the norms, beta swept).
        grid: Multi-task: the betas (default: the method's coefficients, i.e. its fixed
            ``scaling_coef`` or its grid). Editing: the alphas (default 1.0, 0.9, ..., 0.0).
        tradeoff_target_weight: Editing only: w in the Val criterion.
    """

    def __init__(
        self,
        method: MergeMethod,
        block_index: Mapping[str, int | None] | None = None,
        num_blocks: int | None = None,
        editing: bool = False,
        grid: Sequence[float] | None = None,
        tradeoff_target_weight: float = 2.0,
    ) -> None:
        if grid is None:
            grid = [alpha for alpha, _ in editing_grid()] if editing else method.coefficients()
        super().__init__(scaling_coef=None, grid=grid)
        self.method, self.block_index, self.num_blocks = method, block_index, num_blocks
        self.editing, self.tradeoff_target_weight = editing, tradeoff_target_weight
        self.name = f"{method.name}+lines"
        self.block_path: str | None = None

    @property
    def needs_zeroshot(self) -> bool:  # type: ignore[override]
        """Editing normalizes the control tasks by their zero-shot accuracy."""
        return self.editing or self.method.needs_zeroshot

    def bind(
        self, encoder: nn.Module | None, tasks: Sequence[str], *, mask_dir: Path | None = None
    ) -> MergeMethod:
        """Read the residual blocks from ``encoder`` (the module whose state dict is merged)."""
        self.method = self.method.bind(encoder, tasks, mask_dir=mask_dir)
        if self.editing:
            target_and_controls(tasks, self.method.task_index)  # type: ignore[attr-defined]
        if encoder is None:
            raise ConfigError(
                "apply_lines needs the model's structure to find its residual blocks: pass the "
                "pretrained model as an nn.Module, not a state dict"
            )
        try:
            self.block_path, self.num_blocks = find_residual_blocks(encoder)
        except ValueError as exc:
            raise ConfigError(f"{exc}: this model cannot take apply_lines=true") from None
        self.block_index = block_index_map(encoder)
        return self

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        return self.method.merge(task_vectors)

    def writes_to(self) -> list[Path]:  # noqa: D102
        return self.method.writes_to()

    def set_text_side(self, entries: int | None) -> None:  # noqa: D102
        self.method.set_text_side(entries)

    def chosen(self, hyperparameters: Mapping[str, Any], tasks: Sequence[str]) -> None:  # noqa: D102
        self.method.chosen(hyperparameters, tasks)

    def pairs(self, task_vectors: Mapping[str, TaskVector], merged: TaskVector) -> list[tuple]:
        """The ``(alpha, beta)`` pairs tried."""
        if self.editing:
            return [(alpha, round(1.0 - alpha, 10)) for alpha in self.grid]
        vectors = [tv.vector for tv in task_vectors.values()]
        alpha = multitask_alpha(vectors, merged.vector)
        return [(alpha, beta) for beta in self.grid]

    def affine_family(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> AffineFamily:
        """LiNeS is affine in (alpha, beta): theta0 + alpha * tau + beta * ramp(tau), ramp scaling
        block l by l / (L - 1) and everything outside the blocks by 0."""
        if self.block_index is None or self.num_blocks is None:
            raise ValueError("LiNeS needs block_index and num_blocks: call bind(encoder, tasks)")
        merged = dict(self.merge(task_vectors).vector)
        inside = {name: t for name, t in merged.items() if self.block_index[name] is not None}
        ramp = lines_scale(inside, self.block_index, self.num_blocks, 0.0, 1.0)
        pairs = self.pairs(task_vectors, TaskVector(merged))
        points = [({"alpha": alpha, "beta": beta}, (alpha, beta)) for alpha, beta in pairs]
        return AffineFamily([merged, ramp], points)

    def grid_source(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> GridSource:
        """The ``(alpha, beta)`` pairs, each point's layer-scaled weights built on request."""
        block_index, num_blocks = self.block_index, self.num_blocks
        if block_index is None or num_blocks is None:
            raise ValueError("LiNeS needs block_index and num_blocks: call bind(encoder, tasks)")
        merged = TaskVector(dict(self.merge(task_vectors).vector))  # read a lazy vector once
        pairs = self.pairs(task_vectors, merged)

        def weights(index: int) -> StateDict:
            alpha, beta = pairs[index]
            scaled = lines_scale(merged.vector, block_index, num_blocks, alpha, beta)
            return TaskVector(scaled).apply_to_state_dict(pretrained, 1.0)

        return GridSource([{"alpha": alpha, "beta": beta} for alpha, beta in pairs], weights)

    def derived_metrics(self, metrics: SplitMetrics, reference: Reference) -> dict[str, float]:
        """Editing: target vs control metrics and the trade-off; else the method's own."""
        if not self.editing:
            return self.method.derived_metrics(metrics, reference)
        target, controls = target_and_controls(reference.tasks, self.method.task_index)  # type: ignore[attr-defined]
        out = target_control_metrics(metrics, target, controls, reference)
        out["tradeoff"] = tradeoff_score(out, self.tradeoff_target_weight)
        return out

    def score(self, metrics: SplitMetrics, derived: Derived, hyper: Hyper) -> float | None:
        """Editing: the trade-off on Val; multi-task: the method's criterion."""
        if self.editing:
            return derived["tradeoff"]
        return self.method.score(metrics, derived, hyper)

    def natural_bounds(self) -> dict[str, tuple[float | None, float | None]]:
        """Editing: alpha is a fraction in [0, 1]; multi-task: beta is at least 0."""
        return {"alpha": (0.0, 1.0)} if self.editing else {"beta": (0.0, None)}

    def details(self) -> dict[str, Any]:  # noqa: D102
        lines = {
            "mode": "editing" if self.editing else "multitask",
            "num_blocks": self.num_blocks,
            "block_path": self.block_path,
        }
        if self.editing:
            lines["tradeoff_target_weight"] = self.tradeoff_target_weight
        return {"lines": lines, **self.method.details()}


def with_lines(
    method: MergeMethod,
    apply_lines: bool = False,
    tradeoff_target_weight: float = 2.0,
    grid: Sequence[float] | None = None,
) -> MergeMethod:
    """The method itself, or wrapped by LiNeS when ``apply_lines`` (call ``bind`` before use).

    Whether and how LiNeS applies is the method's ``lines`` entry in
    :mod:`taskmerge.merging.registry`.

    Raises:
        ConfigError: ``apply_lines`` on a method LiNeS cannot scale (see the module docstring).
    """
    if not apply_lines:
        return method
    spec = method_specs().get(method.name)
    if spec is None or spec.lines is None:
        raise ConfigError(
            f"method {method.name} does not take apply_lines: LiNeS scales one merged task vector "
            f"({', '.join(lines_methods('multitask'))}; {', '.join(lines_methods('editing'))} for "
            "editing); drop method.apply_lines"
        )
    return LiNeS(
        method,
        editing=spec.lines == "editing",
        grid=grid,
        tradeoff_target_weight=tradeoff_target_weight,
    )
