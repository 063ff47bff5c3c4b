"""The tasks of one run as data for one model: splits (size-checked, loaded once), training
sets and evaluation loaders (real-task splits decoded once, see :mod:`taskmerge.data.decoded`).

Demo tasks are generated into ``demo_root`` and preloaded into memory; real tasks are read from
``data_root`` and streamed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from taskmerge.data.augment import check_train_transform, random_crop_of, train_view
from taskmerge.data.decoded import cache_name, decoded_split, normalizer, split_preprocess
from taskmerge.data.decoded_train import decoded_train_split
from taskmerge.data.image_datasets import TransformedDataset, make_loader
from taskmerge.data.spec import TaskSpec
from taskmerge.data.splits import TaskSplits, load_task_splits
from taskmerge.data.task_lists import is_demo_task
from taskmerge.errors import DataNotFoundError

log = logging.getLogger("taskmerge")

#: Preloaded demo splits, shared by every job of this process (a multirun's jobs load each demo
#: task once): (task, root, preprocessing) -> splits. The tensors are only ever read.
_DEMO_SPLITS: dict[tuple[str, str, str], TaskSplits] = {}


def split_sizes(splits: TaskSplits, own_val: bool) -> dict[str, int]:
    """The sizes the checks compare: the official train split (with the Val carved out of it,
    unless Val is the dataset's own split) and test."""
    train = len(splits.train) + (0 if own_val else len(splits.val))  # type: ignore[arg-type]
    return {"train": train, "test": len(splits.test)}  # type: ignore[arg-type]


def check_split_sizes(
    task: str, splits: TaskSplits, root: Path, own_val: bool = False
) -> str | None:
    """A real task's train (+ Val) and test splits have the official sizes, or those of a known
    variant (:data:`taskmerge.data.standard_tasks.SPLIT_VARIANTS`): then one warning names it
    and its consequence, and its name is returned (recorded in ``results.json``).

    Raises:
        DataNotFoundError: a wrong-size dataset (an interrupted copy, another version).
    """
    from taskmerge.data.standard_tasks import ENTRY_BY_NAME, SPLIT_VARIANTS

    entry = ENTRY_BY_NAME.get(task)
    if entry is None or not entry.sizes:
        return None
    found = split_sizes(splits, own_val)
    for variant in SPLIT_VARIANTS.get(task, ()):
        if all(found.get(split) == n for split, n in variant.sizes.items()):
            log.warning("%s under %s is %s: %s", task, root, variant.name, variant.consequence)
            return variant.name
    wrong = {s: (found[s], n) for s, n in entry.sizes.items() if s in found and found[s] != n}
    if wrong:
        detail = ", ".join(
            f"{s} has {got} samples, expected {want}" for s, (got, want) in wrong.items()
        )
        raise DataNotFoundError(
            f"{task} under {root}: {detail}: the copy is incomplete or another version; check it "
            f"with `python prepare_data.py action=status DATASETS=[{task}]`, or run on the first "
            "N samples of each split with limit_samples=N"
        )
    return None


def first_samples(splits: TaskSplits, limit: int) -> TaskSplits:
    """The first ``limit`` samples of each split (``limit_samples=N``: a smoke test)."""

    def head(dataset: Dataset) -> Dataset:
        return Subset(dataset, range(min(limit, len(dataset))))  # type: ignore[arg-type]

    return TaskSplits(splits.name, head(splits.train), head(splits.val), head(splits.test))


class TaskData:
    """The splits of the run's tasks, preprocessed for one model.

    Args:
        specs: The tasks, in order.
        data_root: Where the real datasets are.
        demo_root: Where the demo tasks are generated (and cached).
        preprocess: The model's image transform.
        decoded_dir: Where the splits of ``decode_once`` are kept decoded (uint8); None: every
            pass decodes the images again.
        decode_once: The splits of real tasks decoded once (default Val: it is evaluated for
            every sweep point; Test is evaluated once).
        num_workers: Loader workers for streamed splits.
        limit_samples: Use only the first N samples of each split (sizes are then not checked;
            the run is a "subset" run).
        train_preprocess: The image transform of training (the references' augmentation, see
            :func:`taskmerge.data.augment.reference_train_transform`); None: ``preprocess``.
    """

    def __init__(
        self,
        specs: Sequence[TaskSpec],
        data_root: str | Path,
        demo_root: str | Path,
        preprocess: Callable,
        decoded_dir: str | Path | None = None,
        decode_once: Sequence[str] = ("val",),
        num_workers: int = 0,
        limit_samples: int | None = None,
        train_preprocess: Callable | None = None,
    ) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.data_root = Path(data_root).expanduser()
        self.demo_root = Path(demo_root).expanduser()
        self.preprocess = preprocess
        self.decoded_dir = Path(decoded_dir).expanduser() if decoded_dir else None
        self.decode_once = tuple(decode_once)
        self.num_workers = num_workers
        self.limit_samples = limit_samples
        self.train_preprocess = train_preprocess
        #: Task -> the known split variant its data is (e.g. the references' DTD folder).
        self.variants: dict[str, str] = {}
        self._split_preprocess = split_preprocess(preprocess) if preprocess else None
        self._splits: dict[str, TaskSplits] = {}

    @property
    def task_names(self) -> list[str]:
        """Task names in order."""
        return list(self.specs)

    def root_of(self, task: str) -> Path:
        """Demo tasks are generated into the demo root; real ones are read from the data root."""
        return self.demo_root if is_demo_task(task) else self.data_root

    def splits(self, task: str) -> TaskSplits:
        """The preprocessed splits of a task (demo ones preloaded into memory).

        Raises:
            DataNotFoundError: the data is missing or has the wrong size.
        """
        if task not in self._splits:
            if is_demo_task(task):
                key = (task, str(self.root_of(task)), repr(self.preprocess))
                if key not in _DEMO_SPLITS:
                    _DEMO_SPLITS[key] = load_task_splits(
                        self.specs[task], self.root_of(task), self.preprocess, preload=True
                    )
                self._splits[task] = _DEMO_SPLITS[key]
            else:
                spec = self.specs[task]
                splits = load_task_splits(spec, self.root_of(task), self.preprocess)
                if self.limit_samples is None:
                    variant = check_split_sizes(task, splits, self.root_of(task), spec.own_val)
                    if variant is not None:
                        self.variants[task] = variant
                self._splits[task] = splits
            if self.limit_samples is not None:
                self._splits[task] = first_samples(self._splits[task], self.limit_samples)
        return self._splits[task]

    def train_set(self, task: str, transform: str = "reference") -> Dataset:
        """The training split (official train minus Val, or all of it when Val is the dataset's
        own), through the references' training transform (``transform="reference"``, when the
        model has one) or the evaluation transform (``"eval"``)."""
        train = self.splits(task).train
        if check_train_transform(transform) == "eval" or self.train_preprocess is None:
            return train
        decoded = self._decoded_train(task, train)
        if decoded is not None:
            return decoded
        return train_view(train, self.train_preprocess, self._split_preprocess)

    def _decoded_train(self, task: str, train: Dataset) -> Dataset | None:
        """With ``train`` in ``decode_once``: the real task's training images decoded once and
        cropped as the reference transform crops (:mod:`taskmerge.data.decoded_train`); None
        when the split is not read from image files or the transform has no random crop."""
        if "train" not in self.decode_once or self.decoded_dir is None:
            return None
        indices = None
        if isinstance(train, Subset):
            train, indices = train.dataset, list(train.indices)
        crop = random_crop_of(self.train_preprocess)
        parts = split_preprocess(self.train_preprocess)
        stats = parts[1:] if parts is not None else None
        if not isinstance(train, TransformedDataset) or crop is None or stats is None:
            return None
        key = f"{self.train_preprocess!r}|whole-image"
        name = cache_name(task, "train", len(train), self.root_of(task), key)
        dataset = decoded_train_split(
            train.base, crop, *stats, self.decoded_dir / f"{name}.npy", self.num_workers
        )
        return Subset(dataset, indices) if indices is not None else dataset

    def eval_loader(self, task: str, split: str, batch_size: int) -> DataLoader:
        """An evaluation DataLoader over ``val`` or ``test`` (uint8 batches for a split decoded
        once: :meth:`normalizer` turns them into the model's input)."""
        dataset = getattr(self.splits(task), split)
        if (
            split in self.decode_once
            and self.decoded_dir is not None
            and self._split_preprocess is not None
            and isinstance(dataset, TransformedDataset)
        ):
            geometric, _, _ = self._split_preprocess
            name = cache_name(task, split, len(dataset), self.root_of(task), self.preprocess)
            dataset = decoded_split(
                dataset.base, geometric, self.decoded_dir / f"{name}.npy", self.num_workers
            )
            return make_loader(dataset, batch_size, shuffle=False, num_workers=0)
        return make_loader(dataset, batch_size, shuffle=False, num_workers=self.num_workers)

    def normalizer(self, device: str | torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
        """Batch -> the encoder's input on ``device`` (uint8 batches of decoded splits are
        normalized there, exactly as the preprocessing's ``ToTensor`` + ``Normalize``)."""
        to_input = None
        if self._split_preprocess is not None:
            _, mean, std = self._split_preprocess
            to_input = normalizer(mean, std, device)

        def inputs(images: torch.Tensor) -> torch.Tensor:
            if images.dtype == torch.uint8 and to_input is not None:
                return to_input(images)
            return images.to(device, non_blocking=True)

        return inputs
