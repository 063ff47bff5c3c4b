"""The typed config (taskmerge.app.schema) in-process: what it refuses, what it accepts, and
that every composable config of every entry point passes it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from taskmerge.app.schema import check_config, target_model
from taskmerge.errors import ConfigError
from tests.helpers.configs import compose, options

ENTRIES = ("config", "finetune", "analyze", "import", "prepare_data")


def check(entry: str, overrides: list[str]) -> None:
    check_config(OmegaConf.to_container(compose(entry, overrides), resolve=True), entry)


@pytest.mark.parametrize("entry", ENTRIES)
def test_every_entry_points_default_config_passes(home: Path, entry: str) -> None:
    check(entry, ["source=/tmp"] if entry == "import" else [])


@pytest.mark.parametrize("group", ["method", "finetuning", "model", "train", "logger"])
def test_every_config_choice_passes(home: Path, group: str) -> None:
    for choice in options(group):
        check("config", [f"{group}={choice}"])


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["method=ties", "method.k=abc"], "method.k='abc': expected a number"),
        (["eval_batch_size=1.5"], "eval_batch_size=1.5: expected a whole number >= 1"),
        (["num_workers=-1"], "num_workers=-1: expected 'auto' or a whole number >= 0"),
        (["method=consensus", "method.tall_mask_lambda={A: x}"], "a mapping of names to numbers"),
        (["+method.kk=1"], "method sum takes k, scaling_coef, grid"),
        (["train.max_grad_norm=nan"], "train.max_grad_norm=nan: expected a finite number"),
        (["device=tpu"], "device='tpu' is not a device"),
        (["DATASETS=[]"], "DATASETS=[] is an empty task list"),
    ],
)
def test_wrong_values_are_named_with_what_is_expected(
    home: Path, overrides: list[str], words: str
) -> None:
    with pytest.raises(ConfigError, match="--help lists every key") as raised:
        check("config", overrides)
    assert words in str(raised.value)


def test_targets_are_checked_against_their_signature() -> None:
    model = target_model("taskmerge.finetune.loop.TrainSettings")
    assert {"lr", "batch_size", "save_every"} <= set(model.model_fields)
    with pytest.raises(Exception, match="Extra inputs"):
        model.model_validate({"lrr": 1.0})


def test_a_large_grid_is_announced_with_its_cost(
    home: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an earlier logging.config in the session (e.g. import-linter's) may have disabled it
    monkeypatch.setattr(logging.getLogger("taskmerge"), "disabled", False)
    grid = "[" + ",".join(f"{i / 1000:g}" for i in range(1, 2002)) + "]"
    with caplog.at_level(logging.WARNING, logger="taskmerge"):
        check("config", ["method=sum", f"method.grid={grid}"])
    assert "method.grid has 2001 points" in caplog.text and "2001 times" in caplog.text


def test_a_destination_in_a_fresh_home_is_not_a_typo(tmp_path: Path) -> None:
    """A TASKMERGE_HOME that does not exist yet (its parent does) is created on first use; a
    path whose parents are all missing outside it is refused."""
    from taskmerge.app.preflight import check_destination

    home = tmp_path / "new-home"
    assert check_destination(home / "cache", "paths.cache", home=home) == home / "cache"
    with pytest.raises(ConfigError, match="paths.create=true"):
        check_destination(tmp_path / "typo" / "x" / "ckpts", "paths.checkpoints", home=home)
