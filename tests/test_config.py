"""Every config choice composes and instantiates; bad choices fail with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from conftest import compose, options
from taskmerge.data.catalog import resolve_task_specs
from taskmerge.data.registry import STANDARD_TASKS, resolve_task_names
from taskmerge.entrypoints import build_method, quote_numeric_choices
from taskmerge.entrypoints import instantiate as entry_instantiate
from taskmerge.errors import CheckpointError, ConfigError
from taskmerge.finetuning import FinetuningMode
from taskmerge.merging import LiNeS, MergeMethod
from taskmerge.tracking import Tracker
from taskmerge.training import TrainSettings


def test_defaults_are_the_offline_demo(home: Path) -> None:
    cfg = compose()
    assert cfg.model._target_.endswith("load_tiny_clip")
    assert list(cfg.tasks.names) == [
        "Digits",
        "Shapes",
        "Colors",
        "Textures",
        "Counting",
        "Arrows",
        "Position",
        "Sizes",
    ]
    assert cfg.finetune_missing is True
    assert cfg.method._target_.endswith("TaskArithmetic")
    assert cfg.paths.checkpoints == str(home / "checkpoints")


def test_real_model_means_the_8_task_paper_setting(home: Path) -> None:
    cfg = compose(overrides=["model=ViT-B-32", "method=sum"])
    assert resolve_task_names(cfg.tasks.names, cfg.tasks.count) == list(STANDARD_TASKS[:8])
    assert cfg.model.quick_gelu is True and cfg.model.pretrained == "openai"
    assert cfg.train.lr == 1e-5 and cfg.train.batch_size == 128 and cfg.finetune_missing is False
    large = compose(overrides=["model=ViT-L-14"])
    assert (large.train.batch_size, large.train.grad_accumulation) == (64, 2)


@pytest.mark.parametrize("choice", ["8", "14", "20", "demo"])
def test_task_sets(home: Path, choice: str) -> None:
    cfg = compose(overrides=["model=ViT-B-16", f"tasks={choice}"])
    names = resolve_task_names(cfg.tasks.names, cfg.tasks.count)
    specs = resolve_task_specs(names)
    expected = {"8": 8, "14": 14, "20": 20, "demo": 8}[choice]
    assert len(specs) == expected
    if choice != "demo":
        assert names == list(STANDARD_TASKS[:expected])


def test_explicit_task_list(home: Path) -> None:
    cfg = compose(overrides=["model=ViT-B-32", "tasks.names=[MNIST,Cars]"])
    assert resolve_task_names(cfg.tasks.names, cfg.tasks.count) == ["MNIST", "Cars"]


def test_numeric_task_choices_are_quoted_for_hydra() -> None:
    assert quote_numeric_choices(["tasks=14", "tasks=8,20", "tasks.names=[A]", "model=x"]) == [
        "tasks='14'",
        "tasks='8','20'",
        "tasks.names=[A]",
        "model=x",
    ]


@pytest.mark.parametrize("method", options("method"))
def test_every_method_instantiates(home: Path, method: str) -> None:
    cfg = compose(overrides=[f"method={method}"])
    assert isinstance(build_method(cfg.method), MergeMethod)


#: Methods whose config has ``apply_lines`` (one merged task vector; single_task: editing).
LINES_METHODS = {"sum", "average", "ties", "consensus", "TSVM", "TSVM_2", "single_task"}


@pytest.mark.parametrize("method", options("method"))
def test_apply_lines_on_every_method(home: Path, method: str) -> None:
    if method in LINES_METHODS:
        cfg = compose(overrides=[f"method={method}", "method.apply_lines=true"])
        lines = build_method(cfg.method)
        assert isinstance(lines, LiNeS) and lines.editing == (method == "single_task")
        assert lines.name == f"{lines.method.name}+lines"
        return
    with pytest.raises(ConfigCompositionException, match="apply_lines"):
        compose(overrides=[f"method={method}", "method.apply_lines=true"])
    cfg = compose(overrides=[f"method={method}", "+method.apply_lines=true"])
    with pytest.raises(ConfigError, match=f"method {method} does not take apply_lines"):
        build_method(cfg.method)


@pytest.mark.parametrize("mode", options("finetuning"))
def test_every_finetuning_mode_instantiates(home: Path, mode: str) -> None:
    cfg = compose(overrides=[f"finetuning={mode}"])
    assert isinstance(instantiate(cfg.finetuning), FinetuningMode)


@pytest.mark.parametrize("train", options("train"))
def test_every_train_preset_instantiates(home: Path, train: str) -> None:
    assert isinstance(instantiate(compose(overrides=[f"train={train}"]).train), TrainSettings)


@pytest.mark.parametrize("logger", options("logger"))
def test_every_logger_instantiates(home: Path, tmp_path: Path, logger: str) -> None:
    cfg = compose(overrides=[f"logger={logger}"])
    tracker = instantiate(cfg.logger, dir=str(tmp_path / "run"), name="t", run_config={"a": 1})
    assert isinstance(tracker, Tracker)
    tracker.log({"val/x/top1": 1.0})
    tracker.finish()


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(home: Path, experiment: str) -> None:
    cfg = compose(overrides=[f"experiment={experiment}"])
    assert resolve_task_specs(resolve_task_names(cfg.tasks.names, cfg.tasks.count))


def test_finetune_config_composes(home: Path) -> None:
    cfg = compose("finetune", ["model=ViT-B-32", "tasks=14"])
    assert cfg.tasks.count == 14 and cfg.overwrite is False


def test_tiny_model_instantiates_through_open_clip(home: Path) -> None:
    bundle = instantiate(compose().model)
    assert bundle.name == "taskmerge-tiny"
    import open_clip

    assert "taskmerge-tiny" in open_clip.list_models()


@pytest.mark.parametrize("model", ["ViT-B-32", "ViT-B-16", "ViT-L-14"])
def test_real_model_without_weights_is_one_clear_error(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cfg = compose(overrides=[f"model={model}", f"model.cache_dir={tmp_path / 'hf'}"])
    with pytest.raises(CheckpointError, match=f"{model}/openai are not in the local cache"):
        entry_instantiate(cfg.model)


def test_unknown_method_lists_the_options(home: Path) -> None:
    with pytest.raises(ConfigCompositionException, match="(?s)method/nope.*average.*sum"):
        compose(overrides=["method=nope"])


def test_bad_task_count_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="tasks.count between 1 and 20"):
        resolve_task_names(None, 21)
