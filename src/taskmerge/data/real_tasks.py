"""The 20 real benchmark tasks: class names, prompt templates, epochs and on-disk loaders.

``REAL_TASKS[name]`` is a :class:`~taskmerge.data.registry.TaskSpec` whose ``load_split(root,
split)`` returns the official ``"train"`` or ``"test"`` split as a dataset of ``(PIL.Image, int)``
with no transform applied (the caller wraps it with the model's preprocess). Nothing is ever
downloaded: a missing dataset raises :class:`~taskmerge.errors.DataNotFoundError` naming the task,
the path looked at and how to get the data.

Class names, templates and splits follow the reference code (``nik-dim/tall_masks``, which defined
the 14/20-task benchmark; ``mlfoundations/task_vectors`` for the first 8; the TSV repository shares
the same dataset code). ``build_real_tasks("tsv")`` gives the TSV repository's three deviations:
EMNIST prompted as ``a photo of the number: "{}".`` and its images transposed upright (that repo
rotates by -90 degrees and flips horizontally), and STL10 prompted with the 18 CIFAR templates.

Where the data is looked for (``root`` is the data root, e.g. ``paths.data_root``; the first
layout found wins, then a Hugging Face copy, see below):

=============  ==============================================================================
Task           Layout under ``root`` (torchvision's own, unless said otherwise)
=============  ==============================================================================
Cars           ``stanford_cars/{devkit/{cars_meta,cars_train_annos}.mat, cars_train/,``
               ``cars_test/, cars_test_annos_withlabels.mat}`` (torchvision StanfordCars)
DTD            ``dtd/train/<class>/*.jpg``, ``dtd/val/<class>/*.jpg`` (prepared as in
               task_vectors issue #1: official train+val in ``train``, official test in ``val``;
               ``val`` serves as test; a folder named ``test`` is accepted instead)
EuroSAT        ``EuroSAT_splits/{train,val,test}/<Class>/*.jpg`` (prepared 21600/2700/2700 split;
               ``"val"`` is also accepted as a split here: tall_masks' EuroSATVal uses it)
GTSRB          ``gtsrb/GTSRB/Training/<00000..00042>/*.ppm``,
               ``gtsrb/GTSRB/Final_Test/Images/*.ppm``, ``gtsrb/GT-final_test.csv`` (torchvision)
MNIST          ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
RESISC45       ``resisc45/NWPU-RESISC45/<class>/*.jpg`` + ``resisc45/resisc45-{train,test}.txt``
               (file lists of the "In-domain representation learning" split)
SVHN           ``svhn/{train,test}_32x32.mat`` (also directly under ``root``)
SUN397         ``sun397/{train,val}/<letter>_<class>/*.jpg`` (prepared; ``val`` serves as test)
STL10          ``stl10/stl10_binary/{train,test}_{X,y}.bin`` (also ``stl10_binary`` under ``root``)
OxfordIIITPet  ``OxfordIIITPet/oxford-iiit-pet/{images,annotations}`` (train = ``trainval``)
Flowers102     ``flowers102/flowers-102/{jpg/, imagelabels.mat, setid.mat}``
CIFAR100       ``cifar-100-python/{train,test,meta}``
PCAM           ``PCAM/pcam/camelyonpatch_level_2_split_{train,test}_{x,y}.h5`` (needs h5py)
FER2013        ``FER2013/fer2013/{fer2013,icml_face_data}.csv`` (torchvision FER2013; test =
               PublicTest + PrivateTest; ``train.csv`` serves train only) or the Kaggle folders
               ``FER2013/fer2013/{train,test}/{angry,disgust,fear,happy,neutral,sad,surprise}/``
               (references read the HF copy ``Jeneral/fer-2013``, see below)
CIFAR10        ``cifar-10-batches-py/{data_batch_1..5,test_batch}``
Food101        ``food101/food-101/{images,meta}``
FashionMNIST   ``FashionMNIST/raw/{train,t10k}-*-ubyte[.gz]``
RenderedSST2   ``RenderedSST2/rendered-sst2/{train,test}/{negative,positive}/*.png``
EMNIST         ``EMNIST/raw/emnist-digits-{train,test}-{images-idx3,labels-idx1}-ubyte[.gz]``
               (the ``digits`` split, as tall_masks)
KMNIST         ``KMNIST/raw/{train,t10k}-*-ubyte[.gz]``
=============  ==============================================================================

The table gives the paths the references use. Where they nest torchvision's folder one level
deeper than plain torchvision would, both are accepted: ``<root>/FashionMNIST/FashionMNIST/raw``
(tall_masks passes ``~/data/FashionMNIST`` as torchvision root; likewise KMNIST and EMNIST) and
``<root>/FashionMNIST/raw`` (plain torchvision; MNIST's only form); ``<root>/PCAM/pcam`` and
``<root>/pcam``; the same for OxfordIIITPet, RenderedSST2, flowers102, food101, stl10, svhn and
FER2013. Folder-per-class layouts (DTD, EuroSAT, SUN397, RESISC45, GTSRB train) label images by
the sorted class-folder order, as ImageFolder does, and the number of class folders is checked.
MNIST-family ``.gz`` files are decompressed in place when only they exist. CIFAR, SVHN and STL10
are read from the same files torchvision reads, with the same result, but without its md5 check.

Hugging Face copies (FusionBench's ``tanganke/*`` and the others listed in ``HF_SOURCES``) are
used when no layout above is present. They are looked for, without network, in
``<root>/<org>/<name>/`` (``huggingface-cli download --repo-type dataset <org>/<name>
--local-dir <root>/<org>/<name>``: parquet or webdataset ``.tar`` files whose path names the split,
or a ``save_to_disk`` directory) and in the Hugging Face hub cache (``$HF_HUB_CACHE``, else
``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``). Labels are checked against the class count
and remapped where a copy orders classes differently (``clip-benchmark/wds_fer2013``). EMNIST has
no HF source: FusionBench's ``tanganke/emnist_letters`` is a different, 26-class task.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import pickle
import re
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from taskmerge.data import classnames as cn
from taskmerge.data.registry import STANDARD_TASKS, TaskSpec
from taskmerge.errors import DataNotFoundError

__all__ = [
    "CONVENTIONS",
    "EPOCHS",
    "HF_SOURCES",
    "REAL_TASKS",
    "TEMPLATES",
    "HFSource",
    "RealTaskLoader",
    "build_real_tasks",
    "locate_split",
]

#: Class-name / template / image conventions: ``tall_masks`` (default) or ``tsv``.
CONVENTIONS: tuple[str, ...] = ("tall_masks", "tsv")

#: Fine-tuning epochs of the reference protocol (METHODS.md).
EPOCHS: dict[str, int] = {
    "Cars": 35, "DTD": 76, "EuroSAT": 12, "GTSRB": 11, "MNIST": 5, "RESISC45": 15,
    "SUN397": 14, "SVHN": 4, "CIFAR10": 6, "CIFAR100": 6, "STL10": 60, "Food101": 4,
    "Flowers102": 147, "FER2013": 10, "PCAM": 1, "OxfordIIITPet": 82, "RenderedSST2": 39,
    "EMNIST": 2, "FashionMNIST": 5, "KMNIST": 5,
}  # fmt: skip

# ----------------------------------------------------------------------------------------------
# Prompt templates (tall_masks src/datasets/templates.py, as format strings)
# ----------------------------------------------------------------------------------------------

_CIFAR_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)
_A_THE_TEMPLATES = ("a photo of a {}.", "a photo of the {}.")
_NUMBER_TEMPLATES = ('a photo of the number: "{}".',)
_RESISC45_TEMPLATES = tuple(
    f"{source} {kind} of {article}{{}}."
    for article in ("", "a ", "the ")
    for source, kind in (
        ("satellite", "imagery"), ("aerial", "imagery"), ("satellite", "photo"),
        ("aerial", "photo"), ("satellite", "view"), ("aerial", "view"),
    )
)  # fmt: skip

#: Prompt templates per task (tall_masks convention), each a format string with one ``{}``.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "Cars": (
        "a photo of a {}.",
        "a photo of the {}.",
        "a photo of my {}.",
        "i love my {}!",
        "a photo of my dirty {}.",
        "a photo of my clean {}.",
        "a photo of my new {}.",
        "a photo of my old {}.",
    ),
    "DTD": (
        "a photo of a {} texture.",
        "a photo of a {} pattern.",
        "a photo of a {} thing.",
        "a photo of a {} object.",
        "a photo of the {} texture.",
        "a photo of the {} pattern.",
        "a photo of the {} thing.",
        "a photo of the {} object.",
    ),
    "EuroSAT": (
        "a centered satellite photo of {}.",
        "a centered satellite photo of a {}.",
        "a centered satellite photo of the {}.",
    ),
    "GTSRB": (
        'a zoomed in photo of a "{}" traffic sign.',
        'a centered photo of a "{}" traffic sign.',
        'a close up photo of a "{}" traffic sign.',
    ),
    "MNIST": _NUMBER_TEMPLATES,
    "RESISC45": _RESISC45_TEMPLATES,
    "SVHN": _NUMBER_TEMPLATES,
    "SUN397": _A_THE_TEMPLATES,
    "STL10": _A_THE_TEMPLATES,
    "OxfordIIITPet": ("a photo of a {}, a type of pet.",),
    "Flowers102": ("a photo of a {}, a type of flower.",),
    "CIFAR100": _CIFAR_TEMPLATES,
    "PCAM": ("this is a photo of {}",),
    "FER2013": (
        "a photo of a {} looking face.",
        "a photo of a face showing the emotion: {}.",
        "a photo of a face looking {}.",
        "a face that looks {}.",
        "they look {}.",
        "look at how {} they are.",
    ),
    "CIFAR10": _CIFAR_TEMPLATES,
    "Food101": ("a photo of {}, a type of food.",),
    "FashionMNIST": _A_THE_TEMPLATES,
    "RenderedSST2": ("a {} review of a movie.",),
    "EMNIST": ('a photo of the digit character: "{}".',),
    "KMNIST": ("a photo of the character {}.",),
}

_TSV_TEMPLATES: dict[str, tuple[str, ...]] = {
    "EMNIST": _NUMBER_TEMPLATES,
    "STL10": _CIFAR_TEMPLATES,
}

_CLASSNAMES: dict[str, tuple[str, ...]] = {
    "Cars": cn.CARS,
    "DTD": cn.DTD,
    "EuroSAT": cn.EUROSAT,
    "GTSRB": cn.GTSRB,
    "MNIST": cn.DIGITS,
    "RESISC45": cn.RESISC45,
    "SVHN": cn.DIGITS,
    "SUN397": cn.SUN397,
    "STL10": cn.STL10,
    "OxfordIIITPet": cn.OXFORD_PETS,
    "Flowers102": cn.FLOWERS102,
    "CIFAR100": cn.CIFAR100,
    "PCAM": cn.PCAM,
    "FER2013": cn.FER2013,
    "CIFAR10": cn.CIFAR10,
    "Food101": cn.FOOD101,
    "FashionMNIST": cn.FASHION_MNIST,
    "RenderedSST2": cn.RENDERED_SST2,
    "EMNIST": cn.DIGITS,
    "KMNIST": cn.KMNIST,
}

# ----------------------------------------------------------------------------------------------
# Hugging Face sources
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HFSource:
    """A Hugging Face dataset repository holding a copy of one task.

    Attributes:
        repo: ``"<org>/<name>"`` on the Hub.
        config: Sub-directory (dataset config) the files must lie under, if the repo has several.
        label_map: ``label_map[source_label]`` is the task's label, when the copy orders classes
            differently; ``None`` keeps labels (after checking the class count).
    """

    repo: str
    config: str | None = None
    label_map: tuple[int, ...] | None = None


#: Hugging Face copies per task, in order of preference (FusionBench's names first).
HF_SOURCES: dict[str, tuple[HFSource, ...]] = {
    "Cars": (HFSource("tanganke/stanford_cars"),),
    "DTD": (HFSource("tanganke/dtd"),),
    "EuroSAT": (HFSource("tanganke/eurosat"),),
    "GTSRB": (HFSource("tanganke/gtsrb"),),
    "MNIST": (HFSource("ylecun/mnist"),),
    "RESISC45": (HFSource("tanganke/resisc45"),),
    "SVHN": (HFSource("ufldl-stanford/svhn", config="cropped_digits"),),
    "SUN397": (HFSource("tanganke/sun397"),),
    "STL10": (HFSource("tanganke/stl10"),),
    "OxfordIIITPet": (HFSource("timm/oxford-iiit-pet"),),
    "Flowers102": (HFSource("dpdl-benchmark/oxford_flowers102"),),
    "CIFAR100": (HFSource("tanganke/cifar100"), HFSource("uoft-cs/cifar100")),
    "PCAM": (HFSource("1aurent/PatchCamelyon"),),
    # tall_masks reads Jeneral/fer-2013 (standard label order); FusionBench reads the
    # clip-benchmark copy, whose labels are alphabetical (angry, disgust, fear, happy,
    # neutral, sad, surprise): remapped to the standard order here.
    "FER2013": (
        HFSource("Jeneral/fer-2013"),
        HFSource("clip-benchmark/wds_fer2013", label_map=(0, 1, 2, 3, 6, 4, 5)),
    ),
    "CIFAR10": (HFSource("tanganke/cifar10"), HFSource("uoft-cs/cifar10")),
    "Food101": (HFSource("ethz/food101"),),
    "FashionMNIST": (HFSource("zalando-datasets/fashion_mnist"),),
    "RenderedSST2": (HFSource("nateraw/rendered-sst2"),),
    "EMNIST": (),
    "KMNIST": (HFSource("tanganke/kmnist"),),
}

_HF_SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "test": ("test", "validation", "valid"),
    "val": ("validation", "val", "valid"),
}
#: Other spellings of a task's class names (same label order) used to match an HF copy's names.
_HF_NAME_ALIASES: dict[str, tuple[tuple[str, ...], ...]] = {
    "EuroSAT": (cn.EUROSAT_FOLDERS,),
    "FER2013": (
        cn.FER2013_PLAIN,
        ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
    ),
}
_HF_IMAGE_KEYS = ("image", "img", "jpg", "png", "webp", "img_bytes")
_HF_LABEL_KEYS = ("fine_label", "label", "labels", "cls")

# ----------------------------------------------------------------------------------------------
# Datasets returned by the loaders (module level, so DataLoader workers can pickle them)
# ----------------------------------------------------------------------------------------------


class ArrayImageDataset(Dataset):
    """Images held in one uint8 array (N, H, W[, C]) with integer labels."""

    def __init__(self, images: np.ndarray, labels: Sequence[int]) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = np.ascontiguousarray(images)
        self.targets = [int(label) for label in labels]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        return Image.fromarray(self.images[index]), self.targets[index]


class FileImageDataset(Dataset):
    """Image files with integer labels, opened with PIL (converted to ``mode`` if given)."""

    def __init__(self, samples: Sequence[tuple[str, int]], mode: str | None = "RGB") -> None:
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.mode = mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as image:
            image.load()
            return (image.convert(self.mode) if self.mode else image.copy()), label


class HFImageDataset(Dataset):
    """Rows of a Hugging Face ``datasets.Dataset`` as ``(PIL.Image, int)``."""

    def __init__(
        self, table: Any, image_key: str, label_key: str, label_map: Sequence[int] | None
    ) -> None:
        self.table = table.select_columns([image_key, label_key])
        self.image_key = image_key
        self.label_key = label_key
        self.label_map = tuple(label_map) if label_map is not None else None

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        row = self.table[int(index)]
        label = int(row[self.label_key])
        if self.label_map is not None:
            label = self.label_map[label]
        return _to_pil(row[self.image_key]), label


class TransposedImages(Dataset):
    """Wraps a dataset and transposes every image (EMNIST stored column-major -> upright)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        image, label = self.base[index]
        return image.transpose(Image.Transpose.TRANSPOSE), label


