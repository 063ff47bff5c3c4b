"""The linearized forward, the casts between forwards, the one-pass sweep, the disentanglement
error and the fine-tuning-mode bookkeeping, checked against closed forms and direct evaluation.

The tiny demo CLIP and two generated demo tasks (Digits, Colors) are real inputs here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from taskmerge.analysis.disentanglement import coefficient_grid, disentanglement_error
from taskmerge.data.task_lists import resolve_task_specs
from taskmerge.errors import CheckpointError, ConfigError
from taskmerge.evaluate.evaluator import TaskEvaluator, open_evaluator
from taskmerge.experiment.selection import Selection
from taskmerge.experiment.sweep import sweep
from taskmerge.finetune.modes import AttentionOnly, FinetuningMode, Linearized, PatternSubset
from taskmerge.io.digest import fingerprint
from taskmerge.io.tensors import save_state_dict
from taskmerge.merging.arithmetic import TaskArithmetic
from taskmerge.merging.lines import LiNeS, with_lines
from taskmerge.merging.negation import TaskNegation
from taskmerge.merging.ties import Ties
from taskmerge.metrics import Reference
from taskmerge.models.forward import check_forward
from taskmerge.models.linearized import LinearizedEncoder, jvp_features, linearized_features
from taskmerge.store.checkpoints import CheckpointStore
from taskmerge.vectors.task_vector import TaskVector, check_same_mode

TASKS = ["Digits", "Colors"]


@pytest.fixture
def bundle(tiny_clip):  # noqa: ANN001, ANN201
    return tiny_clip


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo-cache")


def evaluator(bundle, cache: Path, forward: str = "linear") -> TaskEvaluator:  # noqa: ANN001
    return open_evaluator(
        bundle, resolve_task_specs(TASKS), cache / "data", cache, batch_size=128, num_workers=0,
        forward=forward,
    )  # fmt: skip


class DirectOnly:
    """An evaluator that scores every candidate directly (no one-pass affine route)."""

    supports_affine = False

    def __init__(self, inner: TaskEvaluator) -> None:
        self.inner = inner

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.inner, name)


def pretrained_of(bundle) -> dict[str, torch.Tensor]:  # noqa: ANN001
    return {k: v.detach().clone() for k, v in bundle.visual.state_dict().items()}


def random_vector(bundle, seed: int, scale: float = 2e-3) -> dict[str, torch.Tensor]:  # noqa: ANN001
    gen = torch.Generator().manual_seed(seed)
    return {
        name: scale * torch.randn(value.shape, generator=gen)
        for name, value in bundle.visual.state_dict().items()
        if value.is_floating_point()
    }


def images(seed: int = 0, count: int = 6) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- the forward
def test_linearized_forward_equals_the_model_at_theta0_and_is_affine(bundle) -> None:  # noqa: ANN001
    encoder = copy.deepcopy(bundle.visual).eval()
    params0 = dict(pretrained_of(bundle))
    x = images()
    with torch.no_grad():
        plain = encoder(x)
    assert torch.allclose(linearized_features(encoder, params0, x), plain, atol=1e-5)
    direction = random_vector(bundle, 1)
    base, (tangent,) = jvp_features(encoder, params0, x, [direction])
    assert torch.allclose(base, plain, atol=1e-5)
    lin = LinearizedEncoder(copy.deepcopy(bundle.visual).eval(), params0)
    for coef in (-1.5, 0.5, 2.0):
        moved = {k: v + coef * direction[k] if k in direction else v for k, v in params0.items()}
        lin.load_state_dict(moved)
        with torch.no_grad():
            out = lin(x)
        assert torch.allclose(out, base + coef * tangent, atol=1e-4, rtol=1e-4), coef


def test_jvp_matches_float64_finite_differences(bundle) -> None:  # noqa: ANN001
    encoder = copy.deepcopy(bundle.visual).double().eval()
    params0 = {k: v.double() for k, v in encoder.state_dict().items()}
    direction = {k: v.double() for k, v in random_vector(bundle, 2, scale=1.0).items()}
    x = images().double()
    _, (tangent,) = jvp_features(encoder, params0, x, [direction])
    eps = 1e-6
    shifted = []
    for sign in (1, -1):
        moved = copy.deepcopy(encoder)
        moved.load_state_dict({k: v + sign * eps * direction.get(k, 0) for k, v in params0.items()})
        with torch.no_grad():
            shifted.append(moved(x))
    difference = (shifted[0] - shifted[1]) / (2 * eps)
    assert ((tangent - difference).norm() / tangent.norm()).item() < 1e-6


def test_linearized_gradient_at_theta0_is_the_model_gradient(bundle) -> None:  # noqa: ANN001
    """d f_lin / d theta = J = d f / d theta at theta0: the first step of linear fine-tuning
    sees the same gradient as standard fine-tuning."""
    x, labels = images(3, 4), torch.tensor([0, 1, 2, 3])
    grads = []
    for linear in (False, True):
        encoder = copy.deepcopy(bundle.visual).train()
        model = LinearizedEncoder(encoder) if linear else encoder
        F.cross_entropy(model(x)[:, :5], labels).backward()
        grads.append({k: p.grad.clone() for k, p in encoder.named_parameters()})
    for name, grad in grads[0].items():
        assert torch.allclose(grads[1][name], grad, rtol=1e-4, atol=1e-6), name


def test_linearized_encoder_state_dict_is_the_encoders(bundle) -> None:  # noqa: ANN001
    lin = LinearizedEncoder(copy.deepcopy(bundle.visual))
    assert list(lin.state_dict()) == list(bundle.visual.state_dict())
    assert check_forward("linear") == "linear"
    with pytest.raises(ConfigError, match="eval_forward='tangent'"):
        check_forward("tangent")


# --------------------------------------------------------------------------- one-pass sweep
def test_one_pass_predictions_equal_direct_linearized_evaluation(bundle, cache: Path) -> None:  # noqa: ANN001
    ev = evaluator(bundle, cache)
    pretrained, tau = pretrained_of(bundle), random_vector(bundle, 4, scale=5e-3)
    coefficients = [(c,) for c in (0.0, 0.5, 1.0, 3.0)]
    affine, labels = ev.affine_predictions([tau], coefficients, "Digits", "val")
    for row, (coef,) in enumerate(coefficients):
        state = TaskVector(tau).apply_to_state_dict(pretrained, coef)
        direct, direct_labels = ev.predictions(state, "Digits", "val")
        assert torch.equal(direct_labels, labels)
        agree = (direct == affine[row]).float().mean().item()
        assert agree >= 0.995, (coef, agree)  # float32 ties at most; logits are checked below
    encoder = ev.encoder_with(TaskVector(tau).apply_to_state_dict(pretrained, 3.0))
    x = next(iter(ev.loader("Digits", "val")))[0][:16]
    with torch.no_grad():
        direct_features = encoder(x)
    base, (tangent,) = jvp_features(ev._base, ev.params0, x, [tau])
    logits_direct = ev.head("Digits")(direct_features)
    logits_affine = ev.head("Digits")(base + 3.0 * tangent)
    rel = (logits_affine - logits_direct).norm() / logits_direct.norm()
    assert rel < 1e-4


def test_sweep_takes_the_one_pass_route_and_agrees_with_direct(
    bundle,  # noqa: ANN001
    cache: Path,
) -> None:
    pretrained = pretrained_of(bundle)
    tvs = {t: TaskVector(random_vector(bundle, i + 10, 5e-3)) for i, t in enumerate(TASKS)}
    reference = Reference(TASKS, dict.fromkeys(TASKS, 0.5))
    curves = []
    for kind in (None, DirectOnly):
        ev = evaluator(bundle, cache) if kind is None else kind(evaluator(bundle, cache))
        calls = []
        original = ev.accuracy
        ev.accuracy = lambda *a, **k: calls.append(a) or original(*a, **k)  # noqa: B023
        method = TaskArithmetic(grid=[0.0, 0.5, 1.0, 1.5])
        selection = Selection(reference.finetuned)
        for candidate, metrics in sweep(method, pretrained, tvs, ev, reference):
            selection.offer(candidate, metrics)
        curves.append([point.metrics.mean_top1 for point in selection.curve])
        if kind is None:
            assert calls == []  # every grid point came from the one-pass route
            chosen, _ = selection.result("sum")
            assert set(dict(chosen.shared)) == set(pretrained)
        else:
            assert len(calls) == 4 * len(TASKS)
    assert curves[0] == pytest.approx(curves[1], abs=0.01)


def test_lines_affine_family_equals_its_candidates(bundle) -> None:  # noqa: ANN001
    pretrained = pretrained_of(bundle)
    tvs = {t: TaskVector(random_vector(bundle, i + 20)) for i, t in enumerate(TASKS)}
    for method in (
        with_lines(Ties(k=50), apply_lines=True, grid=[0.3, 1.0]),
        with_lines(TaskNegation(task_index=0), apply_lines=False, grid=[0.4]),
    ):
        bound = method.bind(bundle.visual, TASKS)
        family = bound.affine_family(pretrained, tvs)
        candidates = list(bound.candidates(pretrained, tvs))
        assert len(family.points) == len(candidates)
        for index, candidate in enumerate(candidates):
            from_family = family.candidate(pretrained, index)
            assert from_family.hyperparameters == candidate.hyperparameters
            for name, value in candidate.shared.items():
                assert torch.allclose(from_family.shared[name], value, atol=1e-6), name
        if isinstance(bound, LiNeS):
            assert len(family.directions) == 2  # tau and its per-block ramp


# --------------------------------------------------------------------------- disentanglement
def test_disentanglement_one_pass_equals_direct_and_has_its_zeros(bundle, cache: Path) -> None:  # noqa: ANN001
    pretrained = pretrained_of(bundle)
    vectors = [random_vector(bundle, 30, 2e-2), random_vector(bundle, 31, 2e-2)]
    grid = coefficient_grid(-2, 2, 3)
    results = []
    for kind in (None, DirectOnly):
        ev = evaluator(bundle, cache) if kind is None else kind(evaluator(bundle, cache))
        results.append(disentanglement_error(ev, pretrained, vectors, TASKS, grid, "val"))
    one_pass, direct = results
    assert one_pass.xi.shape == (3, 3)
    assert abs(one_pass.xi - direct.xi).max() <= 0.01  # float32 argmax ties at most
    middle = grid.index(0.0)
    # task 1 alone (a2 = 0) agrees with its own baseline: its share is 0 on that column
    assert (one_pass.per_task["Digits"][:, middle] == 0).all()
    assert (one_pass.per_task["Colors"][middle, :] == 0).all()
    assert one_pass.xi[middle, middle] == 0
    # the whole split counts: shares are multiples of 1 / (Val size)
    size = len(evaluator(bundle, cache).data.splits("Digits").val)
    assert torch.allclose(
        torch.tensor(one_pass.per_task["Digits"] * size),
        torch.tensor(one_pass.per_task["Digits"] * size).round(),
        atol=1e-4,
    )


# --------------------------------------------------------------------------- modes and stores
def test_modes_describe_themselves_and_own_their_forward() -> None:
    assert FinetuningMode().forward == "nonlinear" and Linearized().forward == "linear"
    assert AttentionOnly().describe() == {"name": "attention", "forward": "nonlinear"}
    pattern = PatternSubset(["bias$"], name="p")
    assert pattern.describe()["patterns"] == ["bias$"]
    assert PatternSubset(["bias$"], name="p", forward="linear").forward == "linear"
    with pytest.raises(ConfigError, match="regular expression"):
        PatternSubset(["(unclosed"])


def test_store_refuses_other_modes_and_changed_patterns(tmp_path: Path, bundle) -> None:  # noqa: ANN001
    pretrained = pretrained_of(bundle)
    fp = fingerprint(pretrained)

    def store(mode: FinetuningMode) -> CheckpointStore:
        return CheckpointStore(tmp_path, "tiny", "none", mode, pretrained, fp)

    linear = store(Linearized())
    linear.save("Digits", pretrained)
    header = load_file(str(linear.path("Digits")))  # a readable safetensors file
    assert set(header) == set(pretrained)
    # a linear checkpoint put where standard ones live is refused, with the cast named
    target = store(FinetuningMode()).path("Digits")
    target.parent.mkdir(parents=True)
    target.write_bytes(linear.path("Digits").read_bytes())
    with pytest.raises(CheckpointError, match="finetuning=linear.*eval_forward"):
        store(FinetuningMode()).checkpoint("Digits")
    old = store(PatternSubset(["bias$"], name="subset"))
    old.save("Digits", pretrained)
    assert old.checkpoint("Digits").is_file()
    with pytest.raises(CheckpointError, match="another finetuning.name"):
        store(PatternSubset(["weight$"], name="subset")).checkpoint("Digits")
    # metrics are kept per forward
    linear.write_metrics("Digits", {"val_top1": 0.5, "test_top1": 0.4})
    linear.write_metrics("Digits", {"val_top1": 0.3, "test_top1": 0.2}, forward="nonlinear")
    assert linear.metrics("Digits") == {"val_top1": 0.5, "test_top1": 0.4}
    assert linear.metrics("Digits", "nonlinear") == {"val_top1": 0.3, "test_top1": 0.2}


def test_task_vectors_of_different_modes_never_mix(tmp_path: Path, bundle) -> None:  # noqa: ANN001
    pretrained = pretrained_of(bundle)
    fp = fingerprint(pretrained)
    tvs = {}
    for mode in (FinetuningMode(), Linearized()):
        store = CheckpointStore(tmp_path, "tiny", "none", mode, pretrained, fp)
        save_state_dict(pretrained, store.path("Digits"), {"finetuning": mode.name})
        tvs[mode.name] = store.task_vector("Digits")
    assert tvs["linear"].mode == "linear"
    with pytest.raises(ConfigError, match="different fine-tuning modes"):
        check_same_mode(tvs)
    with pytest.raises(ConfigError, match="different fine-tuning modes"):
        _ = tvs["standard"] + tvs["linear"]
    assert check_same_mode({"a": tvs["linear"], "b": -tvs["linear"]}) == "linear"
