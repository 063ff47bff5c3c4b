"""The two forwards a fine-tuning mode (or an evaluation, ``eval_forward``) computes features
with: ``nonlinear`` (the encoder itself) and ``linear`` (its first-order Taylor expansion around
theta0, :mod:`taskmerge.models.linearized`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from taskmerge.errors import ConfigError

#: The forwards a mode (or an evaluation, ``eval_forward``) can use.
FORWARDS = ("nonlinear", "linear")


def check_forward(forward: str) -> str:
    """``forward`` if it is one of :data:`FORWARDS`; else a one-line error."""
    if forward not in FORWARDS:
        raise ConfigError(f"eval_forward={forward!r} is not a forward: use one of {FORWARDS}")
    return forward


def forward_module(
    forward: str, encoder: nn.Module, params0: Mapping[str, torch.Tensor] | None = None
) -> nn.Module:
    """A module computing ``forward``'s features with ``encoder``'s weights as theta.

    ``"nonlinear"``: the encoder itself. ``"linear"``: a
    :class:`~taskmerge.models.linearized.LinearizedEncoder` around ``params0`` (default: the
    encoder's current weights); its state dict is the encoder's, so any checkpoint loads into it.
    """
    check_forward(forward)
    if forward == "nonlinear":
        return encoder
    from taskmerge.models.linearized import LinearizedEncoder

    return LinearizedEncoder(encoder, params0)
