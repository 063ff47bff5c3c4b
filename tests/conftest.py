"""Shared fixtures: an isolated TASKMERGE_HOME and Hydra composition of the project's configs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the network or the user's W&B account."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh TASKMERGE_HOME (caches, checkpoints) for one test."""
    monkeypatch.setenv("TASKMERGE_HOME", str(tmp_path / "home"))
    for key in ("TASKMERGE_DATA", "TASKMERGE_CHECKPOINTS"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path / "home"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder (``paths.cache``) shared by the session: the tiny CLIP unpacked once."""
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="session")
def tiny_clip(tiny_cache: Path):  # noqa: ANN201 - a ClipBundle
    """The shipped tiny CLIP, loaded once per session (treat it as read-only)."""
    from taskmerge.models.tiny import load_tiny_clip

    return load_tiny_clip(tiny_cache)


@pytest.fixture(scope="session")
def fabricated_home(tmp_path_factory: pytest.TempPathFactory, tiny_clip) -> Path:  # noqa: ANN001
    """A TASKMERGE_HOME with fabricated standard checkpoints of the demo tasks Digits and Colors
    (the tiny CLIP plus small random changes): merges run on it without any fine-tuning.
    Tests that damage files copy it first."""
    from taskmerge.finetune.modes import FinetuningMode
    from taskmerge.io.digest import fingerprint
    from taskmerge.store.checkpoints import CheckpointStore

    home = tmp_path_factory.mktemp("home")
    pretrained = tiny_clip.visual.state_dict()
    store = CheckpointStore(
        home / "checkpoints", tiny_clip.name, tiny_clip.pretrained, FinetuningMode(), pretrained,
        fingerprint(pretrained),
    )  # fmt: skip
    for index, task in enumerate(("Digits", "Colors")):
        gen = torch.Generator().manual_seed(index)
        store.save(task, {k: v + 1e-3 * torch.randn(v.shape, generator=gen)
                          for k, v in pretrained.items()})  # fmt: skip
    return home


@pytest.fixture(scope="session")
def entries(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - an EntryPoints
    """The root scripts, run as a user runs them (each command in a fresh fork of one warm
    process, offline, with an empty Hugging Face cache)."""
    from tests.helpers.entries import EntryPoints, clean_env

    hf = tmp_path_factory.mktemp("hf")
    runner = EntryPoints(clean_env(HF_HUB_OFFLINE="1", WANDB_MODE="offline", WANDB_SILENT="true",
                                   HF_HOME=str(hf), HF_HUB_CACHE=str(hf / "hub")))  # fmt: skip
    yield runner
    runner.close()
