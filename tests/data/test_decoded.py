"""Decode once: a real task's Val split kept as uint8 arrays gives exactly the accuracies and
predictions of decoding the images on every pass, and is decoded only once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from taskmerge.data.image_datasets import ArrayImageDataset
from taskmerge.data.spec import TaskSpec
from taskmerge.evaluate.evaluator import TaskEvaluator, open_evaluator
from taskmerge.models.tiny import load_tiny_clip

pytestmark = pytest.mark.usefixtures("one_thread")


class Photos:
    """A task whose images have odd sizes and modes, as real datasets do."""

    def __call__(self, root: Path, split: str) -> ArrayImageDataset:
        rng = np.random.default_rng(0 if split == "train" else 1)
        images = rng.integers(0, 256, (60, 41, 37, 3), dtype=np.uint8)
        return ArrayImageDataset(images, rng.integers(0, 3, 60))


def evaluator(bundle, cache: Path, decode: bool) -> TaskEvaluator:  # noqa: ANN001
    spec = TaskSpec("Photos", ("red", "green", "blue"), ("a photo of {}.",), 1, Photos())
    return open_evaluator(bundle, [spec], cache, cache, batch_size=16, num_workers=0,
                          decode_once=("val",) if decode else ())  # fmt: skip


def test_decoded_once_equals_decoding_every_pass(tmp_path: Path) -> None:
    bundle = load_tiny_clip(str(tmp_path / "tiny"))
    state = bundle.visual.state_dict()
    plain = evaluator(bundle, tmp_path, False)
    cached = evaluator(bundle, tmp_path, True)
    assert torch.equal(plain.predictions(state, "Photos", "val")[0],
                       cached.predictions(state, "Photos", "val")[0])  # fmt: skip
    batch = next(iter(cached.loader("Photos", "val")))[0]
    assert batch.dtype == torch.uint8 and batch.shape[1:] == (3, 32, 32)
    reference = next(iter(plain.loader("Photos", "val")))[0]
    assert torch.equal(cached.inputs(batch), reference)  # bitwise the PIL preprocessing
    files = sorted((tmp_path / "tensors").rglob("Photos-val-*.npy"))
    assert len(files) == 2  # images and labels
    stamp = files[0].stat().st_mtime_ns
    assert cached.accuracy(state, "Photos", "val") == plain.accuracy(state, "Photos", "val")
    assert files[0].stat().st_mtime_ns == stamp  # read back, not decoded again
    test_batch = next(iter(cached.loader("Photos", "test")))[0]
    assert test_batch.dtype == torch.float32  # Test (evaluated once) is not kept
