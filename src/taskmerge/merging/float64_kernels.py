"""Dense float64 kernels of the SVD routes on the CPU, all through scipy's BLAS and LAPACK.

The Gram route of :mod:`taskmerge.merging.svd_routes` runs three dense steps per matrix: the
symmetric product ``x^T x``, a symmetric eigendecomposition, and products with its
eigenvectors. On the CPU they all go through one library, scipy's OpenBLAS, for two reasons:

* BLAS ``dsyrk`` forms only one triangle of ``x^T x``: half the multiply-adds of a general
  product (``x.mT @ x`` in torch), measured 2.1x faster at 4096 x 1024 on 2 cores;
* LAPACK's subset eigensolver (``dsyevr``, MRRR: only the top r eigenpairs) is not in torch,
  and a BLAS library's threads keep spinning for a while after each call: alternating between
  torch's thread pool and OpenBLAS's within one decomposition leaves each waiting for the
  other's idle threads (measured: a 4096 x 1024 top-51 decomposition 0.19-0.24 s mixed against
  0.15 s all in scipy, 2 cores).

Every function takes and returns torch tensors (CPU float64; numpy views, no copies where the
memory layout allows) and accepts row- or column-major inputs. :func:`blas_owns_the_cores` keeps
torch to one thread while these kernels run between torch's reads and elementwise steps (the
same spinning, the other way round: measured 15.5 s against 11.5 s per ViT-L-14 block of TSV-M
at 20 tasks, reading included).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from scipy.linalg import blas, eigh

#: Only the top r eigenpairs are computed when r <= size / SUBSET_DIVISOR and size >= SUBSET_MIN
#: (measured on 2 cores: dsyevr for the top 1/8 of 768 takes 0.05 s, dsyevd for all 0.075 s;
#: at a quarter they are even).
SUBSET_DIVISOR = 6
SUBSET_MIN = 512


def runs_here(*tensors: torch.Tensor) -> bool:
    """Whether these tensors are CPU float64 (this module's kernels apply)."""
    return all(t.device.type == "cpu" and t.dtype == torch.float64 for t in tensors)


def _fortran(array: np.ndarray) -> tuple[np.ndarray, int]:
    """``(a, transposed)`` with ``a`` column-major and ``a^T`` equal to ``array`` when
    ``transposed``: what BLAS reads without a copy."""
    if array.flags.f_contiguous:
        return array, 0
    if array.flags.c_contiguous:
        return array.T, 1
    return np.asfortranarray(array), 0


def as_float64(tensor: torch.Tensor) -> torch.Tensor:
    """A float64 copy of a CPU tensor, keeping its memory layout (numpy's cast, one thread: no
    torch thread pool woken between two BLAS calls)."""
    return torch.from_numpy(tensor.detach().numpy().astype(np.float64, order="K"))


def gram_upper(x: torch.Tensor) -> torch.Tensor:
    """``x^T x`` (BLAS ``dsyrk``): only its upper triangle is set."""
    a, transposed = _fortran(x.detach().numpy())
    # dsyrk(trans=0): a a^T; trans=1: a^T a. x = a (not transposed) wants a^T a.
    return torch.from_numpy(blas.dsyrk(1.0, a, trans=0 if transposed else 1))


def eigh_upper(matrix: torch.Tensor, top: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of a symmetric matrix of which the upper triangle is read, ascending: only the
    ``top`` largest where that is cheaper (``top * SUBSET_DIVISOR <= size``, from
    ``SUBSET_MIN``; MRRR, ``dsyevr``), else all of them (divide and conquer, ``dsyevd``)."""
    size = matrix.shape[0]
    array = matrix.numpy()
    if top is not None and size >= SUBSET_MIN and 0 < top * SUBSET_DIVISOR <= size:
        values, vectors = eigh(
            array, lower=False, subset_by_index=[size - top, size - 1], driver="evr",
            check_finite=False,
        )  # fmt: skip
    else:
        values, vectors = eigh(array, lower=False, driver="evd", check_finite=False)
    return torch.from_numpy(values), torch.from_numpy(vectors)


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` (BLAS ``dgemm``, column-major result)."""
    left, trans_a = _fortran(a.detach().numpy())
    right, trans_b = _fortran(b.detach().numpy())
    return torch.from_numpy(blas.dgemm(1.0, left, right, trans_a=trans_a, trans_b=trans_b))


@contextmanager
def blas_owns_the_cores() -> Iterator[None]:
    """torch's intra-op threads set to one inside (restored on exit): torch's remaining work in
    the SVD routes is reading and elementwise steps, which then run on the calling thread while
    scipy's BLAS threads do the dense work, neither pool waiting on the other's spinning
    threads."""
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)
