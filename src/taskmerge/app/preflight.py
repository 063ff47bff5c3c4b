"""Before any long work: every place a job will write can take files, is not a typo, and holds
nothing of the user's that the job would replace.

* A destination that does not exist is created only when its parent exists (a mistyped
  ``paths.checkpoints=/nonexistent/ckpts`` is refused unless ``paths.create=true``).
* Every directory the job writes into is checked to be writable now (a read-only checkpoints
  folder is one line before training, not after it).
* An existing ``results.json`` in the run directory is replaced only when it holds the results
  of this very job (a rerun), or with ``overwrite=true``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from taskmerge.errors import ConfigError
from taskmerge.io.atomic import check_writable


def check_destination(
    path: str | Path, key: str, create: bool = False, home: str | Path | None = None
) -> Path:
    """``path`` if it exists or its parent does (it is then created on first write), or if it
    lies in taskmerge's ``home`` (``paths.root``: created on first use) whose parent exists; a
    path whose parent is missing too is refused unless ``create``.

    Raises:
        ConfigError: naming the key, the path and the fix.
    """
    path = Path(path).expanduser()
    if path.exists() or path.parent.exists() or create:
        return path
    if home is not None:
        root = Path(home).expanduser().absolute()
        if path.absolute().is_relative_to(root) and (root.exists() or root.parent.exists()):
            return path
    missing = next(p for p in [path, *path.parents] if p.parent.exists())
    raise ConfigError(
        f"{key}={path}: {missing} does not exist (a typo?): point {key} at an existing place, "
        "or pass paths.create=true to create it"
    )


def check_writable_all(directories: Iterable[str | Path]) -> None:
    """Every directory can take files now (created where needed).

    Raises:
        StorageError: naming the first that cannot, and the fix.
    """
    for directory in dict.fromkeys(Path(d).expanduser() for d in directories):
        check_writable(directory)


def earlier_results(path: Path, overwrite: bool) -> str | None:
    """The job key of the complete taskmerge results already at ``path`` (None: nothing
    there, or ``overwrite``).

    Raises:
        ConfigError: the file is not taskmerge results of a finished job (a file the user has,
            or an unfinished one): it is not replaced without ``overwrite=true``.
    """
    if overwrite or not path.exists():
        return None
    try:
        found: Any = json.loads(path.read_text())
        key = found.get("job_key") if isinstance(found, dict) else None
    except (ValueError, OSError):
        key = None
    if not isinstance(key, str) or found.get("complete") is not True:
        raise ConfigError(
            f"{path} exists and is not the results of a finished taskmerge job: choose another "
            "hydra.run.dir, or pass overwrite=true to replace it"
        )
    return key


def check_same_job(path: Path, earlier: str | None, key: str) -> None:
    """The results at ``path`` (job key ``earlier``) are this job's (``key``), or none are.

    Raises:
        ConfigError: they are another job's: they are not replaced without ``overwrite=true``.
    """
    if earlier is not None and earlier != key:
        raise ConfigError(
            f"{path} holds the results of another job (key {earlier}, this one is {key}): "
            "choose another hydra.run.dir, or pass overwrite=true to replace them"
        )
