"""The layer contract (``[tool.importlinter]`` in pyproject.toml): each pipeline stage imports
only from the stages below it, ``merging/`` nothing above ``vectors/``, and only ``app/``
imports Hydra or OmegaConf."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    # import-linter configures logging with disable_existing_loggers: keep the loggers the
    # other tests capture (caplog) as they were
    enabled = [
        logger for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.disabled
    ]  # fmt: skip
    try:
        assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0
    finally:
        for logger in enabled:
            logger.disabled = False
