"""TSV-M, Iso-C and Iso-CTS computed the way the reference code does, for the benchmarks to
compare against.

TSV-M: AntoAndGar/task_singular_vectors, ``compute_and_sum_svd_mem_reduction``: every task vector
in memory, a full SVD of each task's matrix as it is (wide ones too), the top ``rank // T``
factors written into zero-padded full-rank ``U``, ``S``, ``V`` concatenations, whose orthogonal
polar factors come from two more SVDs. Other tensors (and ``text_projection``) are the mean.

Iso-C / Iso-CTS (arXiv:2502.04959): FusionBench's ``isotropic_merging/iso_utils.py``: every task
vector in memory, float32 full SVDs of the sum, of each task's residual outside the common space
and of the stacked factors (their polar factors), the spectrum set to its mean. Every 2-D tensor
is decomposed (``exclude_keys`` empty; image encoders have no ``text_projection``). Where MKL's
float32 SVD fails to converge on the CPU (square residuals, whose trailing singular values are all
at rounding level), that one SVD is redone in float64.
"""

from __future__ import annotations

import torch


def reference_tsv_matrix(taus: list[torch.Tensor]) -> torch.Tensor:
    """TSV-M of one 2-D parameter, in the dtype of ``taus``."""
    count = len(taus)
    sum_u = sum_s = sum_v = None
    for i, tau in enumerate(taus):
        u, s, vh = torch.linalg.svd(tau, full_matrices=False)
        if sum_u is None:
            sum_u, sum_s, sum_v = torch.zeros_like(u), torch.zeros_like(s), torch.zeros_like(vh)
        r = s.shape[0] // count
        cols = slice(i * r, (i + 1) * r)
        sum_u[:, cols], sum_s[cols], sum_v[cols] = u[:, :r], s[:r], vh[:r]
    u_u, _, vh_u = torch.linalg.svd(sum_u, full_matrices=False)
    u_v, _, vh_v = torch.linalg.svd(sum_v, full_matrices=False)
    return torch.linalg.multi_dot((u_u, vh_u, torch.diag(sum_s), u_v, vh_v))


def reference_tsv_merge(vectors: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """TSV-M of whole task vectors (name -> tensor), all in memory."""
    merged = {}
    for name in vectors[0]:
        taus = [vector[name] for vector in vectors]
        if taus[0].ndim == 2 and "text_projection" not in name:
            merged[name] = reference_tsv_matrix(taus)
        else:
            merged[name] = sum(taus) / len(taus)
    return merged


def _svd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD in ``x``'s dtype; in float64 (cast back) where LAPACK does not converge."""
    try:
        return torch.linalg.svd(x, full_matrices=False)
    except torch.linalg.LinAlgError:
        u, s, vh = torch.linalg.svd(x.double(), full_matrices=False)
        return u.to(x.dtype), s.to(x.dtype), vh.to(x.dtype)


def _polar(x: torch.Tensor) -> torch.Tensor:
    p, _, qh = _svd(x)
    return p @ qh


def reference_iso_c_matrix(taus: list[torch.Tensor]) -> torch.Tensor:
    """Iso-C of one 2-D parameter: mean(S) U V^T of the sum, in the dtype of ``taus``."""
    u, s, vh = _svd(sum(taus))
    return s.mean() * (u @ vh)


def reference_iso_cts_matrix(taus: list[torch.Tensor], fraction: float = 0.8) -> torch.Tensor:
    """Iso-CTS of one 2-D parameter, in the dtype of ``taus`` (task blocks first, common last)."""
    count, rank = len(taus), min(taus[0].shape)
    common = int(rank * fraction)
    common = rank - round((rank - common) / count) * count
    per_task = (rank - common) // count
    u, s, vh = _svd(sum(taus))
    u_c = u[:, :common]
    us, ss, vs = [], [], []
    for tau in taus:
        a, b, c = _svd(tau - u_c @ (u_c.T @ tau))
        us.append(a[:, :per_task])
        ss.append(b[:per_task])
        vs.append(c[:per_task])
    s_cat = torch.cat([*ss, s[:common]])
    u_cat = _polar(torch.cat([*us, u_c], dim=1))
    v_cat = _polar(torch.cat([*vs, vh[:common]], dim=0))
    return s_cat.mean() * (u_cat @ v_cat)


def reference_iso_merge(
    vectors: list[dict[str, torch.Tensor]], fraction: float | None = None
) -> dict[str, torch.Tensor]:
    """Iso-C (``fraction`` None) or Iso-CTS of whole task vectors, all in memory; other tensors
    are the mean."""
    merged = {}
    for name in vectors[0]:
        taus = [vector[name] for vector in vectors]
        if taus[0].ndim != 2:
            merged[name] = sum(taus) / len(taus)
        elif fraction is None:
            merged[name] = reference_iso_c_matrix(taus)
        else:
            merged[name] = reference_iso_cts_matrix(taus, fraction)
    return merged
