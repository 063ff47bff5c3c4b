"""Closed-form checks of the merge methods on small hand-made tensors.

TIES, magnitude masks, TALL masks, consensus, TSV-M / TSV-C, LiNeS and the streaming top-k
threshold. Where a reference behaviour is matched (nik-dim/tall_masks, prateeky2806/ties-merging,
AntoAndGar/task_singular_vectors, wang-kee/LiNeS), the test says which.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from taskmerge.errors import ConfigError
from taskmerge.io.packed_masks import load_masks, pack_mask, save_masks
from taskmerge.merging import svd_routes
from taskmerge.merging.arithmetic import TaskArithmetic
from taskmerge.merging.lines import (
    LiNeS,
    block_index_map,
    editing_grid,
    find_residual_blocks,
    lines_scale,
    multitask_alpha,
)
from taskmerge.merging.mask_methods import Consensus, MagnitudeMasking, TallMask
from taskmerge.merging.masks import consensus_mask, magnitude_mask, tall_masks, trim
from taskmerge.merging.streaming import (
    kept_count,
    kth_smallest_magnitude,
    magnitude_threshold,
)
from taskmerge.merging.ties import Ties, ties_merge
from taskmerge.merging.tsv import (
    TSVCompress,
    TSVMerge,
    polar_factor,
    storage_report,
    task_rank,
    truncated_svd,
    tsv_compress,
    tsv_merge,
    tsv_merge_matrix,
    tsv_reconstruct,
    whiten,
)
from taskmerge.vectors.task_vector import TaskVector

pytestmark = pytest.mark.usefixtures("one_thread")


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def tvs(*vectors: dict[str, torch.Tensor]) -> dict[str, TaskVector]:
    return {f"task{i}": TaskVector(v) for i, v in enumerate(vectors)}


# --------------------------------------------------------------------------- reference rewrites
def naive_threshold(flat: torch.Tensor, k: float) -> float:
    """nik-dim/tall_masks topk_values_mask on one flattened row: kthvalue(n - int(n*k/100))."""
    n = flat.numel()
    rank = n - int(n * (k / 100))
    return 0.0 if rank == 0 else float(flat.abs().kthvalue(rank).values)


def naive_ties(vectors: list[dict[str, torch.Tensor]], k: float, agg: str) -> torch.Tensor:
    """The reference algorithm on the flattened tasks x params matrix (ties_utils.ties_merging)."""
    flat = torch.stack([torch.cat([v[n].flatten() for n in sorted(v)]) for v in vectors])
    if k != 100:
        rows = [row * (row.abs() >= naive_threshold(row, k)) for row in flat]
        flat = torch.stack(rows)
    sign = torch.sign(flat.sum(0))
    sign[sign == 0] = torch.sign(sign.sum())
    keep = torch.where(sign.unsqueeze(0) > 0, flat > 0, flat < 0)
    selected = flat * keep
    if agg == "sum":
        return selected.sum(0)
    return selected.sum(0) / torch.clamp((selected != 0).sum(0).float(), min=1)


def flat(vector: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([vector[n].flatten() for n in sorted(vector)])


# --------------------------------------------------------------------------- streaming threshold
def test_streaming_threshold_equals_naive_kthvalue_with_ties_and_zeros() -> None:
    gen = torch.Generator().manual_seed(0)
    for trial in range(40):
        sizes = torch.randint(1, 40, (3,), generator=gen).tolist()
        tensors = [torch.randint(-4, 5, (s,), generator=gen).float() * 0.5 for s in sizes]
        if trial % 2:  # mix in distinct values and negative zeros
            tensors = [x + torch.randn(x.shape, generator=gen) * (x != 0) for x in tensors]
            tensors[0][0] = -0.0
        whole = torch.cat(tensors)
        for k in (0, 1, 10, 20, 33.3, 50, 99, 100):
            assert magnitude_threshold(lambda ts=tensors: iter(ts), k) == naive_threshold(whole, k)


def test_streaming_threshold_float64_and_2d_and_rank() -> None:
    gen = torch.Generator().manual_seed(1)
    tensors = [torch.randn(5, 7, generator=gen, dtype=torch.float64), torch.zeros(3).double()]
    whole = torch.cat([x.flatten() for x in tensors])
    assert magnitude_threshold(tensors, 20) == naive_threshold(whole, 20)
    for rank in (1, 4, 38):
        assert kth_smallest_magnitude(tensors, rank) == float(whole.abs().kthvalue(rank).values)


def test_streaming_reads_lazily_from_safetensors(tmp_path) -> None:  # noqa: ANN001
    gen = torch.Generator().manual_seed(2)
    state = {"a": torch.randn(6, 5, generator=gen), "b": torch.randn(11, generator=gen)}
    path = str(tmp_path / "tv.safetensors")
    save_file(state, path)

    def lazily():  # noqa: ANN202
        with safe_open(path, framework="pt") as handle:
            for key in handle.keys():
                yield handle.get_tensor(key)

    assert magnitude_threshold(lazily, 20) == naive_threshold(flat(state), 20)


def test_streaming_rule_keeps_int_count_plus_threshold_entry() -> None:
    # reference rule: kthvalue(n - int(n*k/100)) and >=: with distinct magnitudes the threshold
    # entry itself survives too, so int(n*k/100) + 1 entries are kept (k < 100).
    x = torch.arange(1, 101, dtype=torch.float32)
    for k in (5, 20, 50):
        kept = int((x.abs() >= magnitude_threshold([x], k)).sum())
        assert kept == kept_count(100, k) + 1
    assert magnitude_threshold([x], 100) == 0.0
    assert magnitude_threshold([x], 0) == 100.0  # k=0 keeps only the largest, like the reference


def test_streaming_rejects_bad_input() -> None:
    with pytest.raises(TypeError):
        magnitude_threshold(iter([t(1.0)]), 20)
    with pytest.raises(ValueError):
        magnitude_threshold([t(1.0)], 120)
    with pytest.raises(ValueError):
        magnitude_threshold([t(1.0, float("nan"))], 50)


# --------------------------------------------------------------------------- TIES
def test_ties_sign_election_with_zero_sums_uses_majority_sign() -> None:
    v1 = {"w": t(1, -2, 3, 0, 1)}
    v2 = {"w": t(-1, 1, -1, 0, 2)}
    # sums [0, -1, 2, 0, 3] -> signs [0, -1, 1, 0, 1], balance +1 -> zeros become +1
    assert torch.equal(ties_merge([v1, v2], k=100, agg="mean")["w"], t(1, -2, 3, 0, 1.5))
    assert torch.equal(ties_merge([v1, v2], k=100, agg="sum")["w"], t(1, -2, 3, 0, 3))


def test_ties_majority_sign_negative_and_counted_over_whole_vector() -> None:
    # tensor "a" sums to 0; the majority comes from tensor "b" (two negative elected signs)
    v1 = {"a": t(1), "b": t(-1, -1)}
    v2 = {"a": t(-1), "b": t(0, 0)}
    merged = ties_merge([v1, v2], k=100, agg="mean")
    assert torch.equal(merged["a"], t(-1))
    assert torch.equal(merged["b"], t(-1, -1))


def test_ties_zero_balance_keeps_negatives_like_reference() -> None:
    # balance of elected signs is 0 -> zero signs stay 0 -> where(sign > 0, x > 0, x < 0)
    v1 = {"w": t(1, -1, 1)}
    v2 = {"w": t(-1, 0, 0)}
    assert torch.equal(ties_merge([v1, v2], k=100, agg="sum")["w"], t(-1, -1, 1))


def test_ties_disjoint_mean_vs_sum() -> None:
    vs = [{"w": t(2, 1)}, {"w": t(4, -3)}, {"w": t(-1, -1)}]
    # signs: +, - ; agreeing: [2, 4] and [-3, -1]
    assert torch.equal(ties_merge(vs, k=100, agg="mean")["w"], t(3, -2))
    assert torch.equal(ties_merge(vs, k=100, agg="sum")["w"], t(6, -4))


def test_ties_k100_is_no_trim() -> None:
    gen = torch.Generator().manual_seed(3)
    vs = [{"w": torch.randn(4, 3, generator=gen), "b": torch.randn(3, generator=gen)}]
    assert all(torch.equal(trim(vs[0], 100)[n], vs[0][n]) for n in vs[0])
    merged = ties_merge(vs, k=100, agg="sum")
    assert all(torch.equal(merged[n], vs[0][n]) for n in vs[0])


def test_task_arithmetic_trims_each_task_to_its_top_k_before_summing() -> None:
    # n=6, k=50: threshold = kthvalue(6 - 3) of |x| (the reference rule), ties kept
    a = {"w": t(8, -1, 2, 4), "b": t(0.5, 3)}  # threshold 2: keeps 8, 2, 4, 3
    b = {"w": t(-1, 5, 0.25, -6), "b": t(2, 0)}  # threshold 1: keeps -1, 5, -6, 2
    tvs = {"a": TaskVector(a), "b": TaskVector(b)}
    trimmed = TaskArithmetic(k=50).merge(tvs).vector
    assert torch.equal(trimmed["w"], t(7, 5, 2, -2)) and torch.equal(trimmed["b"], t(2, 3))
    plain = TaskArithmetic().merge(tvs).vector  # k=100: no trim
    assert torch.equal(plain["w"], t(7, 4, 2.25, -2)) and torch.equal(plain["b"], t(2.5, 3))
    with pytest.raises(ConfigError, match="method.k=150"):
        TaskArithmetic(k=150)


def test_trim_keeps_ties_at_threshold() -> None:
    vector = {"w": t(0.5, -0.5, 0.125, 0.25, 0.5)}
    # n=5, k=20: rank 5 - 1 = 4 -> 4th smallest |x| = 0.5 -> all three 0.5 entries kept
    assert magnitude_mask(vector, 20)["w"].tolist() == [True, True, False, False, True]
    assert torch.equal(trim(vector, 20)["w"], t(0.5, -0.5, 0, 0, 0.5))


def test_global_vs_per_tensor_trim() -> None:
    vector = {"a": t(8, -7, 6, 5), "b": t(4, 3, -2, 1)}
    # global: n=8, k=25 -> rank 6 -> threshold 6: only "a" survives
    glob = trim(vector, 25, "global")
    assert torch.equal(glob["a"], t(8, -7, 6, 0)) and torch.equal(glob["b"], t(0, 0, 0, 0))
    # per tensor: n=4 -> rank 3 -> top two of each tensor
    per = trim(vector, 25, "tensor")
    assert torch.equal(per["a"], t(8, -7, 0, 0)) and torch.equal(per["b"], t(4, 3, 0, 0))


def test_ties_matches_flattened_reference_on_random_vectors_with_ties() -> None:
    gen = torch.Generator().manual_seed(4)
    vectors = [
        {
            "a": torch.randint(-3, 4, (5, 4), generator=gen).float(),
            "b": torch.randint(-3, 4, (7,), generator=gen).float(),
        }
        for _ in range(3)
    ]
    for k in (20, 50, 100):
        for agg in ("mean", "sum"):
            assert torch.allclose(flat(ties_merge(vectors, k, agg)), naive_ties(vectors, k, agg))


def test_ties_class_and_bad_agg() -> None:
    method = Ties(k=100, agg="sum", grid=[0.5, 1.0])
    merged = method.merge(tvs({"w": t(1, -2)}, {"w": t(2, 1)}))
    assert torch.equal(merged.vector["w"], t(3, -2))
    assert method.coefficients() == [0.5, 1.0]
    with pytest.raises(ConfigError):
        Ties(agg="max")


# --------------------------------------------------------------------------- magnitude masking
def test_magnitude_masking_per_task_models() -> None:
    task_vectors = tvs({"w": t(4, 1, 0, -3)}, {"w": t(0, -2, 1, 1)})
    method = MagnitudeMasking(k=25)  # n=4: rank 3 -> keeps the top two of each task
    masks = method.task_masks(task_vectors)
    assert masks["task0"]["w"].tolist() == [True, False, False, True]
    assert masks["task1"]["w"].tolist() == [False, True, True, True]  # tie at 1 kept
    (candidate,) = method.candidates({"w": t(10, 10, 10, 10)}, task_vectors)
    assert torch.equal(candidate.for_task("task0")["w"], t(14, 10, 10, 8))
    assert torch.equal(candidate.for_task("task1")["w"], t(10, 9, 11, 8))


# --------------------------------------------------------------------------- TALL and consensus
def test_tall_mask_strict_inequality() -> None:
    tau = {"w": t(1, 2, -1)}
    merged = {"w": t(3, 4, 0)}  # |merged - tau| = [2, 2, 1]; lambda 0.5 -> [1, 1, 0.5]
    (mask,) = tall_masks([tau], merged, 0.5)
    assert mask["w"].tolist() == [False, True, True]  # |1| == 1 is NOT kept (strict >)
    (mask,) = tall_masks([tau], merged, 1.0)  # larger lambda keeps fewer entries
    assert mask["w"].tolist() == [False, False, False]


def test_tall_mask_class_candidates() -> None:
    task_vectors = tvs({"w": t(1, 0, 2)}, {"w": t(0, 1, 2)})
    method = TallMask(tall_mask_lambda=[0.5])
    # tau_MTL = [1, 1, 4]; task0: |tau| = [1, 0, 2] > 0.5*[0, 1, 2] = [0, .5, 1] -> [T, F, T]
    (candidate,) = method.candidates({"w": t(0, 0, 0)}, task_vectors)
    assert candidate.hyperparameters == {"tall_mask_lambda": 0.5}
    assert torch.equal(candidate.for_task("task0")["w"], t(1, 0, 4))
    assert torch.equal(candidate.for_task("task1")["w"], t(0, 1, 4))
    assert TallMask().lambdas == [0.2, 0.3, 0.4, 0.5, 0.6]


def test_consensus_mask_thresholds() -> None:
    m = [
        {"w": torch.tensor([False, True, True, True])},
        {"w": torch.tensor([False, False, True, True])},
        {"w": torch.tensor([False, False, False, True])},
    ]
    assert consensus_mask(m, 0)["w"].tolist() == [True] * 4
    assert consensus_mask(m, 1)["w"].tolist() == [False, True, True, True]
    assert consensus_mask(m, 2)["w"].tolist() == [False, False, True, True]


def test_consensus_class_with_saved_masks(tmp_path) -> None:  # noqa: ANN001
    task_vectors = tvs({"w": t(1, 2, 3)}, {"w": t(1, 1, 1)})
    path = tmp_path / "masks.safetensors"
    save_masks(
        path,
        {
            "task0": {"w": torch.tensor([True, True, False])},
            "task1": {"w": torch.tensor([False, True, True])},
        },
    )
    assert torch.equal(
        Consensus(prun_thre_k=2, masks_path=str(path)).merge(task_vectors).vector["w"], t(0, 3, 0)
    )
    assert torch.equal(
        Consensus(prun_thre_k=0, masks_path=str(path)).merge(task_vectors).vector["w"], t(2, 3, 4)
    )
    with pytest.raises(ConfigError):
        Consensus(masks_path=str(path)).merge(tvs({"w": t(1)}, {"w": t(1)}, {"w": t(1)}))


def test_masks_save_load_round_trip(tmp_path) -> None:  # noqa: ANN001
    gen = torch.Generator().manual_seed(5)
    masks = {
        task: {
            "a.weight": torch.rand(3, 5, generator=gen) > 0.5,
            "b": torch.rand(7, generator=gen) > 0.5,
            "scalar": torch.tensor(True),
        }
        for task in ("MNIST", "Cars")
    }
    path = tmp_path / "tall.safetensors"
    save_masks(path, masks, metadata={"lambda_MNIST": 0.4})
    loaded = load_masks(path)
    assert list(loaded) == ["MNIST", "Cars"]
    for task, mask in masks.items():
        for name, value in mask.items():
            assert loaded[task][name].dtype == torch.bool
            assert torch.equal(loaded[task][name], value)
    with safe_open(str(path), framework="pt") as handle:
        assert handle.get_tensor("MNIST/a.weight").dtype == torch.uint8
        assert handle.metadata()["lambda_MNIST"] == "0.4"
    packed = pack_mask(masks["MNIST"]["a.weight"]).numpy()
    assert np.array_equal(packed, np.packbits(masks["MNIST"]["a.weight"].numpy().ravel()))


# --------------------------------------------------------------------------- TSV
def orthogonal(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q


def test_tsv_merge_reconstructs_sum_for_orthogonal_tasks() -> None:
    u, v = orthogonal(6, 0), orthogonal(6, 1)
    s1, s2 = torch.tensor([5.0, 3.0, 1.0]).double(), torch.tensor([4.0, 2.0, 0.5]).double()
    tau1 = u[:, :3] @ torch.diag(s1) @ v[:, :3].T
    tau2 = u[:, 3:] @ torch.diag(s2) @ v[:, 3:].T
    for mode in ("polar", "whiten"):
        merged = tsv_merge_matrix([tau1, tau2], mode)  # rank 6, T=2 -> r=3 keeps everything
        assert torch.allclose(merged, tau1 + tau2, atol=1e-10)


def test_tsv_merge_singular_values_for_overlapping_tasks() -> None:
    # rank-1 tasks with non-orthogonal directions: U_perp, V_perp are orthogonal, so the merged
    # matrix has exactly the concatenated singular values
    a, b = torch.tensor([1.0, 0.0]).double(), torch.tensor([0.6, 0.8]).double()
    tau1, tau2 = 3 * torch.outer(a, b), 2 * torch.outer(b, a)
    merged = tsv_merge_matrix([tau1, tau2])
    assert torch.allclose(torch.linalg.svdvals(merged), torch.tensor([3.0, 2.0]).double())
    assert not torch.allclose(merged, tau1 + tau2)


def test_polar_factor_and_whitening() -> None:
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    p = polar_factor(x)
    assert torch.allclose(p.T @ p, torch.eye(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(whiten(x), p, atol=1e-8)  # x (x^T x)^{-1/2} is the polar factor
    assert torch.allclose(polar_factor(p), p, atol=1e-12)


def with_spectrum(m: int, n: int, singular_values: list[float], seed: int) -> torch.Tensor:
    """An ``(m, n)`` float64 matrix with these singular values (the rest zero)."""
    k = len(singular_values)
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(singular_values, dtype=torch.float64)) @ v.T


@pytest.mark.parametrize("shape", [(40, 12), (12, 40)])
def test_top_factors_from_the_gram_matrix_are_the_svd(shape: tuple[int, int]) -> None:
    spectrum = [10.0, 7.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01]
    exact = with_spectrum(*shape, spectrum, seed=10)
    x = exact.float()
    assert svd_routes.top_factors_by_gram(x, 5) is not None  # the fast route is the one taken
    u, s, vh = truncated_svd(x, 5)
    u64, s64, vh64 = torch.linalg.svd(exact, full_matrices=False)
    assert torch.allclose(s.double(), s64[:5], rtol=1e-6)
    assert torch.allclose(u.T @ u, torch.eye(5), atol=1e-6)
    assert torch.allclose(vh @ vh.T, torch.eye(5), atol=1e-6)
    for i in range(5):  # each singular pair, up to its sign
        sign = torch.sign(u[:, i].double() @ u64[:, i])
        assert torch.allclose(sign * u[:, i].double(), u64[:, i], atol=1e-5)
        assert torch.allclose(sign * vh[i].double(), vh64[i], atol=1e-5)


def test_tsv_merge_of_float32_tasks_matches_the_float64_answer() -> None:
    spectrum = [8.0, 5.0, 3.0, 2.0, 1.5, 1.0, 0.6, 0.3, 0.2, 0.1, 0.05, 0.02]
    taus = [with_spectrum(30, 12, spectrum, seed=20 + t) for t in range(3)]
    factors = [torch.linalg.svd(tau, full_matrices=False) for tau in taus]  # r = 12 // 3 = 4
    u_cat = torch.cat([u[:, :4] for u, _, _ in factors], dim=1)
    s_cat = torch.cat([s[:4] for _, s, _ in factors])
    vh_cat = torch.cat([vh[:4] for _, _, vh in factors], dim=0)
    p_u, _, q_u = torch.linalg.svd(u_cat, full_matrices=False)
    p_v, _, q_v = torch.linalg.svd(vh_cat.T, full_matrices=False)
    exact = (p_u @ q_u) @ torch.diag(s_cat) @ (p_v @ q_v).T
    merged = tsv_merge_matrix([tau.float() for tau in taus])
    assert merged.dtype == torch.float32
    # float32 rounding of the output only (the float32 SVD steps of the reference: 1.4e-6 here)
    assert (merged.double() - exact).norm() / exact.norm() < 2e-7


def test_rank_deficient_matrices_take_the_full_svd() -> None:
    x = with_spectrum(10, 6, [3.0, 1.0], seed=11)  # rank 2, four components asked
    assert svd_routes.top_factors_by_gram(x, 4) is None
    u, s, vh = truncated_svd(x, 4)
    assert torch.allclose(u.T @ u, torch.eye(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(s[:2], torch.tensor([3.0, 1.0]).double()) and s[2:].abs().max() < 1e-12
    assert torch.allclose(u @ torch.diag(s) @ vh, x, atol=1e-12)
    assert torch.equal(truncated_svd(torch.zeros(5, 3), 2)[1], torch.zeros(2))


def test_polar_factor_routes_agree_with_the_svd() -> None:
    x = with_spectrum(30, 8, [4.0, 3.0, 2.0, 1.5, 1.0, 0.7, 0.4, 0.2], seed=12)
    p, _, qh = torch.linalg.svd(x, full_matrices=False)
    assert torch.allclose(polar_factor(x.float()).double(), p @ qh, atol=1e-6)  # Gram route
    singular = with_spectrum(30, 8, [2.0, 1.0], seed=13)  # rank 2: the SVD route
    p, _, qh = torch.linalg.svd(singular, full_matrices=False)
    assert torch.allclose(polar_factor(singular), p @ qh, atol=1e-12)


def test_tsv_zero_padding_of_reference_gives_same_matrix() -> None:
    gen = torch.Generator().manual_seed(7)
    taus = [torch.randn(5, 5, generator=gen, dtype=torch.float64) for _ in range(2)]
    r = 2  # rank 5, T=2 -> the reference pads U_cat to 5 columns, the last one zero
    factors = [torch.linalg.svd(x) for x in taus]
    u_cat = torch.zeros(5, 5).double()
    s_cat = torch.zeros(5).double()
    v_cat = torch.zeros(5, 5).double()
    for i, (u, s, vh) in enumerate(factors):
        u_cat[:, i * r : (i + 1) * r], s_cat[i * r : (i + 1) * r] = u[:, :r], s[:r]
        v_cat[i * r : (i + 1) * r] = vh[:r]
    padded = polar_factor(u_cat) @ torch.diag(s_cat) @ polar_factor(v_cat.T).T
    assert torch.allclose(tsv_merge_matrix(taus), padded, atol=1e-10)


def test_tsv_merge_which_tensors_and_ranks() -> None:
    gen = torch.Generator().manual_seed(8)
    vectors = [
        {
            "w": torch.randn(4, 4, generator=gen),
            "bias": torch.randn(4, generator=gen),
            "text_projection": torch.randn(3, 2, generator=gen),
        }
        for _ in range(5)
    ]
    merged = tsv_merge(vectors)
    for name in ("bias", "text_projection"):
        assert torch.allclose(merged[name], torch.stack([v[name] for v in vectors]).mean(0))
    assert torch.equal(merged["w"], torch.zeros(4, 4))  # T=5 > rank 4 -> r=0, as the reference
    assert task_rank((49, 60), 49) == 1 and int(49 * (1 / 49)) == 0  # exact floor vs reference
    assert task_rank((768, 3072), 8) == 96 and task_rank((10, 10), 2, sv_reduction=0.3) == 3
    method = TSVMerge(orthogonalize="whiten", grid=[1.0])
    assert method.merge(tvs(*vectors[:2])).vector["w"].shape == (4, 4)
    with pytest.raises(ConfigError):
        TSVMerge(orthogonalize="qr")


def test_tsv_compress_rank_and_storage() -> None:
    gen = torch.Generator().manual_seed(9)
    vectors = [
        {
            "w": torch.randn(8, 8, generator=gen, dtype=torch.float64),
            "b": torch.randn(8, generator=gen, dtype=torch.float64),
        }
        for _ in range(4)
    ]
    compressed = [tsv_compress(v, num_tasks=4) for v in vectors]  # r = 8 // 4 = 2
    rebuilt = tsv_reconstruct(compressed[0])
    s = torch.linalg.svdvals(vectors[0]["w"])
    assert torch.linalg.matrix_rank(rebuilt["w"]) == 2
    assert torch.isclose((vectors[0]["w"] - rebuilt["w"]).norm() ** 2, (s[2:] ** 2).sum())
    assert torch.equal(rebuilt["b"], vectors[0]["b"])
    report = storage_report(compressed)
    assert (report.full, report.stored) == (4 * (64 + 8), 4 * (2 * 17 + 8))
    assert report.saved == 120 and report.ratio == pytest.approx(168 / 288)
    method = TSVCompress()
    (candidate,) = method.candidates(
        {"w": torch.zeros(8, 8).double(), "b": torch.zeros(8)}, tvs(*vectors)
    )
    assert torch.allclose(candidate.for_task("task0")["w"], rebuilt["w"])
    assert method.report == report


# --------------------------------------------------------------------------- LiNeS
class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.norm = nn.LayerNorm(2)


class Net(nn.Module):
    def __init__(self, depth: int) -> None:
        super().__init__()
        self.stem = nn.Linear(2, 2)
        self.body = nn.Sequential(*[Block() for _ in range(depth)])
        self.heads = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])  # fewer: not the blocks
        self.mlp = nn.Sequential(*[nn.Linear(2, 2), nn.GELU(), nn.Linear(2, 2)])  # mixed classes


@pytest.mark.parametrize("depth", [3, 5])
def test_lines_block_map_and_scales_follow_model_depth(depth: int) -> None:
    net = Net(depth)
    assert find_residual_blocks(net) == ("body", depth)
    index = block_index_map(net, prefix="model.")
    assert index["model.stem.weight"] is None and index["model.heads.1.bias"] is None
    assert index[f"model.body.{depth - 1}.norm.bias"] == depth - 1
    vector = {name: torch.ones(1) for name in index}
    scaled = lines_scale(vector, index, depth, alpha=0.5, beta=1.0)
    for layer in range(depth):
        expected = 0.5 + layer / (depth - 1)
        assert float(scaled[f"model.body.{layer}.fc.weight"]) == pytest.approx(expected)
    assert float(scaled["model.stem.weight"]) == 0.5 and float(scaled["model.mlp.0.bias"]) == 0.5
    with pytest.raises(ValueError):
        lines_scale({"stem.weight": torch.ones(1)}, index, depth, 0.5, 1.0)


def test_lines_on_open_clip_vision_transformer() -> None:
    transformer = pytest.importorskip("open_clip.transformer")
    visual = transformer.VisionTransformer(
        image_size=16, patch_size=8, width=16, layers=3, heads=2, mlp_ratio=2.0, output_dim=8
    )
    assert find_residual_blocks(visual) == ("transformer.resblocks", 3)
    index = block_index_map(visual)
    assert index["conv1.weight"] is None and index["proj"] is None
    assert index["transformer.resblocks.2.mlp.c_proj.weight"] == 2
    assert index["transformer.resblocks.0.attn.in_proj_weight"] == 0


def test_lines_multitask_alpha_and_editing_grid() -> None:
    vectors = [{"w": t(1, -1)}, {"w": t(1, 1)}]
    assert multitask_alpha(vectors, {"w": t(1, 0.5)}) == pytest.approx(2 / 1.5 / 2)
    grid = editing_grid()
    assert len(grid) == 11 and grid[0] == (1.0, 0.0) and grid[-1] == (0.0, 1.0)
    assert all(a + b == pytest.approx(1.0) for a, b in grid)


def test_lines_class_scales_the_merged_vector() -> None:
    from taskmerge.merging.arithmetic import TaskArithmetic

    net = Net(3)
    index = block_index_map(net)
    ones = {name: torch.ones_like(p) for name, p in net.state_dict().items()}
    task_vectors = tvs(ones, ones)
    method = LiNeS(TaskArithmetic(), index, num_blocks=3, grid=[0.2])
    zeros = {name: torch.zeros_like(p) for name, p in net.state_dict().items()}
    (candidate,) = method.candidates(zeros, task_vectors)
    alpha = candidate.hyperparameters["alpha"]
    assert alpha == pytest.approx(0.5)  # ||2||_1 / ||2||_1 / T
    assert torch.allclose(candidate.shared["body.2.fc.weight"], torch.full((2, 2), 2 * 0.7))
    assert torch.allclose(candidate.shared["stem.bias"], torch.full((2,), 2 * 0.5))
