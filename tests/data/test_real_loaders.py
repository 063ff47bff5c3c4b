"""Real-task loaders: tiny fixtures in the real on-disk formats, no network."""

from __future__ import annotations

import csv
import io
import json
import pickle
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from taskmerge.data import classnames as cn
from taskmerge.data.real_tasks import (
    EPOCHS,
    HF_SOURCES,
    REAL_TASKS,
    RealTaskLoader,
    build_real_tasks,
    locate_split,
)
from taskmerge.data.spec import STANDARD_TASKS
from taskmerge.data.splits import split_train_val, val_size_for
from taskmerge.data.standard_tasks import ENTRIES, ENTRY_BY_NAME
from taskmerge.errors import DataNotFoundError
from tests.helpers.images import rng_images, write_idx, write_parquet

EXPECTED_CLASS_COUNTS = {
    "Cars": 196, "DTD": 47, "EuroSAT": 10, "GTSRB": 43, "MNIST": 10, "RESISC45": 45,
    "SVHN": 10, "SUN397": 397, "STL10": 10, "OxfordIIITPet": 37, "Flowers102": 102,
    "CIFAR100": 100, "PCAM": 2, "FER2013": 7, "CIFAR10": 10, "Food101": 101,
    "FashionMNIST": 10, "RenderedSST2": 2, "EMNIST": 10, "KMNIST": 10,
}  # fmt: skip


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch):
    """Any attempt to open a network connection fails the test (even if the caller catches it)."""
    attempts: list[tuple[object, ...]] = []

    def refuse(*args: object, **_kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield
    assert not attempts, f"a loader tried to use the network: {attempts[:3]}"


@pytest.fixture(autouse=True)
def _no_user_hf_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep the user's Hugging Face caches out of every test."""
    hub = tmp_path_factory.mktemp("hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    try:
        import datasets

        monkeypatch.setattr(
            datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_datasets")
        )
    except ImportError:
        pass
    return hub


def _save_image(path: Path, size: tuple[int, int] = (8, 6), value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 7)).save(path)


# ----------------------------------------------------------------------------------------------
# Specs
# ----------------------------------------------------------------------------------------------


def test_all_twenty_tasks_in_standard_order() -> None:
    assert tuple(REAL_TASKS) == STANDARD_TASKS
    assert len(REAL_TASKS) == 20


def test_one_entry_per_task_in_standard_order() -> None:
    names = [entry.name for entry in ENTRIES]
    assert tuple(names) == STANDARD_TASKS  # each task exactly once, in the standard order
    assert list(ENTRY_BY_NAME) == names
    for entry in ENTRIES:
        assert entry.classnames and all(isinstance(c, str) and c for c in entry.classnames)
        assert entry.templates and all(t.count("{}") == 1 for t in entry.templates)
        assert entry.tsv_templates is None or all(t.count("{}") == 1 for t in entry.tsv_templates)
        assert isinstance(entry.epochs, int) and entry.epochs >= 1
        assert entry.layouts or entry.hf_sources, entry.name
        assert set(entry.splits) >= {"train", "test"}
        assert entry.how_to_get(Path("/data")), entry.name
        assert all(len(alias) == len(entry.classnames) for alias in entry.hf_name_aliases)
    # FusionBench's tanganke/emnist_letters is a different (26-class) task
    assert ENTRY_BY_NAME["EMNIST"].hf_sources == ()
    assert HF_SOURCES["EMNIST"] == ()


@pytest.mark.parametrize("name", STANDARD_TASKS)
def test_spec_classnames_templates_epochs(name: str) -> None:
    spec = REAL_TASKS[name]
    assert spec.name == name
    assert len(spec.classnames) == EXPECTED_CLASS_COUNTS[name]
    assert all(isinstance(c, str) and c for c in spec.classnames)
    assert len(set(spec.classnames)) == len(spec.classnames)
    assert spec.templates
    for template in spec.templates:
        assert template.count("{}") == 1
        assert template.format("zebra") != template
    assert spec.prompts(spec.classnames[0])[0] == spec.templates[0].format(spec.classnames[0])
    assert spec.epochs == EPOCHS[name] > 0


def test_reference_facts() -> None:
    tv = pytest.importorskip("torchvision.datasets")
    assert REAL_TASKS["FashionMNIST"].classnames == tuple(tv.FashionMNIST.classes)
    assert REAL_TASKS["KMNIST"].classnames == tuple(tv.KMNIST.classes)
    assert REAL_TASKS["EMNIST"].classnames == tuple(tv.EMNIST.classes_split_dict["digits"])
    assert REAL_TASKS["MNIST"].classnames == tuple("0123456789")
    # ImageFolder-derived lists are in sorted folder order
    assert list(cn.DTD) == sorted(cn.DTD)
    sun_folders = [f"{c[0]}_{c.replace(' ', '_')}" for c in cn.SUN397]
    assert sun_folders == sorted(sun_folders)
    assert list(cn.FOOD101) == sorted(cn.FOOD101)
    assert list(cn.EUROSAT_FOLDERS) == sorted(cn.EUROSAT_FOLDERS)
    assert (
        cn.CARS[0] == "AM General Hummer SUV 2000"
        and cn.CARS[-1] == "smart fortwo Convertible 2012"
    )
    assert REAL_TASKS["EuroSAT"].classnames[2] == "brushland or shrubland"
    assert REAL_TASKS["SUN397"].classnames[8] == "apartment building outdoor"
    # FER2013: the references format synonym *lists* into the prompts
    assert REAL_TASKS["FER2013"].prompts(REAL_TASKS["FER2013"].classnames[3])[0] == (
        "a photo of a ['happy', 'smiling'] looking face."
    )
    assert REAL_TASKS["GTSRB"].templates[0] == 'a zoomed in photo of a "{}" traffic sign.'
    assert len(REAL_TASKS["RESISC45"].templates) == 18
    assert REAL_TASKS["RESISC45"].templates[6] == "satellite imagery of a {}."


def test_tsv_convention() -> None:
    tsv = build_real_tasks("tsv")
    assert tsv["EMNIST"].templates == ('a photo of the number: "{}".',)
    assert tsv["STL10"].templates == REAL_TASKS["CIFAR10"].templates
    assert REAL_TASKS["STL10"].templates == ("a photo of a {}.", "a photo of the {}.")
    assert tsv["MNIST"].templates == REAL_TASKS["MNIST"].templates
    with pytest.raises(ValueError, match="convention"):
        build_real_tasks("nope")


# ----------------------------------------------------------------------------------------------
# Missing data
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STANDARD_TASKS)
def test_missing_dataset_raises_one_clear_line(tmp_path: Path, name: str) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError) as info:
        REAL_TASKS[name].load_split(root, "test")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{name} not found under {root}")
    assert "paths.data" in message and "prepare_data.py" in message
    with pytest.raises(DataNotFoundError, match=name):
        locate_split(name, root, "train")


