"""Speed and error of the SVD methods: taskmerge's routes against the references' float32 steps.

    python benchmarks/svd_speed.py [--part b32 l14] [--blocks 1] [--spectrum decaying lowrank]

* ``b32``: every SVD method (TSVM, TSVM_2, TSVC, Iso-C, Iso-CTS, CART) on the four matrices of
  ``--blocks`` ViT-B-32 residual blocks, 8 tasks: taskmerge's ``svd=exact`` and
  ``svd=randomized`` against the reference code's float32 SVD steps (FusionBench's and the
  authors': ``reference_tsv.py``), each one's relative error against the same math in float64.
* ``l14``: TSV-M on ``--blocks`` ViT-L-14 residual blocks, 20 tasks, both routes; the whole
  encoder's time is extrapolated (24 blocks + the 1024x768 projection, identical shapes), reading
  the task vectors from disk not included (task arithmetic's time over the same files).

Task matrices (float32), ``--spectrum``: ``decaying`` (``tsv_accuracy.py``'s: singular values
about k^-0.7 plus a shared component, a flat tail at the kept rank), ``lowrank`` (a rank-r update
per task, r the method's kept rank at 8 tasks, plus noise 1e-3 times smaller: the randomized
route's favourable case). One run on this machine: timings of the three routes interleave per
matrix so machine load hits them alike; the ratios are the figures to read.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from machine import machine_line  # benchmarks/machine.py
from reference_tsv import reference_iso_c_matrix, reference_iso_cts_matrix, reference_tsv_matrix
from tsv_accuracy import task_matrices

from taskmerge.merging.cart import cart_rank, low_rank
from taskmerge.merging.isotropic import iso_c_matrix, iso_cts_matrix
from taskmerge.merging.svd_routes import SvdRoute
from taskmerge.merging.tsv import compress_tensor, tsv_merge_matrix

B32_BLOCK = [(2304, 768), (768, 768), (3072, 768), (768, 3072)]
L14_BLOCK = [(3072, 1024), (1024, 1024), (4096, 1024), (1024, 4096)]
L14_BLOCKS, L14_PROJ = 24, (1024, 768)
CART_RATIO = 0.12

Matrices = list[torch.Tensor]


# --------------------------------------------------------------------------- the references
def reference_whitened_tsv(taus: Matrices) -> torch.Tensor:
    """TSVM_2 as the reference: top-r factors from float32 SVDs, whitened by ``eigh``."""
    count = len(taus)
    us, ss, vs = [], [], []
    for tau in taus:
        u, s, vh = torch.linalg.svd(tau, full_matrices=False)
        r = s.shape[0] // count
        us.append(u[:, :r])
        ss.append(s[:r])
        vs.append(vh[:r])
    u_cat, s_cat, v_cat = torch.cat(us, 1), torch.cat(ss), torch.cat(vs, 0).mT

    def whiten(x: torch.Tensor) -> torch.Tensor:
        values, q = torch.linalg.eigh(x.mT @ x)
        return x @ (q @ torch.diag(1.0 / (values.abs().sqrt() + 1e-12)) @ q.mT)

    return whiten(u_cat) @ torch.diag(s_cat) @ whiten(v_cat).mT


def reference_tsvc(taus: Matrices) -> torch.Tensor:
    """TSV-C of every task as the reference (float32 SVD, rank r = n // T); their sum, to
    compare one tensor."""
    count = len(taus)
    total = torch.zeros_like(taus[0])
    for tau in taus:
        u, s, vh = torch.linalg.svd(tau, full_matrices=False)
        r = s.shape[0] // count
        total += u[:, :r] @ torch.diag(s[:r]) @ vh[:r]
    return total


def reference_cart(taus: Matrices) -> torch.Tensor:
    """CART's low-rank sum as the authors' code (float32 SVDs of the centred matrices)."""
    mean = sum(taus) / len(taus)
    rank = cart_rank(taus[0].shape, CART_RATIO)
    total = torch.zeros_like(mean)
    for tau in taus:
        u, s, vh = torch.linalg.svd(tau - mean, full_matrices=False)
        total += u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]
    return total


# --------------------------------------------------------------------------- taskmerge's
def ours_tsvc(taus: Matrices, route: SvdRoute) -> torch.Tensor:
    total = torch.zeros_like(taus[0])
    for tau in taus:
        total += compress_tensor(tau, len(taus), route=route).reconstruct()
    return total


def ours_cart(taus: Matrices, route: SvdRoute) -> torch.Tensor:
    mean = sum(t.double() for t in taus) / len(taus)
    rank = cart_rank(taus[0].shape, CART_RATIO)
    total = torch.zeros_like(mean)
    for tau in taus:
        total += low_rank(tau.double() - mean, rank, route)
    return total.float()


METHODS: dict[str, tuple[Callable, Callable | None]] = {
    "TSVM": (lambda t, r: tsv_merge_matrix(t, route=r), reference_tsv_matrix),
    "TSVM_2": (lambda t, r: tsv_merge_matrix(t, "whiten", route=r), reference_whitened_tsv),
    "TSVC": (ours_tsvc, reference_tsvc),
    "iso_c": (lambda t, r: iso_c_matrix(t), reference_iso_c_matrix),
    "iso_cts": (lambda t, r: iso_cts_matrix(t, route=r), reference_iso_cts_matrix),
    "cart": (ours_cart, reference_cart),
}


def lowrank_matrices(shape: tuple[int, int], count: int, seed: int) -> Matrices:
    """A rank-(n // count) update per task plus float32 noise 1e-3 times smaller."""
    gen = torch.Generator().manual_seed(seed)
    m, n = shape
    rank = min(shape) // count
    taus = []
    for _ in range(count):
        update = torch.randn(m, rank, generator=gen) @ torch.randn(rank, n, generator=gen)
        noise = torch.randn(m, n, generator=gen) * (1e-3 * update.std())
        taus.append(1e-3 * (update + noise) / update.std())
    return taus


def timed(function: Callable, *args) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def error(merged: torch.Tensor, exact: torch.Tensor) -> float:
    return float((merged.double() - exact).norm() / exact.norm())


def measure(method: str, taus: Matrices, reference: bool = True) -> dict[str, float]:
    """Seconds and relative errors of one method on one matrix's tasks."""
    ours, theirs = METHODS[method]
    exact = theirs([t.double() for t in taus]) if theirs is not None else None
    row: dict[str, float] = {}
    for kind in ("exact", "randomized"):
        route = SvdRoute(kind)
        merged, row[f"{kind} s"] = timed(ours, taus, route)
        row[f"{kind} err"] = error(merged, exact) if exact is not None else float("nan")
        row[f"{kind} sketched"] = route.taken.get("randomized", 0)
    if reference and theirs is not None:
        merged, row["reference s"] = timed(theirs, taus)
        row["reference err"] = error(merged, exact)
    return row


def task_set(shape: tuple[int, int], count: int, spectrum: str, seed: int) -> Matrices:
    if spectrum == "lowrank":
        return lowrank_matrices(shape, count, seed)
    return task_matrices(shape, count, seed)


def part_b32(blocks: int, spectrum: str, seed: int) -> None:
    print(f"\n## ViT-B-32, 8 tasks, {blocks} block(s) x 4 matrices, spectrum {spectrum}")
    print(
        "| method | exact s | randomized s | reference s | exact / ref | best / ref "
        "| exact err | randomized err | reference err | sketched |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    sets = [task_set(shape, 8, spectrum, seed + i) for i, shape in enumerate(B32_BLOCK)]
    for method in METHODS:
        total: dict[str, float] = {}
        worst = {"exact err": 0.0, "randomized err": 0.0, "reference err": 0.0}
        for _ in range(blocks):
            for taus in sets:
                row = measure(method, taus)
                for key, value in row.items():
                    if key.endswith(" err"):
                        worst[key] = max(worst[key], value)
                    else:
                        total[key] = total.get(key, 0.0) + value
        ref = total["reference s"]
        best = min(total["exact s"], total["randomized s"])
        print(
            f"| {method} | {total['exact s']:.2f} | {total['randomized s']:.2f} | {ref:.2f} "
            f"| {ref / total['exact s']:.2f}x | {ref / best:.2f}x | {worst['exact err']:.1e} "
            f"| {worst['randomized err']:.1e} | {worst['reference err']:.1e} "
            f"| {int(total['randomized sketched'])} |",
            flush=True,
        )


def part_l14(blocks: int, spectrum: str, seed: int) -> None:
    print(f"\n## ViT-L-14, 20 tasks, TSVM, {blocks} block(s) measured, spectrum {spectrum}")
    seconds = {"exact": 0.0, "randomized": 0.0}
    sketched = 0
    for block in range(blocks):
        for i, shape in enumerate(L14_BLOCK):
            taus = task_set(shape, 20, spectrum, seed + 10 * block + i)
            row = measure("TSVM", taus, reference=False)
            seconds["exact"] += row["exact s"]
            seconds["randomized"] += row["randomized s"]
            sketched += int(row["randomized sketched"])
            print(
                f"  {'x'.join(map(str, shape))}: exact {row['exact s']:.2f} s, randomized "
                f"{row['randomized s']:.2f} s (sketched {int(row['randomized sketched'])}/20)",
                flush=True,
            )
    proj = task_set(L14_PROJ, 20, spectrum, seed + 999)
    row = measure("TSVM", proj, reference=False)
    for kind in seconds:
        whole = seconds[kind] / blocks * L14_BLOCKS + row[f"{kind} s"]
        print(
            f"TSVM ViT-L-14 x 20, svd={kind}: {seconds[kind] / blocks:.1f} s per block, whole "
            f"encoder {whole:.0f} s = {whole / 60:.1f} min (extrapolated, reading not included)"
        )


def main() -> None:
    """Print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=("b32", "l14"), default=["b32", "l14"])
    parser.add_argument("--blocks", type=int, default=1, help="blocks measured per part")
    parser.add_argument(
        "--spectrum", nargs="+", choices=("decaying", "lowrank"), default=["decaying", "lowrank"]
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(machine_line(), flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for spectrum in args.spectrum:
        if "b32" in args.part:
            part_b32(args.blocks, spectrum, args.seed)
        if "l14" in args.part:
            part_l14(args.blocks, spectrum, args.seed)


if __name__ == "__main__":
    main()
