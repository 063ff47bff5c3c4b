"""Reuse finished work: the complete results of merge jobs, by job key.

A merge job's results are stored under a key made of its resolved config (minus what does not
change the numbers: the logger, ``force``, the Hydra settings) and the fingerprints of the
checkpoints it merges (each file's size, modification time and header). Rerunning the same job
finds them and reuses them (reported as reused) instead of recomputing; ``force=true``
recomputes. Killing a multirun and running the same command again therefore finishes only the
jobs that had not completed. Only complete results are ever stored (written atomically at the
end of a job), so a killed job leaves nothing a rerun could mistake for a finished one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from taskmerge.io.atomic import write_json
from taskmerge.io.tensors import read_metadata

#: Config keys that never change a job's numbers.
IGNORED_KEYS = ("logger", "force", "hydra")


def checkpoint_fingerprint(path: str | Path) -> str:
    """A cheap identity of a checkpoint file: size, modification time and header metadata."""
    path = Path(path)
    stat = path.stat()
    header = json.dumps(read_metadata(path), sort_keys=True)
    return hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}:{header}".encode()).hexdigest()[:16]


def job_key(config: Mapping[str, Any], checkpoints: Mapping[str, str | Path]) -> str:
    """The key of a job: its config (without :data:`IGNORED_KEYS`) and its checkpoints."""
    kept = {key: value for key, value in config.items() if key not in IGNORED_KEYS}
    prints = {task: checkpoint_fingerprint(path) for task, path in sorted(checkpoints.items())}
    payload = json.dumps({"config": kept, "checkpoints": prints}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class ResultStore:
    """Completed job results by :func:`job_key` (``<cache>/results/<key>.json``)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()

    def path(self, key: str) -> Path:
        """Where the results of one job key live."""
        return self.directory / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The complete results of a job, or None."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
        return results if results.get("complete") is True else None

    def put(self, key: str, results: Mapping[str, Any]) -> None:
        """Store complete results (atomically)."""
        if results.get("complete") is True:
            write_json(dict(results), self.path(key))