def test_bad_split_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        REAL_TASKS["MNIST"].load_split(tmp_path, "validation")
    with pytest.raises(ValueError, match="split"):
        REAL_TASKS["DTD"].load_split(tmp_path, "val")


# ----------------------------------------------------------------------------------------------
# MNIST family (idx ubyte files)
# ----------------------------------------------------------------------------------------------


def test_mnist_from_gzipped_idx(tmp_path: Path) -> None:
    train, test = rng_images(5, (28, 28)), rng_images(3, (28, 28), seed=1)
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw, "train", train, [3, 1, 4, 1, 5], gz=True)
    write_idx(raw, "t10k", test, [9, 2, 6], gz=True)

    dataset = REAL_TASKS["MNIST"].load_split(tmp_path, "train")
    assert len(dataset) == 5
    assert [dataset[i][1] for i in range(5)] == [3, 1, 4, 1, 5]
    image, label = dataset[2]
    assert isinstance(label, int) and image.size == (28, 28) and image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), train[2])
    test_set = REAL_TASKS["MNIST"].load_split(tmp_path, "test")
    assert [test_set[i][1] for i in range(3)] == [9, 2, 6]
    assert (raw / "train-images-idx3-ubyte").is_file()  # decompressed in place


def test_fashion_mnist_in_tall_masks_nested_layout(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "FashionMNIST" / "raw"
    write_idx(raw, "train", rng_images(2, (28, 28)), [0, 9], gz=False)
    write_idx(raw, "t10k", rng_images(4, (28, 28)), [7, 7, 1, 0], gz=False)
    dataset = REAL_TASKS["FashionMNIST"].load_split(tmp_path, "test")
    assert [dataset[i][1] for i in range(4)] == [7, 7, 1, 0]
    assert locate_split("FashionMNIST", tmp_path, "test") == str(tmp_path / "FashionMNIST")


def test_emnist_digits_and_tsv_upright_images(tmp_path: Path) -> None:
    images = rng_images(3, (28, 28))
    raw = tmp_path / "EMNIST" / "raw"
    write_idx(raw, "emnist-digits-train", images, [0, 5, 9], gz=False)
    plain = REAL_TASKS["EMNIST"].load_split(tmp_path, "train")
    upright = build_real_tasks("tsv")["EMNIST"].load_split(tmp_path, "train")
    assert [plain[i][1] for i in range(3)] == [upright[i][1] for i in range(3)] == [0, 5, 9]
    np.testing.assert_array_equal(np.asarray(plain[1][0]), images[1])
    np.testing.assert_array_equal(np.asarray(upright[1][0]), images[1].T)
    with pytest.raises(DataNotFoundError, match="EMNIST not found"):
        REAL_TASKS["EMNIST"].load_split(tmp_path, "test")


# ----------------------------------------------------------------------------------------------
# CIFAR (python pickle batches), SVHN (.mat), STL10 (binary)
# ----------------------------------------------------------------------------------------------


def _pickle_batch(path: Path, images: np.ndarray, key: str, labels: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # N x 3072, channel-major
    with open(path, "wb") as handle:
        pickle.dump({"data": data, key: labels, "batch_label": b"x"}, handle)


def test_cifar10_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    batches = [rng_images(2, (32, 32, 3), seed=i) for i in range(6)]
    for i in range(5):
        _pickle_batch(folder / f"data_batch_{i + 1}", batches[i], "labels", [i, 9 - i])
    _pickle_batch(folder / "test_batch", batches[5], "labels", [8, 3])
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": list(cn.CIFAR10)}, handle)

    train = REAL_TASKS["CIFAR10"].load_split(tmp_path, "train")
    assert len(train) == 10
    assert [train[i][1] for i in range(10)] == [0, 9, 1, 8, 2, 7, 3, 6, 4, 5]
    image, _ = train[3]
    assert image.size == (32, 32) and image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), batches[1][1])
    test = REAL_TASKS["CIFAR10"].load_split(tmp_path, "test")
    assert [label for _, label in test] == [8, 3]


