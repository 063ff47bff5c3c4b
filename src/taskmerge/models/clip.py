"""Load an open_clip CLIP model (real or tiny) with its eval transform and tokenizer.

Real models use open_clip's own names and tags (``ViT-B-32`` + ``openai``). OpenAI's weights were
trained with QuickGELU, so ``quick_gelu=True`` must be passed for them (open_clip otherwise builds
GELU and warns). Weights are looked up in the local caches first; with no network and no local
copy, one clear error says what is missing and how to get it.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from taskmerge.errors import CheckpointError


@dataclass
class ClipBundle:
    """A CLIP model with the transform its images need and its tokenizer."""

    model: nn.Module
    preprocess: Callable
    tokenizer: Callable[[list[str]], torch.Tensor]
    name: str
    pretrained: str
    #: The image transform of training (open_clip's ``preprocess_train``: RandomResizedCrop
    #: with scale (0.9, 1.0), RGB, ToTensor, Normalize); None: train on ``preprocess``.
    train_preprocess: Callable | None = None

    @property
    def visual(self) -> nn.Module:
        """The image tower: the only part that is fine-tuned and merged."""
        return self.model.visual

    @property
    def text_side_entries(self) -> int:
        """Entries the references' saved image-encoder checkpoints hold besides the image tower.

        ``nik-dim/tall_masks`` ``src/models/modeling.py`` (``ImageEncoder``, as in
        ``mlfoundations/task_vectors``) keeps the whole CLIP and deletes only its text
        ``transformer``; what is left of the text side (token and positional embeddings,
        ``ln_final``, ``text_projection``, ``logit_scale``) is never trained, so it adds zeros to
        every task vector the references trim (:mod:`taskmerge.merging.population`).
        """
        return sum(
            int(value.numel())
            for key, value in self.model.state_dict().items()
            if not key.startswith(("visual.", "transformer."))
        )


_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def cached_pretrained_file(name: str, tag: str, cache_dir: str | None = None) -> str | None:
    """Path of an already-downloaded weight file for ``name``/``tag``, or None."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        return None
    hub = cfg.get("hf_hub", "")
    if hub:
        # open_clip's convention: "org/repo/" (default file names) or "org/repo/filename"
        repo_id, filename = os.path.split(hub)
        for candidate in [filename] if filename else list(_WEIGHT_FILES):
            found = try_to_load_from_cache(repo_id, candidate, cache_dir=cache_dir)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    url = cfg.get("url", "")
    if url:
        legacy = Path(cache_dir or "~/.cache/clip").expanduser() / os.path.basename(url)
        if legacy.is_file():
            return str(legacy)
    return None


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """False when offline mode is set or the hub cannot be reached (checked in seconds, so a
    machine without network fails at once instead of after minutes of download retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    reached: list[bool] = []

    def connect() -> None:  # the name lookup has no timeout of its own: a thread bounds it
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            reached.append(True)
        except OSError:
            pass

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(reached)


def resolve_pretrained(name: str, pretrained: str, cache_dir: str | None = None) -> str:
    """A weight file path for ``pretrained`` (a tag or a path); downloads only if allowed.

    Raises:
        CheckpointError: unknown tag, missing file, or weights neither cached nor downloadable.
    """
    import open_clip

    path = Path(pretrained).expanduser()
    if path.suffix in {".safetensors", ".bin", ".pt", ".pth"} or os.sep in pretrained:
        if not path.is_file():
            raise CheckpointError(f"model.pretrained={pretrained}: no such weight file")
        if path.suffix != ".safetensors":  # a pickle: read through the weights-only loader first
            from taskmerge.io.tensors import load_state_dict

            load_state_dict(path)
        return str(path)
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        raise CheckpointError(
            f"open_clip has no pretrained tag {pretrained!r} for {name}: use one of {tags} or a "
            "path to a weight file"
        )
    cached = cached_pretrained_file(name, pretrained, cache_dir)
    if cached:
        return cached
    try:
        if not hub_reachable():
            raise ConnectionError("offline (HF_HUB_OFFLINE set, or huggingface.co unreachable)")
        return open_clip.download_pretrained(
            open_clip.get_pretrained_cfg(name, pretrained), cache_dir=cache_dir
        )
    except Exception as exc:  # noqa: BLE001 - network and hub errors come in many types
        raise CheckpointError(
            f"open_clip weights {name}/{pretrained} are not in the local cache and could not be "
            f"downloaded ({exc}): run "
            f"`python scripts/download_weights.py {name}` on "
            "a machine with network and copy ~/.cache/huggingface here, or set "
            "model.pretrained=/path/to/open_clip_model.safetensors"
        ) from exc


def load_clip(
    name: str,
    pretrained: str,
    quick_gelu: bool = False,
    cache_dir: str | None = None,
) -> ClipBundle:
    """Build an open_clip model from a registered config name and load its weights."""
    import open_clip

    if name not in open_clip.list_models():
        raise CheckpointError(f"open_clip has no model config named {name!r}")
    weights = resolve_pretrained(name, pretrained, cache_dir)
    model, train_preprocess, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=weights, force_quick_gelu=quick_gelu, cache_dir=cache_dir
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    return ClipBundle(model, preprocess, tokenizer, name, pretrained, train_preprocess)
