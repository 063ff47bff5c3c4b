"""The tiny CLIP of the offline demo: an open_clip architecture registered through open_clip's
own model-config mechanism, with weights pretrained offline by this project.

The pretrained weights ship inside the package (``assets/taskmerge-tiny.safetensors.xz``,
rebuilt by ``scripts/pretrain_tiny.py``), stored in float16 and unpacked to float32: the float16
values ARE the pretrained model. Rows of the token embedding that no demo caption uses are stored
as zeros (they never influence any demo text). Both keep the file under 5 MB. If the asset is
missing, the weights are pretrained here once and cached.
"""

from __future__ import annotations

import hashlib
import logging
import lzma
from functools import cache
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load

from taskmerge.data.demo_tasks import GENERATOR_VERSION
from taskmerge.data.image_datasets import ArrayImageDataset, TransformedDataset, materialize
from taskmerge.errors import CheckpointError
from taskmerge.io.tensors import save_state_dict, tensor_specs, verify_checksum
from taskmerge.models.clip import ClipBundle, load_clip
from taskmerge.store.layout import CacheLayout

log = logging.getLogger(__name__)

TINY_MODEL_NAME = "taskmerge-tiny"
MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
ASSET = Path(__file__).parent / "assets" / f"{TINY_MODEL_NAME}.safetensors.xz"


@cache
def register_tiny_model() -> str:
    """Add the tiny architecture to open_clip's model registry (idempotent)."""
    import open_clip

    open_clip.add_model_config(MODEL_CONFIG_DIR)
    return TINY_MODEL_NAME


def _asset_digest() -> str:
    return hashlib.sha256(ASSET.read_bytes()).hexdigest()[:12]


def tiny_weights_path(cache_dir: str | Path, pretrain_steps: int = 1500) -> Path:
    """A ready-to-load weight file: the shipped asset unpacked into the cache, or a fresh run."""
    cache_dir = CacheLayout(Path(cache_dir)).tiny
    if ASSET.is_file():
        target = cache_dir / f"{TINY_MODEL_NAME}-{_asset_digest()}.safetensors"
        if not _intact(target):
            shipped = load(lzma.decompress(ASSET.read_bytes()))
            save_state_dict({k: v.float() for k, v in shipped.items()}, target)
        return target
    target = (
        cache_dir
        / f"{TINY_MODEL_NAME}-pretrained-g{GENERATOR_VERSION}-s{pretrain_steps}.safetensors"
    )
    if not _intact(target):
        save_state_dict(pretrain_tiny_state_dict(pretrain_steps), target)
    return target


def _intact(path: Path) -> bool:
    """Whether the cached weight file is there and whole (a damaged one is rebuilt, with one
    warning)."""
    if not path.is_file():
        return False
    try:
        tensor_specs(path)
        if not verify_checksum(path, fix="it is rebuilt"):
            raise CheckpointError(f"{path} records no checksum")
    except CheckpointError as exc:
        log.warning("%s", " ".join(str(exc).split()).replace(": it is rebuilt", "") +
                    ": the tiny CLIP's weights are unpacked again")  # fmt: skip
        return False
    return True


def pretrain_tiny_state_dict(
    steps: int, seed: int = 0, device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """Build the tiny CLIP from scratch and pretrain it on the demo caption corpus."""
    import open_clip

    from taskmerge.models.pretraining import pretrain_clip

    register_tiny_model()
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL_NAME)

    def preprocess_batch(images: np.ndarray) -> torch.Tensor:
        labels = np.zeros(len(images), np.int64)
        dataset = TransformedDataset(ArrayImageDataset(images, labels), preprocess)
        return materialize(dataset).tensors[0]

    tokenizer = open_clip.get_tokenizer(TINY_MODEL_NAME)
    pretrain_clip(model, preprocess_batch, tokenizer, steps=steps, seed=seed, device=device)
    return model.state_dict()


def compress_for_shipping(state_dict: dict[str, torch.Tensor], used_tokens: torch.Tensor) -> bytes:
    """Zero the unused token-embedding rows, round to float16 and xz-compress the bytes."""
    from safetensors.torch import save

    state = {key: value.detach().half().contiguous() for key, value in state_dict.items()}
    keep = torch.zeros(state["token_embedding.weight"].shape[0], dtype=torch.bool)
    keep[used_tokens.unique()] = True
    state["token_embedding.weight"][~keep] = 0
    return lzma.compress(save(state), preset=9)


def load_tiny_clip(cache_dir: str | Path, pretrain_steps: int = 1500) -> ClipBundle:
    """The tiny CLIP with its pretrained weights, loaded through open_clip like a real model."""
    name = register_tiny_model()
    weights = tiny_weights_path(cache_dir, pretrain_steps)
    bundle = load_clip(name, str(weights))
    bundle.pretrained = "taskmerge-demo"
    return bundle
