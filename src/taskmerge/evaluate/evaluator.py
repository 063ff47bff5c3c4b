"""Scoring encoder weights on tasks: the task evaluator.

:class:`TaskEvaluator` scores any encoder weights on the run's tasks: their data
(:class:`~taskmerge.data.task_data.TaskData`), their zero-shot heads
(:class:`~taskmerge.models.heads.HeadBank`), the forward (non-linear, or linearized around the
pretrained weights) and one reusable encoder module. It knows nothing of checkpoints, merge
methods or training.

Through the linearized forward, the features of theta0 + sum_k c_k d_k are affine in the
coefficients, so :meth:`TaskEvaluator.affine_accuracies` scores a whole grid of coefficients from
one primal pass and one JVP per direction.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from taskmerge.data.spec import TaskSpec
from taskmerge.data.task_data import TaskData
from taskmerge.evaluate.accuracy import top1_accuracy
from taskmerge.hardware import check_precision, evaluation_precision, resolve_device
from taskmerge.io.digest import fingerprint
from taskmerge.models.clip import ClipBundle
from taskmerge.models.forward import check_forward, forward_module
from taskmerge.models.heads import ClassificationHead, HeadBank
from taskmerge.store.accuracy_cache import AccuracyCache
from taskmerge.store.layout import CacheLayout

StateDict = Mapping[str, torch.Tensor]


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
    """Top-1 accuracy of any encoder weights on the run's tasks.

    Args:
        bundle: The pretrained CLIP (its image tower's architecture scores the weights).
        data: The tasks' splits and loaders.
        heads: Their zero-shot heads.
        device: ``cpu``, ``cuda`` or ``auto``.
        batch_size: Of the evaluation loaders.
        forward: ``"nonlinear"`` (the encoder) or ``"linear"`` (its linearization around
            ``params0``; a non-linearly fine-tuned checkpoint is then "post-hoc linearized").
        precision: The arithmetic of every forward (``fp32``, ``tf32``, ``bf16``; see
            :mod:`taskmerge.hardware`); accuracies cached at another precision than ``fp32``
            are keyed by :attr:`scoring`.
        params0: theta0 of the linear forward (default: the bundle's image-tower weights).
        cache: Where :meth:`cached_accuracy` keeps accuracies that do not depend on the merge
            (zero-shot); None: nothing is cached.
    """

    def __init__(
        self,
        bundle: ClipBundle,
        data: TaskData,
        heads: HeadBank,
        device: str = "cpu",
        batch_size: int = 256,
        forward: str = "nonlinear",
        precision: str = "fp32",
        params0: StateDict | None = None,
        cache: AccuracyCache | None = None,
    ) -> None:
        self.bundle, self.data, self.heads, self.cache = bundle, data, heads, cache
        self.forward = check_forward(forward)
        self.precision = check_precision(precision)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self._params0 = params0
        self.inputs = data.normalizer(self.device)
        self._encoder: nn.Module | None = None
        self._base: nn.Module | None = None

    @property
    def scoring(self) -> str:
        """How accuracies are measured: the forward, with the precision when not ``fp32`` and
        the subset under ``limit_samples`` (the key of cached and stored accuracies)."""
        scoring = self.forward if self.precision == "fp32" else f"{self.forward}+{self.precision}"
        limit = getattr(self.data, "limit_samples", None)
        return scoring if limit is None else f"{scoring}+first{limit}"

    def _arithmetic(self):  # noqa: ANN202
        return evaluation_precision(self.precision, self.device)

    @property
    def task_names(self) -> list[str]:
        """Task names in order."""
        return self.data.task_names

    def loader(self, task: str, split: str) -> DataLoader:
        """The evaluation loader of one task's ``val`` or ``test`` split."""
        return self.data.eval_loader(task, split, self.batch_size)

    def head(self, task: str) -> ClassificationHead:
        """The zero-shot head of a task."""
        return self.heads.head(task)

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
        """:meth:`accuracy` of weights identified by ``key`` (e.g. ``"zeroshot"``), stored per
        (key, scoring, task, split) and reused by every later job."""
        if self.cache is None:
            return self.accuracy(state_dict, task, split)
        stored = self.cache.get(key, self.scoring, task, split)
        if stored is not None:
            return stored
        value = self.accuracy(state_dict, task, split)
        record = {"top1": value, "task": task, "split": split, "forward": self.forward}
        self.cache.put(key, self.scoring, task, split, {**record, "precision": self.precision})
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
        from taskmerge.models.linearized import jvp_features

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


def open_evaluator(
    bundle: ClipBundle,
    specs: Sequence[TaskSpec],
    data_root: str | Path,
    cache_root: str | Path,
    device: str = "cpu",
    batch_size: int = 256,
    num_workers: int = 0,
    forward: str = "nonlinear",
    precision: str = "fp32",
    params0: StateDict | None = None,
    decode_once: Sequence[str] = ("val",),
    limit_samples: int | None = None,
) -> TaskEvaluator:
    """A :class:`TaskEvaluator` for ``bundle`` on ``specs`` with everything cached where
    :class:`~taskmerge.store.layout.CacheLayout` says under ``cache_root`` (``paths.cache``):
    demo data, zero-shot heads, decoded splits and merge-independent accuracies, keyed by the
    pretrained weights' fingerprint."""
    weights = params0 if params0 is not None else bundle.visual.state_dict()
    cache = CacheLayout(Path(cache_root))
    stamp = fingerprint(weights)

    def of(kind: str) -> Path:
        return cache.of_weights(kind, bundle.name, bundle.pretrained, stamp)

    device = resolve_device(device)
    data = TaskData(
        specs, data_root, cache.demo_data, bundle.preprocess, of("tensors"), decode_once,
        num_workers, limit_samples=limit_samples, train_preprocess=bundle.train_preprocess,
    )  # fmt: skip
    heads = HeadBank(bundle, specs, of("heads"), device)
    return TaskEvaluator(
        bundle, data, heads, device=device, batch_size=batch_size, forward=forward,
        precision=precision, params0=weights, cache=AccuracyCache(of("accuracy")),
    )  # fmt: skip
