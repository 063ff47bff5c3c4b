"""Speed and accuracy of taskmerge's TSV-M against the reference's float32 SVD steps.

    python benchmarks/tsv_accuracy.py [--tasks 8 20] [--seed 0]

For each 2-D weight shape of a ViT-B-32 residual block (attention in/out projections, MLP
c_fc/c_proj) and each number of tasks T, builds T float32 task matrices with decaying spectra
and a shared component (so the tasks' singular subspaces overlap, as fine-tuned task vectors
do), then merges them with

* taskmerge: ``tsv_merge_matrix`` (Gram-matrix eigendecompositions in float64, streaming);
* reference: the reference repository's steps in float32 (``reference_tsv.py``);

and prints each one's time and its relative Frobenius error against the same math done in
float64 (the reference steps on float64 inputs). One run, this machine; times are per matrix.
"""

from __future__ import annotations

import argparse
import time

import torch
from machine import machine_line  # benchmarks/machine.py
from reference_tsv import reference_tsv_matrix

from taskmerge.merging.tsv import tsv_merge_matrix

SHAPES = {
    "attn.in_proj_weight": (2304, 768),
    "attn.out_proj.weight": (768, 768),
    "mlp.c_fc.weight": (3072, 768),
    "mlp.c_proj.weight": (768, 3072),
}


def decaying(m: int, n: int, gen: torch.Generator, exponent: float = 0.7) -> torch.Tensor:
    """A random ``(m, n)`` matrix whose k-th singular value is about ``k ** -exponent``."""
    k = min(m, n)
    q, _ = torch.linalg.qr(torch.randn(n, k, generator=gen))
    scale = torch.arange(1, k + 1, dtype=torch.float32) ** -exponent
    left, _ = torch.linalg.qr(torch.randn(m, k, generator=gen))
    return (left * scale) @ q.T


def task_matrices(shape: tuple[int, int], count: int, seed: int) -> list[torch.Tensor]:
    """``count`` task matrices: a shared part plus each task's own, both with decaying spectra."""
    gen = torch.Generator().manual_seed(seed)
    shared = decaying(*shape, gen)
    return [1e-3 * (0.5 * shared + decaying(*shape, gen)) for _ in range(count)]


def timed(function, *args) -> tuple[torch.Tensor, float]:
    """The result and the seconds it took."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def relative_error(merged: torch.Tensor, exact: torch.Tensor) -> float:
    """``||merged - exact||_F / ||exact||_F``."""
    return float((merged.double() - exact).norm() / exact.norm())


def main() -> None:
    """Print one row per shape and number of tasks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[8, 20])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(machine_line(), flush=True)  # the date and machine of these figures
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = (
        f"{'matrix':<22}{'shape':>11}{'T':>4} | {'taskmerge s':>11} {'rel. error':>10}"
        f" | {'reference s':>11} {'rel. error':>10} | speed-up"
    )
    print(header + "\n" + "-" * len(header))
    totals = [0.0, 0.0]
    for name, shape in SHAPES.items():
        for count in args.tasks:
            taus = task_matrices(shape, count, args.seed)
            exact = reference_tsv_matrix([tau.double() for tau in taus])
            ours, ours_s = timed(tsv_merge_matrix, taus)
            theirs, theirs_s = timed(reference_tsv_matrix, taus)
            totals[0] += ours_s
            totals[1] += theirs_s
            ours_err, theirs_err = relative_error(ours, exact), relative_error(theirs, exact)
            print(
                f"{name:<22}{'x'.join(map(str, shape)):>11}{count:>4} | {ours_s:>11.2f}"
                f" {ours_err:>10.1e} | {theirs_s:>11.2f} {theirs_err:>10.1e}"
                f" | {theirs_s / ours_s:>7.2f}x"
            )
    print(
        f"\nall matrices: taskmerge {totals[0]:.1f} s, reference {totals[1]:.1f} s "
        f"({totals[1] / totals[0]:.2f}x)"
    )


if __name__ == "__main__":
    main()
