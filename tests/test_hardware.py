"""Device, loader workers and evaluation precision: ``auto`` values, the precisions' arithmetic,
and accuracies at another precision kept apart from float32 ones."""

from __future__ import annotations

import pytest
import torch

from taskmerge import hardware
from taskmerge.data.task_lists import resolve_task_specs
from taskmerge.errors import ConfigError
from taskmerge.evaluate.evaluator import TaskEvaluator, open_evaluator
from taskmerge.finetune.loop import TrainSettings
from taskmerge.hardware import (
    check_precision,
    evaluation_precision,
    resolve_device,
    resolve_workers,
)
from taskmerge.models.tiny import load_tiny_clip


@pytest.mark.parametrize(("cpus", "workers"), [(1, 0), (2, 1), (5, 4), (64, 8)])
def test_auto_workers_leave_one_cpu_to_the_model(monkeypatch, cpus: int, workers: int) -> None:  # noqa: ANN001
    monkeypatch.setattr(hardware, "usable_cpus", lambda: cpus)
    assert resolve_workers("auto") == workers
    assert TrainSettings(num_workers="auto").num_workers == workers


@pytest.mark.parametrize("value", [0, 3, "3"])
def test_explicit_workers_are_kept(value: int | str) -> None:
    assert resolve_workers(value) == int(value)


@pytest.mark.parametrize("value", [-1, "many", 1.5, None])
def test_bad_workers_are_a_config_error(value) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="num_workers"):
        resolve_workers(value)


def test_precisions() -> None:
    assert resolve_device("cpu") == "cpu"
    assert [check_precision(p) for p in ("fp32", "tf32", "bf16")] == ["fp32", "tf32", "bf16"]
    with pytest.raises(ConfigError, match="fp32, tf32, bf16"):
        check_precision("fp16")
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    for precision in ("fp32", "tf32"):  # tf32 changes nothing on a CPU
        with evaluation_precision(precision, "cpu"):
            assert torch.equal(a @ b, a @ b) and (a @ b).dtype == torch.float32
    with evaluation_precision("bf16", "cpu"):
        product = a @ b
    assert product.dtype == torch.bfloat16
    expected = (a.bfloat16().float() @ b.bfloat16().float()).bfloat16()
    assert torch.allclose(product.float(), expected.float(), rtol=1e-2, atol=1e-2)
    assert (a @ b).dtype == torch.float32  # restored after the block


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("demo")
    return load_tiny_clip(str(root / "tiny")), root


def evaluator(demo, precision: str) -> TaskEvaluator:  # noqa: ANN001
    bundle, root = demo
    return open_evaluator(
        bundle, resolve_task_specs(["Digits", "Colors"]), root / "data", root, num_workers=0,
        precision=precision,
    )  # fmt: skip


def test_bf16_evaluation_is_close_to_fp32_and_cached_apart(demo) -> None:  # noqa: ANN001
    state = demo[0].visual.state_dict()
    exact, tf32, bf16 = (evaluator(demo, p) for p in ("fp32", "tf32", "bf16"))
    assert (exact.scoring, tf32.scoring, bf16.scoring) == (
        "nonlinear", "nonlinear+tf32", "nonlinear+bf16"
    )  # fmt: skip
    for task in ("Digits", "Colors"):
        reference = exact.cached_accuracy("zeroshot", state, task, "test")
        assert tf32.accuracy(state, task, "test") == reference  # a CPU has no TF32
        low = bf16.cached_accuracy("zeroshot", state, task, "test")
        predicted, _ = bf16.predictions(state, task, "test")
        exact_predicted, _ = exact.predictions(state, task, "test")
        agreement = (predicted == exact_predicted).float().mean().item()
        assert abs(low - reference) < 0.03 and agreement > 0.95, (task, low, reference)
    accuracy = next((demo[1] / "accuracy").glob("*/*"))  # <model>/<tag>-<fingerprint>
    stored = sorted(p.relative_to(accuracy).as_posix()
                    for p in accuracy.rglob("*.json"))  # fmt: skip
    assert stored == [
        "zeroshot/nonlinear+bf16/Colors-test.json", "zeroshot/nonlinear+bf16/Digits-test.json",
        "zeroshot/nonlinear/Colors-test.json", "zeroshot/nonlinear/Digits-test.json",
    ]  # fmt: skip
