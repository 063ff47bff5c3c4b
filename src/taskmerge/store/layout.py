"""Where everything taskmerge keeps lives: the one description of the on-disk layout.

::

    <paths.checkpoints>/<model>/<finetuning>/
        <Task>/finetuned.safetensors   the fine-tuned image encoder; its header names the model,
                                       the pretrained fingerprint, the task and the mode
        <Task>/metrics.json            its fine-tuned Val / Test top-1, per forward
        <Task>/training-state.pt       the resumable state of an unfinished fine-tuning
        <Task>/.finetune.lock          held while the task is being fine-tuned
        <Task>/head.safetensors        an imported published zero-shot head (for reference)
        masks/                         TALL-mask files (named by taskmerge.merging.mask_files)
        manifest.json                  what import_checkpoints.py imported, with checksums
    <paths.cache>/
        demo-data/demo-v<N>/<Task>-<split>.npz      the generated demo splits
        tiny/                                        the tiny CLIP's unpacked weights
        heads/<model>/<tag>-<fingerprint>/<Task>.safetensors            zero-shot heads
        accuracy/<model>/<tag>-<fingerprint>/<key>/<scoring>/<Task>-<split>.json
                                                     accuracies that do not depend on a merge
        tensors/<model>/<tag>-<fingerprint>/<Task>-<split>-<n>-<hash>.npy   decoded splits
        results/<job key>.json                       complete results of finished merge jobs
    <paths.data>/                                    the real datasets (taskmerge.data)

``<tag>-<fingerprint>`` identifies the pretrained weights (their tag, ``/`` replaced, and the
first 16 hex digits of :func:`taskmerge.io.digest.fingerprint`), so caches of other weights are
never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FINETUNED_FILE = "finetuned.safetensors"
METRICS_FILE = "metrics.json"
TRAINING_STATE_FILE = "training-state.pt"
LOCK_FILE = ".finetune.lock"
IMPORTED_HEAD_FILE = "head.safetensors"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class CheckpointLayout:
    """The checkpoints of one model and fine-tuning mode under ``paths.checkpoints``."""

    root: Path
    model: str
    finetuning: str

    @property
    def mode_dir(self) -> Path:
        """``<root>/<model>/<finetuning>``."""
        return Path(self.root).expanduser() / self.model / self.finetuning

    def task_dir(self, task: str) -> Path:
        """Directory of one task's checkpoint, metrics, training state and lock."""
        return self.mode_dir / task

    def finetuned(self, task: str) -> Path:
        """The fine-tuned checkpoint file of one task (it may not exist yet)."""
        return self.task_dir(task) / FINETUNED_FILE

    def metrics(self, task: str) -> Path:
        """The task's fine-tuned accuracies."""
        return self.task_dir(task) / METRICS_FILE

    def training_state(self, task: str) -> Path:
        """The resumable state of an unfinished fine-tuning of the task."""
        return self.task_dir(task) / TRAINING_STATE_FILE

    def lock(self, task: str) -> Path:
        """The lock held while the task is fine-tuned."""
        return self.task_dir(task) / LOCK_FILE

    def imported_head(self, task: str) -> Path:
        """A published zero-shot head copied in by an import."""
        return self.task_dir(task) / IMPORTED_HEAD_FILE

    @property
    def mask_dir(self) -> Path:
        """Where merge methods keep their TALL-mask files for these checkpoints."""
        return self.mode_dir / "masks"

    @property
    def manifest(self) -> Path:
        """The import manifest of these checkpoints."""
        return self.mode_dir / MANIFEST_FILE


@dataclass(frozen=True)
class CacheLayout:
    """Everything under ``paths.cache``: rebuilt when missing, never the user's own work."""

    root: Path

    @property
    def demo_data(self) -> Path:
        """The generated demo splits."""
        return Path(self.root).expanduser() / "demo-data"

    @property
    def tiny(self) -> Path:
        """The tiny CLIP's unpacked weights."""
        return Path(self.root).expanduser() / "tiny"

    @property
    def results(self) -> Path:
        """Complete results of finished merge jobs, by job key."""
        return Path(self.root).expanduser() / "results"

    def of_weights(self, kind: str, model: str, pretrained_tag: str, fingerprint: str) -> Path:
        """``<root>/<kind>/<model>/<tag>-<fingerprint>``: a cache of one pretrained model's
        heads (``kind="heads"``), merge-independent accuracies (``accuracy``) or decoded splits
        (``tensors``)."""
        tag = pretrained_tag.replace("/", "_")
        return Path(self.root).expanduser() / kind / model / f"{tag}-{fingerprint}"