def _to_pil(value: Any) -> Any:
    """A PIL image from whatever an HF column holds (PIL image, bytes, dict with bytes, array)."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            value = value["bytes"]
        elif value.get("path"):
            return Image.open(value["path"])
    if isinstance(value, (bytes, bytearray)):
        return Image.open(io.BytesIO(value))
    return Image.fromarray(np.asarray(value, dtype=np.uint8))


# ----------------------------------------------------------------------------------------------
# Native (torchvision / prepared) layouts
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
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


def _emnist_files(split: str) -> tuple[str, ...]:
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
            with gzip.open(source, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except OSError as error:
            raise DataNotFoundError(
                f"{task}: {source} could not be decompressed to {target} ({error}); "
                f"gunzip the files in {raw} yourself"
            ) from error


def _mnist_layout(
    class_name: str, files: Callable[[str], tuple[str, ...]], description: str
) -> _Layout:
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

    return _Layout(description, find, open_)


def _mnist_all_files(_split: str) -> tuple[str, ...]:
    # torchvision checks all four files whatever the split
    return _MNIST_FILES


# -- CIFAR, SVHN, STL10: same files torchvision reads, no md5 check -------------------------------


def _cifar_layout(folder: str, files: dict[str, tuple[str, ...]], label_key: str) -> _Layout:
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
    return _Layout(f"{folder}/{{{shown}}}", find, open_)


def _svhn_layout() -> _Layout:
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

    return _Layout("svhn/{train,test}_32x32.mat", find, open_)


def _stl10_layout() -> _Layout:
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

    return _Layout("stl10/stl10_binary/{train,test}_{X,y}.bin", find, open_)


# -- Folder-per-class layouts -------------------------------------------------------------------

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _class_folders(directory: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())


def _check_folders(task: str, directory: Path, folders: list[str], expected: Sequence[str]) -> None:
    """Fail on a wrong class count; warn when folder names differ from the known ones."""
    if len(folders) != len(expected):
        raise DataNotFoundError(
            f"{task}: {directory} has {len(folders)} class folders, expected {len(expected)}; "
            f"the copy is incomplete or not laid out as described in taskmerge.data.real_tasks"
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


def _split_folder_layout(
    task: str,
    top: str,
    folder_for_split: dict[str, tuple[str, ...]],
    expected_folders: Sequence[str],
    description: str,
) -> _Layout:
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

    return _Layout(description, find, open_)


def _resisc45_layout() -> _Layout:
    def find(root: Path, split: str) -> Path | None:
        base = root / "resisc45"
        ok = (base / "NWPU-RESISC45").is_dir() and (base / f"resisc45-{split}.txt").is_file()
        return base if ok else None

    def open_(base: Path, split: str) -> Dataset:
        names = (base / f"resisc45-{split}.txt").read_text().split()
        wanted = {name.strip() for name in names}
        directory = base / "NWPU-RESISC45"
        folders = _class_folders(directory)
        _check_folders("RESISC45", directory, folders, [c.replace(" ", "_") for c in cn.RESISC45])
        samples = _folder_samples(
            directory,
            {name: i for i, name in enumerate(folders)},
            keep=lambda path: os.path.basename(path) in wanted,
        )
        return FileImageDataset(samples)

    return _Layout(
        "resisc45/NWPU-RESISC45/<class>/*.jpg + resisc45/resisc45-{train,test}.txt", find, open_
    )


# -- FER2013 ------------------------------------------------------------------------------------

#: Kaggle FER2013 image-folder names -> standard FER2013 label (the references' order).
_FER_FOLDER_LABELS = {
    "angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6,
}  # fmt: skip


def _fer_csv_layout() -> _Layout:
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

    return _Layout("FER2013/fer2013/{fer2013,icml_face_data}.csv", find, open_)


def _fer_folder_layout() -> _Layout:
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

    return _Layout("FER2013/fer2013/{train,test}/<emotion>/*.jpg", find, open_)


# -- torchvision datasets with their own directory layout ---------------------------------------


def _torchvision_layout(
    task: str,
    class_name: str,
    subdirs: tuple[str, ...],
    required: Callable[[Path, str], Sequence[Path]],
    description: str,
    split_arg: Callable[[str], dict[str, Any]],
) -> _Layout:
    """A torchvision dataset rooted at ``root/<subdir>`` whose ``required`` paths exist."""

    def find(root: Path, split: str) -> Path | None:
        return _first_base(root, subdirs, lambda b: all(p.exists() for p in required(b, split)))

    def open_(base: Path, split: str) -> Dataset:
        import torchvision.datasets as tvd

        try:
            return getattr(tvd, class_name)(str(base), download=False, **split_arg(split))
        except RuntimeError as error:
            raise _torchvision_error(task, base, error) from error

    return _Layout(description, find, open_)


def _split_kw(mapping: dict[str, str] | None = None) -> Callable[[str], dict[str, Any]]:
    return lambda split: {"split": (mapping or {}).get(split, split)}


def _cars_required(base: Path, split: str) -> list[Path]:
    folder = base / "stanford_cars"
    devkit = folder / "devkit"
    if split == "train":
        return [devkit / "cars_meta.mat", devkit / "cars_train_annos.mat", folder / "cars_train"]
    return [
        devkit / "cars_meta.mat",
        folder / "cars_test_annos_withlabels.mat",
        folder / "cars_test",
    ]


def _gtsrb_required(base: Path, split: str) -> list[Path]:
    folder = base / "gtsrb"
    if split == "train":
        return [folder / "GTSRB" / "Training"]
    return [folder / "GTSRB" / "Final_Test" / "Images", folder / "GT-final_test.csv"]


def _pcam_required(base: Path, split: str) -> list[Path]:
    stem = f"camelyonpatch_level_2_split_{split}"
    return [base / "pcam" / f"{stem}_x.h5", base / "pcam" / f"{stem}_y.h5"]


def _pets_required(base: Path, split: str) -> list[Path]:
    folder = base / "oxford-iiit-pet"
    name = "trainval" if split == "train" else "test"
    return [folder / "images", folder / "annotations" / f"{name}.txt"]


def _flowers_required(base: Path, _split: str) -> list[Path]:
    folder = base / "flowers-102"
    return [folder / "jpg", folder / "imagelabels.mat", folder / "setid.mat"]


def _food_required(base: Path, split: str) -> list[Path]:
    folder = base / "food-101"
    return [folder / "images", folder / "meta" / f"{split}.json"]


def _sst2_required(base: Path, split: str) -> list[Path]:
    folder = base / "rendered-sst2" / split
    return [folder / "negative", folder / "positive"]


def _guarded(layout: _Layout, guard: Callable[[Path, str], None]) -> _Layout:
    """The same layout, running ``guard(base, split)`` (which may raise) before opening."""

    def open_(base: Path, split: str) -> Dataset:
        guard(base, split)
        return layout.open(base, split)

    return _Layout(layout.description, layout.find, open_)


def _need_h5py(_base: Path, _split: str) -> None:
    """PCAM needs h5py; say so clearly instead of torchvision's RuntimeError."""
    try:
        import h5py  # noqa: F401
    except ImportError as error:
        raise ImportError("PCAM needs h5py to read its .h5 files: pip install h5py") from error


