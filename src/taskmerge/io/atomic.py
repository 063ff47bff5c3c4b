"""Atomic writes: every file taskmerge writes appears whole or not at all.

:func:`atomic_path` is the one storage-error path: a write that fails for lack of space, a
read-only place or a missing permission becomes a :class:`~taskmerge.errors.StorageError`
naming the file and the fix, and leaves no partial file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from taskmerge.errors import StorageError


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


def write_json(data: Mapping[str, Any], path: str | Path) -> None:
    """Write JSON atomically."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))


def check_writable(directory: str | Path) -> None:
    """Fail now, in one line, if ``directory`` cannot take files (before any long work)."""
    with atomic_path(Path(directory) / ".taskmerge-write-check") as tmp:
        tmp.write_bytes(b"ok")
    (Path(directory) / ".taskmerge-write-check").unlink(missing_ok=True)
