"""The SVD routes (``method.svd``): the exact Gram route with top-r eigenpairs only, and the
randomized range finder with its a-posteriori check and exact fallback, on known spectra."""

from __future__ import annotations

import pytest
import torch

from taskmerge.errors import ConfigError
from taskmerge.merging import float64_kernels
from taskmerge.merging.cart import CART
from taskmerge.merging.isotropic import IsoCTS
from taskmerge.merging.svd_routes import (
    SvdRoute,
    eigh_upper,
    gram_upper,
    polar_decomposition,
    randomized_top_factors,
    top_factors,
    truncation_error_bound,
)
from taskmerge.merging.tsv import TSVCompress, TSVMerge
from taskmerge.vectors.task_vector import TaskVector


def with_spectrum(m: int, n: int, singular_values: torch.Tensor, seed: int) -> torch.Tensor:
    """An ``(m, n)`` float64 matrix with exactly these singular values (the rest zero)."""
    k = singular_values.shape[0]
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    return (u * singular_values) @ v.T


def gapped(n: int, r: int) -> torch.Tensor:
    """r singular values from 10 down to 1, then a tail at 1e-3 (a low-rank update + noise)."""
    head = torch.linspace(10.0, 1.0, r, dtype=torch.float64)
    tail = 1e-3 * torch.linspace(1.0, 0.5, n - r, dtype=torch.float64)
    return torch.cat([head, tail])


def truncation(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor) -> torch.Tensor:
    return (u.double() * s.double()) @ vh.double()


