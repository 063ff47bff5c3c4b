"""LiNeS as wired for every method, single-task editing and task negation.

Closed forms on hand-made tensors (per-layer scales, alpha from the norms, theta0 - alpha tau),
and the Val selection rules on hand-made curves, down through ``run_merge`` with a stand-in
workspace whose accuracies are read from the merged weights. Reference behaviour matched:
``wang-kee/LiNeS`` (``LiNeS_scaling``, ``find_optimal_coef_tradeoff``) and
``gortizji/tangent_task_arithmetic`` (``eval_task_negation.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from taskmerge.app.config import method_from_config as build_method
from taskmerge.errors import ConfigError
from taskmerge.experiment.selection import best_index
from taskmerge.merging.arithmetic import SingleTask
from taskmerge.merging.lines import LiNeS, with_lines
from taskmerge.merging.negation import TaskNegation
from taskmerge.merging.ties import Ties
from taskmerge.metrics import Reference, SplitMetrics
from taskmerge.vectors.task_vector import TaskVector
from tests.helpers.configs import compose
from tests.helpers.experiments import merge_results

pytestmark = pytest.mark.usefixtures("one_thread")


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)


class Net(nn.Module):
    """A stem, ``depth`` residual blocks and a final norm (outside the blocks)."""

    def __init__(self, depth: int = 3) -> None:
        super().__init__()
        self.stem = nn.Linear(2, 2)
        self.blocks = nn.ModuleList([Block() for _ in range(depth)])
        self.norm = nn.LayerNorm(2)


def constant_vector(net: nn.Module, value: float) -> dict[str, torch.Tensor]:
    return {name: torch.full_like(p, value) for name, p in net.state_dict().items()}


def task_vectors(net: nn.Module, *values: float) -> dict[str, TaskVector]:
    return {f"t{i}": TaskVector(constant_vector(net, v)) for i, v in enumerate(values)}


# --------------------------------------------------------------------------- LiNeS, multi-task
def test_lines_from_the_config_binds_the_encoder_and_sweeps_beta(home: Path) -> None:
    net = Net(3)
    method = build_method(compose(overrides=["method=ties", "method.apply_lines=true"]).method)
    assert isinstance(method, LiNeS) and isinstance(method.method, Ties) and not method.editing
    assert method.bind(net, ["t0", "t1"]) is method
    assert (method.block_path, method.num_blocks) == ("blocks", 3)
    tvs = task_vectors(net, 1.0, 3.0)
    candidates = list(method.candidates(constant_vector(net, 0.0), tvs))
    assert [c.hyperparameters["beta"] for c in candidates] == pytest.approx(method.method.grid)
    # TIES (k=20 of a constant vector keeps all: ties at the threshold) -> mean 2; sum 4:
    # alpha = (||4||_1 / ||2||_1) / T = 1
    chosen = candidates[3]  # beta = 0.4
    assert chosen.hyperparameters["alpha"] == pytest.approx(1.0)
    for layer in range(3):
        expected = 2 * (1.0 + 0.4 * layer / 2)
        assert torch.allclose(
            chosen.shared[f"blocks.{layer}.fc.weight"], torch.full((2, 2), expected)
        )
    assert torch.allclose(chosen.shared["stem.bias"], torch.full((2,), 2.0))
    assert torch.allclose(chosen.shared["norm.weight"], torch.full((2,), 2.0))


def test_lines_depth_comes_from_the_model() -> None:
    method = build_lines_sum().bind(Net(5), ["t0"])
    assert method.num_blocks == 5 and method.block_index["blocks.4.fc.bias"] == 4
    with pytest.raises(ConfigError, match="nn.Module"):
        build_lines_sum().bind(None, ["t0"])
    with pytest.raises(ConfigError, match="cannot take apply_lines"):
        build_lines_sum().bind(nn.Linear(2, 2), ["t0"])


def build_lines_sum() -> LiNeS:
    from taskmerge.merging.arithmetic import TaskArithmetic

    return with_lines(TaskArithmetic(scaling_coef=0.5), apply_lines=True)  # type: ignore[return-value]


# --------------------------------------------------------------------------- single-task editing
def test_editing_candidates_are_alpha_1_to_0_with_beta_1_minus_alpha() -> None:
    net = Net(3)
    method = with_lines(SingleTask(task_index=1), apply_lines=True).bind(net, ["t0", "t1"])
    assert isinstance(method, LiNeS) and method.editing and method.needs_zeroshot
    candidates = list(method.candidates(constant_vector(net, 0.0), task_vectors(net, 1.0, 3.0)))
    alphas = [c.hyperparameters["alpha"] for c in candidates]
    assert alphas == pytest.approx([1 - i / 10 for i in range(11)])
    assert [c.hyperparameters["beta"] for c in candidates] == pytest.approx(
        [i / 10 for i in range(11)]
    )
    at = candidates[7]  # alpha 0.3, beta 0.7, on tau_t1 = 3
    assert torch.allclose(at.shared["stem.weight"], torch.full((2, 2), 0.9))
    assert torch.allclose(at.shared["blocks.1.fc.weight"], torch.full((2, 2), 3 * 0.65))
    assert torch.allclose(at.shared["blocks.2.fc.bias"], torch.full((2,), 3.0))
    with pytest.raises(ConfigError, match="task_index=2 is out of range"):
        with_lines(SingleTask(task_index=2), apply_lines=True).bind(net, ["t0", "t1"])


#: Per alpha: target accuracy, accuracy of each control task (fine-tuned target 0.8, zero-shot
#: controls 0.4).
EDITING_CURVE = {1.0: (0.80, 0.30), 0.5: (0.76, 0.38), 0.0: (0.40, 0.40)}


def editing_metrics(alpha: float, reference: Reference) -> SplitMetrics:
    target, control = EDITING_CURVE[alpha]
    return SplitMetrics("val", {"T": target, "C1": control, "C2": control}, reference.finetuned)


@pytest.mark.parametrize(("weight", "expected"), [(2.0, 0.5), (10.0, 1.0), (0.0, 0.0)])
def test_editing_selection_is_the_weighted_tradeoff(weight: float, expected: float) -> None:
    method = with_lines(SingleTask(task_index=0), apply_lines=True, tradeoff_target_weight=weight)
    reference = Reference(
        ["T", "C1", "C2"], {"T": 0.8, "C1": 0.9, "C2": 0.9}, {"T": 0.4, "C1": 0.4, "C2": 0.4}
    )
    alphas = list(EDITING_CURVE)
    derived, scores = [], []
    for alpha in alphas:
        metrics = editing_metrics(alpha, reference)
        derived.append(method.derived_metrics(metrics, reference))
        scores.append(method.score(metrics, derived[-1], {"alpha": alpha, "beta": 1 - alpha}))
    # w * target / 0.8 + mean(control / 0.4): alpha 1: 2.75, 0.5: 2.85, 0: 2.0 (at w = 2)
    assert scores == pytest.approx([weight * t / 0.8 + c / 0.4 for t, c in EDITING_CURVE.values()])
    assert derived[1]["control/normalized_top1"] == pytest.approx(0.95)
    assert alphas[best_index(scores)] == expected


def test_best_index_ties_go_first_and_none_is_excluded() -> None:
    assert best_index([1.0, 2.0, 2.0]) == 1
    assert best_index([None, 0.5, None, 0.7]) == 3
    assert best_index([None, None]) is None


# --------------------------------------------------------------------------- negation
def test_negation_is_theta0_minus_alpha_tau_target() -> None:
    net = Net(2)
    method = TaskNegation(task_index=1, grid=[0.0, 0.5]).bind(net, ["t0", "t1"])
    base = constant_vector(net, 1.0)
    candidates = list(method.candidates(base, task_vectors(net, 5.0, 2.0)))
    assert [c.hyperparameters["scaling_coef"] for c in candidates] == [0.0, 0.5]
    assert torch.allclose(candidates[1].shared["blocks.1.fc.weight"], torch.zeros(2, 2))
    assert torch.equal(candidates[0].shared["stem.bias"], base["stem.bias"])


def test_negation_config_and_errors(home: Path) -> None:
    method = build_method(compose(overrides=["method=negation"]).method)
    assert isinstance(method, TaskNegation) and method.needs_zeroshot
    assert method.grid == pytest.approx([i / 20 for i in range(21)])
    assert (method.task_index, method.control_threshold) == (0, 0.95)
    with pytest.raises(ConfigError, match=r"task_index=3 is out of range for 3 tasks"):
        TaskNegation(task_index=3).bind(None, ["a", "b", "c"])
    with pytest.raises(ConfigError, match="control_tasks"):
        TaskNegation(task_index=0, control_tasks=["a"]).bind(None, ["a", "b"])
    with pytest.raises(ConfigError, match="control_tasks"):
        TaskNegation(control_tasks=["zzz"]).bind(None, ["a", "b"])
    with pytest.raises(ConfigError, match="method.selection"):
        TaskNegation(selection="best")
    bound = TaskNegation(task_index=1, control_tasks=["c"]).bind(None, ["a", "b", "c"])
    assert bound.details()["target_task"] == "b" and bound.details()["control_tasks"] == ["c"]


# --------------------------------------------------------------------------- through run_merge
class BiasReadout:
    """An evaluator whose accuracy is a known function of the merged ``stem.bias``."""

    def __init__(self, tasks: list[str], accuracy: Callable[[float, str], float]) -> None:
        self.task_names = tasks
        self._accuracy = accuracy

    def accuracy(self, state: dict, task: str, split: str) -> float:
        return self._accuracy(round(float(state["stem.bias"][0]), 6), task)


#: alpha -> (target top-1, control top-1); zero-shot control 0.80, so the threshold is 0.76.
NEGATION_CURVE = {
    0.0: (0.90, 0.80),
    0.1: (0.60, 0.79),
    0.2: (0.50, 0.78),
    0.3: (0.55, 0.77),
    0.4: (0.20, 0.70),
}


def _run(tmp_path: Path, method, accuracy, values) -> dict:  # noqa: ANN001
    net, tasks = Net(3), ["A", "B", "C"]
    tvs = {task: TaskVector(constant_vector(net, v)) for task, v in zip(tasks, values, strict=True)}
    finetuned = dict.fromkeys(tasks, {"val_top1": 0.8, "test_top1": 0.8})
    results = merge_results(
        method.bind(net, tasks), constant_vector(net, 0.0), tvs, BiasReadout(tasks, accuracy),
        finetuned, tmp_path,
    )  # fmt: skip
    assert json.loads((tmp_path / "results.json").read_text())["method"] == results["method"]
    return results


@pytest.mark.parametrize(("selection", "expected"), [("min_target", 0.2), ("largest_coef", 0.3)])
def test_negation_selection_through_run_merge(
    tmp_path: Path, selection: str, expected: float
) -> None:
    def accuracy(bias: float, task: str) -> float:
        target, control = NEGATION_CURVE[-bias + 0.0]  # weights are -alpha * tau_A, tau_A = 1
        return target if task == "A" else control

    method = TaskNegation(task_index=0, selection=selection, grid=list(NEGATION_CURVE))
    results = _run(tmp_path, method, accuracy, (1.0, 5.0, 7.0))
    assert results["hyperparameters"] == {"scaling_coef": expected}
    admissible = [c["val/control/meets_threshold"] for c in results["sweep"]]
    assert admissible == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert results["sweep"][-1]["val/selection_score"] is None
    report = results["report"]
    assert report["target_task"] == "A" and report["control_tasks"] == ["B", "C"]
    target, control = NEGATION_CURVE[expected]
    assert report["test"]["target/top1"] == pytest.approx(target)
    assert report["test"]["target/drop_from_zeroshot"] == pytest.approx(0.90 - target)
    assert report["test"]["target/drop_from_finetuned"] == pytest.approx(0.80 - target)
    assert report["test"]["control/top1"] == pytest.approx(control)
    assert results["zeroshot"]["A"] == {"val_top1": 0.90, "test_top1": 0.90}
    assert results["test"]["A"]["top1"] == pytest.approx(target)  # the stable fields stay


def test_negation_with_no_admissible_coefficient_is_a_config_error(tmp_path: Path) -> None:
    method = TaskNegation(grid=[0.4], control_threshold=0.95)
    with pytest.raises(ConfigError, match="control_threshold"):
        _run(tmp_path, method, lambda b, t: NEGATION_CURVE[-b + 0.0][1], (1, 1, 1))


def test_editing_selection_through_run_merge(tmp_path: Path) -> None:
    def accuracy(bias: float, task: str) -> float:
        target, control = EDITING_CURVE[bias]  # stem is outside the blocks: alpha * tau_A
        return target if task == "A" else control

    method = with_lines(SingleTask(task_index=0), apply_lines=True, grid=list(EDITING_CURVE))
    results = _run(tmp_path, method, accuracy, (1.0, 2.0, 3.0))
    assert results["method"] == "single_task+lines"
    assert results["hyperparameters"] == {"alpha": 0.5, "beta": 0.5}
    assert results["report"]["lines"] == {
        "mode": "editing",
        "num_blocks": 3,
        "block_path": "blocks",
        "tradeoff_target_weight": 2.0,
    }
    assert results["report"]["val"]["tradeoff"] == pytest.approx(2 * 0.76 / 0.8 + 0.38 / 0.4)
