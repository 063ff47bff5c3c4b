"""The training transform: what the references fine-tune on.

``nik-dim/tall_masks`` ``src/finetune.py`` (as ``mlfoundations/task_vectors`` and
``gortizji/tangent_task_arithmetic``) trains on open_clip's ``preprocess_train``:
``RandomResizedCrop(size, scale=(0.9, 1.0), interpolation=bicubic)``, RGB, ``ToTensor``,
``Normalize``; Val and Test use the evaluation transform. ``train.transform=reference`` (the
default) does the same; ``train.transform=eval`` trains on the evaluation transform.

Images read from files go through ``preprocess_train`` itself. Splits kept as tensors (the
offline demo's, preprocessed once) get the same crop applied to the tensor: a random crop of
90-100% of the area, resized back with bicubic interpolation. Cropping and resizing commute with
the per-channel normalization (both are linear), so this is the reference transform up to the
resampling of a tensor instead of a PIL image.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset, Subset, TensorDataset

from taskmerge.data.image_datasets import TransformedDataset

TRAIN_TRANSFORMS = ("reference", "eval")


def random_crop_of(train_preprocess: Callable) -> Callable | None:
    """The ``RandomResizedCrop`` of a ``Compose`` (None when it has none)."""
    for transform in getattr(train_preprocess, "transforms", []):
        if type(transform).__name__ == "RandomResizedCrop":
            return transform
    return None


class CroppedTensors(Dataset):
    """``(crop(image), label, ...)`` of a dataset of preprocessed image tensors."""

    def __init__(self, base: Dataset, crop: Callable) -> None:
        self.base, self.crop = base, crop

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple:
        image, *rest = self.base[index]
        return (self.crop(image), *rest)


def train_view(dataset: Dataset, train_preprocess: Callable, split_preprocess: object) -> Dataset:
    """``dataset`` (a training split) seen through ``train_preprocess`` instead of the
    evaluation transform: the transform of a :class:`TransformedDataset` is replaced (under any
    ``Subset``), a tensor dataset is cropped as the reference transform crops."""
    if isinstance(dataset, Subset):
        return Subset(train_view(dataset.dataset, train_preprocess, split_preprocess),
                      dataset.indices)  # fmt: skip
    if isinstance(dataset, TransformedDataset):
        return TransformedDataset(dataset.base, train_preprocess)
    crop = random_crop_of(train_preprocess)
    if isinstance(dataset, TensorDataset) and crop is not None:
        return CroppedTensors(dataset, crop)
    return dataset


def check_train_transform(name: str) -> str:
    """``train.transform`` is ``reference`` or ``eval``."""
    if name not in TRAIN_TRANSFORMS:
        from taskmerge.errors import ConfigError

        raise ConfigError(f"train.transform={name!r}: use reference or eval")
    return name
