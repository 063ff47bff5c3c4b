"""Atomic writes: every file taskmerge writes appears whole or not at all.

:func:`atomic_path` is the one storage-error path: a write that fails for lack of space, a
read-only place or a missing permission (an ``OSError``, or the same fault reported by torch's or
safetensors' writers) becomes a :class:`~taskmerge.errors.StorageError` naming the file and the
fix, and leaves no partial file behind.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from taskmerge.errors import StorageError

#: How torch's and safetensors' writers report a failed write (they raise RuntimeError or their
#: own error types, not OSError): ``PytorchStreamWriter failed writing file``, ``os error 28``.
_WRITE_FAILURES = (
    "file write failed", "PytorchStreamWriter failed", "iostream error", "No space left",
    "StorageFull", "Read-only file system", "Permission denied", "Disk quota exceeded",
    "os error 28", "os error 30", "os error 13", "os error 122",
)  # fmt: skip
#: Below this much free space, a failed write is taken for a full disk whatever it says.
NEARLY_FULL = 1 << 20
_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "a read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EDQUOT: "disk quota exceeded",
}


def storage_failure(exc: BaseException) -> str | None:
    """Why ``exc`` (or an exception it was raised from) is a failed write, or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            return _REASONS.get(current.errno or -1) or current.strerror or str(current)
        text = str(current)
        for marker in _WRITE_FAILURES:
            if marker in text:
                return "no space left on the device" if "28" in marker or "space" in marker \
                    else text.splitlines()[0][:120]  # fmt: skip
        current = current.__cause__ or current.__context__
    return None


def _full(directory: Path) -> str | None:
    """``no space left on the device`` when ``directory``'s file system is (nearly) full."""
    try:
        stats = os.statvfs(directory)
    except OSError:
        return None
    return "no space left on the device" if stats.f_bavail * stats.f_frsize < NEARLY_FULL else None


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
    except StorageError:
        raise
    except Exception as exc:
        reason = storage_failure(exc)
        if reason not in _REASONS.values():  # torch's "iostream error" says not why: look
            reason = _full(path.parent) or reason
        if reason is None:
            raise
        raise StorageError(
            f"cannot write {path} ({reason}): free disk space or point TASKMERGE_HOME / "
            "paths.* / hydra.run.dir at a writable place"
        ) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_json(data: Mapping[str, Any], path: str | Path) -> None:
    """Write JSON atomically."""
    write_text(json.dumps(data, indent=2, sort_keys=True), path)


def write_text(text: str, path: str | Path) -> None:
    """Write a text file atomically."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)


def save_figure(figure: Any, path: str | Path, **options: Any) -> Path:
    """Write a matplotlib figure as PNG, atomically."""
    with atomic_path(Path(path)) as tmp:
        figure.savefig(tmp, format="png", **options)
    return Path(path)


def check_writable(directory: str | Path) -> None:
    """Fail now, in one line, if ``directory`` cannot take files (before any long work)."""
    with atomic_path(Path(directory) / ".taskmerge-write-check") as tmp:
        tmp.write_bytes(b"ok")
    (Path(directory) / ".taskmerge-write-check").unlink(missing_ok=True)
