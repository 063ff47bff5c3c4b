"""What a run leaves behind and what it prints: library log lines hidden unless ``verbose=true``,
and no empty run folder after a run that stopped on a user error.

Hydra creates the run folder (``hydra.run.dir``, with ``.hydra/`` and ``<job>.log``) before
the job starts. A job that ends on a :class:`~taskmerge.errors.TaskmergeError` removes that
folder again, but only when it held nothing else when the job started and holds nothing else
at its end: a folder with an earlier run's results or log, or anything the job wrote, stays.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

#: Loggers (first name component) whose INFO lines are always shown; every other library's
#: (open_clip logs on the root logger, timm, huggingface_hub, ...) only at WARNING and above
#: unless ``verbose=true``.
OWN_LOGGERS = frozenset({"taskmerge", "hydra", "__main__"})
#: The files Hydra writes into ``.hydra/`` of a run folder.
HYDRA_FILES = frozenset({"config.yaml", "hydra.yaml", "overrides.yaml"})


class LibraryFilter(logging.Filter):
    """Drops records below WARNING that do not come from taskmerge, Hydra or the script."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in OWN_LOGGERS


def quiet_libraries(verbose: bool) -> None:
    """Hide other libraries' INFO / DEBUG lines on every handler of the root logger (Hydra's
    console and log file), or show them again with ``verbose``."""
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, LibraryFilter)]:
            handler.removeFilter(old)
        if not verbose:
            handler.addFilter(LibraryFilter())


def only_hydra_files(directory: Path, log_name: str, empty_log: bool) -> bool:
    """Whether ``directory`` holds nothing but Hydra's ``.hydra/`` files and the job's log
    (that log empty too when ``empty_log``)."""
    if not directory.is_dir():
        return False
    for entry in directory.iterdir():
        if entry.name == ".hydra" and entry.is_dir() and not entry.is_symlink():
            if any(not f.is_file() or f.name not in HYDRA_FILES for f in entry.iterdir()):
                return False
        elif entry.name == log_name and entry.is_file() and not entry.is_symlink():
            if empty_log and entry.stat().st_size > 0:
                return False
        else:
            return False
    return True


class RunFolder:
    """The run folder of one job: noted when the job starts, removed after a user error if it
    was fresh (only Hydra's files and an empty log) and still holds nothing else."""

    def __init__(self, directory: Path, log_name: str) -> None:
        self.directory = directory
        self.log_name = log_name
        self.fresh = only_hydra_files(directory, log_name, empty_log=True)

    def discard(self) -> bool:
        """Remove the folder when it is still only Hydra's files; whether it was removed."""
        if not self.fresh or not only_hydra_files(self.directory, self.log_name, empty_log=False):
            return False
        shutil.rmtree(self.directory, ignore_errors=True)
        return not self.directory.exists()