def test_cifar100_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    train, test = rng_images(3, (32, 32, 3)), rng_images(2, (32, 32, 3), seed=5)
    _pickle_batch(folder / "train", train, "fine_labels", [99, 0, 42])
    _pickle_batch(folder / "test", test, "fine_labels", [17, 64])
    dataset = REAL_TASKS["CIFAR100"].load_split(tmp_path, "train")
    assert [dataset[i][1] for i in range(3)] == [99, 0, 42]
    np.testing.assert_array_equal(np.asarray(dataset[2][0]), train[2])
    assert [label for _, label in REAL_TASKS["CIFAR100"].load_split(tmp_path, "test")] == [17, 64]


def test_svhn_mat(tmp_path: Path) -> None:
    sio = pytest.importorskip("scipy.io")
    images = rng_images(4, (32, 32, 3))
    folder = tmp_path / "svhn"
    folder.mkdir()
    mat = {"X": images.transpose(1, 2, 3, 0), "y": np.array([[10], [1], [9], [10]], np.uint8)}
    sio.savemat(folder / "test_32x32.mat", mat)
    dataset = REAL_TASKS["SVHN"].load_split(tmp_path, "test")
    assert [dataset[i][1] for i in range(4)] == [0, 1, 9, 0]
    image = dataset[2][0]
    assert image.size == (32, 32) and image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), images[2])


def test_stl10_binary(tmp_path: Path) -> None:
    images = rng_images(3, (96, 96, 3))
    folder = tmp_path / "stl10" / "stl10_binary"
    folder.mkdir(parents=True)
    images.transpose(0, 3, 2, 1).tofile(folder / "train_X.bin")  # column-major per channel
    np.array([1, 10, 4], np.uint8).tofile(folder / "train_y.bin")  # 1-based on disk
    dataset = REAL_TASKS["STL10"].load_split(tmp_path, "train")
    assert [dataset[i][1] for i in range(3)] == [0, 9, 3]
    np.testing.assert_array_equal(np.asarray(dataset[1][0]), images[1])