def _gtsrb_all_classes(base: Path, split: str) -> None:
    """GTSRB train labels are the sorted class-folder indices: all 43 folders must be there."""
    if split == "train":
        directory = base / "gtsrb" / "GTSRB" / "Training"
        _check_folders(
            "GTSRB", directory, _class_folders(directory), [f"{i:05d}" for i in range(43)]
        )


@functools.lru_cache(maxsize=1)
def _native_layouts() -> dict[str, tuple[_Layout, ...]]:
    """Every task's native layouts, in the order they are tried."""
    tv = _torchvision_layout
    return {
        "Cars": (
            tv(
                "Cars",
                "StanfordCars",
                ("",),
                _cars_required,
                "stanford_cars/{devkit,cars_train,cars_test,cars_test_annos_withlabels.mat}",
                _split_kw(),
            ),
        ),
        "DTD": (
            _split_folder_layout(
                "DTD",
                "dtd",
                {"train": ("train",), "test": ("val", "test")},
                cn.DTD,
                "dtd/{train,val}/<class>/*.jpg",
            ),
        ),
        "EuroSAT": (
            _split_folder_layout(
                "EuroSAT",
                "EuroSAT_splits",
                {"train": ("train",), "val": ("val",), "test": ("test",)},
                cn.EUROSAT_FOLDERS,
                "EuroSAT_splits/{train,val,test}/<Class>/*.jpg",
            ),
        ),
        "GTSRB": (
            _guarded(
                tv(
                    "GTSRB",
                    "GTSRB",
                    ("",),
                    _gtsrb_required,
                    "gtsrb/GTSRB/{Training,Final_Test/Images} + gtsrb/GT-final_test.csv",
                    _split_kw(),
                ),
                _gtsrb_all_classes,
            ),
        ),
        "MNIST": (
            _mnist_layout(
                "MNIST",
                _mnist_all_files,
                "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
            ),
        ),
        "RESISC45": (_resisc45_layout(),),
        "SVHN": (_svhn_layout(),),
        "SUN397": (
            _split_folder_layout(
                "SUN397",
                "sun397",
                {"train": ("train",), "test": ("val", "test")},
                [f"{c[0]}_{c.replace(' ', '_')}" for c in cn.SUN397],
                "sun397/{train,val}/<letter>_<class>/*.jpg",
            ),
        ),
        "STL10": (_stl10_layout(),),
        "OxfordIIITPet": (
            tv(
                "OxfordIIITPet",
                "OxfordIIITPet",
                ("OxfordIIITPet", ""),
                _pets_required,
                "OxfordIIITPet/oxford-iiit-pet/{images,annotations}",
                _split_kw({"train": "trainval"}),
            ),
        ),
        "Flowers102": (
            tv(
                "Flowers102",
                "Flowers102",
                ("flowers102", ""),
                _flowers_required,
                "flowers102/flowers-102/{jpg,imagelabels.mat,setid.mat}",
                _split_kw(),
            ),
        ),
        "CIFAR100": (
            _cifar_layout(
                "cifar-100-python", {"train": ("train",), "test": ("test",)}, "fine_labels"
            ),
        ),
        "PCAM": (
            _guarded(
                tv(
                    "PCAM",
                    "PCAM",
                    ("PCAM", ""),
                    _pcam_required,
                    "PCAM/pcam/camelyonpatch_level_2_split_{train,test}_{x,y}.h5",
                    _split_kw(),
                ),
                _need_h5py,
            ),
        ),
        "FER2013": (_fer_csv_layout(), _fer_folder_layout()),
        "CIFAR10": (
            _cifar_layout(
                "cifar-10-batches-py",
                {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
                "labels",
            ),
        ),
        "Food101": (
            tv(
                "Food101",
                "Food101",
                ("food101", ""),
                _food_required,
                "food101/food-101/{images,meta}",
                _split_kw(),
            ),
        ),
        "FashionMNIST": (
            _mnist_layout(
                "FashionMNIST",
                _mnist_all_files,
                "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
            ),
        ),
        "RenderedSST2": (
            tv(
                "RenderedSST2",
                "RenderedSST2",
                ("RenderedSST2", ""),
                _sst2_required,
                "RenderedSST2/rendered-sst2/{train,test}/{negative,positive}",
                _split_kw(),
            ),
        ),
        "EMNIST": (
            _mnist_layout(
                "EMNIST",
                _emnist_files,
                "EMNIST/raw/emnist-digits-{train,test}-{images-idx3,labels-idx1}-ubyte[.gz]",
            ),
        ),
        "KMNIST": (
            _mnist_layout(
                "KMNIST",
                _mnist_all_files,
                "KMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
            ),
        ),
    }


#: How to get each dataset (the end of the DataNotFoundError message).
_HINTS: dict[str, str] = {
    "Cars": "torchvision can no longer download it: get the Kaggle copy laid out for torchvision "
    "(mlfoundations/task_vectors issue #1)",
    "DTD": "download dtd-r1.0.1 and put official train+val images in dtd/train/<class>, test "
    "images in dtd/val/<class> (mlfoundations/task_vectors issue #1)",
    "EuroSAT": "split EuroSAT into EuroSAT_splits/{train,val,test}/<Class> "
    "(mlfoundations/task_vectors issue #1)",
    "RESISC45": "download NWPU-RESISC45 and the resisc45-{train,val,test}.txt split lists "
    "(google-research remote_sensing_representations)",
    "SUN397": "download SUN397 and build sun397/{train,val}/<letter>_<class> from the "
    "Training_01/Testing_01 lists (mlfoundations/task_vectors issue #1)",
    "FER2013": "get fer2013.csv (Kaggle FER2013 challenge) into FER2013/fer2013/",
    "PCAM": "download on a machine with network with torchvision.datasets.PCAM('<root>/PCAM', "
    "split=..., download=True)",
}


def _hint(task: str, root: Path) -> str:
    if task in _HINTS:
        return _HINTS[task]
    sub = {"SVHN": "svhn", "STL10": "stl10", "Flowers102": "flowers102", "Food101": "food101",
           "OxfordIIITPet": "OxfordIIITPet", "RenderedSST2": "RenderedSST2"}.get(task)  # fmt: skip
    tv_root = root / sub if sub else root
    extra = ", split='digits'" if task == "EMNIST" else ""
    return (
        f"download it on a machine with network with torchvision.datasets.{task}"
        f"('{tv_root}'{extra}, download=True) and copy it here"
    )


# ----------------------------------------------------------------------------------------------
# Hugging Face loading (local files only)
# ----------------------------------------------------------------------------------------------


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return Path(hf_home).expanduser() / "hub"


def _hf_dirs(root: Path, repo: str) -> list[Path]:
    """Local directories that may hold a copy of ``repo``: ``root/<org>/<name>``, hub caches."""
    org, name = repo.split("/")
    dirs = [root / org / name]
    for cache in (root, _hub_cache()):
        snapshots = cache / f"datasets--{org}--{name}" / "snapshots"
        if snapshots.is_dir():
            dirs.extend(sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True))
    return [d for d in dirs if d.is_dir()]


