"""Accuracies that do not depend on a merge (e.g. the zero-shot encoder's), measured once and
reused by every later job: one JSON record per (key, scoring, task, split)."""

from __future__ import annotations

import json
from pathlib import Path

from taskmerge.io.atomic import write_json


class AccuracyCache:
    """``<directory>/<key>/<scoring>/<Task>-<split>.json`` records of one pretrained model (the
    directory must identify the model and its weights, see :mod:`taskmerge.store.layout`)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()

    def path(self, key: str, scoring: str, task: str, split: str) -> Path:
        """The record of one accuracy."""
        return self.directory / key / scoring / f"{task}-{split}.json"

    def get(self, key: str, scoring: str, task: str, split: str) -> float | None:
        """The stored top-1, or None."""
        path = self.path(key, scoring, task, split)
        if not path.is_file():
            return None
        return float(json.loads(path.read_text())["top1"])

    def put(self, key: str, scoring: str, task: str, split: str, record: dict) -> None:
        """Store one record (``top1`` and what it was measured with), atomically."""
        write_json(record, self.path(key, scoring, task, split))
