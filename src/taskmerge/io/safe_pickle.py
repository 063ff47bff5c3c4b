"""Read pickled ``torch.save`` checkpoints of the reference repos without running their code.

Only the zip format of ``torch.save`` (torch >= 1.6) is read, and only through torch's weights-only
unpickler. Before loading, the pickle's globals are listed statically
(``torch.serialization.get_unsafe_globals_in_checkpoint``); every one outside torch's own allow-list
must be a known module class (torch.nn, open_clip, torchvision transforms, the reference repos'
``ImageEncoder`` / ``ClassificationHead`` / linearized classes), and each is bound to an inert
:class:`StandIn` that only records its constructor arguments and pickled state. Anything else
(``os.system``, ``builtins.eval``, unknown classes) is refused before a byte is unpickled.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from taskmerge.errors import CheckpointError

StateDict = dict[str, torch.Tensor]

# Module-name prefixes whose classes are bound to stand-ins (never imported, never called).
STAND_IN_PREFIXES = (
    "torch.nn.modules.",
    "open_clip.",
    "torchvision.transforms.",
    "src.modeling.",
    "src.models.modeling.",
    "src.linearize.",
    "src.models.linearize.",
    "src.heads.",
    "src.models.heads.",
)
STAND_IN_NAMES = frozenset({"functools.partial"})

_FIX = (
    "re-save it as a plain state dict (safetensors.torch.save_file(obj.state_dict(), ...)) "
    "in an environment you trust, and import that file"
)


class StandIn:
    """An inert placeholder for a pickled class: it stores what unpickling hands it, runs nothing.

    ``legacy_name`` is the dotted name the pickle asked for; ``args`` are the constructor / reduce
    arguments and ``state`` the ``__setstate__`` payload (for an ``nn.Module``: its ``__dict__``).
    """

    legacy_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: ``__new__`` kept the arguments."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def get(self, name: str, default: Any = None) -> Any:
        """An entry of the pickled ``__dict__`` (``default`` when absent or not a dict)."""
        return self.state.get(name, default) if isinstance(self.state, Mapping) else default

    def __repr__(self) -> str:
        return f"StandIn({self.legacy_name})"


def is_stand_in_name(name: str) -> bool:
    """True for a global that :func:`load_legacy` binds to a stand-in."""
    return name in STAND_IN_NAMES or name.startswith(STAND_IN_PREFIXES)


def stand_in_class(name: str) -> type[StandIn]:
    """A fresh :class:`StandIn` subclass recording the dotted ``name`` it replaces."""
    short = name.rsplit(".", 1)[-1] or "StandIn"
    return type(short, (StandIn,), {"legacy_name": name, "__module__": __name__})


def _numpy_globals() -> list[Any]:
    """The numpy callables/classes an array needs to be rebuilt (all free of side effects)."""
    import numpy as np

    reconstruct = np.zeros(0).__reduce__()[0]
    dtypes = "?bBhHiIlLqQefdgFD"
    return [
        np.ndarray,
        np.dtype,
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        *{type(np.dtype(code)) for code in dtypes},
    ]


def _numpy_names(entries: Iterable[Any]) -> set[str]:
    names = set()
    for entry in entries:
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f"{entry.__module__}.{entry.__qualname__}")
    return names


def unsafe_globals(path: Path) -> list[str]:
    """Globals the checkpoint needs beyond torch's allow-list, read without unpickling."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a torch.save zip archive (a pre-1.6 torch file or a bare pickle), "
            f"which taskmerge never unpickles: {_FIX}"
        )
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception as exc:  # noqa: BLE001 - any parse failure means the same to the user
        raise CheckpointError(f"{path} is not a readable torch.save checkpoint ({exc})") from exc


def load_legacy(path: str | Path, *, allow_numpy: bool = False) -> Any:
    """Load a legacy ``torch.save`` file safely: pickled modules come back as stand-in trees.

    Tensors are memory-mapped (``mmap=True``): nothing is copied until it is used. With
    ``allow_numpy``, plain numpy arrays are rebuilt too (for TALL mask files saved by torch).

    Raises:
        CheckpointError: if the file is missing, is not a zip checkpoint, needs a global that is
            not a known module class (named with the file and the fix), or fails to load.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    needed = unsafe_globals(path)
    extra = _numpy_globals() if allow_numpy else []
    known = _numpy_names(extra)
    refused = [name for name in needed if name not in known and not is_stand_in_name(name)]
    if refused:
        raise CheckpointError(
            f"{path} needs the global(s) {', '.join(refused)}, which taskmerge refuses to unpickle "
            f"(it could run code); if you trust the file, {_FIX}"
        )
    stand_ins = [(stand_in_class(name), name) for name in needed if name not in known]
    try:
        with torch.serialization.safe_globals([*extra, *stand_ins]):
            return _weights_only_load(path)
    except Exception as exc:  # noqa: BLE001 - the unpickler's refusals have many types
        raise CheckpointError(
            f"{path} could not be read with torch's weights-only loader ({_reason(exc)}); {_FIX}"
        ) from exc


def _reason(exc: Exception) -> str:
    """The informative line of a ``torch.load`` error (its text spans many lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for index, line in enumerate(lines[:-1]):
        if line.endswith("WeightsUnpickler error:"):
            return lines[index + 1]
    return lines[0] if lines else type(exc).__name__


def _weights_only_load(path: Path) -> Any:
    """``torch.load`` with weights only, memory-mapped; read normally if the map cannot serve it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise
    except RuntimeError:  # e.g. an archive whose storages the memory map cannot serve
        return torch.load(path, map_location="cpu", weights_only=True)


def module_state_dict(obj: Any) -> StateDict:
    """The state dict of a stand-in module tree, named as ``nn.Module.state_dict`` would name it.

    Walks ``_parameters``, persistent ``_buffers`` and ``_modules`` recursively (same order as
    ``state_dict``); ``None`` entries are skipped. Tensors are returned detached, not copied.
    """
    if not isinstance(obj, StandIn):
        raise CheckpointError(f"expected a pickled module, got {type(obj).__name__}")
    out: StateDict = {}
    _walk(obj, "", out, set())
    return out


def _walk(node: StandIn, prefix: str, out: StateDict, ancestors: set[int]) -> None:
    if id(node) in ancestors:
        raise CheckpointError(f"{node.legacy_name} at '{prefix}' contains itself")
    modules = node.get("_modules")
    if not isinstance(modules, Mapping):
        raise CheckpointError(f"{node.legacy_name} at '{prefix or '<root>'}' is not an nn.Module")
    skip = set(node.get("_non_persistent_buffers_set") or ())
    entries = list((node.get("_parameters") or {}).items())
    entries += [(k, v) for k, v in (node.get("_buffers") or {}).items() if k not in skip]
    for name, tensor in entries:
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{prefix}{name} in {node.legacy_name} is not a tensor")
        out[prefix + name] = tensor.detach()
    for name, child in modules.items():
        if child is not None:
            if not isinstance(child, StandIn):
                raise CheckpointError(f"submodule {prefix}{name} is not a pickled module")
            _walk(child, f"{prefix}{name}.", out, ancestors | {id(node)})


def legacy_name(obj: Any) -> str:
    """The dotted class name a stand-in replaces (``type`` name for anything else)."""
    return obj.legacy_name if isinstance(obj, StandIn) else type(obj).__name__
