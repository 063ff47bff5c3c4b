"""Iso-C and Iso-CTS (arXiv:2502.04959): closed forms, the subspace-size rule, an independent
float64 rewrite of FusionBench's ``iso_utils.py`` (``iso_c`` / ``iso_cts``), lazy == in-memory,
LiNeS and the Python API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import taskmerge
from taskmerge.errors import ConfigError
from taskmerge.io.tensors import save_state_dict
from taskmerge.merging.isotropic import (
    IsoC,
    IsoCTS,
    flat_spectrum,
    iso_c_matrix,
    iso_c_merge,
    iso_cts_matrix,
    iso_cts_merge,
    subspace_sizes,
)
from taskmerge.merging.lines import multitask_alpha
from taskmerge.vectors.task_vector import TaskVector

pytestmark = pytest.mark.usefixtures("one_thread")


def random_taus(shape: tuple[int, ...], count: int, seed: int) -> list[torch.Tensor]:
    """float32 task vectors sharing a common component (so the common space matters)."""
    gen = torch.Generator().manual_seed(seed)
    shared = torch.randn(shape, generator=gen)
    return [shared + 0.7 * torch.randn(shape, generator=gen) for _ in range(count)]


# --------------------------------------------------------------------------- reference rewrite
def reference_iso_c(taus: list[np.ndarray]) -> np.ndarray:
    """FusionBench ``iso_c`` in float64: mean(S) U V^T of the sum."""
    u, s, vh = np.linalg.svd(sum(taus), full_matrices=False)
    return s.mean() * (u @ vh)


def reference_iso_cts(taus: list[np.ndarray], fraction: float) -> np.ndarray:
    """FusionBench ``iso_cts`` in float64 (task blocks first, the common block last)."""
    count, rank = len(taus), min(taus[0].shape)
    common = int(rank * fraction)
    specific = round((rank - common) / count) * count
    common = rank - specific
    per_task = specific // count
    u, s, vh = np.linalg.svd(sum(taus), full_matrices=False)
    u_c = u[:, :common]
    us, ss, vs = [], [], []
    for tau in taus:
        a, b, c = np.linalg.svd(tau - u_c @ u_c.T @ tau, full_matrices=False)
        us.append(a[:, :per_task])
        ss.append(b[:per_task])
        vs.append(c[:per_task])
    u_cat = np.concatenate([*us, u_c], axis=1)
    s_cat = np.concatenate([*ss, s[:common]])
    v_cat = np.concatenate([*vs, vh[:common]], axis=0)
    pu, _, qu = np.linalg.svd(u_cat, full_matrices=False)
    pv, _, qv = np.linalg.svd(v_cat, full_matrices=False)
    return s_cat.mean() * (pu @ qu) @ (pv @ qv)


def relative_error(merged: torch.Tensor, exact: np.ndarray) -> float:
    return float(np.linalg.norm(merged.double().numpy() - exact) / np.linalg.norm(exact))


SHAPES = [(30, 12), (12, 30), (16, 16), (10, 10)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("count", [1, 3, 5])
def test_iso_c_matches_the_float64_reference(shape: tuple[int, int], count: int) -> None:
    taus = random_taus(shape, count, seed=count)
    merged = iso_c_matrix(taus)
    assert merged.dtype == torch.float32 and merged.shape == shape
    assert relative_error(merged, reference_iso_c([t.double().numpy() for t in taus])) < 1e-5


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("count", "fraction"), [(3, 0.8), (5, 0.8), (3, 0.5), (2, 0.0), (1, 0.8)])
def test_iso_cts_matches_the_float64_reference(
    shape: tuple[int, int], count: int, fraction: float
) -> None:
    taus = random_taus(shape, count, seed=10 + count)
    merged = iso_cts_matrix(taus, fraction)
    assert merged.dtype == torch.float32 and merged.shape == shape
    exact = reference_iso_cts([t.double().numpy() for t in taus], fraction)
    assert relative_error(merged, exact) < 1e-5


# --------------------------------------------------------------------------- closed forms
def test_iso_c_of_one_task_is_its_flat_spectrum() -> None:
    gen = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(9, 4, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(6, 4, generator=gen, dtype=torch.float64))
    s = torch.tensor([5.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    tau = u @ torch.diag(s) @ v.T  # rank 4 of a 9 x 6 matrix: r = 6, mean(S) = 11 / 6
    merged = iso_c_matrix([tau])
    # the two zero singular values count in the mean; their directions are the SVD's choice
    full_u, full_s, full_vh = torch.linalg.svd(tau, full_matrices=False)
    assert torch.allclose(full_s[4:], torch.zeros(2, dtype=torch.float64), atol=1e-12)
    expected = 11 / 6 * full_u @ full_vh
    assert torch.allclose(merged, expected, atol=1e-10)
    full_rank = torch.randn(7, 5, generator=gen)
    uu, ss, vvh = torch.linalg.svd(full_rank.double(), full_matrices=False)
    assert torch.allclose(iso_c_matrix([full_rank]).double(), ss.mean() * uu @ vvh, atol=1e-6)
    assert torch.equal(flat_spectrum(torch.zeros(4, 3)), torch.zeros(4, 3))


@pytest.mark.parametrize("shape", [(30, 12), (12, 30), (16, 16)])
def test_results_have_a_flat_spectrum(shape: tuple[int, int]) -> None:
    taus = random_taus(shape, 3, seed=2)
    total = torch.stack(taus).sum(0).double()
    iso_c = iso_c_matrix(taus).double()
    values = torch.linalg.svdvals(iso_c)
    assert torch.allclose(
        values, torch.full_like(values, float(torch.linalg.svdvals(total).mean()))
    )
    cts = torch.linalg.svdvals(iso_cts_matrix(taus, 0.5).double())
    assert torch.allclose(cts, cts.mean().expand_as(cts), rtol=1e-6)
    assert cts.numel() == min(shape) and cts.min() > 0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("count", [1, 3, 8])
def test_iso_cts_with_the_whole_rank_in_common_is_iso_c(shape: tuple[int, int], count: int) -> None:
    taus = random_taus(shape, count, seed=3)
    assert subspace_sizes(min(shape), count, 1.0) == (min(shape), 0)
    assert torch.equal(iso_cts_matrix(taus, 1.0), iso_c_matrix(taus))


@pytest.mark.parametrize(
    ("rank", "count", "fraction", "expected"),
    [
        (10, 3, 0.8, (7, 1)),  # k_c 8, round(2 / 3) = 1 -> k_ts 3
        (10, 1, 0.8, (8, 2)),
        (12, 3, 0.8, (9, 1)),  # k_c 9, round(3 / 3) = 1
        (17, 8, 0.8, (17, 0)),  # 4 / 8 = 0.5 rounds to even 0: Iso-C (positional embedding)
        (60, 8, 0.8, (44, 2)),  # 12 / 8 = 1.5 rounds to even 2
        (10, 4, 0.8, (10, 0)),  # 2 / 4 = 0.5 -> 0
        (14, 4, 0.8, (10, 1)),  # 3 / 4 = 0.75 -> 1
        (768, 8, 0.8, (616, 19)),  # ViT-B: k_c 614, round(154 / 8 = 19.25) = 19
        (768, 14, 0.8, (614, 11)),
        (768, 20, 0.8, (608, 8)),  # round(7.7) = 8
        (5, 20, 0.8, (5, 0)),  # more tasks than rank
        (10, 3, 0.0, (1, 3)),  # no common space asked: round(10 / 3) = 3 -> k_ts 9
        (2, 3, 0.0, (2, 0)),  # round(2 / 3) * 3 = 3 > r: floor(2 / 3) * 3 = 0 (deviation)
        (100, 1, 0.29, (29, 71)),  # exact floor of 29.0 (reference int(28.999...) = 28)
        (0, 3, 0.8, (0, 0)),
    ],
)
def test_subspace_sizes(rank: int, count: int, fraction: float, expected: tuple[int, int]) -> None:
    assert subspace_sizes(rank, count, fraction) == expected


def test_subspace_sizes_always_split_the_rank() -> None:
    for rank in range(0, 80, 7):
        for count in (1, 2, 3, 7, 8, 14, 20):
            for fraction in (0.0, 0.1, 0.5, 0.8, 0.95, 1.0):
                common, per_task = subspace_sizes(rank, count, fraction)
                assert common >= 0 and per_task >= 0 and common + count * per_task == rank
    with pytest.raises(ConfigError, match="common_space_fraction"):
        subspace_sizes(10, 2, 1.5)
    with pytest.raises(ConfigError, match="common_space_fraction"):
        IsoCTS(common_space_fraction=-0.1)


def test_which_tensors_and_the_mean_of_the_others() -> None:
    gen = torch.Generator().manual_seed(4)
    vectors = [
        {
            "w": torch.randn(6, 4, generator=gen),
            "bias": torch.randn(4, generator=gen),
            "conv1.weight": torch.randn(2, 3, 2, 2, generator=gen),
            "text_projection": torch.randn(3, 2, generator=gen),
            "class_embedding": torch.randn(4, generator=gen),
        }
        for _ in range(3)
    ]
    for merged in (iso_c_merge(vectors), iso_cts_merge(vectors, 0.5)):
        assert list(merged) == list(vectors[0])
        for name in ("bias", "conv1.weight", "text_projection", "class_embedding"):
            mean = torch.stack([v[name] for v in vectors]).mean(0)
            assert torch.allclose(merged[name], mean, atol=1e-6)
    assert torch.equal(iso_c_merge(vectors)["w"], iso_c_matrix([v["w"] for v in vectors]))
    assert torch.equal(
        iso_cts_merge(vectors, 0.5)["w"], iso_cts_matrix([v["w"] for v in vectors], 0.5)
    )
    task_vectors = {f"t{i}": TaskVector(v) for i, v in enumerate(vectors)}
    assert torch.equal(IsoC().merge(task_vectors).vector["w"], iso_c_merge(vectors)["w"])
    cts = IsoCTS(common_space_fraction=0.5).merge(task_vectors).vector
    assert torch.equal(cts["w"], iso_cts_merge(vectors, 0.5)["w"])


# --------------------------------------------------------------------------- lazy, API, LiNeS
def test_lazy_task_vectors_give_the_in_memory_result(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(5)
    shapes = {"a.weight": (12, 8), "b.weight": (5, 9), "a.bias": (12,), "conv.weight": (2, 2, 3)}
    pretrained = {name: torch.randn(shape, generator=gen) for name, shape in shapes.items()}
    paths = {}
    for index in range(4):
        tuned = {n: p + 0.1 * torch.randn(p.shape, generator=gen) for n, p in pretrained.items()}
        paths[f"T{index}"] = tmp_path / f"T{index}" / "finetuned.safetensors"
        save_state_dict(tuned, paths[f"T{index}"])
    base_path = tmp_path / "pretrained.safetensors"
    save_state_dict(pretrained, base_path)
    in_memory = {
        t: TaskVector.from_state_dicts(pretrained, load_file(str(p))) for t, p in paths.items()
    }
    for method in (IsoC(), IsoCTS(), IsoCTS(common_space_fraction=0.3)):
        expected = method.merge(in_memory).vector
        for base in (pretrained, base_path):
            lazy = {t: TaskVector.lazy(base, p) for t, p in paths.items()}
            assert all(tv.is_lazy for tv in lazy.values())
            merged = method.merge(lazy).vector
            assert sorted(merged) == sorted(expected)
            assert all(torch.equal(merged[n], expected[n]) for n in expected)


class Net(nn.Module):
    """A stem and 3 residual blocks of 2-D weights: the structure LiNeS reads."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Linear(4, 3)
        self.blocks = nn.Sequential(*[nn.Linear(3, 3) for _ in range(3)])