def test_array_readers_match_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CIFAR10 / SVHN / STL10 readers give torchvision's images and labels (md5 check off)."""
    sio = pytest.importorskip("scipy.io")
    tv = pytest.importorskip("torchvision.datasets")
    for module in (tv.cifar, tv.svhn, tv.stl10):
        monkeypatch.setattr(module, "check_integrity", lambda *_a, **_k: True)
    cifar = tmp_path / "cifar-10-batches-py"
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        _pickle_batch(cifar / name, rng_images(2, (32, 32, 3), seed=i), "labels", [i, 9 - i])
    with open(cifar / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": list(cn.CIFAR10)}, handle)
    (tmp_path / "svhn").mkdir()
    svhn_images = rng_images(3, (32, 32, 3), seed=7)
    sio.savemat(
        tmp_path / "svhn" / "train_32x32.mat",
        {"X": svhn_images.transpose(1, 2, 3, 0), "y": np.array([[10], [3], [5]], np.uint8)},
    )
    stl = tmp_path / "stl10" / "stl10_binary"
    stl.mkdir(parents=True)
    rng_images(2, (3, 96, 96), seed=8).tofile(stl / "test_X.bin")
    np.array([2, 7], np.uint8).tofile(stl / "test_y.bin")

    pairs = [
        (REAL_TASKS["CIFAR10"].load_split(tmp_path, "train"), tv.CIFAR10(str(tmp_path))),
        (REAL_TASKS["SVHN"].load_split(tmp_path, "train"), tv.SVHN(str(tmp_path / "svhn"))),
        (
            REAL_TASKS["STL10"].load_split(tmp_path, "test"),
            tv.STL10(str(tmp_path / "stl10"), split="test"),
        ),
    ]
    for ours, theirs in pairs:
        assert len(ours) == len(theirs)
        for i in range(len(ours)):
            assert ours[i][1] == theirs[i][1]
            np.testing.assert_array_equal(np.asarray(ours[i][0]), np.asarray(theirs[i][0]))


# ----------------------------------------------------------------------------------------------
# Folder layouts (prepared ImageFolder splits, RESISC45 lists, GTSRB, torchvision folders)
# ----------------------------------------------------------------------------------------------


def _class_tree(top: Path, folders: list[str], filled: dict[str, int]) -> None:
    for folder in folders:
        (top / folder).mkdir(parents=True, exist_ok=True)
    for folder, count in filled.items():
        for i in range(count):
            _save_image(top / folder / f"{folder}_{i}.jpg", size=(64, 64), value=i)


def test_eurosat_prepared_splits_including_val(tmp_path: Path) -> None:
    folders = list(cn.EUROSAT_FOLDERS)
    top = tmp_path / "EuroSAT_splits"
    _class_tree(top / "train", folders, {"AnnualCrop": 2, "SeaLake": 1})
    _class_tree(top / "test", folders, {"Highway": 1})
    _class_tree(top / "val", folders, {"River": 3})
    train = REAL_TASKS["EuroSAT"].load_split(tmp_path, "train")
    assert sorted(label for _, label in train) == [0, 0, 9]
    image = train[0][0]
    assert image.size == (64, 64) and image.mode == "RGB"
    assert [label for _, label in REAL_TASKS["EuroSAT"].load_split(tmp_path, "test")] == [3]
    assert [label for _, label in REAL_TASKS["EuroSAT"].load_split(tmp_path, "val")] == [8] * 3


def test_dtd_val_folder_serves_as_test(tmp_path: Path) -> None:
    _class_tree(tmp_path / "dtd" / "train", list(cn.DTD), {"banded": 1})
    _class_tree(tmp_path / "dtd" / "val", list(cn.DTD), {"zigzagged": 2, "dotted": 1})
    test = REAL_TASKS["DTD"].load_split(tmp_path, "test")
    assert sorted(label for _, label in test) == [cn.DTD.index("dotted"), 46, 46]


def test_sun397_prefixed_folders(tmp_path: Path) -> None:
    folders = [f"{c[0]}_{c.replace(' ', '_')}" for c in cn.SUN397]
    _class_tree(tmp_path / "sun397" / "val", folders, {"a_abbey": 1, "y_youth_hostel": 1})
    test = REAL_TASKS["SUN397"].load_split(tmp_path, "test")
    assert sorted(label for _, label in test) == [0, cn.SUN397.index("youth hostel")]


def test_wrong_class_folder_count_is_an_error(tmp_path: Path) -> None:
    _class_tree(tmp_path / "dtd" / "train", ["banded", "blotchy"], {"banded": 1})
    with pytest.raises(DataNotFoundError, match="2 class folders, expected 47"):
        REAL_TASKS["DTD"].load_split(tmp_path, "train")


def test_resisc45_split_lists(tmp_path: Path) -> None:
    base = tmp_path / "resisc45"
    folders = [c.replace(" ", "_") for c in cn.RESISC45]
    _class_tree(base / "NWPU-RESISC45", folders, {"airplane": 2, "wetland": 2})
    (base / "resisc45-train.txt").write_text("airplane_0.jpg\nwetland_1.jpg\n")
    (base / "resisc45-test.txt").write_text("airplane_1.jpg\n")
    train = REAL_TASKS["RESISC45"].load_split(tmp_path, "train")
    assert sorted(label for _, label in train) == [0, 44]
    assert [label for _, label in REAL_TASKS["RESISC45"].load_split(tmp_path, "test")] == [0]


def test_gtsrb_torchvision_layout(tmp_path: Path) -> None:
    base = tmp_path / "gtsrb"
    for class_id in range(43):  # torchvision wants an image in every class folder
        for i in range(2 if class_id == 42 else 1):
            _save_image(base / "GTSRB" / "Training" / f"{class_id:05d}" / f"{i}.ppm", (3, 4))
    _save_image(base / "GTSRB" / "Final_Test" / "Images" / "00000.ppm", (40, 41))
    with open(base / "GT-final_test.csv", "w", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(["Filename", "Width", "Height", "ClassId"])
        writer.writerow(["00000.ppm", 40, 41, 17])
    train = REAL_TASKS["GTSRB"].load_split(tmp_path, "train")
    assert sorted(label for _, label in train) == [*range(43), 42]
    assert train[0][0].size == (3, 4)
    image, label = REAL_TASKS["GTSRB"].load_split(tmp_path, "test")[0]
    assert label == 17 and image.size == (40, 41)
    (base / "GTSRB" / "Training" / "00042" / "0.ppm").unlink()
    (base / "GTSRB" / "Training" / "00042" / "1.ppm").unlink()
    (base / "GTSRB" / "Training" / "00042").rmdir()
    with pytest.raises(DataNotFoundError, match="42 class folders, expected 43"):
        REAL_TASKS["GTSRB"].load_split(tmp_path, "train")


def test_rendered_sst2_and_pets_torchvision_layouts(tmp_path: Path) -> None:
    sst = tmp_path / "RenderedSST2" / "rendered-sst2" / "test"
    _save_image(sst / "negative" / "a.png", (20, 10))
    _save_image(sst / "positive" / "b.png", (20, 10))
    (sst.parent / "test" / "negative").mkdir(exist_ok=True)
    assert sorted(
        label for _, label in REAL_TASKS["RenderedSST2"].load_split(tmp_path, "test")
    ) == [
        0,
        1,
    ]

    pets = tmp_path / "OxfordIIITPet" / "oxford-iiit-pet"
    for image_id in ("Abyssinian_1", "yorkshire_terrier_7"):
        _save_image(pets / "images" / f"{image_id}.jpg", (50, 40))
    (pets / "annotations").mkdir(parents=True)
    (pets / "annotations" / "trainval.txt").write_text(
        "Abyssinian_1 1 1 1\nyorkshire_terrier_7 37 2 25\n"
    )
    train = REAL_TASKS["OxfordIIITPet"].load_split(tmp_path, "train")
    assert [label for _, label in train] == [0, 36]
    assert train[1][0].size == (50, 40)


def test_food101_torchvision_layout(tmp_path: Path) -> None:
    base = tmp_path / "food101" / "food-101"
    meta = {name: [] for name in cn.FOOD101}
    meta["waffles"] = ["waffles/1"]
    meta["apple_pie"] = ["apple_pie/2"]
    (base / "meta").mkdir(parents=True)
    (base / "meta" / "test.json").write_text(json.dumps(meta))
    _save_image(base / "images" / "waffles" / "1.jpg")
    _save_image(base / "images" / "apple_pie" / "2.jpg")
    assert sorted(label for _, label in REAL_TASKS["Food101"].load_split(tmp_path, "test")) == [
        0,
        100,
    ]


def test_cars_devkit_mat_files(tmp_path: Path) -> None:
    sio = pytest.importorskip("scipy.io")
    base = tmp_path / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    sio.savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array(cn.CARS, dtype=object)})
    fields = [("fname", "O"), ("class", "O")]
    annotations = np.array([("00001.jpg", 1), ("00002.jpg", 196)], dtype=fields)
    sio.savemat(base / "cars_test_annos_withlabels.mat", {"annotations": annotations})
    _save_image(base / "cars_test" / "00001.jpg", (70, 35))
    _save_image(base / "cars_test" / "00002.jpg", (70, 35))
    test = REAL_TASKS["Cars"].load_split(tmp_path, "test")
    assert [label for _, label in test] == [0, 195]
    assert test[0][0].size == (70, 35)


