"""The fine-tuning lock of one task's checkpoint directory.

Fine-tuning a missing checkpoint holds a file lock on the task's directory: a second job that
needs the same checkpoint at the same time waits, then reuses it instead of training it again,
and never reads a half-written file (checkpoints are moved into place atomically).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from taskmerge.store.layout import LOCK_FILE


@contextmanager
def task_lock(directory: str | Path) -> Iterator[None]:
    """Hold the fine-tuning lock of one task's checkpoint directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory / LOCK_FILE)):
        yield
