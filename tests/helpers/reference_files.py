"""Fabricated files of the reference repos: pickled ``src.modeling`` modules (written with a fake
package that is removed again before reading), tangent's linearized layout, packed TALL masks,
and a pickle that runs code."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

FAKE_MODELING = """
import torch


class ImageEncoder(torch.nn.Module):
    def __init__(self, model, preprocess, keep_lang=False):
        super().__init__()
        self.model = model
        self.train_preprocess = preprocess
        self.val_preprocess = preprocess
        self.cache_dir = None
        if not keep_lang and hasattr(self.model, "transformer"):
            delattr(self.model, "transformer")


class ClassificationHead(torch.nn.Linear):
    def __init__(self, normalize, weights, biases=None):
        output_size, input_size = weights.shape
        super().__init__(input_size, output_size)
        self.normalize = normalize
        self.weight = torch.nn.Parameter(weights.clone())
        if biases is not None:
            self.bias = torch.nn.Parameter(biases.clone())
        else:
            self.bias = torch.nn.Parameter(torch.zeros_like(self.bias))
"""


@contextmanager
def fake_reference_package(root: Path) -> Iterator[None]:
    """``src.modeling`` and ``src.models.modeling`` importable only inside the block."""
    for folder in (root / "src", root / "src" / "models"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text("")
        (folder / "modeling.py").write_text(textwrap.dedent(FAKE_MODELING))
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == "src" or n.startswith("src.")]:
            del sys.modules[name]


def encoder_state(clip: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict a reference ``ImageEncoder`` (text transformer deleted) would save."""
    return {
        f"model.{k}": v for k, v in clip.state_dict().items() if not k.startswith("transformer.")
    }


def assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype and torch.equal(actual[key], value), key


class RunsCode:
    """Unpickling this calls ``func(*args)``: what a malicious checkpoint does."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self):  # noqa: ANN204
        return self.func, self.args


def reference_masks(state: dict[str, torch.Tensor], tasks: list[str], seed: int = 0):  # noqa: ANN202
    """Random masks and their packed form, flattened exactly as the references do."""
    generator = torch.Generator().manual_seed(seed)
    masks, packed = {}, {}
    for task in tasks:
        masks[task] = {k: torch.rand(v.shape, generator=generator) > 0.5 for k, v in state.items()}
        flat = torch.cat([masks[task][k].reshape(-1) for k in sorted(state)])  # sorted keys
        packed[task] = np.packbits(flat.numpy())
    return masks, packed


class TangentLinearized(nn.Module):
    """The parameter layout of tangent's ``LinearizedModel`` (``params`` / ``params0`` lists)."""

    def __init__(self, params: list[torch.Tensor], params0: list[torch.Tensor]) -> None:
        super().__init__()
        self.params = nn.ParameterList([nn.Parameter(p.clone()) for p in params])
        self.params0 = nn.ParameterList([nn.Parameter(p.clone()) for p in params0])


class TangentEncoder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model


def tangent_params(encoder: nn.Module) -> list[torch.Tensor]:
    """The parameter order tangent's ``make_functional_with_buffers`` produces."""
    try:
        from torch._functorch.make_functional import make_functional_with_buffers
    except ImportError:  # pragma: no cover - older/newer torch: the same named_parameters order
        return [p.detach() for p in encoder.parameters()]
    _, params, _ = make_functional_with_buffers(encoder, disable_autograd_tracking=True)
    return [p.detach() for p in params]
