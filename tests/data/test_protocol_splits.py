"""Splits as the references have them: EuroSAT's own Val, known split variants recognised with
one warning, ``limit_samples`` subsets, the training transform, "crab"."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from taskmerge.data import classnames as cn
from taskmerge.data.augment import CroppedTensors, train_view
from taskmerge.data.image_datasets import TransformedDataset
from taskmerge.data.real_tasks import REAL_TASKS
from taskmerge.data.splits import TaskSplits, load_task_splits, split_train_val
from taskmerge.data.task_data import check_split_sizes, first_samples
from taskmerge.errors import DataNotFoundError


def _tree(top: Path, counts: dict[str, int]) -> None:
    for folder in cn.EUROSAT_FOLDERS:
        (top / folder).mkdir(parents=True, exist_ok=True)
    for folder, count in counts.items():
        for i in range(count):
            Image.new("RGB", (64, 64), (i, 9, 7)).save(top / folder / f"{i}.jpg")


def test_eurosat_trains_on_all_of_train_and_validates_on_its_own_val(tmp_path: Path) -> None:
    top = tmp_path / "EuroSAT_splits"
    _tree(top / "train", {"AnnualCrop": 12, "SeaLake": 8})
    _tree(top / "val", {"River": 3})
    _tree(top / "test", {"Highway": 2})
    splits = load_task_splits(REAL_TASKS["EuroSAT"], tmp_path, lambda image: image)
    assert len(splits.train) == 20 and len(splits.val) == 3 and len(splits.test) == 2
    assert [label for _, label in splits.val] == [cn.EUROSAT_FOLDERS.index("River")] * 3


def test_eurosat_without_a_val_split_carves_val_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.getLogger("taskmerge"), "disabled", False)
    top = tmp_path / "EuroSAT_splits"
    _tree(top / "train", {"AnnualCrop": 20})
    _tree(top / "test", {"Highway": 2})
    with caplog.at_level(logging.WARNING, logger="taskmerge"):
        splits = load_task_splits(REAL_TASKS["EuroSAT"], tmp_path, lambda image: image)
    assert "no val split" in caplog.text
    train, val = split_train_val(REAL_TASKS["EuroSAT"].load_split(tmp_path, "train"))
    assert (len(splits.train), len(splits.val)) == (len(train), len(val)) == (18, 2)


def _splits(train: int, val: int, test: int) -> TaskSplits:
    return TaskSplits("X", list(range(train)), list(range(val)), list(range(test)))  # type: ignore[arg-type]


def test_official_sizes_pass_and_unknown_ones_are_refused_with_the_fix(tmp_path: Path) -> None:
    assert check_split_sizes("DTD", _splits(3384, 376, 1880), tmp_path) is None
    assert check_split_sizes("EuroSAT", _splits(21600, 2700, 2700), tmp_path, own_val=True) is None
    with pytest.raises(DataNotFoundError, match="limit_samples=N"):
        check_split_sizes("MNIST", _splits(270, 30, 50), tmp_path)


@pytest.mark.parametrize(
    ("task", "sizes", "words"),
    [
        ("DTD", (4536, 504, 940), "test images are in train"),
        ("EuroSAT", (20000, 2335, 2387), "LiNeS' EuroSAT split"),
    ],
)
def test_known_variants_are_recognised_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
    task: str, sizes: tuple[int, int, int], words: str,
) -> None:  # fmt: skip
    monkeypatch.setattr(logging.getLogger("taskmerge"), "disabled", False)
    with caplog.at_level(logging.WARNING, logger="taskmerge"):
        variant = check_split_sizes(task, _splits(*sizes), tmp_path, own_val=task == "EuroSAT")
    assert variant is not None and len(caplog.records) == 1
    assert words in caplog.text or words in variant


def test_limit_samples_takes_the_first_n_of_each_split() -> None:
    limited = first_samples(_splits(100, 10, 50), 7)
    assert [list(part) for part in (limited.train, limited.val, limited.test)] == [
        list(range(7)), list(range(7)), list(range(7))
    ]  # fmt: skip
    assert len(first_samples(_splits(100, 3, 50), 7).val) == 3


def test_cifar100_class_26_is_crab() -> None:
    assert cn.CIFAR100[26] == "crab" and "cra" not in cn.CIFAR100


# --------------------------------------------------------------------------- train transform
def test_the_reference_train_transform_is_open_clips(tiny_clip) -> None:  # noqa: ANN001
    names = [type(t).__name__ for t in tiny_clip.train_preprocess.transforms]
    assert names[0] == "RandomResizedCrop" and "ToTensor" in names[-2] and names[-1] == "Normalize"
    crop = tiny_clip.train_preprocess.transforms[0]
    assert crop.scale == (0.9, 1.0)
    base = [(Image.new("RGB", (40, 40), (i, 0, 0)), i) for i in range(3)]
    view = train_view(TransformedDataset(base, tiny_clip.preprocess), tiny_clip.train_preprocess,
                      None)  # fmt: skip
    assert isinstance(view, TransformedDataset) and view.transform is tiny_clip.train_preprocess
    tensors = TensorDataset(torch.randn(4, 3, 32, 32), torch.arange(4))
    cropped = train_view(tensors, tiny_clip.train_preprocess, None)
    assert isinstance(cropped, CroppedTensors)
    assert cropped[0][0].shape == (3, *crop.size)


def test_a_crop_of_the_whole_image_is_the_identity() -> None:
    """The tensor path is the reference crop: at scale 1 and ratio 1 it returns the image."""
    from torchvision.transforms import InterpolationMode, RandomResizedCrop

    crop = RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0),
                             interpolation=InterpolationMode.BICUBIC)  # fmt: skip
    image = torch.randn(3, 16, 16)
    assert torch.allclose(CroppedTensors(TensorDataset(image[None], torch.zeros(1)), crop)[0][0],
                          image, atol=1e-5)  # fmt: skip


# --------------------------------------------------------------------------- task conventions
def test_tsv_conventions_are_a_config_choice_and_give_their_own_heads(
    tiny_clip,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    from dataclasses import replace

    from taskmerge.data.task_lists import get_task_spec
    from taskmerge.models.heads import cached_zeroshot_head

    tall, tsv = get_task_spec("EMNIST"), get_task_spec("EMNIST", "tsv")
    assert tsv.templates == ('a photo of the number: "{}".',) != tall.templates
    assert tsv.load_split.upright and not tall.load_split.upright
    assert get_task_spec("STL10", "tsv").templates == get_task_spec("CIFAR10").templates
    demo = get_task_spec("Digits")
    path = tmp_path / "head.safetensors"
    first = cached_zeroshot_head(tiny_clip, demo, path).weight.clone()
    other = replace(demo, templates=("a drawing of {}.",))
    rebuilt = cached_zeroshot_head(tiny_clip, other, path).weight
    assert not torch.allclose(first, rebuilt)  # other prompts: another head, not the cached one
    assert torch.equal(cached_zeroshot_head(tiny_clip, other, path).weight, rebuilt)
