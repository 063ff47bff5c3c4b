"""Readers of the native on-disk layouts of the real tasks (torchvision's or prepared folders).

A :class:`Layout` is one way a split can lie under the data root: ``find(root, split)`` returns the
directory to open (or ``None`` when that layout is absent) and ``open(directory, split)`` reads it
into one of :mod:`taskmerge.data.image_datasets`' datasets. Which layouts each task has, and the
paths they look at, is declared with the task in :mod:`taskmerge.data.standard_tasks`.

How files are read:

* Folder-per-class layouts (DTD, EuroSAT, SUN397, RESISC45, GTSRB train) label images by the
  sorted class-folder order, as torchvision's ImageFolder does; the number of class folders is
  checked (a wrong count raises, differing folder names only warn).
* MNIST-family ``.gz`` files are decompressed in place when only they exist.
* CIFAR, SVHN and STL10 are read from the same files torchvision reads, with the same result, but
  without its md5 check; the other torchvision datasets go through torchvision itself (never
  downloading), once the files it needs are found.

This module is over 400 lines on purpose: it is one concept, the readers of every native layout
(with the required-file checks and guards they use).
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from taskmerge.data.image_datasets import ArrayImageDataset, FileImageDataset
from taskmerge.errors import DataNotFoundError, StorageError
from taskmerge.io.atomic import atomic_path

__all__ = [
    "Layout",
    "cars_required",
    "cifar_layout",
    "emnist_files",
    "fer_csv_layout",
    "fer_folder_layout",
    "flowers_required",
    "food_required",
    "gtsrb_all_classes",
    "gtsrb_required",
    "guarded",
    "mnist_all_files",
    "mnist_layout",
    "need_h5py",
    "pcam_required",
    "pets_required",
    "resisc45_layout",
    "split_folder_layout",
    "split_kw",
    "sst2_required",
    "stl10_layout",
    "svhn_layout",
    "torchvision_layout",
]


@dataclass(frozen=True)
class Layout:
    """One on-disk layout: ``find(root, split)`` -> directory to open, or ``None`` if absent."""

    description: str
    find: Callable[[Path, str], Path | None]
    open: Callable[[Path, str], Dataset]


def _first_base(root: Path, subdirs: Sequence[str], check: Callable[[Path], bool]) -> Path | None:
    """The first of ``root/<subdir>`` (``""`` = root itself) that passes ``check``."""
    for subdir in subdirs:
        base = root / subdir if subdir else root
        if check(base):
            return base
    return None


def _torchvision_error(task: str, where: Path, error: Exception) -> DataNotFoundError:
    message = " ".join(str(error).split())
    return DataNotFoundError(f"{task} under {where} is incomplete or unreadable: {message}")


# -- MNIST family ------------------------------------------------------------------------------

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def emnist_files(split: str) -> tuple[str, ...]:
    part = "train" if split == "train" else "test"
    return tuple(f"emnist-digits-{part}-{kind}-ubyte" for kind in ("images-idx3", "labels-idx1"))


def _raw_file_present(raw: Path, name: str) -> bool:
    return any(p.is_file() for p in (raw / name, raw / f"{name}.gz", raw / "gzip" / f"{name}.gz"))


def _gunzip_missing(task: str, raw: Path, names: Sequence[str]) -> None:
    """Decompress ``<name>.gz`` next to itself for every raw file that exists only gzipped."""
    for name in names:
        target = raw / name
        if target.is_file():
            continue
        source = next(p for p in (raw / f"{name}.gz", raw / "gzip" / f"{name}.gz") if p.is_file())
        try:
            with gzip.open(source, "rb") as src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)  # moved into place only when complete
        except (OSError, StorageError) as error:
            raise DataNotFoundError(
                f"{task}: {source} could not be decompressed to {target} ({error}); "
                f"gunzip the files in {raw} yourself"
            ) from error


def mnist_layout(
    class_name: str, files: Callable[[str], tuple[str, ...]], description: str
) -> Layout:
    """Layout of a torchvision MNIST-family dataset (``<base>/<class_name>/raw/...``)."""

    def find(root: Path, split: str) -> Path | None:
        def check(base: Path) -> bool:
            raw = base / class_name / "raw"
            return all(_raw_file_present(raw, name) for name in files(split))

        return _first_base(root, ("", class_name), check)

    def open_(base: Path, split: str) -> Dataset:
        import torchvision.datasets as tvd

        _gunzip_missing(class_name, base / class_name / "raw", files(split))
        kwargs: dict[str, Any] = {"split": "digits"} if class_name == "EMNIST" else {}
        dataset_class = getattr(tvd, class_name)
        try:
            return dataset_class(str(base), train=split == "train", download=False, **kwargs)
        except RuntimeError as error:
            raise _torchvision_error(class_name, base, error) from error

    return Layout(description, find, open_)


def mnist_all_files(_split: str) -> tuple[str, ...]:
    # torchvision checks all four files whatever the split
    return _MNIST_FILES


# -- CIFAR, SVHN, STL10: same files torchvision reads, no md5 check -------------------------------


def cifar_layout(folder: str, files: dict[str, tuple[str, ...]], label_key: str) -> Layout:
    """``<root>/<folder>/<batch>``: pickled dicts with ``data`` (N x 3072) and labels."""

    def find(root: Path, split: str) -> Path | None:
        return root if all((root / folder / f).is_file() for f in files[split]) else None

    def open_(base: Path, split: str) -> Dataset:
        images, labels = [], []
        for name in files[split]:
            with open(base / folder / name, "rb") as handle:
                entry = pickle.load(handle, encoding="latin1")
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry[label_key])
        return ArrayImageDataset(np.concatenate(images).transpose(0, 2, 3, 1), labels)

    shown = ",".join(files["train"][:1] + ("...",) + files["test"])
    return Layout(f"{folder}/{{{shown}}}", find, open_)


def svhn_layout() -> Layout:
    def find(root: Path, split: str) -> Path | None:
        return _first_base(root, ("svhn", ""), lambda b: (b / f"{split}_32x32.mat").is_file())

    def open_(base: Path, split: str) -> Dataset:
        try:
            import scipy.io as sio
        except ImportError as error:
            raise ImportError(
                "SVHN needs scipy to read its .mat files: pip install scipy"
            ) from error
        mat = sio.loadmat(str(base / f"{split}_32x32.mat"))
        labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
        labels[labels == 10] = 0  # SVHN stores the digit 0 as label 10
        return ArrayImageDataset(np.transpose(mat["X"], (3, 0, 1, 2)), labels.tolist())

    return Layout("svhn/{train,test}_32x32.mat", find, open_)


def stl10_layout() -> Layout:
    def paths(base: Path, split: str) -> tuple[Path, Path]:
        folder = base / "stl10_binary"
        return folder / f"{split}_X.bin", folder / f"{split}_y.bin"

    def find(root: Path, split: str) -> Path | None:
        return _first_base(root, ("stl10", ""), lambda b: all(p.is_file() for p in paths(b, split)))

    def open_(base: Path, split: str) -> Dataset:
        images_path, labels_path = paths(base, split)
        raw = np.fromfile(images_path, dtype=np.uint8).reshape(-1, 3, 96, 96)
        labels = np.fromfile(labels_path, dtype=np.uint8).astype(np.int64) - 1
        # the binary is column-major per channel: (N, C, W, H) -> (N, H, W, C)
        return ArrayImageDataset(raw.transpose(0, 3, 2, 1), labels.tolist())

    return Layout("stl10/stl10_binary/{train,test}_{X,y}.bin", find, open_)


# -- Folder-per-class layouts -------------------------------------------------------------------

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _class_folders(directory: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())


def _check_folders(task: str, directory: Path, folders: list[str], expected: Sequence[str]) -> None:
    """Fail on a wrong class count; warn when folder names differ from the known ones."""
    if len(folders) != len(expected):
        raise DataNotFoundError(
            f"{task}: {directory} has {len(folders)} class folders, expected {len(expected)}; "
            f"the copy is incomplete or not laid out as described in taskmerge.data.standard_tasks"
        )
    if list(folders) != list(expected):
        odd = [f for f, e in zip(folders, expected, strict=True) if f != e][:3]
        warnings.warn(
            f"{task}: class folders in {directory} differ from the reference names (e.g. {odd}); "
            "labels follow the sorted folder order as in the reference code",
            stacklevel=3,
        )


def _folder_samples(
    directory: Path, class_to_idx: dict[str, int], keep: Callable[[str], bool] | None = None
) -> list[tuple[str, int]]:
    from torchvision.datasets.folder import make_dataset

    def is_valid(path: str) -> bool:
        return path.lower().endswith(_IMAGE_EXTENSIONS) and (keep is None or keep(path))

    return make_dataset(str(directory), class_to_idx, is_valid_file=is_valid, allow_empty=True)


def split_folder_layout(
    task: str,
    top: str,
    folder_for_split: dict[str, tuple[str, ...]],
    expected_folders: Sequence[str],
    description: str,
) -> Layout:
    """``<root>/<top>/<split folder>/<class>/<image>``, labels = sorted class folder order."""

    def find(root: Path, split: str) -> Path | None:
        for name in folder_for_split[split]:
            if (root / top / name).is_dir():
                return root / top / name
        return None

    def open_(directory: Path, split: str) -> Dataset:
        folders = _class_folders(directory)
        _check_folders(task, directory, folders, expected_folders)
        samples = _folder_samples(directory, {name: i for i, name in enumerate(folders)})
        return FileImageDataset(samples)

    return Layout(description, find, open_)


def resisc45_layout(expected_folders: Sequence[str]) -> Layout:
    """``<root>/resisc45/NWPU-RESISC45/<class>/`` filtered by ``resisc45-<split>.txt``."""

    def find(root: Path, split: str) -> Path | None:
        base = root / "resisc45"
        ok = (base / "NWPU-RESISC45").is_dir() and (base / f"resisc45-{split}.txt").is_file()
        return base if ok else None

    def open_(base: Path, split: str) -> Dataset:
        names = (base / f"resisc45-{split}.txt").read_text().split()
        wanted = {name.strip() for name in names}
        directory = base / "NWPU-RESISC45"
        folders = _class_folders(directory)
        _check_folders("RESISC45", directory, folders, expected_folders)
        samples = _folder_samples(
            directory,
            {name: i for i, name in enumerate(folders)},
            keep=lambda path: os.path.basename(path) in wanted,
        )
        return FileImageDataset(samples)

    return Layout(
        "resisc45/NWPU-RESISC45/<class>/*.jpg + resisc45/resisc45-{train,test}.txt", find, open_
    )


# -- FER2013 ------------------------------------------------------------------------------------

#: Kaggle FER2013 image-folder names -> standard FER2013 label (the references' order).
_FER_FOLDER_LABELS = {
    "angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6,
}  # fmt: skip


def fer_csv_layout() -> Layout:
    def check(base: Path, split: str) -> bool:
        folder = base / "fer2013"
        names = ("fer2013.csv", "icml_face_data.csv") + (("train.csv",) if split == "train" else ())
        return any((folder / name).is_file() for name in names)

    def find(root: Path, split: str) -> Path | None:
        return _first_base(root, ("FER2013", ""), lambda b: check(b, split))

    def open_(base: Path, split: str) -> Dataset:
        import torchvision.datasets as tvd

        try:
            return tvd.FER2013(str(base), split=split)
        except RuntimeError as error:
            raise _torchvision_error("FER2013", base / "fer2013", error) from error

    return Layout("FER2013/fer2013/{fer2013,icml_face_data}.csv", find, open_)


def fer_folder_layout() -> Layout:
    def find(root: Path, split: str) -> Path | None:
        for base in (root / "FER2013" / "fer2013", root / "fer2013"):
            if (base / split).is_dir():
                return base / split
        return None

    def open_(directory: Path, split: str) -> Dataset:
        present = set(_class_folders(directory))
        if present != set(_FER_FOLDER_LABELS):
            raise DataNotFoundError(
                f"FER2013: {directory} should hold the folders {sorted(_FER_FOLDER_LABELS)}, "
                f"found {sorted(present)}"
            )
        return FileImageDataset(_folder_samples(directory, _FER_FOLDER_LABELS), mode=None)

    return Layout("FER2013/fer2013/{train,test}/<emotion>/*.jpg", find, open_)


# -- torchvision datasets with their own directory layout ---------------------------------------


def torchvision_layout(
    task: str,
    class_name: str,
    subdirs: tuple[str, ...],
    required: Callable[[Path, str], Sequence[Path]],
    description: str,
    split_arg: Callable[[str], dict[str, Any]],
) -> Layout:
    """A torchvision dataset rooted at ``root/<subdir>`` whose ``required`` paths exist."""

    def find(root: Path, split: str) -> Path | None:
        return _first_base(root, subdirs, lambda b: all(p.exists() for p in required(b, split)))

    def open_(base: Path, split: str) -> Dataset:
        import torchvision.datasets as tvd

        try:
            return getattr(tvd, class_name)(str(base), download=False, **split_arg(split))
        except RuntimeError as error:
            raise _torchvision_error(task, base, error) from error

    return Layout(description, find, open_)


def split_kw(mapping: dict[str, str] | None = None) -> Callable[[str], dict[str, Any]]:
    return lambda split: {"split": (mapping or {}).get(split, split)}


def cars_required(base: Path, split: str) -> list[Path]:
    folder = base / "stanford_cars"
    devkit = folder / "devkit"
    if split == "train":
        return [devkit / "cars_meta.mat", devkit / "cars_train_annos.mat", folder / "cars_train"]
    return [
        devkit / "cars_meta.mat",
        folder / "cars_test_annos_withlabels.mat",
        folder / "cars_test",
    ]


def gtsrb_required(base: Path, split: str) -> list[Path]:
    folder = base / "gtsrb"
    if split == "train":
        return [folder / "GTSRB" / "Training"]
    return [folder / "GTSRB" / "Final_Test" / "Images", folder / "GT-final_test.csv"]


def pcam_required(base: Path, split: str) -> list[Path]:
    stem = f"camelyonpatch_level_2_split_{split}"
    return [base / "pcam" / f"{stem}_x.h5", base / "pcam" / f"{stem}_y.h5"]


def pets_required(base: Path, split: str) -> list[Path]:
    folder = base / "oxford-iiit-pet"
    name = "trainval" if split == "train" else "test"
    return [folder / "images", folder / "annotations" / f"{name}.txt"]


def flowers_required(base: Path, _split: str) -> list[Path]:
    folder = base / "flowers-102"
    return [folder / "jpg", folder / "imagelabels.mat", folder / "setid.mat"]


def food_required(base: Path, split: str) -> list[Path]:
    folder = base / "food-101"
    return [folder / "images", folder / "meta" / f"{split}.json"]


def sst2_required(base: Path, split: str) -> list[Path]:
    folder = base / "rendered-sst2" / split
    return [folder / "negative", folder / "positive"]


def guarded(layout: Layout, guard: Callable[[Path, str], None]) -> Layout:
    """The same layout, running ``guard(base, split)`` (which may raise) before opening."""

    def open_(base: Path, split: str) -> Dataset:
        guard(base, split)
        return layout.open(base, split)

    return Layout(layout.description, layout.find, open_)


def need_h5py(_base: Path, _split: str) -> None:
    """PCAM needs h5py; say so clearly instead of torchvision's RuntimeError."""
    try:
        import h5py  # noqa: F401
    except ImportError as error:
        raise ImportError("PCAM needs h5py to read its .h5 files: pip install h5py") from error


def gtsrb_all_classes(base: Path, split: str) -> None:
    """GTSRB train labels are the sorted class-folder indices: all 43 folders must be there."""
    if split == "train":
        directory = base / "gtsrb" / "GTSRB" / "Training"
        _check_folders(
            "GTSRB", directory, _class_folders(directory), [f"{i:05d}" for i in range(43)]
        )
