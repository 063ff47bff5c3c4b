"""State dicts on disk: atomic safetensors writes, safe reads (never a code-running pickle),
header-only inspection, and single-tensor reads for lazy task vectors."""

from __future__ import annotations

import hashlib
import json
import os
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


#: The header key of the checksum of a file's tensors (:func:`tensors_digest`).
CHECKSUM_KEY = "tensors_sha256"


def _update(digest: Any, name: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().contiguous().cpu()
    digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))


def tensors_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The sha256 of a state dict's names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        _update(digest, name, state_dict[name])
    return digest.hexdigest()


def file_tensors_digest(path: str | Path) -> str:
    """:func:`tensors_digest` of a safetensors file, reading one tensor at a time."""
    digest = hashlib.sha256()
    with safe_open(str(path), framework="pt") as handle:
        for name in sorted(handle.keys()):
            _update(digest, name, handle.get_tensor(name))
    return digest.hexdigest()


#: Files whose tensors matched their header's checksum in this process, by file identity.
_VERIFIED: set[tuple[str, int, int, int]] = set()


def verify_checksum(path: str | Path, fix: str = "re-run finetune.py / import_checkpoints.py "
                    "for it") -> bool:  # fmt: skip
    """Check a safetensors file's tensors against the checksum its header records (once per
    file and process). False when the header records none (a file written elsewhere).

    Raises:
        CheckpointError: the file is unreadable, or its bytes differ from what was written.
    """
    path = Path(path)
    stat = path.stat()
    identity = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if identity in _VERIFIED:
        return True
    expected = read_metadata(path).get(CHECKSUM_KEY)
    if expected is None:
        return False
    if file_tensors_digest(path) != expected:
        raise CheckpointError(
            f"{path}: its tensors do not match the checksum in its header (the bytes were "
            f"altered or damaged after it was written): {fix}"
        )
    _VERIFIED.add(identity)
    return True


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    path: str | Path,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write a state dict as safetensors, atomically (readers never see a half-written file),
    with the checksum of its tensors in the header (:func:`verify_checksum` checks it)."""
    tensors = {key: value.detach().contiguous().cpu() for key, value in state_dict.items()}
    meta = {key: str(value) for key, value in (metadata or {}).items()}
    meta[CHECKSUM_KEY] = tensors_digest(tensors)
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


def tensor_byte_ranges(path: str | Path) -> dict[str, tuple[int, int]]:
    """Name -> ``(offset, length)`` in bytes of each tensor's data in a safetensors file, from
    its header (no tensor is read)."""
    with open(path, "rb") as raw:
        header = int.from_bytes(raw.read(8), "little")
        entries = json.loads(raw.read(header))
    return {
        key: (8 + header + entry["data_offsets"][0],
              entry["data_offsets"][1] - entry["data_offsets"][0])
        for key, entry in entries.items() if key != "__metadata__"
    }  # fmt: skip


def prefetch(path: str | Path, ranges: list[tuple[int, int]]) -> None:
    """Ask the OS to start reading these byte ranges of a file into its page cache
    (``posix_fadvise(WILLNEED)``, returns at once; nothing is mapped or held by this process):
    the next tensors come off the disk while the current ones are computed on. A no-op where
    the call does not exist or fails."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        for offset, length in ranges:
            advise(descriptor, offset, length, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(descriptor)


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
