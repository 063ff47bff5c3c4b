"""RegMean against least squares and Fisher merging against its closed form, on linear models."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from taskmerge.adapt.cache import StatisticCache, StoredTensors
from taskmerge.adapt.model_data import ModelData
from taskmerge.adapt.statistics import fisher_diagonal, gram_matrices
from taskmerge.merging.fisher import FisherMerging
from taskmerge.merging.regmean import RegMean, reduce_non_diagonal
from taskmerge.vectors.task_vector import TaskVector

TASKS = ("a", "b")


def linear_setting(seed: int = 0, bias: bool = True):  # noqa: ANN202
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(5, 3, bias=bias)
    pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    vectors = {
        t: TaskVector({k: torch.randn(v.shape, generator=gen) for k, v in pretrained.items()})
        for t in TASKS
    }
    inputs = {t: torch.randn(40, 5, generator=gen) * (1 + i) for i, t in enumerate(TASKS)}
    return model, pretrained, vectors, inputs


def test_regmean_is_the_least_squares_merge_of_a_linear_layer() -> None:
    model, pretrained, vectors, inputs = linear_setting()
    heads = {t: nn.Identity() for t in TASKS}
    train = {t: [x[:16], (x[16:], torch.zeros(24))] for t, x in inputs.items()}  # batches
    method = RegMean(num_samples=40, alpha=1.0).attach(ModelData(model, heads, train=train))
    merged = method.merge_with_data(pretrained, vectors)
    # the known optimum: one W minimizing sum_t ||X_t W^T - X_t W_t^T||^2, by lstsq
    weights = {t: pretrained["weight"] + vectors[t].vector["weight"] for t in TASKS}
    x = torch.cat([inputs[t] for t in TASKS]).double()
    y = torch.cat([inputs[t].double() @ weights[t].double().T for t in TASKS])
    optimum = torch.linalg.lstsq(x, y).solution.T
    torch.testing.assert_close((pretrained["weight"] + merged.vector["weight"]).double(),
                               optimum, atol=1e-5, rtol=0)  # fmt: skip
    # the bias has no Gram: averaged
    expected_bias = (vectors["a"].vector["bias"] + vectors["b"].vector["bias"]) / 2
    torch.testing.assert_close(merged.vector["bias"], expected_bias)


def test_regmean_alpha_scales_the_non_diagonal_entries() -> None:
    model, pretrained, vectors, inputs = linear_setting(1, bias=False)
    heads = {t: nn.Identity() for t in TASKS}
    train = {t: [x] for t, x in inputs.items()}
    method = RegMean(num_samples=40, alpha=0.3).attach(ModelData(model, heads, train=train))
    merged = method.merge_with_data(pretrained, vectors)
    grams = {t: inputs[t].double().T @ inputs[t].double() for t in TASKS}
    reduced = {t: 0.3 * g + 0.7 * torch.diag(torch.diag(g)) for t, g in grams.items()}
    assert torch.equal(reduce_non_diagonal(grams["a"], 0.3), reduced["a"])
    lhs = sum(reduced.values())
    rhs = sum(reduced[t] @ vectors[t].vector["weight"].double().T for t in TASKS)
    torch.testing.assert_close(merged.vector["weight"].double(),
                               torch.linalg.solve(lhs, rhs).T, atol=1e-5, rtol=0)  # fmt: skip


def test_the_grams_of_attention_and_mlp_inputs_are_their_inputs_products() -> None:
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(4, 2, batch_first=True)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn, self.fc = attention, nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.attn(x, x, x, need_weights=False)[0])

    block = Block()
    x = torch.randn(2, 5, 4)
    grams = gram_matrices(block, dict(block.state_dict()), [x], num_samples=2)
    flat = x.reshape(-1, 4)
    torch.testing.assert_close(grams["attn.in_proj_weight"], flat.T @ flat)
    hidden = block.attn(x, x, x, need_weights=False)[0].reshape(-1, 4).detach()
    torch.testing.assert_close(grams["fc.weight"], hidden.T @ hidden, atol=1e-5, rtol=1e-5)
    assert "attn.out_proj.weight" not in grams  # applied functionally: averaged


def test_the_fisher_of_a_softmax_regression_is_its_closed_form() -> None:
    # log p(y|x) = log softmax(W x + b)_y: d/dW_cj = (1[y=c] - p_c) x_j, so
    # sum_y p_y (d/dW_cj)^2 = p_c (1 - p_c) x_j^2 and for the bias p_c (1 - p_c)
    model, pretrained, _, inputs = linear_setting(2)
    x = inputs["a"][:12]
    fisher = fisher_diagonal(model, nn.Identity(), dict(pretrained), [x[:5], x[5:]], 12)
    p = torch.softmax(x @ pretrained["weight"].T + pretrained["bias"], -1)
    variance = p * (1 - p)  # examples x classes
    expected_weight = (variance[:, :, None] * x[:, None, :] ** 2).mean(0)
    torch.testing.assert_close(fisher["weight"], expected_weight, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fisher["bias"], variance.mean(0), atol=1e-6, rtol=1e-5)


def test_fisher_merging_is_the_fisher_weighted_average() -> None:
    model, pretrained, vectors, inputs = linear_setting(3)
    heads = {t: nn.Identity() for t in TASKS}
    train = {t: [x[:10]] for t, x in inputs.items()}
    method = FisherMerging(num_samples=10, normalize=False, minimal_fisher_weight=1e-6)
    merged = method.attach(ModelData(model, heads, train=train)).merge_with_data(
        pretrained, vectors
    )
    fishers = {}
    for t in TASKS:
        tuned = {k: pretrained[k] + vectors[t].vector[k] for k in pretrained}
        fishers[t] = fisher_diagonal(model, nn.Identity(), tuned, [inputs[t][:10]], 10)
    for name in pretrained:
        w = {t: fishers[t][name] + 1e-6 for t in TASKS}
        expected = sum(w[t] * vectors[t].vector[name] for t in TASKS) / sum(w.values())
        torch.testing.assert_close(merged.vector[name], expected, atol=1e-5, rtol=1e-4)


def test_statistics_are_cached_beside_the_checkpoint_keyed_by_its_checksum(tmp_path: Path) -> None:
    model, pretrained, vectors, inputs = linear_setting(4)
    heads = {t: nn.Identity() for t in TASKS}
    checksums = {"a": "c1", "b": "c2"}
    cache = StatisticCache(lambda t: tmp_path / t, lambda t: checksums[t])
    calls = []
    train = {t: [x] for t, x in inputs.items()}
    data = ModelData(model, heads, train=train, cache=cache)
    original = data._train_inputs

    def counted(task: str):  # noqa: ANN202
        calls.append(task)
        return original(task)

    data._train_inputs = counted
    first = RegMean(num_samples=40, alpha=0.5).attach(data).merge_with_data(pretrained, vectors)
    files = sorted(tmp_path.glob("*/statistics/regmean_gram-*.safetensors"))
    assert [f.parent.parent.name for f in files] == ["a", "b"] and calls == ["a", "b"]
    again = RegMean(num_samples=40, alpha=0.9).attach(data).merge_with_data(pretrained, vectors)
    assert calls == ["a", "b"]  # reused across merges (alpha is not part of the key)
    assert isinstance(data.gram_matrices("a", pretrained, 40), StoredTensors)
    assert not torch.equal(first.vector["weight"], again.vector["weight"])
    checksums["a"] = "new checkpoint"
    RegMean(num_samples=40).attach(data).merge_with_data(pretrained, vectors)
    assert calls == ["a", "b", "a"]
    files[1].write_bytes(files[1].read_bytes()[:-8] + b"\0" * 8)  # damaged: computed again
    RegMean(num_samples=40).attach(data).merge_with_data(pretrained, vectors)
    assert calls == ["a", "b", "a", "b"]
