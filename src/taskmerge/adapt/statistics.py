"""Per-task statistics of a model on its training images: the Gram matrices of every linear
layer's inputs (RegMean) and the diagonal Fisher from per-example gradients (Fisher merging).

Both are computed at given weights through ``torch.func.functional_call`` on one module, so
any encoder (the CLIP image tower, a small test model) works without copies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

Weights = Mapping[str, torch.Tensor]
Head = Callable[[torch.Tensor], torch.Tensor]


def linear_inputs(module: nn.Module) -> dict[nn.Module, str]:
    """Submodule -> the name of the weight whose input Gram it observes: every ``nn.Linear``
    (``<name>.weight``) and every ``nn.MultiheadAttention``'s packed ``in_proj_weight`` (its
    query input; self-attention: q = k = v). The attention's ``out_proj`` is applied inside
    ``F.multi_head_attention_forward``, not as a module: no Gram (averaged by RegMean)."""
    found: dict[nn.Module, str] = {}
    for name, sub in module.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(sub, nn.MultiheadAttention) and sub.in_proj_weight is not None:
            found[sub] = f"{prefix}in_proj_weight"
        elif isinstance(sub, nn.Linear):
            found[sub] = f"{prefix}weight"
    return found


@torch.no_grad()
def gram_matrices(
    module: nn.Module,
    weights: Weights,
    batches: Iterable[torch.Tensor],
    num_samples: int,
) -> dict[str, torch.Tensor]:
    """Weight name -> ``X^T X`` (sum over every example and token) of its layer's inputs on the
    first ``num_samples`` examples of ``batches``, the module run at ``weights``."""
    observed = linear_inputs(module)
    grams: dict[str, torch.Tensor] = {}

    def hook(sub: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs.get("query")
        flat = x.detach().reshape(-1, x.shape[-1]).double()
        gram = flat.T @ flat
        name = observed[sub]
        grams[name] = gram if name not in grams else grams[name].add_(gram)

    handles = [sub.register_forward_pre_hook(hook, with_kwargs=True) for sub in observed]
    try:
        seen = 0
        for inputs in batches:
            inputs = inputs[: num_samples - seen]
            functional_call(module, dict(weights), (inputs,))
            seen += len(inputs)
            if seen >= num_samples:
                break
    finally:
        for handle in handles:
            handle.remove()
    return {name: gram.float().cpu() for name, gram in grams.items()}


def fisher_diagonal(
    module: nn.Module,
    head: Head,
    weights: Weights,
    batches: Iterable[torch.Tensor],
    num_samples: int,
    names: Iterable[str] | None = None,
) -> dict[str, torch.Tensor]:
    """``mean_x sum_y p(y|x) (d log p(y|x) / d w)^2`` for every weight in ``names`` (default:
    every floating-point one), from per-example gradients (one backward per example and class,
    the expectation over the model's own predictive distribution exact; labels never used)."""
    names = [n for n in (names or weights) if weights[n].is_floating_point()]
    params = {n: weights[n].detach().clone().requires_grad_(True) for n in names}
    full: dict[str, Any] = {**weights, **params}
    total = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    seen = 0
    for inputs in batches:
        for x in inputs[: num_samples - seen]:
            log_p = torch.log_softmax(head(functional_call(module, full, (x[None],))).float(), -1)[
                0
            ]
            p = log_p.detach().exp()
            for y in range(log_p.shape[0]):
                grads = torch.autograd.grad(log_p[y], list(params.values()), retain_graph=True,
                                            allow_unused=True)  # fmt: skip
                for n, g in zip(params, grads, strict=True):
                    if g is not None:
                        total[n].add_(g.double().pow(2), alpha=float(p[y]))
            seen += 1
        if seen >= num_samples:
            break
    return {n: (t / max(seen, 1)).float().cpu() for n, t in total.items()}
