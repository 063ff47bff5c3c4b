"""Zero-shot classification heads built from CLIP's text tower, and the head module."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from taskmerge.data.spec import TaskSpec
from taskmerge.io.tensors import save_state_dict, verify_checksum
from taskmerge.models.clip import ClipBundle

log = logging.getLogger(__name__)


class ClassificationHead(nn.Linear):
    """A frozen linear head over L2-normalised image features (bias zero, never merged)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__(weight.shape[1], weight.shape[0], bias=True)
        with torch.no_grad():
            self.weight.copy_(weight)
            self.bias.zero_()
        self.requires_grad_(False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return super().forward(F.normalize(features, dim=-1))


@torch.no_grad()
def zeroshot_weights(
    clip_model: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Per class: encode every template, L2-normalise, average, re-normalise; times logit scale.

    Returns:
        A ``(num_classes, embed_dim)`` weight matrix.
    """
    clip_model = clip_model.to(device).eval()
    rows = []
    for classname in classnames:
        tokens = tokenizer([template.format(classname) for template in templates]).to(device)
        embeddings = F.normalize(clip_model.encode_text(tokens).float(), dim=-1)
        rows.append(F.normalize(embeddings.mean(dim=0), dim=0))
    return torch.stack(rows).cpu() * clip_model.logit_scale.exp().float().cpu()


def cached_zeroshot_head(
    bundle: ClipBundle, spec: TaskSpec, path: Path, device: str | torch.device = "cpu"
) -> ClassificationHead:
    """The zero-shot head of one task, read from ``path`` or built from the text tower and saved
    there (atomically) for the next run."""
    prompts = prompts_digest(spec)
    weight = _read_head(path, len(spec.classnames), prompts) if path.is_file() else None
    if weight is None:
        weight = zeroshot_weights(
            bundle.model, bundle.tokenizer, spec.classnames, spec.templates, device
        )
        save_state_dict({"weight": weight}, path, {"task": spec.name, PROMPTS_KEY: prompts})
    return ClassificationHead(weight)


#: The header key of a cached head that identifies its class names and templates.
PROMPTS_KEY = "prompts_sha256"


def prompts_digest(spec: TaskSpec) -> str:
    """A digest of the class names and templates a head is built from (a protocol's other
    templates, e.g. TSV's for EMNIST, give another head)."""
    text = json.dumps([list(spec.classnames), list(spec.templates)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_head(path: Path, classes: int, prompts: str) -> torch.Tensor | None:
    """A cached head's weight, or None (with one warning) when the file is damaged: it is then
    rebuilt from the text tower. A head of other prompts (or from before they were recorded)
    is rebuilt without a warning."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get(PROMPTS_KEY) != prompts:
                return None
        verify_checksum(path, fix="it is rebuilt")
        weight = load_file(str(path))["weight"]
        if weight.ndim != 2 or weight.shape[0] != classes or not torch.isfinite(weight).all():
            raise ValueError(f"a weight of shape {tuple(weight.shape)} for {classes} classes")
    except Exception as exc:  # noqa: BLE001 - any damage: rebuild
        log.warning("cached head %s is unreadable (%s): rebuilt from the text tower", path,
                    " ".join(str(exc).split())[:120])  # fmt: skip
        return None
    return weight


class HeadBank:
    """The zero-shot heads of a run's tasks: built from the text tower once, cached on disk
    (one ``<Task>.safetensors`` per task in ``directory``, which must identify the model and its
    pretrained weights), kept on ``device``."""

    def __init__(
        self,
        bundle: ClipBundle,
        specs: Sequence[TaskSpec],
        directory: str | Path,
        device: str | torch.device = "cpu",
    ) -> None:
        self.bundle = bundle
        self.specs = {spec.name: spec for spec in specs}
        self.directory = Path(directory).expanduser()
        self.device = device
        self._heads: dict[str, ClassificationHead] = {}

    def head(self, task: str) -> ClassificationHead:
        """The zero-shot head of a task."""
        if task not in self._heads:
            path = self.directory / f"{task}.safetensors"
            head = cached_zeroshot_head(self.bundle, self.specs[task], path, self.device)
            self._heads[task] = head.to(self.device)
        return self._heads[task]
