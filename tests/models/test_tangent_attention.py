"""The contiguous self-attention used under JVPs equals ``nn.MultiheadAttention``'s own forward,
its JVP and its gradient, and it hands every call it does not cover back to the original."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from taskmerge.models.tangent_attention import contiguous_self_attention


def attention(batch_first: bool) -> nn.MultiheadAttention:
    torch.manual_seed(0)
    module = nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    with torch.no_grad():
        module.in_proj_bias.normal_()
        module.out_proj.bias.normal_()
    return module


def self_attend(module: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    return module(x, x, x, need_weights=False)[0]


def reference(module: nn.MultiheadAttention, params, tangents, x):  # noqa: ANN001, ANN201
    """Output and JVP of the unpatched module (math kernel, no fused fast path)."""
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            return jvp(lambda p: self_attend_call(module, p, x), (params,), (tangents,))
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


def self_attend_call(module, params, x):  # noqa: ANN001, ANN201
    return functional_call(module, params, (x, x, x), {"need_weights": False})[0]


@pytest.mark.parametrize("batch_first", [True, False])
def test_forward_and_jvp_equal_the_module(batch_first: bool) -> None:
    module = attention(batch_first)
    x = torch.randn(3, 7, 32) if batch_first else torch.randn(7, 3, 32)
    params = {k: v.detach() for k, v in module.named_parameters()}
    gen = torch.Generator().manual_seed(1)
    tangents = {k: torch.randn(v.shape, generator=gen) for k, v in params.items()}
    expected_out, expected_jvp = reference(module, params, tangents, x)
    with sdpa_kernel(SDPBackend.MATH), contiguous_self_attention(module):
        out, derivative = jvp(lambda p: self_attend_call(module, p, x), (params,), (tangents,))
    assert torch.allclose(out, expected_out, atol=1e-6)
    assert torch.allclose(derivative, expected_jvp, atol=1e-5)


def test_gradients_equal_the_module() -> None:
    module = attention(True)
    x = torch.randn(2, 5, 32)
    self_attend(module, x).square().sum().backward()
    expected = {k: v.grad.clone() for k, v in module.named_parameters()}
    module.zero_grad()
    with contiguous_self_attention(module):
        self_attend(module, x).square().sum().backward()
    for name, value in module.named_parameters():
        assert torch.allclose(value.grad, expected[name], atol=1e-5), name


def test_uncovered_calls_and_restore() -> None:
    module = attention(True)
    x, other = torch.randn(2, 5, 32), torch.randn(2, 4, 32)
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[:, -1] = True
    cross = module(x, other, other, need_weights=False)[0]
    masked = module(x, x, x, attn_mask=mask, need_weights=False)[0]
    weights = module(x, x, x)[1]
    with contiguous_self_attention(module):
        assert "forward" in vars(module)
        assert torch.allclose(module(x, other, other, need_weights=False)[0], cross)
        assert torch.allclose(module(x, x, x, attn_mask=mask, need_weights=False)[0], masked)
        assert torch.allclose(module(x, x, x)[1], weights)
        with contiguous_self_attention(module):  # nested blocks restore in order
            self_attend(module, x)
        assert "forward" in vars(module)
    assert "forward" not in vars(module)