def test_python_api_and_lines() -> None:
    base, tuned = Net(0), {"a": Net(1), "b": Net(2), "c": Net(3)}
    base_state = base.state_dict()
    vectors = [{n: t.state_dict()[n] - base_state[n] for n in base_state} for t in tuned.values()]
    merged = taskmerge.merge(
        base, tuned, method="iso_cts", common_space_fraction=0.5, scaling_coef=0.7
    )
    tau = iso_cts_merge(vectors, 0.5)
    for name, value in merged.state_dict().items():
        assert torch.allclose(value, base_state[name] + 0.7 * tau[name], atol=1e-6)
    state = taskmerge.merge(
        base.state_dict(), {k: m.state_dict() for k, m in tuned.items()}, "iso_c", scaling_coef=1.0
    )
    assert torch.allclose(
        state["stem.weight"], base_state["stem.weight"] + iso_c_merge(vectors)["stem.weight"]
    )
    with pytest.raises(ConfigError, match="needs scaling_coef"):
        taskmerge.merge(base, tuned, method="iso_cts")
    # LiNeS: alpha = (||sum tau||_1 / ||tau_iso||_1) / T outside the blocks, + beta * l / 2 in
    # block l
    lined = taskmerge.merge(base, tuned, method="iso_c", apply_lines=True, scaling_coef=0.4)
    tau = iso_c_merge(vectors)
    alpha = multitask_alpha(vectors, tau)
    expected = {"stem": alpha} | {f"blocks.{layer}": alpha + 0.4 * layer / 2 for layer in range(3)}
    for name, value in lined.state_dict().items():
        scale = expected[name.rsplit(".", 1)[0]]
        assert torch.allclose(value, base_state[name] + scale * tau[name], atol=1e-6)