def test_fer2013_kaggle_folders_use_standard_label_order(tmp_path: Path) -> None:
    top = tmp_path / "FER2013" / "fer2013" / "train"
    for emotion in ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"):
        (top / emotion).mkdir(parents=True)
    Image.new("L", (48, 48), 3).save(top / "neutral" / "n.jpg")
    Image.new("L", (48, 48), 9).save(top / "sad" / "s.jpg")
    dataset = REAL_TASKS["FER2013"].load_split(tmp_path, "train")
    labels = sorted(label for _, label in dataset)
    assert labels == [4, 6]  # sad, neutral as in the references' class list
    assert REAL_TASKS["FER2013"].classnames[6] == "['neutral', 'bored']"
    assert dataset[0][0].size == (48, 48)


def test_torchvision_integrity_failure_becomes_data_not_found(tmp_path: Path) -> None:
    pytest.importorskip("scipy.io")
    base = tmp_path / "flowers102" / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    (base / "imagelabels.mat").write_bytes(b"not the real file")
    (base / "setid.mat").write_bytes(b"not the real file")
    with pytest.raises(DataNotFoundError, match="Flowers102 under .* is incomplete or unreadable"):
        REAL_TASKS["Flowers102"].load_split(tmp_path, "train")


def test_returned_datasets_pickle_for_workers(tmp_path: Path) -> None:
    raw = tmp_path / "EMNIST" / "raw"
    write_idx(raw, "emnist-digits-train", rng_images(2, (28, 28)), [1, 2], gz=False)
    upright = build_real_tasks("tsv")["EMNIST"].load_split(tmp_path, "train")
    clone = pickle.loads(pickle.dumps(upright))
    assert clone[1][1] == 2
    _class_tree(tmp_path / "dtd" / "val", list(cn.DTD), {"banded": 1})
    folder_set = pickle.loads(pickle.dumps(REAL_TASKS["DTD"].load_split(tmp_path, "test")))
    assert folder_set[0][1] == 0