def _names_split(relative: Path, split: str) -> bool:
    if split in relative.parts[:-1]:
        return True
    stem = relative.name.split(".")[0]
    return stem == split or bool(re.match(rf"{re.escape(split)}[-_.]", relative.name))


def _hf_files(directory: Path, split: str, config: str | None) -> tuple[str, list[Path]] | None:
    """(builder, files) of one split in a downloaded HF repo, or None."""
    for builder, pattern in (("parquet", "*.parquet"), ("webdataset", "*.tar")):
        files = []
        for path in sorted(directory.rglob(pattern)):
            relative = path.relative_to(directory)
            if config is not None and config not in relative.parts[:-1]:
                continue
            if _names_split(relative, split):
                files.append(path)
        if files:
            return builder, files
    return None


def _open_hf_table(directory: Path, source: HFSource, split: str) -> Any | None:
    """The split as a ``datasets.Dataset`` from ``directory``, or None if it is not there."""
    import datasets

    if (directory / "dataset_dict.json").is_file():
        saved = datasets.load_from_disk(str(directory))
        name = next((n for n in _HF_SPLIT_NAMES[split] if n in saved), None)
        return saved[name] if name else None
    for name in _HF_SPLIT_NAMES[split]:
        found = _hf_files(directory, name, source.config)
        if found is not None:
            builder, files = found
            if builder == "parquet":
                return datasets.Dataset.from_parquet([str(f) for f in files], split=name)
            return _read_packaged(builder, files, name)
    return None


