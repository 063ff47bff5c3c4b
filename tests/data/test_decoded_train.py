"""Training from decoded images (``decode_once=[..., train]``): the reference's random crop,
drawn for the original size and cut from the stored whole-image resize, against open_clip's
``preprocess_train`` applied to the image files themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import (
    Compose,
    InterpolationMode,
    Normalize,
    RandomResizedCrop,
    ToTensor,
)

from taskmerge.data.decoded import split_preprocess
from taskmerge.data.decoded_train import CroppedUInt8, decoded_train_split
from taskmerge.data.spec import TaskSpec
from taskmerge.data.task_data import TaskData

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
SIZE = 32


def reference_train_transform(size: int = SIZE) -> Compose:
    """open_clip's ``preprocess_train`` (its RandomResizedCrop, ToTensor, Normalize)."""
    crop = RandomResizedCrop(size, scale=(0.9, 1.0), interpolation=InterpolationMode.BICUBIC)
    return Compose([crop, ToTensor(), Normalize(MEAN, STD)])


def eval_transform(size: int = SIZE) -> Compose:
    from torchvision.transforms import CenterCrop, Resize

    resize = Resize(size, interpolation=InterpolationMode.BICUBIC)
    return Compose([resize, CenterCrop(size), ToTensor(), Normalize(MEAN, STD)])


