"""The real benchmark tasks as task specs, built from their entries (the loader).

Each task is declared once, in :mod:`taskmerge.data.standard_tasks` (class names, templates,
epochs, layouts, Hugging Face sources, how to get it); this module turns the entries into specs.

``REAL_TASKS[name]`` is a :class:`~taskmerge.data.spec.TaskSpec` whose ``load_split(root,
split)`` returns the official ``"train"`` or ``"test"`` split as a dataset of ``(PIL.Image, int)``
with no transform applied (the caller wraps it with the model's preprocess). The task's native
layouts under ``root`` are tried in order, then a local Hugging Face copy
(:mod:`taskmerge.data.hf_copies`). Nothing is ever downloaded: a missing dataset raises
:class:`~taskmerge.errors.DataNotFoundError` naming the task, the paths looked at and how to get
the data.

``build_real_tasks("tsv")`` gives the TSV repository's conventions (EMNIST prompted as numbers
with upright images, STL10 prompted with the 18 CIFAR templates); the default is tall_masks'.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from taskmerge.data.hf_copies import HFSource, load_hf_copy, locate_hf_copy
from taskmerge.data.image_datasets import TransposedImages
from taskmerge.data.spec import TaskSpec
from taskmerge.data.standard_tasks import ENTRIES, ENTRY_BY_NAME, TaskEntry
from taskmerge.errors import DataNotFoundError

__all__ = [
    "CONVENTIONS",
    "EPOCHS",
    "HF_SOURCES",
    "REAL_TASKS",
    "TEMPLATES",
    "HFSource",
    "RealTaskLoader",
    "build_real_tasks",
    "locate_split",
]

#: Class-name / template / image conventions: ``tall_masks`` (default) or ``tsv``.
CONVENTIONS: tuple[str, ...] = ("tall_masks", "tsv")

#: Fine-tuning epochs per task (tall_masks' ``finetune.py``); a view of the entries.
EPOCHS: dict[str, int] = {entry.name: entry.epochs for entry in ENTRIES}

#: Prompt templates per task (tall_masks convention); a view of the entries.
TEMPLATES: dict[str, tuple[str, ...]] = {entry.name: entry.templates for entry in ENTRIES}

#: Hugging Face copies per task, in order of preference; a view of the entries.
HF_SOURCES: dict[str, tuple[HFSource, ...]] = {entry.name: entry.hf_sources for entry in ENTRIES}


class RealTaskLoader:
    """``load_split`` of one real task: native layout first, then a local Hugging Face copy.

    It holds only the task name (the entry is looked up when called), so it pickles.

    Args:
        task: Task name (e.g. ``"MNIST"``).
        upright: Transpose every image (the TSV convention for EMNIST).
    """

    def __init__(self, task: str, upright: bool = False) -> None:
        if task not in ENTRY_BY_NAME:
            raise KeyError(f"unknown real task {task!r}; known: {', '.join(ENTRY_BY_NAME)}")
        self.task = task
        self.upright = upright
        self.splits: tuple[str, ...] = ENTRY_BY_NAME[task].splits

    def __repr__(self) -> str:
        return f"RealTaskLoader({self.task!r}, upright={self.upright})"

    @property
    def entry(self) -> TaskEntry:
        """The task's declaration."""
        return ENTRY_BY_NAME[self.task]

    def __call__(self, root: Path | str, split: str) -> Dataset:
        """Read ``split`` of the task under ``root``.

        Raises:
            ValueError: for a split the task does not have.
            DataNotFoundError: when neither a native layout nor a Hugging Face copy is found.
        """
        root = self._check(root, split)
        entry = self.entry
        for layout in entry.layouts:
            found = layout.find(root, split)
            if found is not None:
                return self._finish(layout.open(found, split))
        dataset = load_hf_copy(
            entry.name, entry.hf_sources, entry.classnames, entry.hf_name_aliases, root, split
        )
        if dataset is not None:
            return self._finish(dataset)
        raise self.not_found(root)

    def locate(self, root: Path | str, split: str) -> str:
        """Where ``split`` would be read from, without reading it.

        Raises:
            DataNotFoundError: as :meth:`__call__`.
        """
        root = self._check(root, split)
        for layout in self.entry.layouts:
            found = layout.find(root, split)
            if found is not None:
                return str(found)
        where = locate_hf_copy(self.entry.hf_sources, root, split)
        if where is not None:
            return where
        raise self.not_found(root)

    def not_found(self, root: Path) -> DataNotFoundError:
        """The one-line error for a task missing under ``root``."""
        entry = self.entry
        layouts = " or ".join(f"{root}/{layout.description}" for layout in entry.layouts)
        repos = [s.repo for s in entry.hf_sources]
        hf = (
            f" (or a Hugging Face copy of {' / '.join(repos)} in {root}/<org>/<name> or the HF "
            f"hub cache)"
            if repos
            else ""
        )
        return DataNotFoundError(
            f"{self.task} not found under {root}: expected {layouts}{hf}; "
            f"{entry.how_to_get(root)}, or set paths.data (or `python prepare_data.py`)"
        )

    def _check(self, root: Path | str, split: str) -> Path:
        if split not in self.splits:
            raise ValueError(f"{self.task}: split must be one of {self.splits}, got {split!r}")
        return Path(root).expanduser()

    def _finish(self, dataset: Dataset) -> Dataset:
        return TransposedImages(dataset) if self.upright else dataset


def build_real_tasks(convention: str = "tall_masks") -> dict[str, TaskSpec]:
    """All real tasks, in the order of their entries (the standard order).

    Args:
        convention: ``"tall_masks"`` (default; nik-dim/tall_masks, also task_vectors for the
            first 8 tasks) or ``"tsv"`` (AntoAndGar/task_singular_vectors: EMNIST prompted
            as numbers with upright images, STL10 with the 18 CIFAR templates).

    Raises:
        ValueError: for an unknown convention.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    tsv = convention == "tsv"
    return {
        entry.name: TaskSpec(
            name=entry.name,
            classnames=entry.classnames,
            templates=entry.tsv_templates if tsv and entry.tsv_templates else entry.templates,
            epochs=entry.epochs,
            load_split=RealTaskLoader(entry.name, upright=tsv and entry.tsv_upright),
            own_val="val" in entry.splits,
        )
        for entry in ENTRIES
    }


def locate_split(task: str, root: Path | str, split: str) -> str:
    """Where ``split`` of ``task`` would be read from under ``root``, without reading it.

    Raises:
        DataNotFoundError: when the task's data is not there.
    """
    return RealTaskLoader(task).locate(root, split)


#: The real tasks with the tall_masks conventions.
REAL_TASKS: dict[str, TaskSpec] = build_real_tasks()
