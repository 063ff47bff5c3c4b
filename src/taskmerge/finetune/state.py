"""Fine-tuning that survives being killed: the full training state, saved atomically.

Every ``save_every`` optimizer steps the loop writes ``training-state.pt`` (moved into place
only when complete): the encoder's weights, the optimizer and scheduler states, the RNG states,
the step and the position in the data order (the data generator's state at the start of the
current epoch and the number of batches already drawn in it). Rerunning the same command loads
it and continues: the same random draws happen and the batches already trained on are skipped
by index (no image is loaded for them), so on the CPU the result is bitwise the uninterrupted
one. A state written for another task, mode, pretrained model or protocol is ignored. The file
holds tensors and plain containers only and is read with torch's weights-only loader.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from taskmerge.finetune.distributed import ShardedBatches
from taskmerge.io.atomic import atomic_path

log = logging.getLogger(__name__)

STATE_FORMAT = "taskmerge/training-state/v1"


class DataCursor:
    """Endless batches of a loader whose batch sampler is a :class:`ShardedBatches` sharing the
    loader's generator, with a restorable position."""

    def __init__(self, loader: DataLoader, sampler: ShardedBatches, generator: torch.Generator):
        self.loader, self.sampler, self.generator = loader, sampler, generator
        self._epoch_start = generator.get_state()
        self._position = 0

    def __iter__(self) -> Iterator[Any]:
        while True:
            self._epoch_start = self.generator.get_state()  # before the pass draws from it
            self._position = self.sampler.skip
            for batch in self.loader:
                self._position += 1
                yield batch

    def state_dict(self) -> dict[str, Any]:
        """Where the data order stands."""
        return {"generator": self._epoch_start.clone(), "position": self._position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` on the next pass."""
        self.generator.set_state(state["generator"])
        self.sampler.skip = int(state["position"])


def signature(**facts: Any) -> str:
    """What a saved state must match to be resumed (task, settings, mode, pretrained...)."""
    return json.dumps(facts, sort_keys=True, default=str)


def save_training_state(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write the state atomically (a killed writer leaves the previous one)."""
    with atomic_path(Path(path)) as tmp:
        torch.save({**state, "format": STATE_FORMAT}, tmp)


#: What a saved state holds.
STATE_KEYS = ("signature", "step", "loss", "encoder", "optimizer", "scheduler", "cursor", "rng")


def load_training_state(
    path: str | Path | None,
    expected: str,
    encoder: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any] | None:
    """The saved state when it exists, is whole, matches ``expected`` and (given ``encoder``,
    the model's state dict) holds weights of the model's names and shapes; else None, with one
    warning (training starts over)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or any(key not in state for key in STATE_KEYS):
            raise ValueError("not a whole training state")
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: start over
        log.warning("%s is unreadable (%s): starting over", path, " ".join(str(exc).split())[:120])
        return None
    if state.get("format") != STATE_FORMAT or state.get("signature") != expected:
        log.warning("%s was saved by another run: starting over", path)
        return None
    if encoder is not None:
        saved = state["encoder"]
        wrong = [k for k, v in encoder.items() if k not in saved or saved[k].shape != v.shape]
        if wrong or set(saved) != set(encoder):
            log.warning("%s holds weights of another shape (%s): starting over", path,
                        (wrong or sorted(set(saved) ^ set(encoder)))[:3])  # fmt: skip
            return None
    return state


def rng_state() -> dict[str, Any]:
    """The torch RNG states (CPU and every CUDA device)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
