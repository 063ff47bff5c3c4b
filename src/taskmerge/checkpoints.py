"""Checkpoint layout, atomic safetensors writes and safe reading of state dicts.

Layout (one directory per model, fine-tuning mode and task)::

    <checkpoints>/<model>/<finetuning>/<Task>/finetuned.safetensors   image-encoder state dict
    <checkpoints>/<model>/<finetuning>/<Task>/metrics.json            fine-tuned Val/test top-1

The safetensors header carries the metadata (model, pretrained tag, task, mode, fingerprint of the
pretrained weights), so a checkpoint fine-tuned from other weights is refused, not merged.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from taskmerge.errors import CheckpointError, ConfigError

StateDict = dict[str, torch.Tensor]

FINETUNED_FILE = "finetuned.safetensors"
METRICS_FILE = "metrics.json"


def task_dir(root: str | Path, model: str, finetuning: str, task: str) -> Path:
    """Directory holding one task's fine-tuned checkpoint and metrics."""
    return Path(root).expanduser() / model / finetuning / task


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


def write_json(data: Mapping[str, Any], path: str | Path) -> None:
    """Write JSON atomically."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata stored in a safetensors header."""
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


def fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A short, stable hash of a state dict's keys, shapes and values."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.float().numpy().tobytes())
    return digest.hexdigest()[:16]


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors of a safetensors file, read from its header (no tensor is loaded)."""
    with safe_open(str(path), framework="pt") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}


def check_shapes(
    shapes: Mapping[str, tuple[int, ...]],
    reference: Mapping[str, tuple[int, ...]],
    source: str,
) -> None:
    """Raise a clear error unless ``shapes`` (name -> shape) has the keys and shapes of
    ``reference``."""
    missing = sorted(set(reference) - set(shapes))
    unexpected = sorted(set(shapes) - set(reference))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match the model: missing keys {missing[:3]}, unexpected keys "
            f"{unexpected[:3]}; was it fine-tuned from another architecture?"
        )
    for key, shape in reference.items():
        if tuple(shapes[key]) != tuple(shape):
            raise CheckpointError(
                f"{source}: tensor {key} has shape {tuple(shapes[key])}, the model "
                f"expects {tuple(shape)}; was it fine-tuned from another architecture?"
            )


def check_compatible(
    state_dict: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], source: str
) -> None:
    """Raise a clear error unless ``state_dict`` has the keys and shapes of ``reference``."""
    check_shapes(
        {key: tuple(value.shape) for key, value in state_dict.items()},
        {key: tuple(value.shape) for key, value in reference.items()},
        source,
    )


def require_keys(names: Iterable[str], model_keys: Iterable[str], source: str = "") -> None:
    """The one key check of merging: every name of a task vector must be a tensor of the model.

    Raises:
        ConfigError: Names the model lacks (the task vectors come from another architecture).
    """
    missing = sorted(set(names) - set(model_keys))
    if missing:
        where = f"{source}: " if source else ""
        raise ConfigError(
            f"{where}the model has no parameters named {missing[:3]}: the task vectors come from "
            "another architecture; merge them with the pretrained model they were fine-tuned from"
        )