def _read_packaged(builder: str, files: Sequence[Path], split: str) -> Any:
    """Local files through a packaged ``datasets`` builder, without ``load_dataset``.

    ``load_dataset`` pings the Hub to count downloads even for local files; building the
    packaged builder directly touches only the files (and the ``datasets`` cache).
    """
    from datasets.load import import_main_class
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    module_path, module_hash = _PACKAGED_DATASETS_MODULES[builder]
    reader = import_main_class(module_path)(
        data_files={split: [str(f) for f in files]}, hash=module_hash
    )
    reader.download_and_prepare()
    return reader.as_dataset(split=split)


def _normalise(name: str) -> str:
    return " ".join(re.sub(r"[_\-/]", " ", str(name)).lower().split())


def _hf_label_map(
    task: str, table: Any, label_key: str, source: HFSource, where: Path
) -> tuple[int, ...] | None:
    """Labels of the copy -> task labels (None: identity), after checking the class count."""
    if source.label_map is not None:
        return source.label_map
    names = getattr(table.features[label_key], "names", None)
    expected = _CLASSNAMES[task]
    if names is None:
        return None
    if len(names) != len(expected):
        raise DataNotFoundError(
            f"{task}: the Hugging Face copy at {where} has {len(names)} classes, expected "
            f"{len(expected)}"
        )
    theirs = [_normalise(n) for n in names]
    for candidate in (expected, *_HF_NAME_ALIASES.get(task, ())):
        ours = {_normalise(n): i for i, n in enumerate(candidate)}
        if set(theirs) == set(ours):
            remap = tuple(ours[n] for n in theirs)
            return None if remap == tuple(range(len(remap))) else remap
    return None  # names not comparable: keep the copy's labels


