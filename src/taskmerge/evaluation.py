"""Scoring encoders on tasks: top-1 accuracy, normalized accuracy, and the task evaluator.

:class:`TaskEvaluator` holds the tasks of one run and everything needed to score an encoder's
weights on them: the preprocessed splits, the loaders, the zero-shot heads, the forward
(non-linear, or linearized around the pretrained weights) and one reusable encoder module. It
knows nothing of checkpoints, merge methods or training.

Through the linearized forward, the features of theta0 + sum_k c_k d_k are affine in the
coefficients, so :meth:`TaskEvaluator.affine_accuracies` scores a whole grid of coefficients from
one primal pass and one JVP per direction.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from taskmerge.checkpoints import write_json
from taskmerge.data.catalog import is_demo_task
from taskmerge.data.datasets import (
    TaskSplits,
    TransformedDataset,
    load_task_splits,
    make_loader,
)
from taskmerge.data.registry import TaskSpec
from taskmerge.data.tensor_cache import cache_name, decoded_split, normalizer, split_preprocess
from taskmerge.errors import DataNotFoundError
from taskmerge.finetuning import check_forward, forward_module
from taskmerge.hardware import check_precision, evaluation_precision, resolve_device
from taskmerge.models.clip import ClipBundle
from taskmerge.models.heads import ClassificationHead, cached_zeroshot_head

StateDict = Mapping[str, torch.Tensor]


@torch.no_grad()
def top1_accuracy(
    encoder: nn.Module,
    head: nn.Module,
    loader: DataLoader,
    device: str | torch.device,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """Fraction of samples whose arg-max logit is the label (over the whole loader).

    ``prepare`` turns a batch into the encoder's input on ``device`` (default: move it there).
    """
    encoder.eval()
    correct = total = 0
    for images, labels in loader:
        inputs = prepare(images) if prepare else images.to(device, non_blocking=True)
        logits = head(encoder(inputs))
        correct += int((logits.argmax(dim=1).cpu() == torch.as_tensor(labels)).sum())
        total += len(labels)
    return correct / max(total, 1)


def normalized_accuracy(accuracy: float, finetuned_accuracy: float) -> float:
    """Merged top-1 divided by the fine-tuned top-1 of the same task and split."""
    return accuracy / finetuned_accuracy if finetuned_accuracy > 0 else 0.0


def summarize(accuracies: Mapping[str, float], finetuned: Mapping[str, float]) -> dict[str, float]:
    """Mean absolute and mean normalized accuracy over the tasks of ``accuracies``."""
    names = list(accuracies)
    return {
        "top1": sum(accuracies[n] for n in names) / len(names),
        "normalized_top1": sum(normalized_accuracy(accuracies[n], finetuned[n]) for n in names)
        / len(names),
    }


def check_split_sizes(task: str, splits: TaskSplits, root: Path) -> None:
    """A real task's train (+ Val) and test splits have the official sizes.

    Raises:
        DataNotFoundError: a wrong-size dataset (an interrupted copy, another version).
    """
    from taskmerge.data.standard_tasks import ENTRY_BY_NAME

    entry = ENTRY_BY_NAME.get(task)
    if entry is None or not entry.sizes:
        return
    found = {"train": len(splits.train) + len(splits.val), "test": len(splits.test)}  # type: ignore[arg-type]
    wrong = {s: (found[s], n) for s, n in entry.sizes.items() if s in found and found[s] != n}
    if wrong:
        detail = ", ".join(
            f"{s} has {got} samples, expected {want}" for s, (got, want) in wrong.items()
        )
        raise DataNotFoundError(
            f"{task} under {root}: {detail}: the copy is incomplete or another version; check it "
            f"with `python prepare_data.py action=status DATASETS=[{task}]`"
        )


class Evaluator(Protocol):
    """What a merge experiment needs to score weights: the tasks and an accuracy.

    An evaluator may also offer ``affine_accuracies(directions, coefficients, task, split)``
    (the accuracies of theta0 + sum_k c_k d_k for every coefficient tuple, in one pass), which
    the sweep then uses for affine candidate families.
    """

    task_names: list[str]

    def accuracy(self, state_dict: StateDict, task: str, split: str) -> float:
        """Top-1 of the encoder weights ``state_dict`` on ``task``'s ``split`` (val/test)."""
        ...


