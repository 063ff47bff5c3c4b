"""Hydra composition of the project's configs, as the entry points do."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "config"


def compose(config_name: str = "config", overrides: list[str] | None = None):  # noqa: ANN201
    """Compose a project config the way main.py / finetune.py do."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from taskmerge.app.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides=overrides or [])


def options(group: str) -> list[str]:
    """Every option of a config group (one YAML file each)."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
