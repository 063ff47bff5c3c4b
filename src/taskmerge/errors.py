"""Errors a user can cause and fix (bad config, paths, checkpoints, data)."""

from __future__ import annotations


class TaskmergeError(Exception):
    """A problem the user can fix; the message names the problem and the fix in one line."""


class ConfigError(TaskmergeError):
    """An invalid or inconsistent configuration value."""


class DataNotFoundError(TaskmergeError):
    """A dataset is missing on disk and cannot be downloaded here."""


class CheckpointError(TaskmergeError):
    """A checkpoint is missing, unreadable or does not match the model."""
