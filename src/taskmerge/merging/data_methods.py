"""The interface of merge methods that learn from data (AdaMerging, RegMean, Fisher merging).

:mod:`taskmerge.merging` stays pure math over tensors: a data-using method receives the data
side as a :class:`MergeData` (built above, by :mod:`taskmerge.adapt`, from the run's encoder,
heads and loaders, or from the Python API's loaders) and asks it only for numbers computed at
given weights: a loss's value and gradient, the Gram matrices of linear layers' inputs, a
diagonal Fisher. Labels never cross this interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.base import Candidate, MergeMethod
from taskmerge.vectors.task_vector import TaskVector

Weights = Mapping[str, torch.Tensor]
#: Logits of one batch -> a scalar loss (e.g. the mean prediction entropy).
Loss = Callable[[torch.Tensor], torch.Tensor]


class MergeData(Protocol):
    """What a data-using merge method may ask of the data (implemented in :mod:`taskmerge.adapt`).

    Attributes:
        adapt_on: The split the adaptation inputs come from (``test``: transductive, ``val``).
    """

    adapt_on: str

    def loss_gradient(
        self, weights: Weights, loss: Loss, names: Sequence[str]
    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Per task, ``loss`` of the logits of its next unlabeled adaptation batch through the
        encoder at ``weights`` (with that task's head); and the gradient of the sum over the
        tasks with respect to ``weights[name]`` for every name in ``names``."""
        ...

    def gram_matrices(
        self, task: str, weights: Weights, num_samples: int
    ) -> dict[str, torch.Tensor]:
        """Linear weight name -> ``X^T X`` of that layer's inputs over ``num_samples`` training
        images of ``task`` through the encoder at ``weights`` (the task's fine-tuned model)."""
        ...

    def fisher_diagonal(
        self, task: str, weights: Weights, num_samples: int
    ) -> dict[str, torch.Tensor]:
        """Parameter name -> the diagonal Fisher ``mean_x sum_y p(y|x) (d log p(y|x)/d w)^2``
        over ``num_samples`` training images of ``task`` at ``weights``."""
        ...


def finetuned_weights(
    pretrained: Mapping[str, torch.Tensor], vector: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``pretrained + vector`` (float32 where the vector has the name): one fine-tuned model."""
    return {
        name: (value.float() + vector[name]) if name in vector else value
        for name, value in pretrained.items()
    }


class DataMergeMethod(MergeMethod):
    """Base of the methods that learn from data: :meth:`attach` gives them a :class:`MergeData`
    (``main.py`` and the Python API do); their one candidate is the learned merge (nothing is
    swept on Val)."""

    needs_data = True
    #: Whether the method learns from the adaptation split (AdaMerging) rather than training
    #: images (RegMean, Fisher).
    uses_adaptation_split = False

    def __init__(self) -> None:
        super().__init__(scaling_coef=1.0)
        self.data: MergeData | None = None

    def attach(self, data: MergeData) -> DataMergeMethod:
        """Give the method its data; returns it."""
        self.data = data
        return self

    def require_data(self) -> MergeData:
        """The attached data, or a one-line error saying how to give it."""
        if self.data is None:
            raise ConfigError(
                f"method {self.name} learns from data: run it through main.py, or pass "
                "data={task: loader} and heads={task: head} to taskmerge.merge"
            )
        return self.data

    def merge_with_data(
        self, pretrained: Mapping[str, torch.Tensor], task_vectors: Mapping[str, TaskVector]
    ) -> TaskVector:
        """The merged vector (before the coefficient 1), learned with :attr:`data`."""
        raise NotImplementedError

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        raise ConfigError(
            f"method {self.name} needs the pretrained weights and data: use candidates()"
        )

    def affine_family(self, pretrained: Mapping[str, Any], task_vectors: Any) -> None:  # noqa: D102
        return None

    def candidates(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> Iterator[Candidate]:  # noqa: D102
        self.require_data()
        merged = self.merge_with_data(pretrained, task_vectors)
        yield Candidate({}, merged.apply_to_state_dict(pretrained, 1.0))

    def details(self) -> dict[str, Any]:  # noqa: D102
        return {"data": "training" if not self.uses_adaptation_split else "adaptation"}