def exact_truncation(x: torch.Tensor, r: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(x.double(), full_matrices=False)
    return truncation(u[:, :r], s[:r], vh[:r])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("shape", [(500, 260), (260, 500)])
def test_randomized_route_on_a_gapped_spectrum_is_the_exact_truncation(shape) -> None:
    spectrum = gapped(min(shape), 20)
    x = with_spectrum(*shape, spectrum, seed=1)
    route = SvdRoute("randomized")
    u, s, vh = route.top_factors(x, 20)
    assert route.taken == {"randomized": 1}  # the check passed: no fallback
    assert torch.allclose(s, spectrum[:20], rtol=1e-12)  # the known singular values
    assert relative(truncation(u, s, vh), exact_truncation(x, 20)) < 1e-9
    assert torch.allclose(u.T @ u, torch.eye(20, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(vh @ vh.T, torch.eye(20, dtype=torch.float64), atol=1e-12)


def test_randomized_route_is_reproducible() -> None:
    x = with_spectrum(500, 260, gapped(260, 12), seed=2).float()
    first = randomized_top_factors(x, 12)
    second = randomized_top_factors(x, 12)
    assert first is not None and second is not None
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_flat_spectrum_fails_the_check_and_takes_the_exact_route() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(500, 260, generator=gen)  # Marchenko-Pastur: no gap at r, slow convergence
    assert randomized_top_factors(x, 20) is None
    route = SvdRoute("randomized")
    factors = route.top_factors(x, 20)
    assert route.taken == {"randomized, check failed: exact": 1, "exact (Gram)": 1}
    exact = SvdRoute("exact").top_factors(x, 20)
    assert all(torch.equal(a, b) for a, b in zip(factors, exact, strict=True))


def test_accepted_factors_keep_the_enforced_bound_on_a_decaying_spectrum() -> None:
    # k^-1.5: the check passes after a few power iterations (or the route falls back); either
    # way the truncation is within the enforced 1e-9 of the exact one
    n = 280
    spectrum = torch.arange(1, n + 1, dtype=torch.float64) ** -1.5
    x = with_spectrum(500, n, spectrum, seed=4)
    route = SvdRoute("randomized")
    u, s, vh = route.top_factors(x, 15)
    assert relative(truncation(u, s, vh), exact_truncation(x, 15)) < 1e-9


def test_small_matrices_and_large_sketches_take_the_exact_route() -> None:
    route = SvdRoute("randomized")
    route.top_factors(torch.randn(100, 80), 5)  # small side below 256
    route.top_factors(torch.randn(500, 260), 100)  # sketch 150 > 260 / 2
    assert route.taken == {"exact (Gram)": 2}


def test_truncation_error_bound() -> None:
    s = torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    norm = float(s[:2].norm())
    expected = (1e-6 + 2**0.5 * 4.0 * 1e-6 / 1.0) / norm  # gap s_2 - s_3 = 1
    assert truncation_error_bound(s, 1e-6, 2) == pytest.approx(expected, rel=1e-12)
    assert truncation_error_bound(torch.tensor([1.0, 0.5, 0.5]).double(), 1e-6, 2) == float("inf")
    assert truncation_error_bound(torch.zeros(3).double(), 0.0, 1) == float("inf")


def test_top_eigenpairs_only_where_r_is_small() -> None:
    n, r = 520, 20  # Gram size >= 512 and r <= n / SUBSET_DIVISOR: only the top r eigenpairs
    assert r * float64_kernels.SUBSET_DIVISOR <= n < 100 * float64_kernels.SUBSET_DIVISOR
    spectrum = torch.arange(1, n + 1, dtype=torch.float64) ** -0.7
    x = with_spectrum(800, n, spectrum, seed=5)
    gram = gram_upper(x)
    top_values, top_vectors = eigh_upper(gram, r)
    all_values, all_vectors = eigh_upper(gram, 100)  # 100 > n / SUBSET_DIVISOR: every pair
    assert top_values.shape == (r,) and all_values.shape == (n,)
    assert torch.allclose(top_values, spectrum[:r].flip(0) ** 2, rtol=1e-12)
    assert torch.allclose(all_values[-r:], top_values, rtol=1e-12)
    overlap = (top_vectors.mT @ all_vectors[:, -r:]).abs()
    assert torch.allclose(overlap, torch.eye(r, dtype=torch.float64), atol=1e-9)
    u, s, vh = top_factors(x.float(), r)
    assert torch.allclose(s, spectrum[:r], rtol=1e-6)  # float32 input: 1e-7 relative entries
    assert relative(truncation(u, s, vh), exact_truncation(x.float(), r)) < 1e-10


@pytest.mark.parametrize("layout", ["contiguous", "fortran", "strided"])
def test_gram_upper_is_the_symmetric_product(layout: str) -> None:
    x = torch.randn(300, 70, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    given = {"contiguous": x, "fortran": x.mT.contiguous().mT, "strided": x[:, ::1][::1]}[layout]
    if layout == "strided":
        given = torch.randn(300, 140, dtype=torch.float64)[:, ::2]
        x = given.contiguous()
    upper = gram_upper(given)
    assert torch.allclose(upper.triu(), (x.mT @ x).triu(), rtol=1e-13, atol=1e-12)
    assert torch.equal(gram_upper(x.float()), x.float().mT @ x.float())  # not float64: full product


@pytest.mark.parametrize("shape", [(90, 40), (40, 90), (50, 50)])
def test_polar_decomposition_equals_the_svd(shape: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    p, sigma, qh = torch.linalg.svd(x, full_matrices=False)
    polar, singular = polar_decomposition(x.float())
    assert polar.dtype == torch.float32 and polar.shape == x.shape
    assert torch.allclose(polar.double(), p @ qh, atol=1e-6)
    assert torch.allclose(singular.double(), sigma, rtol=1e-6)
    rank_deficient = x[:, :3] @ torch.randn(3, shape[1], generator=gen, dtype=torch.float64)
    polar, singular = polar_decomposition(rank_deficient)  # the SVD's route: zeros included
    assert singular.shape[0] == min(shape) and float(singular[3:].max()) < 1e-10
    gram = polar.mT @ polar if shape[0] >= shape[1] else polar @ polar.mT
    assert torch.allclose(gram, torch.eye(min(shape), dtype=torch.float64), atol=1e-10)


def low_rank_task_vectors(count: int, seed: int, n: int = 280) -> dict[str, TaskVector]:
    """Task vectors whose ``(400, n)`` matrices are a rank-``n / count`` update plus noise (the
    spectrum has its gap at TSV's per-task rank), and a bias."""
    gen = torch.Generator().manual_seed(seed)
    vectors = {}
    for t in range(count):
        spectrum = gapped(n, n // count) * (1.0 + 0.1 * t)
        matrix = with_spectrum(400, n, spectrum, seed=seed + t).float()
        bias = torch.randn(400, generator=gen)
        vectors[f"task{t}"] = TaskVector({"block.attn.weight": matrix, "block.bias": bias})
    return vectors


@pytest.mark.parametrize(
    "make",
    [
        lambda svd: TSVMerge(svd=svd, scaling_coef=1.0),
        lambda svd: IsoCTS(svd=svd, scaling_coef=1.0),
        lambda svd: CART(svd=svd, initial_rank_ratio=0.1, scaling_coef=1.0),
    ],
    ids=["TSVM", "iso_cts", "cart"],
)
def test_methods_give_the_exact_result_with_the_randomized_route(make) -> None:
    # TSVM: r = 280 / 10 = 28, at the gap: sketched; Iso-CTS: the common block (224) is too large
    # to sketch, the residual blocks are; CART: r = 28 of the centred vectors
    vectors = low_rank_task_vectors(10, seed=10)
    exact = make("exact").merge(vectors).vector
    method = make("randomized")
    fast = method.merge(vectors).vector
    for name, tensor in exact.items():  # whichever route each matrix took: float32 rounding
        scale = tensor.double().norm()
        assert float((fast[name].double() - tensor.double()).norm() / scale) < 1e-7, name
    taken = method.details()["svd"]["decompositions"]
    assert sum(taken.values()) >= 10 and set(taken) <= {
        "randomized",
        "randomized, check failed: exact",
        "exact (Gram)",
    }
    if isinstance(method, TSVMerge):
        assert taken == {"randomized": 10}


def test_tsvc_reports_the_routes_taken() -> None:
    vectors = low_rank_task_vectors(10, seed=20)  # r = 28, at the gap: the check passes
    method = TSVCompress(svd="randomized")
    compressed = method.merge(vectors)
    exact = TSVCompress().merge(vectors)
    for task, tv in compressed.items():
        got, want = tv.vector["block.attn.weight"], exact[task].vector["block.attn.weight"]
        assert relative(got.double(), want.double()) < 1e-7
    assert method.details()["svd"]["decompositions"] == {"randomized": 10}
    assert TSVCompress().details() == {}  # the default route adds nothing to the results


def test_an_unknown_route_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"method.svd must be one of \('exact', 'randomized'\)"):
        TSVMerge(svd="fast")
