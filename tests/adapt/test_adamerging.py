"""AdaMerging: streamed coefficient gradients against autograd through a naive merge."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from taskmerge.adapt.model_data import ModelData
from taskmerge.merging.adamerging import AdaMerging, Components, entropy_loss
from taskmerge.merging.build import build_method
from taskmerge.vectors.task_vector import TaskVector

TASKS = ("a", "b", "c")


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5)).double().float()


def setting(seed: int = 0, tasks=TASKS):  # noqa: ANN001, ANN202
    gen = torch.Generator().manual_seed(seed)
    model = small_model(seed)
    pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    vectors = {
        t: TaskVector({k: 0.5 * torch.randn(v.shape, generator=gen) for k, v in pretrained.items()})
        for t in tasks
    }
    heads = {t: nn.Linear(5, 3).requires_grad_(False) for t in tasks}
    batches = {t: [torch.randn(8, 4, generator=gen)] for t in tasks}
    return model, pretrained, vectors, heads, batches


def naive_loss(model, pretrained, vectors, heads, batches, raw, granularity, clamp=True):  # noqa: ANN001, ANN201
    """Every task vector in memory, the merge inside one autograd graph (the reference's way)."""
    names = list(pretrained)
    coefs = raw.clamp(0, 1) if clamp else raw
    merged = {}
    for column, name in enumerate(names):
        col = column if granularity == "layer" else 0
        merged[name] = pretrained[name] + sum(
            coefs[i, col] * vectors[t].vector[name] for i, t in enumerate(vectors)
        )
    return sum(
        entropy_loss(heads[t](functional_call(model, merged, (batches[t][0],)))) for t in vectors
    )


@pytest.mark.parametrize("granularity", ["task", "layer"])
def test_coefficient_gradients_equal_autograd_through_a_naive_merge(granularity: str) -> None:
    model, pretrained, vectors, heads, batches = setting()
    columns = len(pretrained) if granularity == "layer" else 1
    count = len(TASKS) * columns  # evenly from -0.3 to 1.3: some outside [0, 1]
    order = torch.randperm(count, generator=torch.Generator().manual_seed(5))
    raw = torch.linspace(-0.3, 1.3, count)[order].reshape(len(TASKS), columns)
    method = AdaMerging(granularity=granularity)
    data = ModelData(model, heads, adapt=batches)
    components = Components([tv.vector for tv in vectors.values()], "sum")
    _, ours = method.step_gradient(pretrained, components, raw, data)

    leaf = raw.clone().requires_grad_(True)
    naive_loss(model, pretrained, vectors, heads, batches, leaf, granularity).backward()
    assert (leaf.grad == 0).any() and (leaf.grad != 0).any()  # the clamp is active somewhere
    torch.testing.assert_close(ours, leaf.grad, atol=1e-6, rtol=0)


def test_one_step_equals_adam_through_the_naive_merge() -> None:
    model, pretrained, vectors, heads, batches = setting(1)
    method = AdaMerging(granularity="layer", steps=1)
    method.attach(ModelData(model, heads, adapt=batches))
    method.merge_with_data(pretrained, vectors)

    leaf = torch.full((len(TASKS), len(pretrained)), 0.3, requires_grad=True)
    optimizer = torch.optim.Adam([leaf], lr=1e-3, betas=(0.9, 0.999))
    naive_loss(model, pretrained, vectors, heads, batches, leaf, "layer").backward()
    optimizer.step()
    torch.testing.assert_close(method.learned, leaf.detach().clamp(0, 1), atol=1e-7, rtol=0)
    # Adam's first step moves every coefficient with a nonzero gradient by lr
    moved = (method.learned - 0.3).abs()
    assert torch.allclose(moved[moved > 0], torch.tensor(1e-3), atol=1e-6)


def test_the_entropy_goes_down_and_the_merge_is_the_learned_combination() -> None:
    model, pretrained, vectors, heads, batches = setting(2)
    method = AdaMerging(granularity="task", steps=30, lr=2e-2)
    method.attach(ModelData(model, heads, adapt=batches))
    merged = method.merge_with_data(pretrained, vectors)
    assert method.curve[-1] < method.curve[0]
    for name in pretrained:
        expected = sum(method.learned[i, 0] * vectors[t].vector[name] for i, t in enumerate(TASKS))
        torch.testing.assert_close(merged.vector[name], expected, atol=1e-6, rtol=0)
    saved = method.learned_coefficients()
    assert saved["tasks"] == list(TASKS) and saved["coefficients"].shape == (3, 1)


def test_ties_components_are_trimmed_and_sign_elected() -> None:
    _, pretrained, vectors, _, _ = setting(3)
    taus = [tv.vector for tv in vectors.values()]
    components = Components(taus, "ties", k=30)
    flat = [torch.cat([v[n].reshape(-1) for n in pretrained]) for v in taus]
    trimmed = []
    for f in flat:  # top 30% magnitudes of each task's whole vector (ties kept)
        keep = int(f.numel() * 0.3)
        threshold = f.abs().kthvalue(f.numel() - keep).values
        trimmed.append(f * (f.abs() >= threshold))
    sign = torch.sign(sum(trimmed))
    majority = torch.sign(sign.sum())
    sign = torch.where(sign == 0, majority, sign)
    for i, f in enumerate(trimmed):
        expected = f * torch.where(sign > 0, f > 0, f < 0)
        ours = torch.cat([components.get(i, n).reshape(-1) for n in pretrained])
        torch.testing.assert_close(ours, expected)


def test_labels_are_never_used() -> None:
    model, pretrained, vectors, heads, batches = setting(4)
    results = []
    for labels in (torch.zeros(8, dtype=torch.long), torch.arange(8)):
        labelled = {t: [(b[0], labels)] for t, b in batches.items()}
        method = build_method("adamerging", {"steps": 3, "granularity": "layer"})
        method.attach(ModelData(model, heads, adapt=labelled))
        results.append(method.merge_with_data(pretrained, vectors))
    for name in pretrained:
        assert torch.equal(results[0].vector[name], results[1].vector[name])


def test_without_data_it_says_how_to_give_it() -> None:
    _, pretrained, vectors, _, _ = setting()
    from taskmerge.errors import ConfigError

    with pytest.raises(ConfigError, match="learns from data"):
        next(AdaMerging().candidates(pretrained, vectors))
    with pytest.raises(ConfigError, match="steps"):
        AdaMerging(steps=-1)
