"""prepare_data: status per task, atomic per-task preparation, one line per failure offline.

The downloaders (torchvision, huggingface_hub) are replaced by functions that write what they
would write (small fabricated files): no network is used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taskmerge.data import prepare as prep
from taskmerge.data.standard_tasks import ENTRY_BY_NAME
from tests.helpers.images import rng_images, write_idx, write_parquet

ROOT = Path(__file__).resolve().parents[2]


def _fake_mnist(hint, partial: Path) -> None:  # noqa: ANN001
    """What torchvision.datasets.MNIST(root, download=True) leaves: <root>/MNIST/raw/*."""
    raw = partial / "MNIST" / "raw"
    write_idx(raw, "train", rng_images(6, (28, 28)), [0, 1, 2, 3, 4, 5], gz=False)
    write_idx(raw, "t10k", rng_images(2, (28, 28), seed=1), [7, 8], gz=False)


def _fake_eurosat(repo: str, partial: Path) -> None:
    from PIL import Image

    from taskmerge.data import classnames as cn

    data = partial / "tanganke" / "eurosat" / "data"
    images = [Image.new("RGB", (64, 64), (i * 40, 0, 0)) for i in range(3)]
    write_parquet(data / "train-00000-of-00001.parquet", images, [0, 9, 4], list(cn.EUROSAT))
    write_parquet(data / "test-00000-of-00001.parquet", images[:2], [7, 1], list(cn.EUROSAT))


def test_prepare_moves_complete_tasks_into_place_and_records_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prep, "_download_torchvision", _fake_mnist)
    monkeypatch.setattr(prep, "_download_hf", _fake_eurosat)
    statuses, errors = prep.prepare(["MNIST", "EuroSAT"], tmp_path)
    assert errors == []
    by_task = {s.task: s for s in statuses}
    assert by_task["MNIST"].counts == {"train": 6, "test": 2}
    # fabricated data is far smaller than the official splits: reported, with the fix
    assert by_task["MNIST"].state == "wrong size" and "expected 60000" in by_task["MNIST"].detail
    assert by_task["EuroSAT"].counts == {"train": 3, "test": 2}
    manifest = json.loads((tmp_path / prep.MANIFEST).read_text())
    assert manifest["MNIST"]["source"] == "torchvision.datasets.MNIST"
    assert manifest["EuroSAT"]["source"] == "Hugging Face dataset tanganke/eurosat"
    assert manifest["MNIST"]["counts"] == {"train": 6, "test": 2}
    assert len(manifest["MNIST"]["sha256"]) == 64 and manifest["MNIST"]["files"] == 4
    assert not (tmp_path / ".partial").exists()  # nothing half-written remains


def test_ready_when_the_official_sizes_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        ENTRY_BY_NAME,
        "MNIST",
        type(ENTRY_BY_NAME["MNIST"])(
            **{**vars(ENTRY_BY_NAME["MNIST"]), "sizes": {"train": 6, "test": 2}}
        ),
    )
    _fake_mnist(None, tmp_path)
    status = prep.task_status("MNIST", tmp_path)
    assert status.state == "ready" and status.line().startswith("MNIST          ready")


def test_a_failed_download_is_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(hint, partial: Path) -> None:  # noqa: ANN001
        (partial / "MNIST" / "raw").mkdir(parents=True)
        (partial / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"half")
        raise OSError("Temporary failure in name resolution\nmore detail")

    monkeypatch.setattr(prep, "_download_torchvision", broken)
    statuses, errors = prep.prepare(["MNIST"], tmp_path)
    assert statuses[0].state == "missing" and len(errors) == 1
    assert "\n" not in errors[0] and "name resolution" in errors[0]
    assert "MNIST: could not download from torchvision.datasets.MNIST" in errors[0]
    assert not (tmp_path / "MNIST").exists() and not (tmp_path / prep.MANIFEST).exists()


def test_every_standard_task_has_a_source_and_official_sizes() -> None:
    for name, entry in ENTRY_BY_NAME.items():
        assert prep.source_of(entry) != "no automatic source", name
        assert set(entry.sizes) == {"train", "test"} and min(entry.sizes.values()) > 0, name
    assert ENTRY_BY_NAME["EMNIST"].hint.arguments("train") == {"train": True, "split": "digits"}
    assert ENTRY_BY_NAME["OxfordIIITPet"].hint.arguments("train") == {"split": "trainval"}


def test_status_command_offline_is_one_line_per_task_and_fails(tmp_path: Path) -> None:
    env = dict(os.environ, TASKMERGE_HOME=str(tmp_path), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "prepare_data.py"), "action=status", "DATASETS=[Cars,KMNIST]"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [["Cars", "missing"], ["KMNIST", "missing"]]
    assert "tanganke/stanford_cars" in lines[0] and "Traceback" not in proc.stderr
    assert np.all([len(line) < 400 for line in lines])