# ----------------------------------------------------------------------------------------------
# Hugging Face copies (parquet)
# ----------------------------------------------------------------------------------------------


def test_hf_parquet_copy_under_root(tmp_path: Path) -> None:
    images = [Image.new("RGB", (64 + i, 64), (i * 40, 0, 0)) for i in range(3)]
    data = tmp_path / "tanganke" / "eurosat" / "data"
    write_parquet(data / "train-00000-of-00001.parquet", images, [0, 9, 4], list(cn.EUROSAT))
    write_parquet(data / "test-00000-of-00001.parquet", images[:1], [7], list(cn.EUROSAT))
    train = REAL_TASKS["EuroSAT"].load_split(tmp_path, "train")
    assert len(train) == 3
    assert [train[i][1] for i in range(3)] == [0, 9, 4]
    assert [train[i][0].size for i in range(3)] == [(64, 64), (65, 64), (66, 64)]
    assert train[1][0].getpixel((0, 0)) == (40, 0, 0)
    assert [label for _, label in REAL_TASKS["EuroSAT"].load_split(tmp_path, "test")] == [7]
    assert "tanganke/eurosat" in locate_split("EuroSAT", tmp_path, "test")


def test_hf_hub_cache_validation_split_and_label_remap(
    tmp_path: Path, _no_user_hf_cache: Path
) -> None:
    # a hub-cache snapshot of ethz/food101 whose test split is called "validation"
    snapshot = _no_user_hf_cache / "datasets--ethz--food101" / "snapshots" / "abc123"
    image = Image.new("RGB", (12, 10))
    write_parquet(
        snapshot / "data" / "validation-00000-of-00001.parquet", [image], [3], list(cn.FOOD101)
    )
    test = REAL_TASKS["Food101"].load_split(tmp_path, "test")
    assert [label for _, label in test] == [3] and test[0][0].size == (12, 10)

    # a copy listing the same classes in another order is remapped by name
    sst = tmp_path / "nateraw" / "rendered-sst2" / "data" / "test-00000-of-00001.parquet"
    write_parquet(sst, [image, image], [0, 1], ["positive", "negative"])
    assert [label for _, label in REAL_TASKS["RenderedSST2"].load_split(tmp_path, "test")] == [1, 0]


