"""TaskVector: the difference between fine-tuned and pretrained weights, as a value with operators.

Ilharco et al., "Editing Models with Task Arithmetic" (arXiv:2212.04089). Vectors add, subtract,
negate and scale; the scaling coefficient is applied once, at the end, by :meth:`apply_to`.
Only floating-point tensors take part (integer buffers such as position ids are not weights).

A task vector is either in memory (a dict of tensors) or lazy (:meth:`TaskVector.lazy`: a
:class:`~taskmerge.vectors.lazy.LazyTaskVector` that reads one tensor per lookup from the
checkpoint). Merge methods read ``tv.vector[name]`` tensor by tensor, so both work the same way;
the operators below build in-memory vectors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from numbers import Real
from pathlib import Path

import torch
from torch import nn

from taskmerge.errors import ConfigError
from taskmerge.io.checks import check_compatible, check_finite, require_keys
from taskmerge.io.tensors import StateDict, load_state_dict
from taskmerge.vectors.lazy import LazyTaskVector, Pretrained


def _is_weight(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point()


def apply_delta(
    base: torch.Tensor, delta: torch.Tensor | None, scaling_coef: float = 1.0
) -> torch.Tensor:
    """``base + scaling_coef * delta`` in float32, cast back to ``base``'s dtype (a copy of
    ``base`` when ``delta`` is None): how a task vector is applied to one tensor. A ``delta``
    on another device (``merge_device=cuda``) is brought to ``base``'s first."""
    if delta is None:
        return base.clone()
    return (base.float() + scaling_coef * delta.to(base.device)).to(base.dtype)


def check_same_mode(task_vectors: Mapping[str, TaskVector]) -> str | None:
    """The one fine-tuning mode of ``task_vectors`` (None if none is known).

    Raises:
        ConfigError: vectors of different modes (e.g. standard and linear) would be mixed.
    """
    modes = {name: tv.mode for name, tv in task_vectors.items() if tv.mode is not None}
    if len(set(modes.values())) > 1:
        raise ConfigError(
            f"task vectors of different fine-tuning modes would be merged ({modes}): merge "
            "vectors of one mode (finetuning=...), and cast with eval_forward= to compare"
        )
    return next(iter(modes.values()), None)


class TaskVector:
    """A mapping from parameter name to the tensor ``theta_finetuned - theta_pretrained``.

    ``vector`` is copied when it is a dict; any other mapping (e.g. a lazy one) is kept as is.
    ``mode`` is the fine-tuning mode it comes from, when known (checkpoints record it): vectors
    of different modes never combine (:func:`check_same_mode`).
    """

    def __init__(self, vector: Mapping[str, torch.Tensor], mode: str | None = None) -> None:
        self.vector: Mapping[str, torch.Tensor] = (
            dict(vector) if isinstance(vector, dict) else vector
        )
        self.mode = mode

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_state_dicts(
        cls, pretrained: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor]
    ) -> TaskVector:
        """``finetuned - pretrained`` over the floating-point tensors of the pretrained model."""
        check_compatible(finetuned, pretrained, "fine-tuned state dict")
        return cls(
            {
                key: check_finite(finetuned[key], key, "fine-tuned state dict").detach().float()
                - value.detach().float()
                for key, value in pretrained.items()
                if _is_weight(value)
            }
        )

    @classmethod
    def from_checkpoints(
        cls, pretrained: str | Path | Mapping[str, torch.Tensor], finetuned: str | Path
    ) -> TaskVector:
        """Build from two checkpoints (paths, or a pretrained state dict already in memory)."""
        base = pretrained if isinstance(pretrained, Mapping) else load_state_dict(pretrained)
        tuned = load_state_dict(finetuned)
        try:
            return cls.from_state_dicts(base, tuned)
        except Exception as exc:
            raise type(exc)(f"{finetuned}: {exc}") from exc

    @classmethod
    def lazy(
        cls, pretrained: Pretrained, finetuned: str | Path, mode: str | None = None
    ) -> TaskVector:
        """A task vector read one tensor at a time from a safetensors checkpoint (keys and shapes
        checked from the headers now; tensors read on use). ``pretrained``: a state dict in
        memory or a safetensors file."""
        return cls(LazyTaskVector(finetuned, pretrained), mode=mode)

    @property
    def is_lazy(self) -> bool:
        """Whether the tensors are read from disk on use."""
        return isinstance(self.vector, LazyTaskVector)

    # ---------------------------------------------------------------- algebra
    def _combine(self, other: TaskVector, op) -> TaskVector:  # noqa: ANN001
        if not isinstance(other, TaskVector):
            return NotImplemented
        if self.vector.keys() != other.vector.keys():
            raise ValueError("task vectors have different parameter names")
        mode = check_same_mode({"left": self, "right": other})
        combined = {key: op(value, other.vector[key]) for key, value in self.vector.items()}
        return TaskVector(combined, mode=mode)

    def __add__(self, other: TaskVector) -> TaskVector:
        return self._combine(other, torch.add)

    def __radd__(self, other: object) -> TaskVector:
        if isinstance(other, int) and other == 0:  # makes the builtin sum() work
            return self
        return NotImplemented

    def __sub__(self, other: TaskVector) -> TaskVector:
        return self._combine(other, torch.sub)

    def __neg__(self) -> TaskVector:
        return TaskVector({key: -value for key, value in self.vector.items()}, mode=self.mode)

    def __mul__(self, scalar: Real) -> TaskVector:
        if not isinstance(scalar, Real):
            return NotImplemented
        scaled = {key: value * float(scalar) for key, value in self.vector.items()}
        return TaskVector(scaled, mode=self.mode)

    __rmul__ = __mul__

    def __truediv__(self, scalar: Real) -> TaskVector:
        return self * (1.0 / float(scalar))

    # ---------------------------------------------------------------- inspection
    def __len__(self) -> int:
        return len(self.vector)

    def keys(self) -> Iterable[str]:
        """Parameter names."""
        return self.vector.keys()

    def norm(self, p: float = 2.0) -> float:
        """The p-norm of the whole vector (all parameters flattened), computed tensor by tensor."""
        if p == float("inf"):
            return max(float(v.abs().max()) for v in self.vector.values())
        total = sum(float(v.abs().pow(p).sum()) for v in self.vector.values())
        return total ** (1.0 / p)

    def numel(self) -> int:
        """Number of scalar entries (from the headers for a lazy vector: nothing is read)."""
        if isinstance(self.vector, LazyTaskVector):
            return sum(self.vector.shape(key).numel() for key in self.vector)
        return sum(v.numel() for v in self.vector.values())

    # ---------------------------------------------------------------- application
    def apply_to_state_dict(
        self, pretrained: Mapping[str, torch.Tensor], scaling_coef: float = 1.0
    ) -> StateDict:
        """``pretrained + scaling_coef * self``; tensors outside the vector are copied unchanged."""
        require_keys(self.vector, pretrained)
        merged: StateDict = {}
        for key, value in pretrained.items():
            merged[key] = apply_delta(value, self.vector.get(key), scaling_coef)
        return merged

    def apply_to(self, model: nn.Module, scaling_coef: float = 1.0) -> nn.Module:
        """Add ``scaling_coef * self`` to a module's weights in place and return it."""
        model.load_state_dict(self.apply_to_state_dict(model.state_dict(), scaling_coef))
        return model
