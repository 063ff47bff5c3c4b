"""The 20 real benchmark tasks, each declared once: one :class:`TaskEntry` per task.

An entry holds everything about its task: class names (constants of
:mod:`taskmerge.data.classnames`), prompt templates (and the TSV repository's, where they differ),
fine-tuning epochs, the native on-disk layouts in the order they are tried, the Hugging Face
repositories holding a copy, and how to get the data. :data:`ENTRIES` lists them in the standard
order (the 8, 14 and 20-task benchmarks are its prefixes; it equals
``taskmerge.data.spec.STANDARD_TASKS``, which a test checks). Adding a task is adding one entry
(and its class names to :mod:`taskmerge.data.classnames`); to make it part of the standard order,
its name also goes into ``STANDARD_TASKS``. This module is longer than the others on purpose: it is
one concept, the table of tasks.

Class names, templates, epochs and splits follow the reference code (``nik-dim/tall_masks``, which
defined the 14/20-task benchmark; ``mlfoundations/task_vectors`` for the first 8; the TSV
repository ``AntoAndGar/task_singular_vectors`` shares the same dataset code). The epochs are those
of tall_masks' ``finetune.py``. The TSV convention deviates for two tasks: EMNIST is prompted as
``a photo of the number: "{}".`` with its images transposed upright (that repository rotates by -90
degrees and flips horizontally), and STL10 is prompted with the 18 CIFAR templates.

Where the data is looked for (``root`` is the data root, e.g. ``paths.data``; the first
layout found wins, then a Hugging Face copy, see :mod:`taskmerge.data.hf_copies`; how layouts are
read is in :mod:`taskmerge.data.layouts`):

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
               (references read the HF copy ``Jeneral/fer-2013``)
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
``<root>/FashionMNIST/raw`` (plain torchvision; the same two forms for MNIST); ``<root>/PCAM/pcam``
and ``<root>/pcam``; the same for OxfordIIITPet, RenderedSST2, flowers102, food101, stl10, svhn and
FER2013. EMNIST has no Hugging Face source: FusionBench's ``tanganke/emnist_letters`` is a
different, 26-class task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskmerge.data import classnames as cn
from taskmerge.data.hf_copies import HFSource
from taskmerge.data.layouts import (
    Layout,
    cars_required,
    cifar_layout,
    emnist_files,
    fer_csv_layout,
    fer_folder_layout,
    flowers_required,
    food_required,
    gtsrb_all_classes,
    gtsrb_required,
    guarded,
    mnist_all_files,
    mnist_layout,
    need_h5py,
    pcam_required,
    pets_required,
    resisc45_layout,
    split_folder_layout,
    split_kw,
    sst2_required,
    stl10_layout,
    svhn_layout,
)
from taskmerge.data.layouts import torchvision_layout as tv

__all__ = ["ENTRIES", "ENTRY_BY_NAME", "TaskEntry", "TorchvisionHint"]


@dataclass(frozen=True)
class TorchvisionHint:
    """How to get a dataset torchvision can download: the call to run where there is network.

    Also the recipe ``prepare_data.py`` downloads with.

    Attributes:
        class_name: ``torchvision.datasets`` class (e.g. ``"SVHN"``).
        subdir: Folder under the data root that torchvision's root is (``""``: the root itself).
        kwargs: Further arguments (e.g. ``(("split", "digits"),)`` for EMNIST).
        train_flag: The class takes ``train=True/False`` (MNIST family, CIFAR) instead of
            ``split=``.
        train_split: The ``split`` value of the training set (``"trainval"`` for the pets).
    """

    class_name: str
    subdir: str = ""
    kwargs: tuple[tuple[str, Any], ...] = ()
    train_flag: bool = False
    train_split: str = "train"

    def __call__(self, root: Path) -> str:
        tv_root = root / self.subdir if self.subdir else root
        extra = "".join(f", {key}={value!r}" for key, value in self.kwargs)
        return (
            f"download it on a machine with network with torchvision.datasets.{self.class_name}"
            f"('{tv_root}'{extra}, download=True) and copy it here"
        )

    def arguments(self, split: str) -> dict[str, Any]:
        """The split arguments of the torchvision class for ``train`` or ``test``."""
        if self.train_flag:
            return {"train": split == "train", **dict(self.kwargs)}
        return {"split": self.train_split if split == "train" else split, **dict(self.kwargs)}


@dataclass(frozen=True)
class TaskEntry:
    """Everything about one real task.

    Attributes:
        name: Task name as used in configs and results.
        classnames: Class names in label order.
        templates: Prompt templates (tall_masks convention), each with one ``{}``.
        epochs: Fine-tuning epochs.
        layouts: Native on-disk layouts, in the order they are tried.
        hint: How to get the data (the end of the not-found error): a sentence, or a function of
            the data root returning one.
        hf_sources: Hugging Face copies, in order of preference (FusionBench's first).
        hf_name_aliases: Other spellings of ``classnames`` (same label order) that a Hugging Face
            copy's label names may use.
        tsv_templates: The TSV repository's templates, where they differ from ``templates``.
        tsv_upright: Whether the TSV convention transposes the images upright.
        splits: The splits ``load_split`` accepts.
        sizes: Samples per split of the official data (``train`` before the Val split), as the
            reference splits define them; ``prepare_data.py status`` checks them.
    """

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    epochs: int
    layouts: tuple[Layout, ...]
    hint: str | Callable[[Path], str]
    hf_sources: tuple[HFSource, ...] = ()
    hf_name_aliases: tuple[tuple[str, ...], ...] = ()
    tsv_templates: tuple[str, ...] | None = None
    tsv_upright: bool = False
    splits: tuple[str, ...] = ("train", "test")
    sizes: Mapping[str, int] = field(default_factory=dict)

    def how_to_get(self, root: Path) -> str:
        """The hint for a dataset missing under ``root``."""
        return self.hint if isinstance(self.hint, str) else self.hint(root)


# Prompt templates shared by several tasks (tall_masks src/datasets/templates.py).
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

#: The real tasks in the standard order.
ENTRIES: tuple[TaskEntry, ...] = (
    TaskEntry(
        name="Cars",
        classnames=cn.CARS,
        templates=(
            "a photo of a {}.",
            "a photo of the {}.",
            "a photo of my {}.",
            "i love my {}!",
            "a photo of my dirty {}.",
            "a photo of my clean {}.",
            "a photo of my new {}.",
            "a photo of my old {}.",
        ),
        epochs=35,
        sizes={"train": 8144, "test": 8041},
        layouts=(
            tv(
                "Cars",
                "StanfordCars",
                ("",),
                cars_required,
                "stanford_cars/{devkit,cars_train,cars_test,cars_test_annos_withlabels.mat}",
                split_kw(),
            ),
        ),
        hint="torchvision can no longer download it: get the Kaggle copy laid out for torchvision "
        "(mlfoundations/task_vectors issue #1)",
        hf_sources=(HFSource("tanganke/stanford_cars"),),
    ),
    TaskEntry(
        name="DTD",
        classnames=cn.DTD,
        templates=(
            "a photo of a {} texture.",
            "a photo of a {} pattern.",
            "a photo of a {} thing.",
            "a photo of a {} object.",
            "a photo of the {} texture.",
            "a photo of the {} pattern.",
            "a photo of the {} thing.",
            "a photo of the {} object.",
        ),
        epochs=76,
        sizes={"train": 3760, "test": 1880},
        layouts=(
            split_folder_layout(
                "DTD",
                "dtd",
                {"train": ("train",), "test": ("val", "test")},
                cn.DTD,
                "dtd/{train,val}/<class>/*.jpg",
            ),
        ),
        hint="download dtd-r1.0.1 and put official train+val images in dtd/train/<class>, test "
        "images in dtd/val/<class> (mlfoundations/task_vectors issue #1)",
        hf_sources=(HFSource("tanganke/dtd"),),
    ),
    TaskEntry(
        name="EuroSAT",
        classnames=cn.EUROSAT,
        templates=(
            "a centered satellite photo of {}.",
            "a centered satellite photo of a {}.",
            "a centered satellite photo of the {}.",
        ),
        epochs=12,
        sizes={"train": 21600, "test": 2700},
        layouts=(
            split_folder_layout(
                "EuroSAT",
                "EuroSAT_splits",
                {"train": ("train",), "val": ("val",), "test": ("test",)},
                cn.EUROSAT_FOLDERS,
                "EuroSAT_splits/{train,val,test}/<Class>/*.jpg",
            ),
        ),
        hint="split EuroSAT into EuroSAT_splits/{train,val,test}/<Class> "
        "(mlfoundations/task_vectors issue #1)",
        hf_sources=(HFSource("tanganke/eurosat"),),
        hf_name_aliases=(cn.EUROSAT_FOLDERS,),
        splits=("train", "val", "test"),  # tall_masks' EuroSATVal reads the prepared val split
    ),
    TaskEntry(
        name="GTSRB",
        classnames=cn.GTSRB,
        templates=(
            'a zoomed in photo of a "{}" traffic sign.',
            'a centered photo of a "{}" traffic sign.',
            'a close up photo of a "{}" traffic sign.',
        ),
        epochs=11,
        sizes={"train": 26640, "test": 12630},
        layouts=(
            guarded(
                tv(
                    "GTSRB",
                    "GTSRB",
                    ("",),
                    gtsrb_required,
                    "gtsrb/GTSRB/{Training,Final_Test/Images} + gtsrb/GT-final_test.csv",
                    split_kw(),
                ),
                gtsrb_all_classes,
            ),
        ),
        hint=TorchvisionHint("GTSRB"),
        hf_sources=(HFSource("tanganke/gtsrb"),),
    ),
    TaskEntry(
        name="MNIST",
        classnames=cn.DIGITS,
        templates=_NUMBER_TEMPLATES,
        epochs=5,
        sizes={"train": 60000, "test": 10000},
        layouts=(
            mnist_layout(
                "MNIST",
                mnist_all_files,
                "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
            ),
        ),
        hint=TorchvisionHint("MNIST", train_flag=True),
        hf_sources=(HFSource("ylecun/mnist"),),
    ),
    TaskEntry(
        name="RESISC45",
        classnames=cn.RESISC45,
        templates=tuple(
            f"{source} {kind} of {article}{{}}."
            for article in ("", "a ", "the ")
            for source, kind in (
                ("satellite", "imagery"),
                ("aerial", "imagery"),
                ("satellite", "photo"),
                ("aerial", "photo"),
                ("satellite", "view"),
                ("aerial", "view"),
            )
        ),  # fmt: skip
        epochs=15,
        sizes={"train": 18900, "test": 6300},
        layouts=(resisc45_layout([c.replace(" ", "_") for c in cn.RESISC45]),),
        hint="download NWPU-RESISC45 and the resisc45-{train,val,test}.txt split lists "
        "(google-research remote_sensing_representations)",
        hf_sources=(HFSource("tanganke/resisc45"),),
    ),
    TaskEntry(
        name="SVHN",
        classnames=cn.DIGITS,
        templates=_NUMBER_TEMPLATES,
        epochs=4,
        sizes={"train": 73257, "test": 26032},
        layouts=(svhn_layout(),),
        hint=TorchvisionHint("SVHN", "svhn"),
        hf_sources=(HFSource("ufldl-stanford/svhn", config="cropped_digits"),),
    ),
    TaskEntry(
        name="SUN397",
        classnames=cn.SUN397,
        templates=_A_THE_TEMPLATES,
        epochs=14,
        sizes={"train": 19850, "test": 19850},
        layouts=(
            split_folder_layout(
                "SUN397",
                "sun397",
                {"train": ("train",), "test": ("val", "test")},
                [f"{c[0]}_{c.replace(' ', '_')}" for c in cn.SUN397],
                "sun397/{train,val}/<letter>_<class>/*.jpg",
            ),
        ),
        hint="download SUN397 and build sun397/{train,val}/<letter>_<class> from the "
        "Training_01/Testing_01 lists (mlfoundations/task_vectors issue #1)",
        hf_sources=(HFSource("tanganke/sun397"),),
    ),
    TaskEntry(
        name="STL10",
        classnames=cn.STL10,
        templates=_A_THE_TEMPLATES,
        tsv_templates=_CIFAR_TEMPLATES,
        epochs=60,
        sizes={"train": 5000, "test": 8000},
        layouts=(stl10_layout(),),
        hint=TorchvisionHint("STL10", "stl10"),
        hf_sources=(HFSource("tanganke/stl10"),),
    ),
    TaskEntry(
        name="OxfordIIITPet",
        classnames=cn.OXFORD_PETS,
        templates=("a photo of a {}, a type of pet.",),
        epochs=82,
        sizes={"train": 3680, "test": 3669},
        layouts=(
            tv(
                "OxfordIIITPet",
                "OxfordIIITPet",
                ("OxfordIIITPet", ""),
                pets_required,
                "OxfordIIITPet/oxford-iiit-pet/{images,annotations}",
                split_kw({"train": "trainval"}),
            ),
        ),
        hint=TorchvisionHint("OxfordIIITPet", "OxfordIIITPet", train_split="trainval"),
        hf_sources=(HFSource("timm/oxford-iiit-pet"),),
    ),
    TaskEntry(
        name="Flowers102",
        classnames=cn.FLOWERS102,
        templates=("a photo of a {}, a type of flower.",),
        epochs=147,
        sizes={"train": 1020, "test": 6149},
        layouts=(
            tv(
                "Flowers102",
                "Flowers102",
                ("flowers102", ""),
                flowers_required,
                "flowers102/flowers-102/{jpg,imagelabels.mat,setid.mat}",
                split_kw(),
            ),
        ),
        hint=TorchvisionHint("Flowers102", "flowers102"),
        hf_sources=(HFSource("dpdl-benchmark/oxford_flowers102"),),
    ),
    TaskEntry(
        name="CIFAR100",
        classnames=cn.CIFAR100,
        templates=_CIFAR_TEMPLATES,
        epochs=6,
        sizes={"train": 50000, "test": 10000},
        layouts=(
            cifar_layout(
                "cifar-100-python", {"train": ("train",), "test": ("test",)}, "fine_labels"
            ),
        ),
        hint=TorchvisionHint("CIFAR100", train_flag=True),
        hf_sources=(HFSource("tanganke/cifar100"), HFSource("uoft-cs/cifar100")),
    ),
    TaskEntry(
        name="PCAM",
        classnames=cn.PCAM,
        templates=("this is a photo of {}",),
        epochs=1,
        sizes={"train": 262144, "test": 32768},
        layouts=(
            guarded(
                tv(
                    "PCAM",
                    "PCAM",
                    ("PCAM", ""),
                    pcam_required,
                    "PCAM/pcam/camelyonpatch_level_2_split_{train,test}_{x,y}.h5",
                    split_kw(),
                ),
                need_h5py,
            ),
        ),
        hint="download on a machine with network with torchvision.datasets.PCAM('<root>/PCAM', "
        "split=..., download=True)",
        hf_sources=(HFSource("1aurent/PatchCamelyon"),),
    ),
    TaskEntry(
        name="FER2013",
        classnames=cn.FER2013,
        templates=(
            "a photo of a {} looking face.",
            "a photo of a face showing the emotion: {}.",
            "a photo of a face looking {}.",
            "a face that looks {}.",
            "they look {}.",
            "look at how {} they are.",
        ),
        epochs=10,
        sizes={"train": 28709, "test": 7178},
        layouts=(fer_csv_layout(), fer_folder_layout()),
        hint="get fer2013.csv (Kaggle FER2013 challenge) into FER2013/fer2013/",
        # tall_masks reads Jeneral/fer-2013 (standard label order); FusionBench reads the
        # clip-benchmark copy, whose labels are alphabetical (angry, disgust, fear, happy,
        # neutral, sad, surprise): remapped to the standard order here.
        hf_sources=(
            HFSource("Jeneral/fer-2013"),
            HFSource("clip-benchmark/wds_fer2013", label_map=(0, 1, 2, 3, 6, 4, 5)),
        ),
        hf_name_aliases=(
            cn.FER2013_PLAIN,
            ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
        ),
    ),
    TaskEntry(
        name="CIFAR10",
        classnames=cn.CIFAR10,
        templates=_CIFAR_TEMPLATES,
        epochs=6,
        sizes={"train": 50000, "test": 10000},
        layouts=(
            cifar_layout(
                "cifar-10-batches-py",
                {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
                "labels",
            ),
        ),
        hint=TorchvisionHint("CIFAR10", train_flag=True),
        hf_sources=(HFSource("tanganke/cifar10"), HFSource("uoft-cs/cifar10")),
    ),
    TaskEntry(
        name="Food101",
        classnames=cn.FOOD101,
        templates=("a photo of {}, a type of food.",),
        epochs=4,
        sizes={"train": 75750, "test": 25250},
        layouts=(
            tv(
                "Food101",
                "Food101",
                ("food101", ""),
                food_required,
                "food101/food-101/{images,meta}",
                split_kw(),
            ),
        ),
        hint=TorchvisionHint("Food101", "food101"),
        hf_sources=(HFSource("ethz/food101"),),
    ),
    TaskEntry(
        name="FashionMNIST",
        classnames=cn.FASHION_MNIST,
        templates=_A_THE_TEMPLATES,
        epochs=5,
        sizes={"train": 60000, "test": 10000},
        layouts=(
            mnist_layout(
                "FashionMNIST",
                mnist_all_files,
                "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
            ),
        ),
        hint=TorchvisionHint("FashionMNIST", train_flag=True),
        hf_sources=(HFSource("zalando-datasets/fashion_mnist"),),
    ),
    TaskEntry(
        name="RenderedSST2",
        classnames=cn.RENDERED_SST2,
        templates=("a {} review of a movie.",),
        epochs=39,
        sizes={"train": 6920, "test": 1821},
        layouts=(
            tv(
                "RenderedSST2",
                "RenderedSST2",
                ("RenderedSST2", ""),
                sst2_required,
                "RenderedSST2/rendered-sst2/{train,test}/{negative,positive}",
                split_kw(),
            ),
        ),
        hint=TorchvisionHint("RenderedSST2", "RenderedSST2"),
        hf_sources=(HFSource("nateraw/rendered-sst2"),),
    ),
    TaskEntry(
        name="EMNIST",
        classnames=cn.DIGITS,
        templates=('a photo of the digit character: "{}".',),
        tsv_templates=_NUMBER_TEMPLATES,
        tsv_upright=True,
        epochs=2,
        sizes={"train": 240000, "test": 40000},
        layouts=(
            mnist_layout(
                "EMNIST",
                emnist_files,
                "EMNIST/raw/emnist-digits-{train,test}-{images-idx3,labels-idx1}-ubyte[.gz]",
            ),
        ),
        hint=TorchvisionHint("EMNIST", kwargs=(("split", "digits"),), train_flag=True),
        # no Hugging Face source: tanganke/emnist_letters is a different, 26-class task
    ),
    TaskEntry(
        name="KMNIST",
        classnames=cn.KMNIST,
        templates=("a photo of the character {}.",),
        epochs=5,
        sizes={"train": 60000, "test": 10000},
        layouts=(
            mnist_layout(
                "KMNIST",
                mnist_all_files,
                "KMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
            ),
        ),
        hint=TorchvisionHint("KMNIST", train_flag=True),
        hf_sources=(HFSource("tanganke/kmnist"),),
    ),
)


def _by_name(entries: tuple[TaskEntry, ...]) -> dict[str, TaskEntry]:
    by_name = {entry.name: entry for entry in entries}
    if len(by_name) != len(entries):
        duplicates = sorted({e.name for e in entries if sum(f.name == e.name for f in entries) > 1})
        raise ValueError(f"real tasks declared more than once: {duplicates}")
    return by_name


#: Each entry by task name.
ENTRY_BY_NAME: dict[str, TaskEntry] = _by_name(ENTRIES)


@dataclass(frozen=True)
class SplitVariant:
    """A known non-official split of a task that a reference repository's data has.

    Attributes:
        name: What it is (the log line and ``results.json`` name it).
        sizes: The split sizes that identify it (``train`` as in :attr:`TaskEntry.sizes`).
        consequence: What it means for the numbers (the warning's second half).
    """

    name: str
    sizes: Mapping[str, int]
    consequence: str


#: Task -> the known variants of its splits, recognised (one warning) instead of refused.
SPLIT_VARIANTS: dict[str, tuple[SplitVariant, ...]] = {
    # nik-dim/tall_masks and AntoAndGar/task_singular_vectors release: their fine-tuned DTD test
    # accuracy 0.97979 = 921/940 (results/single_task/ViT-B-32/nonlinear_ft_accuracies.json)
    # implies a 940-image test folder whose images are also in train.
    "DTD": (
        SplitVariant(
            "the tall_masks/TSV release's DTD folder (940 test images, also in train)",
            {"test": 940},
            "test images are in train, so fine-tuned DTD test accuracy is inflated "
            "(0.98 vs about 0.79 on the official split) and so is every normalized accuracy",
        ),
    ),
    # wang-kee/LiNeS' fine-tuned EuroSAT accuracies (test 0.99874 = 2384/2387, Val 0.99872 =
    # 2332/2335) imply its own 2,387-image test and 2,335-image val split.
    "EuroSAT": (
        SplitVariant(
            "LiNeS' EuroSAT split (2,387 test, 2,335 val)",
            {"test": 2387},
            "not the reference 21,600 / 2,700 / 2,700 split: accuracies are not comparable to "
            "the tall_masks / TSV numbers",
        ),
    ),
}
