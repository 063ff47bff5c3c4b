"""Fine-tuning modes: which image-encoder parameters train.

``standard`` trains everything; ``attention`` (Jin et al., arXiv:2407.07089, "linear-2") trains
only the attention projections (``in_proj_weight`` = W_q, W_k, W_v and ``out_proj.weight`` = W_o
of every ``nn.MultiheadAttention``); ``pattern`` trains the parameters whose names match any of
a list of regular expressions (serves the other subsets of that paper, e.g. bias + attention).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from taskmerge.errors import ConfigError


class FinetuningMode:
    """Standard fine-tuning: every image-encoder parameter trains."""

    name = "standard"

    def is_trainable(self, module: nn.Module, param_name: str) -> bool:  # noqa: ARG002
        """Whether parameter ``param_name`` of ``module`` trains."""
        return True

    def select_trainable(self, encoder: nn.Module) -> list[nn.Parameter]:
        """Set ``requires_grad`` by the mode's rule; return the trainable parameters."""
        params = []
        for name, param in encoder.named_parameters():
            param.requires_grad_(self.is_trainable(encoder, name))
            if param.requires_grad:
                params.append(param)
        if not params:
            raise ConfigError(f"fine-tuning mode {self.name!r} selects no parameter of the encoder")
        return params

    def forward(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Image features during training."""
        return encoder(images)


class AttentionOnly(FinetuningMode):
    """Only W_q, W_k, W_v (``in_proj_weight``) and W_o (``out_proj.weight``) of attention train."""

    name = "attention"

    def is_trainable(self, module: nn.Module, param_name: str) -> bool:  # noqa: D102
        owner_name, _, leaf = param_name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if isinstance(owner, nn.MultiheadAttention):
            return leaf == "in_proj_weight"
        parent_name, _, child = owner_name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        return (
            isinstance(parent, nn.MultiheadAttention) and child == "out_proj" and leaf == "weight"
        )


class PatternSubset(FinetuningMode):
    """Parameters whose names match any of ``patterns`` (regular expressions) train."""

    def __init__(self, patterns: Sequence[str], name: str = "pattern") -> None:
        self.name = name
        self.patterns = [re.compile(p) for p in patterns]

    def is_trainable(self, module: nn.Module, param_name: str) -> bool:  # noqa: ARG002, D102
        return any(p.search(param_name) for p in self.patterns)
