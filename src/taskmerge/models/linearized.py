"""The linearized (tangent-space) encoder of Ortiz-Jimenez et al. (arXiv:2305.12827).

``f_lin(x; theta) = f(x; theta0) + J_theta f(x; theta0) (theta - theta0)``: the first-order Taylor
expansion of the encoder around the pretrained weights theta0, computed with one forward-mode
JVP (``torch.func.jvp`` over ``torch.func.functional_call``). The reference
(``gortizji/tangent_task_arithmetic`` ``src/linearize.py``) keeps ``params`` (theta, trained)
and ``params0`` (theta0, frozen) as parameter lists and returns ``out + dp`` of
``jvp(f0, (params0,), (params - params0,))``; here theta is simply the encoder module's own
parameters, so a linearized checkpoint has the same open_clip keys as every other one.

Everything is affine in theta - theta0, which :func:`jvp_features` exploits: the features of
theta0 + sum_k c_k d_k are ``f0 + sum_k c_k J d_k`` for any coefficients, from one primal pass
and one tangent per direction.

PyTorch's fused attention kernels (the CPU flash SDPA kernel, ``nn.MultiheadAttention``'s
inference fast path) have no forward-mode AD; every call here runs under
:func:`math_attention`, which avoids them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from taskmerge.models.tangent_attention import contiguous_self_attention

Params = Mapping[str, torch.Tensor]


@contextlib.contextmanager
def math_attention(encoder: nn.Module) -> Iterator[None]:
    """Run ``encoder``'s attention in ops that support forward-mode AD (JVPs) efficiently: the
    math SDPA kernel, not ``nn.MultiheadAttention``'s fused inference fast path, and
    self-attention projected on the contiguous input (:mod:`taskmerge.models.tangent_attention`)."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH), contiguous_self_attention(encoder):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _buffers(encoder: nn.Module) -> dict[str, torch.Tensor]:
    return dict(encoder.named_buffers())


def _call(encoder: nn.Module, buffers: Params, images: torch.Tensor):  # noqa: ANN202
    def forward(params: Params) -> torch.Tensor:
        return functional_call(encoder, {**params, **buffers}, (images,))

    return forward


def linearized_features(encoder: nn.Module, params0: Params, images: torch.Tensor) -> torch.Tensor:
    """``f(x; theta0) + J f(x; theta0) (theta - theta0)`` with theta the encoder's parameters.

    Differentiable in theta (training backpropagates through the JVP); ``params0`` must hold a
    tensor for every parameter name of ``encoder`` (on its device) and is never changed.
    """
    params = dict(encoder.named_parameters())
    primals = {name: params0[name] for name in params}
    tangents = {name: value - primals[name] for name, value in params.items()}
    with math_attention(encoder):
        out, derivative = jvp(_call(encoder, _buffers(encoder), images), (primals,), (tangents,))
    return out + derivative


@torch.no_grad()
def jvp_features(
    encoder: nn.Module,
    params0: Params,
    images: torch.Tensor,
    directions: Sequence[Params],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``f(x; theta0)`` and ``J f(x; theta0) d_k`` for each direction ``d_k`` (a mapping from
    parameter name to tensor; names it lacks count as zero).

    With no direction, one plain forward at theta0.
    """
    primals = {name: params0[name] for name, _ in encoder.named_parameters()}
    forward = _call(encoder, _buffers(encoder), images)
    if not directions:
        with math_attention(encoder):
            return forward(primals), []
    outputs: list[torch.Tensor] = []
    base: torch.Tensor | None = None
    for direction in directions:
        tangent = {
            name: direction[name].to(value) if name in direction else torch.zeros_like(value)
            for name, value in primals.items()
        }
        with math_attention(encoder):
            out, derivative = jvp(forward, (primals,), (tangent,))
        base = out if base is None else base
        outputs.append(derivative)
    return base, outputs  # type: ignore[return-value]


class LinearizedEncoder(nn.Module):
    """A module computing the linearized forward of ``encoder`` around ``params0``.

    Its state dict is the encoder's (theta under the open_clip keys): ``load_state_dict``
    loads a checkpoint of any mode and the forward evaluates it linearly (for a non-linearly
    fine-tuned one, "post-hoc linearization"). The Python API's way to the tangent forward::

        lin = LinearizedEncoder(pretrained_visual)        # theta0 = its current weights
        lin.load_state_dict(finetuned_visual.state_dict())
        features = lin(images)

    Args:
        encoder: The architecture (its weights become theta; they are not copied).
        params0: theta0; default: a frozen copy of ``encoder``'s current parameters.
    """

    def __init__(self, encoder: nn.Module, params0: Params | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        source = params0 if params0 is not None else dict(encoder.named_parameters())
        self.params0 = {
            name: source[name].detach().clone() for name, _ in encoder.named_parameters()
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # noqa: D102
        device = next(self.encoder.parameters()).device
        if next(iter(self.params0.values())).device != device:
            self.params0 = {name: value.to(device) for name, value in self.params0.items()}
        return linearized_features(self.encoder, self.params0, images)

    def state_dict(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201, D102
        return self.encoder.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: ANN001, ANN201, D102
        return self.encoder.load_state_dict(state_dict, strict=strict, assign=assign)
