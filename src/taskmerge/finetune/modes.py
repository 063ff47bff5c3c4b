"""Fine-tuning modes: which image-encoder parameters train, and the forward that scores them.

A mode owns two things: :meth:`FinetuningMode.is_trainable` (the parameters that train) and
:attr:`FinetuningMode.forward` (how features are computed from theta0 and theta: ``"nonlinear"``,
the encoder itself, or ``"linear"``, its first-order Taylor expansion around theta0, see
:mod:`taskmerge.models.linearized`). Training, the fine-tuned accuracies, zero-shot, every sweep
candidate and the analyses go through that forward
(:func:`taskmerge.models.forward.forward_module`), so a linearized checkpoint is never scored as a
non-linear model unless asked to (``eval_forward``).

* ``standard``: every parameter trains, non-linear forward.
* ``linear`` (Ortiz-Jimenez et al., arXiv:2305.12827): every parameter trains, in the tangent
  space of the pretrained model (linearized forward, theta0 frozen). About twice the cost.
* ``attention`` (Jin et al., arXiv:2407.07089, "linear-2"): only the attention projections
  (``in_proj_weight`` = W_q, W_k, W_v and ``out_proj.weight`` = W_o of every
  ``nn.MultiheadAttention``), non-linear forward.
* ``pattern``: the parameters whose names match any of a list of regular expressions (the other
  subsets of that paper, e.g. bias + attention). Its patterns are part of its identity: a
  checkpoint records them and is refused when they change under the same name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from torch import nn

from taskmerge.errors import ConfigError
from taskmerge.models.forward import check_forward


class FinetuningMode:
    """Standard fine-tuning: every image-encoder parameter trains, non-linear forward."""

    name = "standard"
    forward = "nonlinear"

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

    def describe(self) -> dict[str, Any]:
        """What identifies the mode's checkpoints (recorded in their headers)."""
        return {"name": self.name, "forward": self.forward}

    def fingerprint(self) -> str:
        """:meth:`describe` as canonical JSON (compared with a checkpoint's header)."""
        return json.dumps(self.describe(), sort_keys=True)


class Linearized(FinetuningMode):
    """Tangent-space fine-tuning: every parameter trains through the linearized forward."""

    name = "linear"
    forward = "linear"


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
    """Parameters whose names match any of ``patterns`` (regular expressions) train.

    Args:
        patterns: Regular expressions searched in each parameter name.
        name: The mode's name (also the checkpoint directory level).
        forward: ``"nonlinear"`` (default) or ``"linear"`` (the subset trained in tangent space).
    """

    def __init__(
        self, patterns: Sequence[str], name: str = "pattern", forward: str = "nonlinear"
    ) -> None:
        self.name = name
        self.forward = check_forward(forward)
        try:
            self.patterns = [re.compile(p) for p in patterns]
        except re.error as exc:
            raise ConfigError(f"finetuning.patterns: {exc}: fix the regular expression") from None

    def is_trainable(self, module: nn.Module, param_name: str) -> bool:  # noqa: ARG002, D102
        return any(p.search(param_name) for p in self.patterns)

    def describe(self) -> dict[str, Any]:  # noqa: D102
        return {**super().describe(), "patterns": [p.pattern for p in self.patterns]}
