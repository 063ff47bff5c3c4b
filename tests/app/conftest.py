"""The demo on two tasks, run once per session by the real entry points (the golden runs):
every method, LiNeS, negation, the other fine-tuning modes and the post-hoc cast. The golden
test checks their numbers; the end-to-end tests check what they wrote."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.golden.record import run_all


@dataclass
class SmallDemo:
    """The golden runs: their TASKMERGE_HOME, output folder and results by label
    (``<run>/<finetuning>/<method>``, e.g. ``methods/standard/ties``)."""

    home: Path
    out: Path
    results: dict[str, dict[str, Any]]

    def method(self, name: str, run: str = "methods", mode: str = "standard") -> dict[str, Any]:
        """The results of one golden job."""
        return self.results[f"{run}/{mode}/{name}"]


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> SmallDemo:
    out = tmp_path_factory.mktemp("small-demo")
    return SmallDemo(out / "home", out, run_all(out / "home", out))
