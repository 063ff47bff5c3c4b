"""Loading real open_clip models from the on-disk layouts users have (no network)."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from taskmerge.errors import CheckpointError
from taskmerge.models.clip import cached_pretrained_file, load_clip, resolve_pretrained

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _write_hf_cache(cache: Path, repo_id: str, filename: str, tensors: dict) -> Path:
    """A Hugging Face hub cache entry, laid out as huggingface_hub writes it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    path = repo / "snapshots" / REVISION / filename
    path.parent.mkdir(parents=True)
    save_file(tensors, str(path))
    return path


def test_openai_weights_are_found_in_the_hf_cache(tmp_path: Path) -> None:
    path = _write_hf_cache(
        tmp_path,
        "timm/vit_base_patch16_clip_224.openai",
        "open_clip_model.safetensors",
        {"x": torch.zeros(1)},
    )
    assert cached_pretrained_file("ViT-B-16", "openai", str(tmp_path)) == str(path)
    assert resolve_pretrained("ViT-B-16", "openai", str(tmp_path)) == str(path)


def test_vit_b_32_loads_from_the_hf_cache_with_quickgelu(tmp_path: Path) -> None:
    """A full ViT-B-32 checkpoint in the real format loads strictly, with QuickGELU."""
    reference = open_clip.create_model("ViT-B-32", force_quick_gelu=True)
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    _write_hf_cache(
        tmp_path, "timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors", state
    )
    bundle = load_clip("ViT-B-32", "openai", quick_gelu=True, cache_dir=str(tmp_path))
    block = bundle.visual.transformer.resblocks[0]
    assert type(block.mlp.gelu).__name__ == "QuickGELU"
    for key, value in bundle.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    image = torch.zeros(1, 3, 224, 224)
    assert bundle.visual(image).shape == (1, 512)
    assert bundle.tokenizer(["a photo of a cat."]).shape == (1, 77)


def test_unknown_tag_and_missing_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no pretrained tag 'nope' for ViT-B-32"):
        resolve_pretrained("ViT-B-32", "nope")
    with pytest.raises(CheckpointError, match="no such weight file"):
        resolve_pretrained("ViT-B-32", str(tmp_path / "missing.safetensors"))
