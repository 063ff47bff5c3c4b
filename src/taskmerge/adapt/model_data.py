"""The :class:`~taskmerge.merging.data_methods.MergeData` of one encoder, its heads and loaders.

``main.py`` builds it from the run's evaluator (:func:`taskmerge.adapt.pipeline.run_data`), the
Python API from the caller's loaders. Batches may be tensors or ``(inputs, labels, ...)``
tuples: only the inputs are taken, labels are never looked at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from taskmerge.adapt.cache import StatisticCache
from taskmerge.adapt.statistics import fisher_diagonal, gram_matrices
from taskmerge.errors import ConfigError

Weights = Mapping[str, torch.Tensor]
Head = Callable[[torch.Tensor], torch.Tensor]
Batches = Iterable[Any]


def inputs_of(batch: Any) -> torch.Tensor:
    """The inputs of a batch (a tensor, or the first item of a tuple / list / dict "images")."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        return batch["images"]
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    raise ConfigError(f"a data batch is a {type(batch).__name__}: give tensors or (inputs, labels)")


class ModelData:
    """Forwards of ``module`` at given weights with each task's head on its batches.

    Args:
        module: The encoder whose state dict is merged (its own weights are never changed).
        heads: Task -> features -> logits (frozen).
        adapt: Task -> the unlabeled adaptation batches (cycled; AdaMerging).
        train: Task -> training batches (RegMean's Grams, Fisher's gradients).
        device: Where the forwards run.
        prepare: Batch inputs -> the module's input on ``device`` (default: moved there).
        cache: Where per-task statistics are kept (None: computed every time).
        adapt_on: The split ``adapt`` comes from (``test``, ``val``; recorded in results).
        settings: What identifies the statistics beyond the checkpoint (seed, forward...).
    """

    def __init__(
        self,
        module: nn.Module,
        heads: Mapping[str, Head],
        adapt: Mapping[str, Batches] | None = None,
        train: Mapping[str, Batches] | None = None,
        device: str | torch.device = "cpu",
        prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache: StatisticCache | None = None,
        adapt_on: str = "test",
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.heads = dict(heads)
        self.adapt = dict(adapt or {})
        self.train = dict(train or {})
        self.prepare = prepare or (lambda x: x.to(self.device))
        self.cache, self.adapt_on = cache, adapt_on
        self.settings = dict(settings or {})
        self._iterators: dict[str, Iterator[Any]] = {}

    def _require(self, source: Mapping[str, Batches], task: str, what: str) -> Batches:
        if task not in source or task not in self.heads:
            raise ConfigError(f"no {what} data or head for task {task}: give both for every task")
        return source[task]

    def next_batch(self, task: str) -> torch.Tensor:
        """The next unlabeled adaptation batch of ``task`` (its loader cycled), on the device."""
        batches = self._require(self.adapt, task, "adaptation")
        iterator = self._iterators.get(task)
        batch = next(iterator, None) if iterator is not None else None
        if batch is None:
            self._iterators[task] = iter(batches)
            batch = next(self._iterators[task], None)
            if batch is None:
                raise ConfigError(f"the adaptation data of task {task} is empty")
        return self.prepare(inputs_of(batch))

    def logits(self, weights: Weights, task: str, inputs: torch.Tensor) -> torch.Tensor:
        """``head_task(module at weights (inputs))``."""
        return self.heads[task](functional_call(self.module, dict(weights), (inputs,)))

    def loss_gradient(
        self, weights: Weights, loss: Callable[[torch.Tensor], torch.Tensor], names: Sequence[str]
    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Per task, ``loss`` of its next batch; the gradient of their sum for ``names``.

        One backward per task, its gradient added into one buffer per weight: memory holds
        one task's activations and one model-sized gradient, whatever the number of tasks."""
        params = {n: weights[n].detach().requires_grad_(True) for n in names}
        full = {**weights, **params}
        total = {n: torch.zeros_like(p) for n, p in params.items()}
        losses: dict[str, float] = {}
        for task in self.heads:
            value = loss(self.logits(full, task, self.next_batch(task)))
            grads = torch.autograd.grad(value, list(params.values()), allow_unused=True)
            for n, g in zip(params, grads, strict=True):
                if g is not None:
                    total[n].add_(g)
            losses[task] = float(value.detach())
        return losses, total

    def _train_inputs(self, task: str) -> Iterator[torch.Tensor]:
        for batch in self._require(self.train, task, "training"):
            yield self.prepare(inputs_of(batch))

    def _on_device(self, weights: Weights) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in weights.items()}

    def gram_matrices(
        self, task: str, weights: Weights, num_samples: int
    ) -> Mapping[str, torch.Tensor]:
        """Linear weight -> ``X^T X`` of its inputs on ``num_samples`` training images (cached)."""
        settings = {**self.settings, "num_samples": num_samples}

        def compute() -> dict[str, torch.Tensor]:
            return gram_matrices(self.module, self._on_device(weights), self._train_inputs(task),
                                 num_samples)  # fmt: skip

        return self._cached("regmean_gram", task, settings, compute)

    def fisher_diagonal(
        self, task: str, weights: Weights, num_samples: int
    ) -> Mapping[str, torch.Tensor]:
        """The diagonal Fisher on ``num_samples`` training images (cached)."""
        settings = {**self.settings, "num_samples": num_samples}

        def compute() -> dict[str, torch.Tensor]:
            return fisher_diagonal(self.module, self.heads[task], self._on_device(weights),
                                   self._train_inputs(task), num_samples)  # fmt: skip

        return self._cached("fisher", task, settings, compute)

    def _cached(self, kind: str, task: str, settings: Mapping[str, Any], compute: Callable):
        if self.cache is None:
            return compute()
        return self.cache.get(kind, task, settings, compute)
