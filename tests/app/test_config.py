"""Every config choice composes and instantiates; bad choices fail with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from taskmerge.app.config import instantiate as entry_instantiate
from taskmerge.app.config import method_from_config as build_method
from taskmerge.app.config import task_names
from taskmerge.data.spec import STANDARD_TASKS
from taskmerge.data.task_lists import resolve_task_names, resolve_task_specs
from taskmerge.errors import CheckpointError, ConfigError
from taskmerge.finetune.loop import TrainSettings
from taskmerge.finetune.modes import FinetuningMode
from taskmerge.merging.base import MergeMethod
from taskmerge.merging.lines import LiNeS
from taskmerge.merging.registry import lines_methods, method_names, method_spec
from taskmerge.reporting.tracking import Tracker
from tests.helpers.configs import compose, options


def test_defaults_are_the_offline_demo(home: Path) -> None:
    cfg = compose()
    assert cfg.model._target_.endswith("load_tiny_clip")
    assert task_names(cfg) == [
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
    assert cfg.method.name == "sum"
    assert cfg.paths.checkpoints == str(home / "checkpoints")


def test_real_model_means_the_8_task_paper_setting(home: Path) -> None:
    cfg = compose(overrides=["model=ViT-B-32", "method=sum"])
    assert task_names(cfg) == list(STANDARD_TASKS[:8])
    assert cfg.model.quick_gelu is True and cfg.model.pretrained == "openai"
    assert cfg.train.lr == 1e-5 and cfg.train.batch_size == 128 and cfg.finetune_missing is False
    large = compose(overrides=["model=ViT-L-14"])
    assert (large.train.batch_size, large.train.grad_accumulation) == (64, 2)


@pytest.mark.parametrize("count", [8, 14, 20])
def test_num_tasks_takes_the_first_standard_tasks(home: Path, count: int) -> None:
    cfg = compose(overrides=["model=ViT-B-16", f"num_tasks={count}"])
    names = task_names(cfg)
    assert names == list(STANDARD_TASKS[:count]) and len(resolve_task_specs(names)) == count


def test_demo_tasks_and_a_prefix_of_them(home: Path) -> None:
    assert len(resolve_task_specs(task_names(compose()))) == 8
    assert task_names(compose(overrides=["num_tasks=3"])) == ["Digits", "Shapes", "Colors"]
    assert len(task_names(compose(overrides=["model=ViT-B-32", "tasks=demo"]))) == 8


@pytest.mark.parametrize("override", ["tasks.names=[MNIST,Cars]", "DATASETS=[MNIST,Cars]"])
def test_explicit_task_list_wins_over_num_tasks(home: Path, override: str) -> None:
    cfg = compose(overrides=["model=ViT-B-32", "num_tasks=14", override])
    assert task_names(cfg) == ["MNIST", "Cars"]


def test_reference_command_line_composes(home: Path) -> None:
    """``python main.py model=ViT-B-32 num_tasks=8 method="sum" method.apply_lines=True``."""
    cfg = compose(
        overrides=["model=ViT-B-32", "num_tasks=8", "method=sum", "method.apply_lines=True"]
    )
    assert task_names(cfg) == list(STANDARD_TASKS[:8])
    assert isinstance(build_method(cfg.method), LiNeS)
    for extra in ("method.load_mask=True", "method.prun_thre_k=2"):
        assert build_method(compose(overrides=["method=consensus", extra]).method)
    assert build_method(compose(overrides=["method=single_task", "method.task_index=0"]).method)


def test_method_configs_are_the_registry(home: Path) -> None:
    """Every registered method has its YAML, named as the file, holding values only (no
    ``_target_``: the registry builds it), and every YAML is a registered method."""
    assert set(options("method")) == set(method_names())
    for name in method_names():
        node = compose(overrides=[f"method={name}"]).method
        assert node.name == name and "_target_" not in node
        method = build_method(node)
        assert method.name == name and isinstance(method, method_spec(name).cls)


def test_tsvm_2_is_declared_once_in_the_registry(home: Path) -> None:
    two, one = (compose(overrides=[f"method={m}"]).method for m in ("TSVM_2", "TSVM"))
    assert list(two.grid) == list(one.grid) and "orthogonalize" not in two
    assert build_method(two).orthogonalize == "whiten"
    assert build_method(one).orthogonalize == "polar"
    assert method_spec("TSVM_2").defaults == {"orthogonalize": "whiten"}
    with pytest.raises(ConfigError, match="TSVM_2 sets orthogonalize itself"):
        build_method(compose(overrides=["method=TSVM_2", "+method.orthogonalize=polar"]).method)


@pytest.mark.parametrize("method", options("method"))
def test_every_method_instantiates(home: Path, method: str) -> None:
    cfg = compose(overrides=[f"method={method}"])
    assert isinstance(build_method(cfg.method), MergeMethod)


@pytest.mark.parametrize("method", method_names())
def test_apply_lines_on_every_method(home: Path, method: str) -> None:
    if method in lines_methods():
        cfg = compose(overrides=[f"method={method}", "method.apply_lines=true"])
        lines = build_method(cfg.method)
        assert isinstance(lines, LiNeS) and lines.editing == (method in lines_methods("editing"))
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
    assert resolve_task_specs(task_names(cfg))


def test_finetune_config_composes(home: Path) -> None:
    cfg = compose("finetune", ["model=ViT-B-32", "num_tasks=14"])
    assert len(task_names(cfg)) == 14 and cfg.overwrite is False


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


def test_bad_task_selection_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="num_tasks=21 is out of range"):
        resolve_task_names(None, "standard", 21)
    with pytest.raises(ConfigError, match="appear twice"):
        resolve_task_specs(["MNIST", "MNIST"])
    with pytest.raises(ConfigError, match="task list is empty"):
        resolve_task_specs([])