def smooth_image(width: int, height: int, seed: int) -> Image.Image:
    """A low-frequency colour image: resampling it twice changes it by little."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [
        np.sin(2 * np.pi * (rng.uniform(0.3, 1.2) * x + rng.uniform(0.3, 1.2) * y) + rng.uniform())
        for _ in range(3)
    ]
    pixels = (127.5 + 100 * np.stack(channels, axis=2)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


class Images(Dataset):
    """(PIL image, label) of images of different sizes and aspect ratios."""

    SIZES = ((64, 48), (48, 64), (80, 80), (100, 40), (57, 71), (64, 64))

    def __init__(self) -> None:
        self.images = [smooth_image(w, h, i) for i, (w, h) in enumerate(self.SIZES)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self.images[index], index % 2


def cropped(tmp_path: Path) -> CroppedUInt8:
    transform = reference_train_transform()
    crop = transform.transforms[0]
    _, mean, std = split_preprocess(transform)
    return decoded_train_split(Images(), crop, mean, std, tmp_path / "train.npy")


def test_the_crop_box_is_the_references_for_the_original_size(tmp_path: Path) -> None:
    dataset, images = cropped(tmp_path), Images()
    for index, image in enumerate(images.images):
        for seed in range(20):
            torch.manual_seed(seed)
            top, left, height, width = RandomResizedCrop.get_params(image, [0.9, 1.0],
                                                                    [3 / 4, 4 / 3])  # fmt: skip
            torch.manual_seed(seed)
            box = dataset.box(index)
            w, h = image.size
            expected = (top * SIZE / h, left * SIZE / w, height * SIZE / h, width * SIZE / w)
            assert np.allclose(box, expected, rtol=1e-12), (index, seed, box, expected)


def test_the_crop_equals_the_reference_transform_up_to_resampling(tmp_path: Path) -> None:
    dataset, images, transform = cropped(tmp_path), Images(), reference_train_transform()
    errors = []
    for index, image in enumerate(images.images):
        for seed in range(5):
            torch.manual_seed(seed)
            expected = transform(image)
            torch.manual_seed(seed)
            ours, label = dataset[index]
            assert label == index % 2 and ours.shape == expected.shape == (3, SIZE, SIZE)
            errors.append(float((ours - expected).abs().mean()))
    # normalized units (one grey level is ~0.015): twice-resampled smooth images differ by
    # under one grey level on average; a wrong box (or none) differs by far more
    assert max(errors) < 0.02, errors  # measured: 0.009 at most
    torch.manual_seed(0)
    uncropped = eval_transform()(images.images[3])  # the 100x40 image, center crop
    torch.manual_seed(0)
    assert float((dataset[3][0] - uncropped).abs().mean()) > 3 * max(errors)


def test_the_sizes_are_stored_and_read_back(tmp_path: Path) -> None:
    first = cropped(tmp_path)
    assert first.images.sizes.tolist() == [list(s) for s in Images.SIZES]
    assert (tmp_path / "train.sizes.npy").is_file()
    again = cropped(tmp_path)  # read back, not decoded again
    assert np.array_equal(again.images.images, first.images.images)


def test_damaged_sizes_are_decoded_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cropped(tmp_path)
    np.save(tmp_path / "train.sizes.npy", np.zeros((2, 2), dtype=np.int64))
    again = cropped(tmp_path)
    assert again.images.sizes.tolist() == [list(s) for s in Images.SIZES]
    assert "unreadable" in caplog.text


class FolderLoader:
    """``load_split`` of a fabricated real task: the same images for train and test."""

    def __call__(self, root: Path, split: str) -> Dataset:
        return Images()


def task_data(tmp_path: Path, decode_once: tuple[str, ...]) -> TaskData:
    spec = TaskSpec("Fake", ("a", "b"), ("a photo of {}.",), 1, FolderLoader())
    return TaskData(
        [spec],
        tmp_path,
        tmp_path,
        eval_transform(),
        tmp_path / "tensors",
        decode_once,
        limit_samples=6,
        train_preprocess=reference_train_transform(),
    )


def test_task_data_trains_from_decoded_images_only_when_asked(tmp_path: Path) -> None:
    plain = task_data(tmp_path, ("val",)).train_set("Fake")
    assert not (tmp_path / "tensors").exists() or not any((tmp_path / "tensors").iterdir())
    decoded = task_data(tmp_path, ("val", "train")).train_set("Fake")
    stored = sorted(p.name for p in (tmp_path / "tensors").iterdir())
    assert len(stored) == 3 and stored[0].startswith("Fake-train-"), stored
    assert len(plain) == len(decoded) > 0
    for index in range(len(decoded)):
        torch.manual_seed(index)
        a, label_a = plain[index]
        torch.manual_seed(index)
        b, label_b = decoded[index]
        assert label_a == label_b and a.shape == b.shape
        assert float((a - b).abs().mean()) < 0.02
    eval_view = task_data(tmp_path, ("val", "train")).train_set("Fake", transform="eval")
    assert torch.equal(eval_view[0][0], eval_transform()(_first_image(eval_view)))


def _first_image(dataset: Dataset) -> Image.Image:
    """The PIL image behind sample 0 of a (Subset of a) TransformedDataset."""
    from torch.utils.data import Subset

    from taskmerge.data.image_datasets import TransformedDataset

    index = 0
    while True:
        if isinstance(dataset, Subset):
            index, dataset = dataset.indices[index], dataset.dataset
        elif isinstance(dataset, TransformedDataset):
            dataset = dataset.base
        else:
            return dataset[index][0]


def test_a_batch_is_its_samples_one_by_one(tmp_path: Path) -> None:
    dataset = cropped(tmp_path)
    torch.manual_seed(3)
    one_by_one = [dataset[i] for i in (4, 0, 5, 2)]
    torch.manual_seed(3)
    batch = dataset.__getitems__([4, 0, 5, 2])  # what a DataLoader asks for: the same RNG calls
    assert [label for _, label in batch] == [label for _, label in one_by_one] == [0, 0, 1, 0]
    for (ours, _), (expected, _) in zip(batch, one_by_one, strict=True):
        assert torch.allclose(ours, expected, atol=1e-5)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=False)
    torch.manual_seed(3)
    images, labels = next(iter(loader))
    torch.manual_seed(3)
    assert torch.allclose(images, torch.stack([dataset[i][0] for i in range(3)]), atol=1e-5)


def test_the_decoded_split_is_cropped_in_the_training_process_on_a_cpu(tmp_path: Path) -> None:
    from torch.utils.data import Subset, TensorDataset

    from taskmerge.finetune.loop import loader_workers

    dataset = cropped(tmp_path)
    assert loader_workers(dataset, 3, "cpu") == 0
    assert loader_workers(Subset(dataset, [0, 2]), 3, "cpu") == 0
    assert loader_workers(dataset, 3, "cuda:0") == 3  # a GPU step: workers keep it fed
    assert loader_workers(TensorDataset(torch.zeros(2, 1)), 3, "cuda") == 0
    assert loader_workers(Images(), 3, "cpu") == 3  # files: decoded by the workers
