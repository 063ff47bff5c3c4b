"""Fine-tune one task: a copy of the pretrained encoder trained on the task's training split with
its zero-shot head frozen, resumable, and stored as a checkpoint."""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict

import torch
from torch import nn

from taskmerge.data.task_data import TaskData
from taskmerge.errors import CheckpointError
from taskmerge.finetune.distributed import is_main_process
from taskmerge.finetune.loop import TrainSettings, finetune
from taskmerge.finetune.modes import FinetuningMode
from taskmerge.finetune.state import signature
from taskmerge.models.heads import HeadBank
from taskmerge.store.checkpoints import CheckpointStore

log = logging.getLogger(__name__)


def finetune_task(
    task: str,
    pretrained_encoder: nn.Module,
    data: TaskData,
    heads: HeadBank,
    store: CheckpointStore,
    settings: TrainSettings,
    mode: FinetuningMode,
    device: str | torch.device,
    overwrite: bool = False,
    world_size: int = 1,
    position: tuple[int, int] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, float]] | None:
    """Fine-tune a copy of ``pretrained_encoder`` on one task and store the checkpoint
    (atomically); the full training state is saved every ``settings.save_every`` steps in the
    task's directory and a rerun resumes from it.

    With ``world_size > 1`` (or under torchrun) training is distributed; only the main process
    writes (the others return None). ``position`` (i, N) puts "task i/N" into the progress bar.

    Returns:
        The fine-tuned state dict and the training statistics (steps, seconds, final loss).

    Raises:
        CheckpointError: the checkpoint exists and ``overwrite`` is false (checked first).
    """
    if store.path(task).is_file() and not overwrite:
        raise CheckpointError(f"{store.path(task)} exists: pass overwrite=true to replace it")
    encoder = copy.deepcopy(pretrained_encoder)
    state_path = store.layout.training_state(task)
    identity = signature(
        task=task, mode=mode.fingerprint(), pretrained=store.fingerprint, settings=asdict(settings)
    )
    stats = finetune(
        encoder,
        heads.head(task),
        data.train_set(task, settings.transform),
        data.specs[task].epochs,
        settings,
        mode,
        device,
        description=f"fine-tuning {task}"
        + (f" (task {position[0]}/{position[1]})" if position else ""),
        world_size=world_size,
        state_path=state_path,
        identity=identity,
    )
    if not is_main_process():
        return None
    state = {key: value.detach().cpu() for key, value in encoder.state_dict().items()}
    store.save(task, state, overwrite=overwrite)
    state_path.unlink(missing_ok=True)  # the checkpoint is complete: nothing left to resume
    return state, stats
