"""State dicts on disk: atomic safetensors writes, safe reads (never a code-running pickle),
header-only inspection, and single-tensor reads for lazy task vectors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from taskmerge.errors import CheckpointError
from taskmerge.io.atomic import atomic_path

StateDict = dict[str, torch.Tensor]

#: safetensors dtype tags of floating-point tensors (the only ones that are weights).
FLOAT_TAGS = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    path: str | Path,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write a state dict as safetensors, atomically (readers never see a half-written file)."""
    tensors = {key: value.detach().contiguous().cpu() for key, value in state_dict.items()}
    meta = {key: str(value) for key, value in (metadata or {}).items()}
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata stored in a safetensors header.

    Raises:
        CheckpointError: the file is missing, truncated or not a safetensors file.
    """
    tensor_specs(path)  # a clear error for an empty, truncated or foreign file
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_state_dict(path: str | Path) -> StateDict:
    """Read a state dict safely: safetensors, or a ``.pt`` file through torch's weights-only loader.

    Raises:
        CheckpointError: if the file is missing, is not a state dict of tensors, or holds a
            pickled module (which is never unpickled here).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal means the same thing here
        raise CheckpointError(
            f"{path} is not a plain state dict (it looks like a pickled module, which taskmerge "
            "never unpickles): if you trust the file, save its `.state_dict()` with "
            "safetensors.torch.save_file and point taskmerge at that"
        ) from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return dict(obj)


def read_tensor(path: str | Path, key: str) -> torch.Tensor:
    """One tensor of a safetensors file (the file is opened for this read only: a handle kept
    open would keep the pages it touched mapped)."""
    with safe_open(str(path), framework="pt") as handle:
        return handle.get_tensor(key)


def float_keys(path: str | Path) -> list[str]:
    """Names of the floating-point tensors of a safetensors file, in file order."""
    with safe_open(str(path), framework="pt") as handle:
        return [key for key in handle.keys() if handle.get_slice(key).get_dtype() in FLOAT_TAGS]


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors of a safetensors file, read from its header (no tensor is loaded).

    Raises:
        CheckpointError: the file is empty, truncated or not a safetensors file.
    """
    return {key: shape for key, (shape, _) in tensor_specs(path).items()}


def tensor_specs(path: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, safetensors dtype tag) from the header, checking the file holds all the
    data the header announces.

    Raises:
        CheckpointError: the file is empty, truncated or not a safetensors file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with safe_open(str(path), framework="pt") as handle:
            specs = {
                key: (tuple(handle.get_slice(key).get_shape()), handle.get_slice(key).get_dtype())
                for key in handle.keys()
            }
        with open(path, "rb") as raw:
            header = int.from_bytes(raw.read(8), "little")
            entries = json.loads(raw.read(header))
        end = max((v["data_offsets"][1] for k, v in entries.items() if k != "__metadata__"),
                  default=0)  # fmt: skip
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors / OS / JSON errors mean the same here
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint ({reason}): it is empty, truncated "
            "or of another format; re-run finetune.py / import_checkpoints.py for it"
        ) from None
    if size < 8 + header + end:
        raise CheckpointError(
            f"{path} is truncated ({size} bytes, its header announces {8 + header + end}): "
            "re-run finetune.py / import_checkpoints.py for it"
        )
    return specs
