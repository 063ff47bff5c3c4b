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
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from taskmerge.io.atomic import write_json
from taskmerge.io.tensors import CHECKSUM_KEY, read_metadata

log = logging.getLogger(__name__)

#: Config keys that never change a job's numbers.
IGNORED_KEYS = ("logger", "force", "hydra", "overwrite")
#: What a stored result must hold to be reused.
REQUIRED_KEYS = ("method", "tasks", "test", "val", "hyperparameters", "sweep")


def checkpoint_fingerprint(path: str | Path) -> str:
    """A cheap identity of a checkpoint file: its header (with the checksum of its tensors, which
    survives a copy or a move); for a file whose header records no checksum, its size and
    modification time too."""
    path = Path(path)
    header = read_metadata(path)
    identity = json.dumps(header, sort_keys=True)
    if CHECKSUM_KEY not in header:
        stat = path.stat()
        identity = f"{stat.st_size}:{stat.st_mtime_ns}:{identity}"
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def job_key(
    config: Mapping[str, Any],
    checkpoints: Mapping[str, str | Path],
    home: str | Path | None = None,
) -> str:
    """The key of a job: its config (without :data:`IGNORED_KEYS`; paths under ``home``
    written relative to it, so a copied or moved home keeps its keys) and its checkpoints."""
    kept = {key: value for key, value in config.items() if key not in IGNORED_KEYS}
    if isinstance(kept.get("paths"), Mapping):  # where things are, not what they hold
        kept["paths"] = {k: v for k, v in kept["paths"].items() if k != "create"}
    prints = {task: checkpoint_fingerprint(path) for task, path in sorted(checkpoints.items())}
    payload = json.dumps({"config": kept, "checkpoints": prints}, sort_keys=True, default=str)
    if home is not None:
        root = str(Path(home).expanduser().resolve())
        payload = payload.replace(json.dumps(root)[1:-1], "$TASKMERGE_HOME")
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class ResultStore:
    """Completed job results by :func:`job_key` (``<cache>/results/<key>.json``)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()

    def path(self, key: str) -> Path:
        """Where the results of one job key live."""
        return self.directory / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The complete results of a job, or None (an unreadable or incomplete entry is
        discarded with one warning: the job is then computed again)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            results = json.loads(path.read_text())
            if not isinstance(results, dict) or results.get("complete") is not True:
                raise ValueError("not the complete results of a job")
            if not all(k in results for k in REQUIRED_KEYS):
                raise ValueError(f"no {[k for k in REQUIRED_KEYS if k not in results]}")
            results["test"]["avg"]["normalized_top1"]  # noqa: B018 - the numbers are there
        except (ValueError, KeyError, TypeError, OSError) as exc:
            log.warning("%s is unreadable or from an older layout (%s): the job is computed again",
                        path, exc)  # fmt: skip
            path.unlink(missing_ok=True)  # discarded: written again when the job completes
            return None
        return results

    def put(self, key: str, results: Mapping[str, Any]) -> None:
        """Store complete results (atomically)."""
        if results.get("complete") is True:
            write_json(dict(results), self.path(key))
