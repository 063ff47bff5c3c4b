"""Self-attention written for forward-mode AD: the in-projection on the contiguous input.

``nn.MultiheadAttention`` (outside its fused inference path, which forward-mode AD cannot use)
transposes a batch-first input to (L, N, E) before the packed q/k/v projection. Under a JVP the
projection's inputs are dual tensors and ``torch.matmul`` does not fold a non-contiguous 3-D input
into one matrix product; it broadcasts the weight into a batched product instead, which on
ViT-B-32 made the in-projection about twice as slow as the MLP's larger matrices and the JVP
3.3 plain forwards.

:func:`contiguous_self_attention` replaces, for the duration of a ``with`` block, the forward of
every ``nn.MultiheadAttention`` of a module by the same computation in the order that keeps every
matrix product a plain ``mm``: project (N, L, E) -> q, k, v, split the heads,
``scaled_dot_product_attention``, out-projection. The math is the module's own (same weights,
same scaling, same softmax); calls it does not cover (cross-attention, masks, key padding,
attention weights requested, bias_k/v, zero-attention, dropout while training) go to the
original forward unchanged.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def _covered(
    module: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    need_weights: bool,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
) -> bool:
    """Whether this call is plain self-attention that :func:`_forward` computes exactly."""
    return (
        query is key is value
        and query.dim() == 3
        and key_padding_mask is None
        and attn_mask is None
        and not need_weights
        and not is_causal
        and module._qkv_same_embed_dim
        and module.bias_k is None
        and not module.add_zero_attn
        and not (module.training and module.dropout > 0)
    )


def _forward(module: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """Self-attention of ``x`` (batch-first (N, L, E)) with ``module``'s weights."""
    batch, length, width = x.shape
    heads = module.num_heads
    qkv = F.linear(x, module.in_proj_weight, module.in_proj_bias)
    q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v)
    out = out.transpose(1, 2).reshape(batch, length, width)
    return F.linear(out, module.out_proj.weight, module.out_proj.bias)


def _patched(original):  # noqa: ANN001, ANN202
    def forward(
        self: nn.MultiheadAttention,
        query,
        key,
        value,
        key_padding_mask=None,  # noqa: ANN001, ANN202
        need_weights=True,
        attn_mask=None,
        average_attn_weights=True,
        is_causal=False,
    ):
        if not _covered(
            self, query, key, value, key_padding_mask, need_weights, attn_mask, is_causal
        ):
            return original(
                query,
                key,
                value,
                key_padding_mask=key_padding_mask,
                need_weights=need_weights,
                attn_mask=attn_mask,
                average_attn_weights=average_attn_weights,
                is_causal=is_causal,
            )
        x = query if self.batch_first else query.transpose(0, 1)
        out = _forward(self, x)
        return (out if self.batch_first else out.transpose(0, 1)), None

    return forward


@contextlib.contextmanager
def contiguous_self_attention(module: nn.Module) -> Iterator[None]:
    """Within the block, every ``nn.MultiheadAttention`` in ``module`` computes self-attention
    with plain matrix products (see the module docstring); restored afterwards."""
    patched = [m for m in module.modules() if isinstance(m, nn.MultiheadAttention)]
    previous = [m.__dict__.get("forward") for m in patched]
    for attention in patched:
        attention.forward = types.MethodType(_patched(attention.forward), attention)
    try:
        yield
    finally:
        for attention, forward in zip(patched, previous, strict=True):
            if forward is None:
                del attention.forward
            else:
                attention.forward = forward