class TaskEvaluator:
    """The tasks of one run: splits, loaders, zero-shot heads and top-1 accuracy of any weights.

    Args:
        bundle: The pretrained CLIP (its image tower's architecture scores the weights; its text
            tower builds the heads; its preprocess transforms the images).
        specs: The tasks, in order.
        data_root: Where the real datasets are (demo tasks are generated under ``cache_dir``).
        cache_dir: Demo data cache.
        heads_dir: Where zero-shot heads are cached (one file per task; the directory must
            identify the model and its pretrained weights).
        tensor_dir: Where the splits of ``decode_once`` are kept decoded (uint8, see
            :mod:`taskmerge.data.tensor_cache`); None: every pass decodes the images again.
        decode_once: The splits of real tasks decoded once (default Val: it is evaluated for
            every sweep point; Test is evaluated once).
        device: ``cpu``, ``cuda`` or ``auto``.
        batch_size, num_workers: Of the evaluation loaders.
        forward: ``"nonlinear"`` (the encoder) or ``"linear"`` (its linearization around
            ``params0``; a non-linearly fine-tuned checkpoint is then "post-hoc linearized").
        precision: The arithmetic of every forward (``fp32``, ``tf32``, ``bf16``; see
            :mod:`taskmerge.hardware`); accuracies cached at another precision than ``fp32``
            are keyed by :attr:`scoring`.
        params0: theta0 of the linear forward (default: the bundle's image-tower weights).
        accuracy_dir: Where :meth:`cached_accuracy` keeps accuracies that do not depend on the
            merge (zero-shot); like ``heads_dir`` it must identify the model, its pretrained
            weights and hence its preprocessing. None: nothing is cached.
    """

    def __init__(
        self,
        bundle: ClipBundle,
        specs: Sequence[TaskSpec],
        data_root: str | Path,
        cache_dir: str | Path,
        heads_dir: str | Path,
        device: str = "cpu",
        batch_size: int = 256,
        num_workers: int = 4,
        forward: str = "nonlinear",
        precision: str = "fp32",
        params0: StateDict | None = None,
        accuracy_dir: str | Path | None = None,
        tensor_dir: str | Path | None = None,
        decode_once: Sequence[str] = ("val",),
    ) -> None:
        self.bundle = bundle
        self.forward = check_forward(forward)
        self.precision = check_precision(precision)
        self._params0 = params0
        self.accuracy_dir = Path(accuracy_dir).expanduser() if accuracy_dir else None
        self.tensor_dir = Path(tensor_dir).expanduser() if tensor_dir else None
        self.decode_once = tuple(decode_once)
        self._split_preprocess = split_preprocess(bundle.preprocess) if bundle else None
        self._normalize: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.specs = {spec.name: spec for spec in specs}
        self.data_root = Path(data_root).expanduser()
        self.cache_dir = Path(cache_dir).expanduser()
        self.heads_dir = Path(heads_dir).expanduser()
        self.device = resolve_device(device)
        self.batch_size, self.num_workers = batch_size, num_workers
        self._splits: dict[str, TaskSplits] = {}
        self._heads: dict[str, ClassificationHead] = {}
        self._encoder: nn.Module | None = None
        self._base: nn.Module | None = None

    @property
    def scoring(self) -> str:
        """How accuracies are measured: the forward, with the precision when not ``fp32``
        (the key of cached and stored accuracies)."""
        return self.forward if self.precision == "fp32" else f"{self.forward}+{self.precision}"

    def _arithmetic(self):  # noqa: ANN202
        return evaluation_precision(self.precision, self.device)

    @property
    def task_names(self) -> list[str]:
        """Task names in order."""
        return list(self.specs)

    def root_of(self, task: str) -> Path:
        """Demo tasks are generated into the cache; real ones are read from the data root."""
        return self.cache_dir / "demo-data" if is_demo_task(task) else self.data_root

    def splits(self, task: str) -> TaskSplits:
        """The preprocessed splits of a task (demo ones preloaded into memory)."""
        if task not in self._splits:
            splits = load_task_splits(
                self.specs[task],
                self.root_of(task),
                self.bundle.preprocess,
                preload=is_demo_task(task),
            )
            check_split_sizes(task, splits, self.root_of(task))
            self._splits[task] = splits
        return self._splits[task]

    def train_set(self, task: str) -> Dataset:
        """The training split (official train minus Val)."""
        return self.splits(task).train

    def loader(self, task: str, split: str) -> DataLoader:
        """An evaluation DataLoader over ``val`` or ``test`` (uint8 batches for a split decoded
        once: :meth:`inputs` normalizes them on the device)."""
        dataset = getattr(self.splits(task), split)
        if (
            split in self.decode_once
            and self.tensor_dir is not None
            and self._split_preprocess is not None
            and isinstance(dataset, TransformedDataset)
        ):
            geometric, _, _ = self._split_preprocess
            name = cache_name(task, split, len(dataset), self.root_of(task), self.bundle.preprocess)
            dataset = decoded_split(
                dataset.base, geometric, self.tensor_dir / f"{name}.npy", self.num_workers
            )
            return make_loader(dataset, self.batch_size, shuffle=False, num_workers=0)
        return make_loader(dataset, self.batch_size, shuffle=False, num_workers=self.num_workers)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A batch as the encoder's input on the device (uint8 batches normalized there)."""
        if images.dtype == torch.uint8 and self._split_preprocess is not None:
            if self._normalize is None:
                _, mean, std = self._split_preprocess
                self._normalize = normalizer(mean, std, self.device)
            return self._normalize(images)
        return images.to(self.device, non_blocking=True)

    def head(self, task: str) -> ClassificationHead:
        """The zero-shot head of a task (built from the text tower once, cached on disk)."""
        if task not in self._heads:
            head = cached_zeroshot_head(
                self.bundle, self.specs[task], self.heads_dir / f"{task}.safetensors", self.device
            )
            self._heads[task] = head.to(self.device)
        return self._heads[task]

    @property
    def params0(self) -> dict[str, torch.Tensor]:
        """theta0 on the evaluation device (the pretrained image-tower weights by default)."""
        if (
            not isinstance(self._params0, dict)
            or not self._params0
            or next(iter(self._params0.values())).device != torch.device(self.device)
        ):
            source = self._params0 if self._params0 is not None else self.bundle.visual.state_dict()
            self._params0 = {k: v.detach().to(self.device) for k, v in source.items()}
        return self._params0

    def encoder_with(self, state_dict: StateDict) -> nn.Module:
        """The reusable forward module (see ``forward``) loaded with ``state_dict``."""
        if self._encoder is None:
            encoder = copy.deepcopy(self.bundle.visual).to(self.device).eval()
            self._encoder = forward_module(self.forward, encoder, self.params0).eval()
        self._encoder.load_state_dict(state_dict)
        return self._encoder

    def accuracy(self, state_dict: StateDict, task: str, split: str) -> float:
        """Top-1 of the encoder weights ``state_dict`` on one task's split."""
        encoder = self.encoder_with(state_dict)
        with self._arithmetic():
            return top1_accuracy(
                encoder, self.head(task), self.loader(task, split), self.device, self.inputs
            )

    def cached_accuracy(self, key: str, state_dict: StateDict, task: str, split: str) -> float:
        """:meth:`accuracy` of weights identified by ``key`` (e.g. ``"zeroshot"``), stored on disk
        per (key, forward, task, split) and reused by every later job."""
        if self.accuracy_dir is None:
            return self.accuracy(state_dict, task, split)
        path = self.accuracy_dir / key / self.scoring / f"{task}-{split}.json"
        if path.is_file():
            return float(json.loads(path.read_text())["top1"])
        value = self.accuracy(state_dict, task, split)
        record = {"top1": value, "task": task, "split": split, "forward": self.forward}
        write_json({**record, "precision": self.precision}, path)
        return value

    @torch.no_grad()
    def predictions(
        self, state_dict: StateDict, task: str, split: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The predicted class and the label of every sample of ``task``'s ``split``, in order."""
        encoder, head = self.encoder_with(state_dict), self.head(task)
        predicted, labels = [], []
        with self._arithmetic():
            for images, batch_labels in self.loader(task, split):
                predicted.append(head(encoder(self.inputs(images))).argmax(1).cpu())
                labels.append(torch.as_tensor(batch_labels))
        return torch.cat(predicted), torch.cat(labels)

    @property
    def supports_affine(self) -> bool:
        """Whether a grid of affine candidates can be scored in one pass (linear forward)."""
        return self.forward == "linear"

    @torch.no_grad()
    def affine_predictions(
        self,
        directions: Sequence[StateDict],
        coefficients: Sequence[Sequence[float]],
        task: str,
        split: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions of the linearized encoder at theta0 + sum_k c_k d_k for every coefficient
        tuple (rows), from one primal pass and one JVP per direction per batch; and the labels.

        Raises:
            ValueError: the evaluator's forward is not linear (non-linear features are not
                affine in the weights).
        """
        if not self.supports_affine:
            raise ValueError("affine predictions need the linear forward")
        from taskmerge.linearize import jvp_features

        if self._base is None:
            self._base = copy.deepcopy(self.bundle.visual).to(self.device).eval()
        names = [name for name, _ in self._base.named_parameters()]
        moved = [
            {n: d[n].to(self.device, torch.float32) for n in names if n in d} for d in directions
        ]
        coefs = torch.tensor(coefficients, dtype=torch.float32, device=self.device)
        head, rows, labels = self.head(task), [], []
        with self._arithmetic():
            for images, batch_labels in self.loader(task, split):
                inputs = self.inputs(images)
                base, tangents = jvp_features(self._base, self.params0, inputs, moved)
                stacked = torch.stack(tangents) if tangents else base.new_zeros((0, *base.shape))
                features = base + torch.einsum("pk,k...->p...", coefs, stacked.to(base))
                rows.append(head(features).argmax(-1).cpu())  # points x batch
                labels.append(torch.as_tensor(batch_labels))
        return torch.cat(rows, dim=1), torch.cat(labels)

    def affine_accuracies(
        self,
        directions: Sequence[StateDict],
        coefficients: Sequence[Sequence[float]],
        task: str,
        split: str,
    ) -> list[float]:
        """Top-1 at every coefficient tuple (see :meth:`affine_predictions`)."""
        predictions, labels = self.affine_predictions(directions, coefficients, task, split)
        return (predictions == labels).float().mean(dim=1).tolist()
