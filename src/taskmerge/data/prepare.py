"""Prepare the 20 real datasets into the layouts the loaders read, and check them.

Where each task comes from (its entry in :mod:`taskmerge.data.standard_tasks`):

* torchvision's own download where it works (MNIST, SVHN, CIFAR10/100, STL10, OxfordIIITPet,
  Flowers102, Food101, FashionMNIST, KMNIST, RenderedSST2, EMNIST digits, GTSRB): the entry's
  :class:`~taskmerge.data.standard_tasks.TorchvisionHint` is the recipe;
* the maintained Hugging Face copy where torchvision's source is dead or the reference split
  has to be rebuilt (Cars, DTD, EuroSAT, RESISC45, SUN397, PCAM, FER2013): the entry's first
  ``hf_sources`` repository, downloaded with ``huggingface_hub.snapshot_download`` (its cache,
  resumable) into ``<root>/<org>/<name>``, where the loaders look. These are the copies
  FusionBench uses; their splits are the reference ones (EuroSAT 21,600 / 2,700 / 2,700; DTD
  train+val as train; SUN397 Training_01 / Testing_01; RESISC45's split lists).

A task is downloaded into ``<root>/.partial/<task>/`` and moved into place only when complete,
so an interrupted or offline run leaves nothing half-written where the loaders look.
``<root>/taskmerge-data.json`` records, per prepared task, the source, the samples per split
and a checksum (sha256 over the sorted file names, sizes and contents) of what was written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskmerge.data.real_tasks import RealTaskLoader
from taskmerge.data.standard_tasks import ENTRY_BY_NAME, TaskEntry, TorchvisionHint
from taskmerge.errors import DataNotFoundError
from taskmerge.io.atomic import write_json

MANIFEST = "taskmerge-data.json"


@dataclass
class TaskStatus:
    """One task's state under a data root."""

    task: str
    state: str  # "ready" | "missing" | "wrong size"
    counts: dict[str, int]
    detail: str

    def line(self) -> str:
        """One line for the status view."""
        counts = ", ".join(f"{split} {n}" for split, n in self.counts.items()) or "-"
        detail = f"; {self.detail}" if self.detail else ""
        return f"{self.task:<14} {self.state:<11} {counts}{detail}"


def task_status(task: str, root: str | Path) -> TaskStatus:
    """Whether ``task`` can be read under ``root`` with the official number of samples."""
    entry, loader, root = ENTRY_BY_NAME[task], RealTaskLoader(task), Path(root).expanduser()
    counts: dict[str, int] = {}
    for split in ("train", "test"):
        try:
            counts[split] = len(loader(root, split))  # type: ignore[arg-type]
        except DataNotFoundError:
            fix = (
                f"`python prepare_data.py DATASETS=[{task}]` fetches it from {source_of(entry)} "
                f"where there is network (by hand: {entry.how_to_get(root)})"
            )
            return TaskStatus(task, "missing", counts, fix)
    wrong = {s: (counts[s], n) for s, n in entry.sizes.items() if counts.get(s) != n}
    if wrong:
        found = ", ".join(f"{s} has {got}, expected {want}" for s, (got, want) in wrong.items())
        return TaskStatus(
            task, "wrong size", counts,
            f"{found}: remove it and run `python prepare_data.py DATASETS=[{task}]`",
        )  # fmt: skip
    return TaskStatus(task, "ready", counts, "")


def source_of(entry: TaskEntry) -> str:
    """Where ``prepare`` gets the task from, in words."""
    if isinstance(entry.hint, TorchvisionHint):
        return f"torchvision.datasets.{entry.hint.class_name}"
    if entry.hf_sources:
        return f"Hugging Face dataset {entry.hf_sources[0].repo}"
    return "no automatic source"


def _fingerprint(paths: Iterable[Path], base: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in paths if p.is_file()):
        digest.update(f"{path.relative_to(base)}:{path.stat().st_size}\n".encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _download_torchvision(hint: TorchvisionHint, partial: Path) -> None:
    import torchvision.datasets as datasets

    cls = getattr(datasets, hint.class_name)
    target = partial / hint.subdir if hint.subdir else partial
    for split in ("train", "test"):
        cls(str(target), download=True, **hint.arguments(split))


def _download_hf(repo: str, partial: Path) -> None:
    from huggingface_hub import snapshot_download

    org, name = repo.split("/")
    snapshot_download(repo, repo_type="dataset", local_dir=str(partial / org / name))


def _move_into_place(partial: Path, root: Path) -> list[Path]:
    """Move every top-level entry of ``partial`` under ``root`` (merging folders that exist)."""
    moved = []
    for item in sorted(partial.rglob("*")):
        if item.is_dir():
            continue
        target = root / item.relative_to(partial)
        target.parent.mkdir(parents=True, exist_ok=True)
        item.replace(target)
        moved.append(target)
    _remove(partial)
    return moved


def _remove(partial: Path) -> None:
    """Delete a task's partial download (and the ``.partial`` folder once empty)."""
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.parent.rmdir()
    except OSError:
        pass


def prepare_task(task: str, root: str | Path) -> dict[str, Any]:
    """Download one task into ``root`` (atomically per task) and return its manifest entry.

    Raises:
        DataNotFoundError: the download failed (e.g. no network): one line naming the task,
            its source and how to get it by hand; nothing is left where the loaders look.
    """
    entry, root = ENTRY_BY_NAME[task], Path(root).expanduser()
    partial = root / ".partial" / task
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        if isinstance(entry.hint, TorchvisionHint):
            _download_torchvision(entry.hint, partial)
        elif entry.hf_sources:
            _download_hf(entry.hf_sources[0].repo, partial)
        else:
            raise DataNotFoundError(f"{task}: no automatic source; {entry.how_to_get(root)}")
    except DataNotFoundError:
        _remove(partial)
        raise
    except Exception as exc:  # noqa: BLE001 - network and archive errors of many libraries
        _remove(partial)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataNotFoundError(
            f"{task}: could not download from {source_of(entry)} ({reason}); on a machine with "
            f"network run `python prepare_data.py DATASETS=[{task}]` and copy {root} here, or "
            f"{entry.how_to_get(root)}"
        ) from None
    moved = _move_into_place(partial, root)
    status = task_status(task, root)
    return {
        "source": source_of(entry),
        "state": status.state,
        "counts": status.counts,
        "expected": dict(entry.sizes),
        "files": len(moved),
        "sha256": _fingerprint(moved, root),
    }


def prepare(tasks: Sequence[str], root: str | Path) -> tuple[list[TaskStatus], list[str]]:
    """Prepare every task of ``tasks`` that is not ready; returns the final statuses and one
    error line per task that could not be prepared. The manifest is updated atomically."""
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    errors: list[str] = []
    for task in tasks:
        if task_status(task, root).state == "ready":
            continue
        try:
            manifest[task] = prepare_task(task, root)
        except DataNotFoundError as exc:
            errors.append(str(exc))
            continue
        write_json(manifest, manifest_path)
    return [task_status(task, root) for task in tasks], errors