def _pick_key(table: Any, preferred: Sequence[str], kind: str, task: str, where: Path) -> str:
    columns = list(table.column_names)
    if kind == "image":
        from datasets import Image as HFImage

        typed = [c for c in columns if isinstance(table.features[c], HFImage)]
        if typed:
            return typed[0]
    for key in preferred:
        if key in columns:
            return key
    raise DataNotFoundError(f"{task}: no {kind} column in the Hugging Face copy at {where}")


def _load_hf(task: str, root: Path, split: str) -> Dataset | None:
    """The split from the first local Hugging Face copy of the task, or None."""
    for source in HF_SOURCES[task]:
        for directory in _hf_dirs(root, source.repo):
            table = _open_hf_table(directory, source, split)
            if table is None:
                continue
            image_key = _pick_key(table, _HF_IMAGE_KEYS, "image", task, directory)
            label_key = _pick_key(table, _HF_LABEL_KEYS, "label", task, directory)
            label_map = _hf_label_map(task, table, label_key, source, directory)
            return HFImageDataset(table, image_key, label_key, label_map)
    return None


# ----------------------------------------------------------------------------------------------
# Loader and task specs
# ----------------------------------------------------------------------------------------------


class RealTaskLoader:
    """``load_split`` of one real task: native layout first, then a local Hugging Face copy.

    Args:
        task: Task name (e.g. ``"MNIST"``).
        upright: Transpose every image (the TSV convention for EMNIST).
    """

    def __init__(self, task: str, upright: bool = False) -> None:
        if task not in _CLASSNAMES:
            raise KeyError(f"unknown real task {task!r}; known: {', '.join(STANDARD_TASKS)}")
        self.task = task
        self.upright = upright
        self.splits: tuple[str, ...] = (
            ("train", "val", "test") if task == "EuroSAT" else ("train", "test")
        )

    def __repr__(self) -> str:
        return f"RealTaskLoader({self.task!r}, upright={self.upright})"

    def __call__(self, root: Path | str, split: str) -> Dataset:
        """Read ``split`` of the task under ``root``.

        Raises:
            ValueError: for a split the task does not have.
            DataNotFoundError: when neither a native layout nor a Hugging Face copy is found.
        """
        root = self._check(root, split)
        for layout in _native_layouts()[self.task]:
            found = layout.find(root, split)
            if found is not None:
                return self._finish(layout.open(found, split))
        dataset = _load_hf(self.task, root, split)
        if dataset is not None:
            return self._finish(dataset)
        raise self.not_found(root)

    def locate(self, root: Path | str, split: str) -> str:
        """Where ``split`` would be read from, without reading it.

        Raises:
            DataNotFoundError: as :meth:`__call__`.
        """
        root = self._check(root, split)
        for layout in _native_layouts()[self.task]:
            found = layout.find(root, split)
            if found is not None:
                return str(found)
        for source in HF_SOURCES[self.task]:
            for directory in _hf_dirs(root, source.repo):
                if (directory / "dataset_dict.json").is_file() or any(
                    _hf_files(directory, name, source.config) for name in _HF_SPLIT_NAMES[split]
                ):
                    return f"{directory} (Hugging Face {source.repo})"
        raise self.not_found(root)

    def not_found(self, root: Path) -> DataNotFoundError:
        """The one-line error for a task missing under ``root``."""
        layouts = " or ".join(
            f"{root}/{layout.description}" for layout in _native_layouts()[self.task]
        )
        repos = [s.repo for s in HF_SOURCES[self.task]]
        hf = (
            f" (or a Hugging Face copy of {' / '.join(repos)} in {root}/<org>/<name> or the HF "
            f"hub cache)"
            if repos
            else ""
        )
        return DataNotFoundError(
            f"{self.task} not found under {root}: expected {layouts}{hf}; "
            f"{_hint(self.task, root)}, or set paths.data_root"
        )

    def _check(self, root: Path | str, split: str) -> Path:
        if split not in self.splits:
            raise ValueError(f"{self.task}: split must be one of {self.splits}, got {split!r}")
        return Path(root).expanduser()

    def _finish(self, dataset: Dataset) -> Dataset:
        return TransposedImages(dataset) if self.upright else dataset


