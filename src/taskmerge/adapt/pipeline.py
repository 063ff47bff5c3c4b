"""The data of a data-using merge in ``main.py``: the run's encoder, heads and splits.

AdaMerging's unlabeled batches come from the ``adapt_on`` split (``test``: transductive, as the
paper; ``val``), shuffled with the method's seed; RegMean's and Fisher's from a seeded subset of
each task's training split. Statistics are cached beside each task's checkpoint.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from taskmerge.adapt.cache import StatisticCache
from taskmerge.adapt.model_data import ModelData
from taskmerge.data.image_datasets import make_loader
from taskmerge.evaluate.evaluator import TaskEvaluator
from taskmerge.io.tensors import CHECKSUM_KEY, read_metadata
from taskmerge.models.forward import forward_module


def training_subset(dataset: Any, num_samples: int, seed: int = 0) -> Any:
    """A seeded random subset of ``num_samples`` examples (all of them when fewer)."""
    count = min(num_samples, len(dataset))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[:count].tolist())


def checkpoint_checksum(path: Path | None) -> str | None:
    """The checksum a checkpoint's header records (None: unknown)."""
    if path is None or not Path(path).is_file():
        return None
    return read_metadata(path).get(CHECKSUM_KEY)


def run_data(
    evaluator: TaskEvaluator,
    checkpoints: Mapping[str, Path | None],
    method: Any,
    tasks: Sequence[str],
) -> ModelData:
    """The :class:`ModelData` of a run for ``method`` (its ``adapt_on``, ``batch_size``,
    ``num_samples`` and ``seed`` where it has them)."""
    data = evaluator.data
    seed = int(getattr(method, "seed", 0))
    batch = int(getattr(method, "batch_size", 16))
    adapt_on = str(getattr(method, "adapt_on", "test"))
    num_samples = int(getattr(method, "num_samples", 0))
    adapt, train = {}, {}
    for task in tasks:
        if getattr(method, "uses_adaptation_split", False):
            split = getattr(data.splits(task), adapt_on)
            adapt[task] = make_loader(split, batch, shuffle=True, seed=seed)
        else:
            subset = training_subset(data.train_set(task), num_samples, seed)
            train[task] = make_loader(subset, batch, shuffle=False)
    encoder = copy.deepcopy(evaluator.bundle.visual).to(evaluator.device).eval()
    module = forward_module(evaluator.forward, encoder, evaluator.params0).eval()
    module.requires_grad_(False)
    cache = StatisticCache(
        lambda task: Path(checkpoints[task]).parent if checkpoints.get(task) else None,
        lambda task: checkpoint_checksum(checkpoints.get(task)),
    )
    settings = {"seed": seed, "forward": evaluator.forward, "preprocess": repr(data.preprocess)}
    return ModelData(
        module, {t: evaluator.head(t) for t in tasks}, adapt, train, evaluator.device,
        prepare=evaluator.inputs, cache=cache, adapt_on=adapt_on, settings=settings,
    )  # fmt: skip
