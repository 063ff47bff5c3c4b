"""AdaMerging: merging coefficients learned by entropy minimization (Yang et al., ICLR 2024,
arXiv:2310.02575), task-wise or layer-wise, on task-arithmetic or TIES vectors (AdaMerging++).

theta = theta0 + sum_t lambda_{t,l} tau_{t,l}, one lambda per task (``granularity=task``) or per
task and parameter tensor (``layer``, as the reference's layer-wise code: one coefficient per
state-dict entry), learned by Adam on the sum over tasks of the mean prediction entropy of
unlabeled batches (16 per task) through each task's head.

Defaults as the authors' ``EnnengYang/AdaMerging`` (``main_*_adamerging*.py``): lambdas
initialised to 0.3 and clamped to [0, 1] in the forward, Adam lr 1e-3 betas (0.9, 0.999),
500 steps, batch size 16 per task; theta0 keeps coefficient 1. (FusionBench's
``method/adamerging/clip.yaml`` runs 1000 steps without the clamp.) AdaMerging++ uses the TIES
per-task vectors ``trim_k20(tau_t) * [sign agrees with the elected sign]`` (the reference
computes them once, k=20, then learns lambdas on them exactly as for the plain vectors).

Memory does not grow with the number of tasks T: the gradient of the loss with respect to
lambda_{t,l} is ``<dL/dtheta_l, tau_{t,l}>`` (times the clamp's indicator), so one backward per
task through the merged model (its gradient accumulated into one model-sized buffer) and a
streamed pass over the task vectors give every coefficient's gradient; the merged weights are
rebuilt tensor by tensor from the (lazily read) vectors. The working set is about three models
(theta0, theta, dL/dtheta) plus one tensor, whatever T; the reference instead keeps every task
vector on the device inside one autograd graph.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from tqdm import tqdm

from taskmerge.errors import ConfigError
from taskmerge.merging.data_methods import DataMergeMethod, MergeData
from taskmerge.merging.registry import register_method
from taskmerge.merging.tensorwise import each_parameter, parameter_names
from taskmerge.vectors.task_vector import TaskVector

log = logging.getLogger(__name__)
Vector = Mapping[str, torch.Tensor]
#: Called after every step with its index and {"entropy": total, "entropy/<task>": ...}.
OnStep = Callable[[int, dict[str, float]], None]


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the Shannon entropy of softmax(logits) (the reference's
    ``softmax_entropy(...).mean(0)``)."""
    logits = logits.float()
    return -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()


class Components:
    """The per-task vectors whose coefficients are learned, one tensor per lookup.

    ``base="sum"``: tau_t itself. ``base="ties"``: ``trim(tau_t) * [sign(tau_t) == elected]``
    (TIES' trim to the top ``k``% of each task's whole vector and its elected sign; the elected
    sign of every parameter is kept, one int8 tensor per parameter, computed once).
    """

    def __init__(self, vectors: Sequence[Vector], base: str = "sum", k: float = 20) -> None:
        self.vectors = list(vectors)
        self.names = parameter_names(self.vectors)
        self.base = base
        self._thresholds: list[Mapping[str, float]] = []
        self._signs: dict[str, torch.Tensor] = {}
        if base == "ties":
            from taskmerge.merging.streaming import trim_thresholds  # here: keeps registry order
            from taskmerge.merging.ties import majority_sign, resolve_zero_signs

            self._thresholds = [trim_thresholds(v, k, "global") for v in self.vectors]
            majority = majority_sign(self.vectors, self._thresholds)
            for name in each_parameter(self.names):
                total = None
                for index in range(len(self.vectors)):
                    trimmed = self._trimmed(index, name)
                    total = trimmed.clone() if total is None else total.add_(trimmed)
                sign = resolve_zero_signs(torch.sign(total), majority)
                self._signs[name] = sign.to(torch.int8)

    def _trimmed(self, index: int, name: str) -> torch.Tensor:
        from taskmerge.merging.ties import trim_tensor

        return trim_tensor(self.vectors[index][name], self._thresholds[index][name])

    def __len__(self) -> int:
        return len(self.vectors)

    def get(self, index: int, name: str) -> torch.Tensor:
        """Task ``index``'s component of parameter ``name`` (float32)."""
        if self.base == "sum":
            return self.vectors[index][name].float()
        trimmed = self._trimmed(index, name).float()
        sign = self._signs[name]
        agree = torch.where(sign > 0, trimmed > 0, trimmed < 0)
        return trimmed * agree