def build_real_tasks(convention: str = "tall_masks") -> dict[str, TaskSpec]:
    """All 20 real tasks, in the standard order.

    Args:
        convention: ``"tall_masks"`` (default; nik-dim/tall_masks, also task_vectors for the
            first 8 tasks) or ``"tsv"`` (AntoAndGar/task_singular_vectors: EMNIST prompted
            as numbers with upright images, STL10 with the 18 CIFAR templates).

    Raises:
        ValueError: for an unknown convention.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    overrides = _TSV_TEMPLATES if convention == "tsv" else {}
    return {
        name: TaskSpec(
            name=name,
            classnames=_CLASSNAMES[name],
            templates=overrides.get(name, TEMPLATES[name]),
            epochs=EPOCHS[name],
            load_split=RealTaskLoader(name, upright=convention == "tsv" and name == "EMNIST"),
        )
        for name in STANDARD_TASKS
    }


def locate_split(task: str, root: Path | str, split: str) -> str:
    """Where ``split`` of ``task`` would be read from under ``root``, without reading it.

    Raises:
        DataNotFoundError: when the task's data is not there.
    """
    return RealTaskLoader(task).locate(root, split)


#: The 20 real tasks with the tall_masks conventions.
REAL_TASKS: dict[str, TaskSpec] = build_real_tasks()
