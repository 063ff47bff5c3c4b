"""Accuracies that do not depend on a merge (e.g. the zero-shot encoder's), measured once and
reused by every later job: one JSON record per (key, scoring, task, split)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from taskmerge.io.atomic import write_json

log = logging.getLogger(__name__)


class AccuracyCache:
    """``<directory>/<key>/<scoring>/<Task>-<split>.json`` records of one pretrained model (the
    directory must identify the model and its weights, see :mod:`taskmerge.store.layout`)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()

    def path(self, key: str, scoring: str, task: str, split: str) -> Path:
        """The record of one accuracy."""
        return self.directory / key / scoring / f"{task}-{split}.json"

    def get(self, key: str, scoring: str, task: str, split: str) -> float | None:
        """The stored top-1, or None (a damaged record is discarded with one warning: the
        accuracy is measured again)."""
        path = self.path(key, scoring, task, split)
        if not path.is_file():
            return None
        try:
            value = float(json.loads(path.read_text())["top1"])
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"top1={value}")
        except (ValueError, KeyError, TypeError, OSError) as exc:
            log.warning("%s is unreadable (%s): measured again", path, exc)
            path.unlink(missing_ok=True)
            return None
        return value

    def put(self, key: str, scoring: str, task: str, split: str, record: dict) -> None:
        """Store one record (``top1`` and what it was measured with), atomically."""
        write_json(record, self.path(key, scoring, task, split))
