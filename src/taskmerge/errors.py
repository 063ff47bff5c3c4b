"""The one error type for a user's mistake, and its kinds.

A :class:`TaskmergeError` is something the user can fix (bad config, paths, checkpoints, data):
its message names the problem and the fix in one line, and the entry points print that line
(no traceback) and exit with a non-zero status. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TaskmergeError(Exception):
    """A problem the user can fix; the message names the problem and the fix in one line."""


class ConfigError(TaskmergeError, ValueError):
    """An invalid or inconsistent configuration value or argument."""


class DataNotFoundError(TaskmergeError):
    """A dataset is missing on disk and cannot be downloaded here."""


class CheckpointError(TaskmergeError):
    """A checkpoint is missing, unreadable or does not match the model."""


class StorageError(TaskmergeError):
    """A file cannot be written (read-only place, disk full, no permission)."""
