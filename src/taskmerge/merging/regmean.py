"""RegMean: per linear layer, the weights whose outputs best match every fine-tuned model's on
its own inputs (Jin et al., ICLR 2023, arXiv:2212.09849).

For a linear weight W (out x in) and the Gram matrices G_t = X_t^T X_t of its inputs in model t,
``argmin_W sum_t ||X_t W^T - X_t W_t^T||^2 = (sum_t G_t)^-1 sum_t G_t W_t^T``. With the paper's
regularisation the non-diagonal entries are scaled by ``alpha``:
``G'_t = alpha G_t + (1 - alpha) diag(G_t)`` (alpha = 1: plain least squares). Since sum_t G'_t
(W0 + tau_t)^T = sum_t G'_t W0^T + sum_t G'_t tau_t^T, the merged task vector is
``((sum_t G'_t)^-1 sum_t G'_t tau_t^T)^T``. Parameters without a Gram matrix (biases, norms,
embeddings, and linear maps whose module is not called as a module, e.g. the attention's
``out_proj``) are averaged, as the reference (FusionBench ``method/regmean``, which merges only
``nn.Linear`` weights). Default alpha 0.6 and 256 examples: FusionBench's
``clip_regmean.yaml``; the Grams are sums over the examples, as the paper.

Memory: the Grams are streamed per parameter over the tasks (from their cache files), two
in x in running sums per linear weight; nothing holds all tasks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.data_methods import DataMergeMethod, finetuned_weights
from taskmerge.merging.registry import register_method
from taskmerge.merging.tensorwise import each_parameter, parameter_names
from taskmerge.vectors.task_vector import TaskVector

Vector = Mapping[str, torch.Tensor]


def reduce_non_diagonal(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * G + (1 - alpha) * diag(G)``."""
    return alpha * gram + (1.0 - alpha) * torch.diag(torch.diagonal(gram))


def regmean_tensor(
    taus: Sequence[torch.Tensor], grams: Sequence[torch.Tensor], alpha: float
) -> torch.Tensor:
    """The merged vector of one linear weight (out x in) from each task's tau and Gram."""
    lhs = rhs = None
    for tau, gram in zip(taus, grams, strict=True):
        reduced = reduce_non_diagonal(gram.double(), alpha)
        term = reduced @ tau.double().T
        lhs = reduced if lhs is None else lhs.add_(reduced)
        rhs = term if rhs is None else rhs.add_(term)
    try:
        solution = torch.linalg.solve(lhs, rhs)
    except RuntimeError:  # singular (e.g. an input dimension never active): least norm
        solution = torch.linalg.lstsq(lhs, rhs).solution
    return solution.T.to(torch.float32).contiguous()


def regmean_merge(
    vectors: Sequence[Vector], grams: Sequence[Mapping[str, torch.Tensor]], alpha: float
) -> dict[str, torch.Tensor]:
    """RegMean of task vectors given each task's Gram matrices (name -> in x in), tensor by
    tensor; names without a Gram in every task are averaged."""
    names = parameter_names(vectors)
    merged: dict[str, torch.Tensor] = {}
    for name in each_parameter(names):
        if all(name in g for g in grams):
            merged[name] = regmean_tensor(
                [v[name] for v in vectors], [g[name] for g in grams], alpha
            )
        else:
            total = vectors[0][name].float().clone()
            for vector in vectors[1:]:
                total.add_(vector[name])
            merged[name] = total / len(vectors)
    return merged


@register_method("regmean", scaled=False)
class RegMean(DataMergeMethod):
    """RegMean (arXiv:2212.09849): least-squares merge per linear layer from input Grams.

    The Gram matrices of each linear layer's inputs come from training images; other
    parameters are averaged.

    Args:
        num_samples: Training images per task the Grams are computed on (reference 256).
        alpha: Scale of the Grams' non-diagonal entries (FusionBench 0.6; 1 = least squares).
        batch_size: Of the forward passes computing the Grams.
    """

    def __init__(self, num_samples: int = 256, alpha: float = 0.6, batch_size: int = 32) -> None:
        super().__init__()
        if num_samples < 1 or batch_size < 1 or not 0 <= alpha <= 1:
            raise ConfigError(
                f"method.num_samples={num_samples}, batch_size={batch_size}, alpha={alpha}: "
                "use num_samples >= 1, batch_size >= 1 and alpha in [0, 1]"
            )
        self.num_samples, self.alpha, self.batch_size = num_samples, float(alpha), batch_size

    def merge_with_data(
        self, pretrained: Mapping[str, torch.Tensor], task_vectors: Mapping[str, TaskVector]
    ) -> TaskVector:
        """Each task's Grams (cached with its checkpoint by the data side), then the merge."""
        data = self.require_data()
        grams = [
            data.gram_matrices(task, finetuned_weights(pretrained, tv.vector), self.num_samples)
            for task, tv in task_vectors.items()
        ]
        vectors = [tv.vector for tv in task_vectors.values()]
        return TaskVector(regmean_merge(vectors, grams, self.alpha))

    def details(self) -> dict[str, Any]:  # noqa: D102
        return {"num_samples": self.num_samples, "data": "train"}
