"""The offline demo from Python: the tiny CLIP's image encoder, fine-tuned copies of it, and the
top-1 of any weights on the demo tasks, with no Hydra and no internals.

    import taskmerge

    demo = taskmerge.load_demo(["Digits", "Colors"])   # under TASKMERGE_HOME (default ./cache)
    finetuned = demo.finetuned()                       # the demo's checkpoints, or a quick tune
    merged = taskmerge.merge(demo.pretrained, finetuned, method="sum", scaling_coef=0.3)
    demo.evaluate(merged, "test")                      # task -> top-1

Everything lives where ``python main.py`` keeps it (``<home>/cache``, ``<home>/checkpoints``):
the demo data and heads are generated on first use, and the checkpoints ``main.py`` fine-tuned
are read (checked to come from these pretrained weights). A quick fine-tuning here stays in
memory and never replaces them.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from taskmerge.data.task_lists import resolve_task_specs
from taskmerge.evaluate.evaluator import TaskEvaluator, open_evaluator
from taskmerge.finetune.loop import TrainSettings, finetune
from taskmerge.finetune.modes import FinetuningMode
from taskmerge.io.digest import fingerprint
from taskmerge.models.clip import ClipBundle
from taskmerge.models.tiny import load_tiny_clip
from taskmerge.store.checkpoints import CheckpointStore

__all__ = ["Demo", "load_demo"]
log = logging.getLogger("taskmerge")

StateDict = dict[str, torch.Tensor]
#: The demo's tasks (``python main.py`` merges these eight).
DEMO_TASKS = ("Digits", "Shapes", "Colors", "Textures", "Counting", "Arrows", "Position", "Sizes")


def default_home() -> Path:
    """``TASKMERGE_HOME``, else ``./cache`` (``main.py``'s default when run from the repo)."""
    return Path(os.environ.get("TASKMERGE_HOME", "cache")).expanduser()


class Demo:
    """The pretrained tiny CLIP image encoder on some demo tasks.

    Attributes:
        tasks: The task names, in order.
        home: Where the caches and checkpoints are (as ``TASKMERGE_HOME``).
        pretrained: The pretrained image encoder (an ``nn.Module``: what is fine-tuned, merged
            and edited; never modified here).
        finetuned_from: After :meth:`finetuned`, where the weights came from (in words).
    """

    def __init__(self, tasks: Sequence[str], home: Path, bundle: ClipBundle, num_workers: int):
        self.tasks = list(tasks)
        self.home = home
        self.bundle = bundle
        self.pretrained: nn.Module = bundle.visual
        self.finetuned_from = ""
        self._theta0 = {k: v.detach().clone() for k, v in self.pretrained.state_dict().items()}
        self._num_workers = num_workers
        self._evaluator: TaskEvaluator | None = None

    @property
    def evaluator(self) -> TaskEvaluator:
        """The evaluator of the tasks (built on first use: generates the demo data and heads)."""
        if self._evaluator is None:
            self._evaluator = open_evaluator(
                self.bundle, resolve_task_specs(self.tasks), self.home / "data",
                self.home / "cache", num_workers=self._num_workers,
            )  # fmt: skip
        return self._evaluator

    def evaluate(
        self, model: nn.Module | Mapping[str, torch.Tensor], split: str = "val"
    ) -> dict[str, float]:
        """Task -> top-1 of an image encoder (a module or its state dict) on ``split``
        (``val`` or ``test``)."""
        state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
        return {task: self.evaluator.accuracy(state, task, split) for task in self.tasks}

    def evaluate_each(
        self, models: Mapping[str, nn.Module | Mapping[str, torch.Tensor]], split: str = "val"
    ) -> dict[str, float]:
        """Task -> top-1 of that task's own encoder (e.g. each fine-tuned model, or the
        per-task models of TALL masks) on ``split``."""
        states = {
            t: m.state_dict() if isinstance(m, nn.Module) else dict(m) for t, m in models.items()
        }
        return {task: self.evaluator.accuracy(states[task], task, split) for task in self.tasks}

    def store(self) -> CheckpointStore:
        """The demo's standard checkpoints under :attr:`home` (those ``main.py`` fine-tunes)."""
        theta0 = self._theta0
        return CheckpointStore(self.home / "checkpoints", self.bundle.name, self.bundle.pretrained,
                               FinetuningMode(), theta0, fingerprint(theta0))  # fmt: skip

    def finetuned(
        self, epochs: float = 0.5, lr: float = 1e-4, batch_size: int = 128, device: str = "cpu"
    ) -> dict[str, StateDict]:
        """Task -> fine-tuned encoder weights: the demo's checkpoints when every task has one,
        else each task fine-tuned here for ``epochs`` (in memory only; the demo uses 3)."""
        store = self.store()
        if not store.missing(self.tasks):
            self.finetuned_from = f"the demo's checkpoints in {store.layout.mode_dir}"
            return {task: store.load(task) for task in self.tasks}
        settings = TrainSettings(lr=lr, batch_size=batch_size, warmup_steps=5, num_workers=0)
        tuned = {}
        for index, task in enumerate(self.tasks, 1):
            encoder = copy.deepcopy(self.pretrained)
            finetune(
                encoder, self.evaluator.head(task), self.evaluator.data.train_set(task), epochs,
                settings, FinetuningMode(), device,
                description=f"fine-tuning {task} (task {index}/{len(self.tasks)})",
            )  # fmt: skip
            tuned[task] = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
        self.finetuned_from = f"a quick fine-tuning here ({epochs:g} epochs per task, in memory)"
        return tuned


def load_demo(
    tasks: Sequence[str] = DEMO_TASKS, home: str | Path | None = None, num_workers: int = 0
) -> Demo:
    """The offline demo on ``tasks`` (any of :data:`DEMO_TASKS`) under ``home`` (default
    ``TASKMERGE_HOME``, else ``./cache``): loads the shipped tiny CLIP, nothing else yet."""
    root = Path(home).expanduser() if home is not None else default_home()
    resolve_task_specs(list(tasks))  # an unknown task name is one ConfigError, now
    return Demo(tasks, root, load_tiny_clip(root / "cache"), num_workers)
