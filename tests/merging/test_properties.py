"""Properties of the merge algebra over random small models (hypothesis), for every registered
method where the property applies: task order does not matter, zero task vectors give the
pretrained model, one task at coefficient 1 gives the fine-tuned model, TIES without trimming on
same-sign vectors is their sum, TSV-M of one task is that task, no merge changes its inputs."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import taskmerge
from taskmerge.merging.options import keys_of
from taskmerge.merging.registry import data_free_names, method_spec

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = {"w1": (6, 4), "w2": (4, 5), "b": (5,), "e": (1, 3)}
#: Fixed hyperparameters for the API (nothing is swept there).
OPTIONS = {
    "sum": {"scaling_coef": 0.7},
    "ties": {"scaling_coef": 0.7, "k": 40},
    "consensus": {"scaling_coef": 0.7, "prun_thre_k": 1},
    "TSVM": {"scaling_coef": 1.0},
    "TSVM_2": {"scaling_coef": 1.0},
    "iso_c": {"scaling_coef": 1.0},
    "iso_cts": {"scaling_coef": 1.0},
    "negation": {"scaling_coef": 0.5},
    "tall_mask": {"tall_mask_lambda": 0.4},
    "mag_masking": {"k": 30},
    "dare": {"scaling_coef": 0.5},
    "dare_ties": {"scaling_coef": 0.5},
    "breadcrumbs": {"scaling_coef": 0.7, "density": 0.5},
    "magmax": {"scaling_coef": 0.7},
    "pcb": {"scaling_coef": 1.0},
    "cart": {"scaling_coef": 1.5, "initial_rank_ratio": 0.5},
    "wudi": {"iter_num": 20, "device": "cpu"},
}
#: Methods that need at least two tasks.
AT_LEAST_TWO = {"model_stock"}
#: Methods whose result depends on which task is first (they pick a task by index).
ORDERED = {"single_task", "negation"}
PROPERTY = settings(
    max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def model(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: scale * torch.randn(s, generator=gen, dtype=torch.float64).float()
            for n, s in SHAPES.items()}  # fmt: skip


def fine_tuned(base: dict, seeds: list[int], scale: float = 0.1) -> dict[str, dict]:
    return {f"t{i}": {n: base[n] + model(s, scale)[n] for n in base} for i, s in enumerate(seeds)}


def merge(method: str, base: dict, tuned: dict) -> dict:
    return taskmerge.merge(base, tuned, method, **OPTIONS.get(method, {}))


def assert_close(a, b, tol: float = 1e-4) -> None:  # noqa: ANN001
    if isinstance(a, dict) and isinstance(next(iter(a.values())), dict):
        for task in a:
            assert_close(a[task], b[task], tol)
        return
    for name in a:
        scale = max(1.0, float(b[name].abs().max()))
        assert float((a[name] - b[name]).abs().max()) <= tol * scale, name


seeds = st.lists(st.integers(0, 10_000), min_size=2, max_size=4, unique=True)


@pytest.mark.parametrize("method", [m for m in data_free_names() if m not in ORDERED])
@PROPERTY
@given(base_seed=st.integers(0, 10_000), task_seeds=seeds, data=st.data())
def test_task_order_does_not_change_the_result(method, base_seed, task_seeds, data) -> None:  # noqa: ANN001
    base = model(base_seed)
    tuned = fine_tuned(base, task_seeds)
    order = data.draw(st.permutations(list(tuned)))
    assert_close(merge(method, base, {t: tuned[t] for t in order}), merge(method, base, tuned))


@pytest.mark.parametrize("method", data_free_names())
@PROPERTY
@given(base_seed=st.integers(0, 10_000), count=st.integers(1, 3))
def test_zero_task_vectors_give_the_pretrained_model(method, base_seed, count) -> None:  # noqa: ANN001
    assume(count >= 2 or method not in AT_LEAST_TWO)
    base = model(base_seed)
    tuned = {f"t{i}": copy.deepcopy(base) for i in range(count)}
    merged = merge(method, base, tuned)
    per_task = merged if isinstance(next(iter(merged.values())), dict) else {"all": merged}
    for state in per_task.values():
        assert_close(state, base, 1e-6)


@pytest.mark.parametrize(
    "method", ["sum", "single_task", "average", "ties", "TSVM", "TSVM_2", "magmax"]
)
@PROPERTY
@given(base_seed=st.integers(0, 10_000), task_seed=st.integers(0, 10_000))
def test_one_task_at_coefficient_one_is_the_fine_tuned_model(method, base_seed, task_seed) -> None:  # noqa: ANN001
    base = model(base_seed)
    tuned = fine_tuned(base, [task_seed])
    options = {**OPTIONS.get(method, {}), "scaling_coef": 1.0}
    if method == "ties":
        options["k"] = 100
    if method in ("average", "single_task"):
        options.pop("scaling_coef")
    merged = taskmerge.merge(base, tuned, method, **options)
    assert_close(merged, tuned["t0"], 1e-5)  # TSV-M of one task keeps its full rank


@PROPERTY
@given(base_seed=st.integers(0, 10_000), task_seeds=seeds)
def test_ties_without_trim_on_same_sign_vectors_is_their_sum(base_seed, task_seeds) -> None:  # noqa: ANN001
    base = model(base_seed)
    tuned = {
        f"t{i}": {n: base[n] + model(s)[n].abs() * 0.1 for n in base}
        for i, s in enumerate(task_seeds)
    }
    ties = taskmerge.merge(base, tuned, "ties", k=100, agg="sum", scaling_coef=0.5)
    total = taskmerge.merge(base, tuned, "sum", scaling_coef=0.5)
    assert_close(ties, total, 1e-6)


@pytest.mark.parametrize("method", data_free_names())
def test_no_merge_changes_its_inputs(method: str) -> None:
    base_module = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 5))
    tuned_modules = {}
    for i in range(3):
        copy_ = copy.deepcopy(base_module)
        with torch.no_grad():
            for p in copy_.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
        tuned_modules[f"t{i}"] = copy_
    before = {k: v.clone() for k, v in base_module.state_dict().items()}
    before_tuned = {t: {k: v.clone() for k, v in m.state_dict().items()}
                    for t, m in tuned_modules.items()}  # fmt: skip
    options = dict(OPTIONS.get(method, {}))
    if method_spec(method).lines is not None and "scaling_coef" in keys_of(method):
        options.setdefault("scaling_coef", 0.5)
    taskmerge.merge(base_module, tuned_modules, method, **options)
    as_dicts = {t: dict(m.state_dict()) for t, m in tuned_modules.items()}
    taskmerge.merge(dict(base_module.state_dict()), as_dicts, method, **options)
    assert all(torch.equal(v, before[k]) for k, v in base_module.state_dict().items())
    for task, module in tuned_modules.items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, before_tuned[task][key]), (method, task, key)
