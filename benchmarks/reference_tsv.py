"""TSV-M computed the way the reference repository does, for the benchmarks to compare against.

AntoAndGar/task_singular_vectors, ``compute_and_sum_svd_mem_reduction``: every task vector in
memory, a full SVD of each task's matrix as it is (wide ones too), the top ``rank // T`` factors
written into zero-padded full-rank ``U``, ``S``, ``V`` concatenations, whose orthogonal polar
factors come from two more SVDs. Other tensors (and ``text_projection``) are the mean.
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
