"""Task specifications and the ordered task lists (8 / 14 / 20 are prefixes of one list)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

#: The standard benchmark order; the 8, 14 and 20-task sets are its prefixes.
STANDARD_TASKS: tuple[str, ...] = (
    "Cars",
    "DTD",
    "EuroSAT",
    "GTSRB",
    "MNIST",
    "RESISC45",
    "SVHN",
    "SUN397",
    "STL10",
    "OxfordIIITPet",
    "Flowers102",
    "CIFAR100",
    "PCAM",
    "FER2013",
    "CIFAR10",
    "Food101",
    "FashionMNIST",
    "RenderedSST2",
    "EMNIST",
    "KMNIST",
)

#: Loader signature: (data root, split in {"train", "test"}) -> dataset of (PIL image, int label).
SplitLoader = Callable[[Path, str], Dataset]


@dataclass(frozen=True)
class TaskSpec:
    """Everything the pipeline needs to know about one image-classification task.

    Attributes:
        name: Task name as used in configs and results (e.g. ``"MNIST"``).
        classnames: Class names in label order, used to build the zero-shot head.
        templates: Prompt templates, each a format string with one ``{}`` for the class name.
        epochs: Fine-tuning epochs of the reference protocol.
        load_split: Reads the official ``"train"`` or ``"test"`` split from a data root.
        own_val: Val is the dataset's own ``"val"`` split and training uses the whole train
            split (EuroSAT: ``nik-dim/tall_masks`` ``src/datasets/eurosat.py`` ``EuroSATVal``),
            instead of 10% carved out of train.
    """

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    epochs: int
    load_split: SplitLoader
    own_val: bool = False

    def prompts(self, classname: str) -> list[str]:
        """All template prompts for one class name."""
        return [template.format(classname) for template in self.templates]
