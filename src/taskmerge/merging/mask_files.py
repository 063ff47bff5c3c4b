"""Where a merge method's TALL-mask files live and what they are called.

The file format (packed bits in safetensors) is :mod:`taskmerge.io.packed_masks`; the directory
is the checkpoint store's mask folder (``<checkpoints>/<model>/<finetuning>/masks``, see
:mod:`taskmerge.store.layout`) unless ``method.mask_dir`` says otherwise. This module names the
files in it: one per multi-task vector recipe, lambda and ordered task list, plus the imported
(published) masks of a task set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from taskmerge.errors import ConfigError
from taskmerge.io.packed_masks import MaskFile, MaskFileError, mask_writer


def tasks_digest(tasks: Sequence[str]) -> str:
    """A short hash of an ordered task list (for file names)."""
    return hashlib.sha256("\n".join(tasks).encode()).hexdigest()[:8]


# --------------------------------------------------------------------------- TALL-mask files
def multitask_tag(use_ties: bool, k: float, ties_agg: str, population: str = "image") -> str:
    """How tau_MTL is built, as a file-name fragment (``sum-k100``, ``ties-k20-sum``; a trim over
    the references' checkpoint population adds ``-ckpt``)."""
    tag = f"ties-k20-{ties_agg}" if use_ties else f"sum-k{k:g}"
    trims = use_ties or k < 100
    return f"{tag}-ckpt" if trims and population == "checkpoint" else tag


def tall_mask_path(directory: str | Path, tasks: Sequence[str], lam: float, multitask: str) -> Path:
    """``<directory>/tall_mask-<multitask>-lambda<lam>-<T>tasks-<hash of the task list>``."""
    name = f"tall_mask-{multitask}-lambda{lam:g}-{len(tasks)}tasks-{tasks_digest(tasks)}"
    return Path(directory).expanduser() / f"{name}.safetensors"


def published_mask_path(directory: str | Path, tasks: Sequence[str]) -> Path:
    """``<directory>/tall_mask-published-<T>tasks-<hash>``: imported (published) TALL masks,
    one per task, already selected by their authors (no lambda). The hash is of the sorted task
    set: any order of the same tasks finds the file."""
    name = f"tall_mask-published-{len(tasks)}tasks-{tasks_digest(sorted(tasks))}"
    return Path(directory).expanduser() / f"{name}.safetensors"


def chosen_lambdas_path(directory: str | Path, tasks: Sequence[str], multitask: str) -> Path:
    """``<directory>/tall_mask-<multitask>-chosen-<T>tasks-<hash>.json``: the lambda each task
    chose on its own Val in a ``tall_mask`` run (what Consensus counts, as the reference's
    ``construct_consensus_mask`` counts the masks that run saved)."""
    name = f"tall_mask-{multitask}-chosen-{len(tasks)}tasks-{tasks_digest(tasks)}"
    return Path(directory).expanduser() / f"{name}.json"


def read_chosen_lambdas(path: Path, tasks: Sequence[str]) -> dict[str, float] | None:
    """The task -> lambda record at ``path``; None when there is none (or it is unreadable:
    the selection is then run again)."""
    import json

    try:
        record = json.loads(path.read_text())
        return {task: float(record[task]) for task in tasks}
    except (OSError, ValueError, KeyError, TypeError):
        return None


class MaskFiles:
    """Where one method's TALL masks live, and how they are written / reloaded.

    Args:
        directory: The mask directory (``method.mask_dir``, else the one the checkpoint store
            gave at ``bind``); None: masks are neither saved nor loadable.
        tasks: The ordered task list (part of each file's name and metadata).
        load_mask, save_mask: The method's switches.
        multitask: :func:`multitask_tag` of the method.
    """

    def __init__(
        self,
        directory: str | Path | None,
        tasks: Sequence[str],
        load_mask: bool,
        save_mask: bool,
        multitask: str,
    ) -> None:
        self.directory = Path(directory).expanduser() if directory else None
        self.tasks = list(tasks)
        self.load, self.save, self.multitask = load_mask, save_mask, multitask
        if load_mask and self.directory is None:
            raise ConfigError(
                "method.load_mask=true needs the directory of saved masks: set method.mask_dir "
                "(main.py defaults it to <checkpoints>/<model>/<finetuning>/masks)"
            )

    def chosen_path(self) -> Path | None:
        """Where a ``tall_mask`` run records each task's chosen lambda (None: no directory)."""
        if self.directory is None:
            return None
        return chosen_lambdas_path(self.directory, self.tasks, self.multitask)

    def path(self, lam: float) -> Path:
        """The file of the TALL masks for one lambda."""
        assert self.directory is not None
        return tall_mask_path(self.directory, self.tasks, lam, self.multitask)

    @property
    def published(self) -> Path | None:
        """The imported (published) masks of these tasks, if there are any."""
        if self.directory is None:
            return None
        path = published_mask_path(self.directory, self.tasks)
        return path if path.is_file() else None

    def open_published(self, shapes: Mapping[str, torch.Size]) -> MaskFile:
        """The published masks, checked against the tasks and shapes."""
        assert self.published is not None
        opened = MaskFile(
            self.published, self.tasks, shapes,
            fix="re-import the checkpoints and masks of these tasks (import_checkpoints.py)",
        )  # fmt: skip
        if sorted(opened.tasks) != sorted(self.tasks):
            raise MaskFileError(
                f"{self.published} holds masks for {opened.tasks}, not {self.tasks}: re-import"
            )
        return opened

    @property
    def saving(self) -> bool:
        """Whether computed masks are written to disk."""
        return self.save and not self.load and self.directory is not None

    def open(self, lam: float, shapes: Mapping[str, torch.Size]) -> MaskFile:
        """The saved masks for ``lam``, checked against the tasks, shapes and tau_MTL recipe."""
        return MaskFile(
            self.path(lam),
            self.tasks,
            shapes,
            exact_tasks=True,
            expected={"tall_mask_lambda": f"{lam:g}", "multitask": self.multitask},
            fix="run once with method.load_mask=false (same tasks, model and tau_MTL settings) "
            "to build and save them, or set method.load_mask=false",
        )

    def writer(self, lam: float, shapes: Mapping[str, torch.Size]):  # noqa: ANN201
        """A :func:`mask_writer` for ``lam`` (parameter-major order), or a no-op context."""
        if not self.saving:
            return nullcontext(None)
        entries = [(task, name, shape) for name, shape in shapes.items() for task in self.tasks]
        metadata = {"tall_mask_lambda": f"{lam:g}", "multitask": self.multitask}
        return mask_writer(self.path(lam), self.tasks, entries, metadata)
