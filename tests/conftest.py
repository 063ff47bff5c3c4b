"""Shared fixtures: an isolated TASKMERGE_HOME and Hydra composition of the project's configs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "config"


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


def compose(config_name: str = "config", overrides: list[str] | None = None):  # noqa: ANN201
    """Compose a project config the way main.py / finetune.py do."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from taskmerge.entrypoints import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides=overrides or [])


def options(group: str) -> list[str]:
    """Every option of a config group (one YAML file each)."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
