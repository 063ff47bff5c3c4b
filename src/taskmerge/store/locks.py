"""The fine-tuning lock of one task's checkpoint directory.

Fine-tuning a checkpoint holds a file lock on the task's directory. ``main.py`` waits for a lock
another job holds and then reuses the checkpoint that job wrote (a multirun's jobs that need the
same missing checkpoint fine-tune it once); ``finetune.py`` refuses at once, before any training,
when another run holds it. Nobody ever reads a half-written checkpoint (they are moved into place
atomically).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from taskmerge.errors import StorageError
from taskmerge.store.layout import LOCK_FILE


@contextmanager
def task_lock(directory: str | Path, wait: bool = True) -> Iterator[None]:
    """Hold the fine-tuning lock of one task's checkpoint directory.

    Args:
        wait: Wait for another holder (else refuse at once).

    Raises:
        StorageError: ``wait`` is false and another run holds the lock, or the directory cannot
            hold a lock file.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(directory / LOCK_FILE), timeout=-1 if wait else 0)
        lock.acquire()
    except Timeout:
        raise StorageError(
            f"another run is fine-tuning {directory.name} now (it holds {directory / LOCK_FILE}):"
            " wait for it to finish (its checkpoint is then reused), or fine-tune other tasks"
        ) from None
    except OSError as exc:
        raise StorageError(
            f"cannot lock {directory} ({exc.strerror or exc}): point paths.checkpoints at a "
            "writable place"
        ) from None
    try:
        yield
    finally:
        lock.release()
