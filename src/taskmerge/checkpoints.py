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

from taskmerge.errors import CheckpointError, ConfigError, StorageError

StateDict = dict[str, torch.Tensor]

FINETUNED_FILE = "finetuned.safetensors"
METRICS_FILE = "metrics.json"


def task_dir(root: str | Path, model: str, finetuning: str, task: str) -> Path:
    """Directory holding one task's fine-tuned checkpoint and metrics."""
    return Path(root).expanduser() / model / finetuning / task


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only if the block succeeds.

    Raises:
        StorageError: the place cannot be written (read-only, full, no permission): one line
            naming it and the fix; nothing is left at ``path`` (the temporary file is removed).
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(
            f"cannot write {path} ({exc.strerror or exc}): free disk space or point "
            "TASKMERGE_HOME / paths.* / hydra.run.dir at a writable place"
        ) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
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
    """Shapes of the tensors of a safetensors file, read from its header (no tensor is loaded).

    Raises:
        CheckpointError: the file is empty, truncated or not a safetensors file.
    """
    return {key: shape for key, (shape, _) in tensor_specs(path).items()}


#: safetensors dtype tags of floating-point tensors.
FLOAT_TAGS = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})


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


def check_dtypes(path: str | Path, reference: Mapping[str, torch.Tensor]) -> None:
    """Every tensor that is a floating-point weight in ``reference`` is floating-point in the file.

    Raises:
        CheckpointError: naming the file, the key and the dtype found.
    """
    for key, (_, tag) in tensor_specs(path).items():
        if key in reference and reference[key].is_floating_point() and tag not in FLOAT_TAGS:
            raise CheckpointError(
                f"{path}: tensor {key} has dtype {tag}, the model's weight is "
                f"{reference[key].dtype}: the file is not a fine-tuned copy of this model"
            )


def check_finite(tensor: torch.Tensor, key: str, source: str | Path) -> torch.Tensor:
    """``tensor`` if every entry is finite.

    Raises:
        CheckpointError: naming the file and the key holding NaN or Inf.
    """
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise CheckpointError(
            f"{source}: tensor {key} holds NaN or Inf values (a diverged fine-tuning?): "
            "re-run finetune.py for it (a lower train.lr), or leave the task out"
        )
    return tensor


def check_writable(directory: str | Path) -> None:
    """Fail now, in one line, if ``directory`` cannot take files (before any long work)."""
    with atomic_path(Path(directory) / ".taskmerge-write-check") as tmp:
        tmp.write_bytes(b"ok")
    (Path(directory) / ".taskmerge-write-check").unlink(missing_ok=True)