def test_hf_fer2013_copies_are_mapped_to_the_reference_order(tmp_path: Path) -> None:
    image = Image.new("L", (48, 48))
    kaggle_order = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    path = tmp_path / "Jeneral" / "fer-2013" / "data" / "train-00000-of-00001.parquet"
    write_parquet(path, [image] * 3, [4, 5, 6], kaggle_order)  # neutral, sad, surprise
    train = REAL_TASKS["FER2013"].load_split(tmp_path, "train")
    assert [label for _, label in train] == [6, 4, 5]


def test_hf_webdataset_fer2013_copy_is_remapped(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    shard = tmp_path / "clip-benchmark" / "wds_fer2013" / "test" / "0.tar"
    shard.parent.mkdir(parents=True)
    with tarfile.open(shard, "w") as tar:
        for key, cls in (("a", b"4"), ("b", b"5"), ("c", b"0")):  # neutral, sad, angry
            jpeg = io.BytesIO()
            Image.new("L", (48, 48), 9).save(jpeg, format="JPEG")
            for suffix, payload in (("jpg", jpeg.getvalue()), ("cls", cls)):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    test = REAL_TASKS["FER2013"].load_split(tmp_path, "test")
    assert [label for _, label in test] == [6, 4, 0]
    assert test[0][0].size == (48, 48)


def test_hf_copy_with_wrong_class_count_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "tanganke" / "kmnist" / "data" / "train-00000-of-00001.parquet"
    write_parquet(path, [Image.new("L", (28, 28))], [0], ["a", "b"])
    with pytest.raises(DataNotFoundError, match="2 classes, expected 10"):
        REAL_TASKS["KMNIST"].load_split(tmp_path, "train")


def test_hf_sources_cover_all_tasks_but_emnist() -> None:
    assert set(HF_SOURCES) == set(STANDARD_TASKS)
    assert HF_SOURCES["EMNIST"] == ()
    assert HF_SOURCES["Cars"][0].repo == "tanganke/stanford_cars"
    fer_wds = HF_SOURCES["FER2013"][1]
    assert sorted(fer_wds.label_map or ()) == list(range(7))


def test_loader_rejects_unknown_task() -> None:
    with pytest.raises(KeyError):
        RealTaskLoader("ImageNet")


# ----------------------------------------------------------------------------------------------
# Val carving protocol
# ----------------------------------------------------------------------------------------------


class _Range(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


@pytest.mark.parametrize("n,expected", [(100, 10), (9, 0), (49999, 4999), (60000, 5000)])
def test_val_size_is_ten_percent_capped_at_5000(n: int, expected: int) -> None:
    assert val_size_for(n) == expected


def test_split_train_val_deterministic_and_matches_reference() -> None:
    train, val = split_train_val(_Range(60000))
    assert len(val) == 5000 and len(train) == 55000
    assert train.indices[0] == 36044  # tall_masks asserts this for MNISTVal
    again_train, again_val = split_train_val(_Range(60000))
    assert list(again_val.indices) == list(val.indices)
    assert set(train.indices).isdisjoint(val.indices)
    assert len(set(train.indices) | set(val.indices)) == 60000
    _, other_val = split_train_val(_Range(60000), seed=1)
    assert list(other_val.indices) != list(val.indices)