def coefficient_grid(names: Sequence[str], granularity: str) -> list[int]:
    """Parameter index -> its coefficient column (0 for every parameter when task-wise)."""
    return list(range(len(names))) if granularity == "layer" else [0] * len(names)


def merged_weights(
    pretrained: Mapping[str, torch.Tensor],
    components: Components,
    coefficients: torch.Tensor,
    granularity: str,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """theta0 + sum_t c_{t,l} component_{t,l}, tensor by tensor, streaming over the tasks (float32
    for the merged names; other tensors as they are), on ``device``."""
    columns = coefficient_grid(components.names, granularity)
    merged: dict[str, torch.Tensor] = {}
    coefs = coefficients.detach().cpu()
    for name, column in zip(each_parameter(components.names), columns, strict=True):
        total = pretrained[name].detach().float().to(device).clone()
        for index in range(len(components)):
            total.add_(components.get(index, name).to(device), alpha=float(coefs[index, column]))
        merged[name] = total
    for name, value in pretrained.items():
        if name not in merged:
            merged[name] = value.to(device)
    return merged


def coefficient_gradients(
    gradients: Mapping[str, torch.Tensor],
    components: Components,
    shape: tuple[int, int],
    granularity: str,
) -> torch.Tensor:
    """dL/dc_{t,l} = <dL/dtheta_l, component_{t,l}> (summed over l when task-wise), one task
    tensor at a time (float64 accumulation)."""
    grad = torch.zeros(shape, dtype=torch.float64)
    columns = coefficient_grid(components.names, granularity)
    for name, column in zip(each_parameter(components.names), columns, strict=True):
        g = gradients[name]
        for index in range(len(components)):
            part = components.get(index, name).to(g.device, g.dtype)
            grad[index, column] += float(
                torch.dot(g.reshape(-1).double(), part.reshape(-1).double())
            )
    return grad


def clamp_gradient(raw: torch.Tensor, grad: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """The gradient through ``clamp(raw, low, high)``: zero where the clamp is active (as
    ``torch.clamp``'s backward: kept on the boundary)."""
    inside = (raw >= low) & (raw <= high)
    return grad * inside.to(grad.dtype)


@register_method("adamerging", scaled=False)
class AdaMerging(DataMergeMethod):
    """AdaMerging (arXiv:2310.02575): per-task/per-layer coefficients minimizing test entropy.

    The coefficients are learned by minimizing the prediction entropy on unlabeled images
    (adapt_on=test: transductive, as the paper; ``base=ties``: AdaMerging++).

    Args:
        granularity: ``layer`` (one coefficient per task and parameter tensor, the paper's
            best) or ``task``.
        base: ``sum`` (task vectors, AdaMerging) or ``ties`` (TIES per-task vectors,
            AdaMerging++).
        k: TIES' top-k% trim for ``base=ties`` (reference 20).
        adapt_on: The unlabeled inputs: ``test`` (the paper, transductive) or ``val``.
        steps: Adam steps (reference 500).
        lr: Adam's learning rate (reference 1e-3).
        init: The initial coefficient (reference 0.3).
        clamp: Clamp coefficients to [0, 1] in the forward (reference true).
        batch_size: Unlabeled images per task per step (reference 16).
        seed: Seeds the order of the adaptation batches.
    """

    uses_adaptation_split = True

    def __init__(
        self,
        granularity: Literal["task", "layer"] = "layer",
        base: Literal["sum", "ties"] = "sum",
        k: float = 20,
        adapt_on: Literal["test", "val"] = "test",
        steps: int = 500,
        lr: float = 1e-3,
        init: float = 0.3,
        clamp: bool = True,
        batch_size: int = 16,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0 < float(k) <= 100:
            raise ConfigError(f"method.k={k} must be a percentage in (0, 100]")
        if steps < 0 or batch_size < 1 or lr <= 0:
            raise ConfigError(
                f"method.steps={steps}, batch_size={batch_size}, lr={lr}: use steps >= 0, "
                "batch_size >= 1 and lr > 0"
            )
        self.granularity, self.base, self.k = granularity, base, float(k)
        self.adapt_on, self.steps, self.lr, self.init = adapt_on, steps, float(lr), float(init)
        self.clamp, self.batch_size, self.seed = clamp, batch_size, seed
        self.on_step: OnStep | None = None
        self.tasks: list[str] = []
        self.names: list[str] = []
        self.learned: torch.Tensor | None = None
        self.curve: list[float] = []

    def effective(self, raw: torch.Tensor) -> torch.Tensor:
        """The coefficients the forward uses (clamped to [0, 1] when ``clamp``)."""
        return raw.clamp(0.0, 1.0) if self.clamp else raw

    def step_gradient(
        self,
        pretrained: Mapping[str, torch.Tensor],
        components: Components,
        raw: torch.Tensor,
        data: MergeData,
        device: torch.device | str | None = None,
    ) -> tuple[dict[str, float], torch.Tensor]:
        """One step's losses and the gradient with respect to the raw coefficients."""
        coefs = self.effective(raw.detach())
        weights = merged_weights(pretrained, components, coefs, self.granularity, device)
        losses, grads = data.loss_gradient(weights, entropy_loss, components.names)
        del weights
        grad = coefficient_gradients(grads, components, tuple(raw.shape), self.granularity)
        if self.clamp:
            grad = clamp_gradient(raw.detach().double(), grad, 0.0, 1.0)
        return losses, grad.to(raw.dtype)

    def merge_with_data(
        self, pretrained: Mapping[str, torch.Tensor], task_vectors: Mapping[str, TaskVector]
    ) -> TaskVector:
        """Learn the coefficients, then theta0 + sum_t lambda_t tau_t as a vector."""
        data = self.require_data()
        self.tasks = list(task_vectors)
        components = Components([tv.vector for tv in task_vectors.values()], self.base, self.k)
        self.names = components.names
        columns = len(self.names) if self.granularity == "layer" else 1
        raw = torch.full((len(self.tasks), columns), self.init, requires_grad=True)
        optimizer = torch.optim.Adam([raw], lr=self.lr, betas=(0.9, 0.999))
        device = getattr(data, "device", None)
        self.curve = []
        bar = tqdm(range(self.steps), desc=f"{self.name}: entropy", leave=False)
        for step in bar:
            losses, grad = self.step_gradient(pretrained, components, raw, data, device)
            raw.grad = grad
            optimizer.step()
            total = float(sum(losses.values()))
            self.curve.append(total)
            bar.set_postfix(entropy=f"{total:.4f}")
            if self.on_step is not None:
                self.on_step(
                    step, {"entropy": total, **{f"entropy/{t}": v for t, v in losses.items()}}
                )
        self.learned = self.effective(raw.detach()).clone()
        merged = merged_weights(pretrained, components, self.learned, self.granularity)
        vector = {name: merged[name] - pretrained[name].float() for name in self.names}
        return TaskVector(vector)

    def learned_coefficients(self) -> dict[str, Any] | None:
        """The learned coefficients (tasks x layers), their tasks and parameter names."""
        if self.learned is None:
            return None
        layers = self.names if self.granularity == "layer" else ["all"]
        return {"coefficients": self.learned, "tasks": self.tasks, "layers": layers}

    def details(self) -> dict[str, Any]:  # noqa: D102
        out: dict[str, Any] = {
            "adapt_on": self.adapt_on,
            "transductive": self.adapt_on == "test",
            "entropy_first_last": [self.curve[0], self.curve[-1]] if self.curve else None,
        }
        if self.learned is not None and self.granularity == "task":
            out["coefficients"] = dict(zip(self.tasks, self.learned[:, 0].tolist(), strict=True))
        elif self.learned is not None:
            out["coefficients_mean"] = dict(
                zip(self.tasks, self.learned.mean(dim=1).tolist(), strict=True)
            )
        return out
