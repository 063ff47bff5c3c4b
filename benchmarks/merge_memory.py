"""Peak memory and time of bounded-memory merging vs the naive flattened merge, ViT-B-32 size.

    python benchmarks/merge_memory.py [--quick] [--tasks 8 20] [--methods TA TIES TSVM IsoCTS]
                                      [--model ViT-L-14] [--checkpoints DIR]

Writes a pretrained and max(--tasks) fine-tuned checkpoints with the exact shapes of open_clip's
ViT-B-32 image encoder (``--model``: another open_clip model's; random fp32 tensors, ~350 MB
each for ViT-B-32, 1.2 GB for ViT-L-14; ``--quick``: only 2 of the residual blocks) into a
temporary directory (deleted at the end; ``--checkpoints DIR``: written there once and kept, then
reused by later runs), in the project's checkpoint layout.
Then, for each number of tasks N and method, runs in a fresh subprocess:

* taskmerge: ``TaskVector.lazy`` task vectors read tensor by tensor + the method's ``merge``;
* naive: the reference repositories' way: all N task vectors flattened into one N x P float32
  matrix (TSVM: all N task-vector state dicts in memory and the reference's SVD steps: full SVD of
  each matrix as it is, zero-padded full-rank concatenations; IsoC / IsoCTS: all N task-vector
  state dicts in memory and FusionBench's float32 full SVDs), the same math vectorised over it.

Each run loads the pretrained state dict and produces the merged task vector. Peak memory is the
resident-set high-water mark above the process's resident size after imports (and a tiny warm-up
of the kernels used), reset through ``/proc/self/clear_refs`` (a sampling thread where that is not
permitted). Targets: taskmerge's peak <= 3x one checkpoint (pretrained + result + working set),
and at most +10% from 8 to 20 tasks. A naive run that would not fit in the available memory is
skipped with its estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from machine import machine_line  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("TA", "TIES", "Consensus", "TSVM", "IsoC", "IsoCTS")
#: Methods measured for taskmerge only (no naive baseline: ``--no-naive`` is implied for them).
LAZY_ONLY = ("DARE", "DARE-TIES", "Breadcrumbs", "MagMax", "PCB")
#: Naive runs: float32 copies of the N x P matrix alive at the peak (measured with --quick).
NAIVE_COPIES = {"TA": 1.3, "TIES": 5.5, "Consensus": 4.3, "TSVM": 1.3, "IsoC": 1.3, "IsoCTS": 2.0}
#: Issue 20 (data-free methods, second half): taskmerge's lazy merge only (no naive baseline).
#: WUDI runs ``--wudi-iter-num`` Adam steps per matrix (FusionBench: 400; slow on a CPU).
METHODS += ("ModelStock", "CART", "WUDI", "EMR")
WUDI_ITER_NUM = [400]
#: The open_clip model whose image-encoder shapes are written (``--model``).
MODEL = ["ViT-B-32"]


# --------------------------------------------------------------------------- memory probes
def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakRSS:
    """Peak resident set above the current one: VmHWM reset by clear_refs, else sampled."""

    def __init__(self) -> None:
        self.baseline = _status("VmRSS")
        self._sampled = 0
        self._stop = threading.Event()
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # resets VmHWM to the current RSS
            self.method = "VmHWM after clear_refs"
            self._thread = None
        except OSError:
            self.method = "VmRSS sampled every 2 ms"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled = max(self._sampled, _status("VmRSS"))
            time.sleep(0.002)

    def peak_above_baseline(self) -> int:
        """Bytes."""
        if self._thread is None:
            return _status("VmHWM") - self.baseline
        self._stop.set()
        self._thread.join()
        return max(self._sampled, _status("VmRSS")) - self.baseline


# --------------------------------------------------------------------------- checkpoints
def vit_b32_shapes(quick: bool, model: str = "ViT-B-32") -> dict[str, tuple[int, ...]]:
    """Name -> shape of open_clip ``model``'s image encoder (no weights downloaded)."""
    import logging

    import open_clip

    logging.getLogger().setLevel(logging.ERROR)  # "no pretrained weights loaded" is expected
    state = open_clip.create_model(model, pretrained=None).visual.state_dict()
    shapes = {name: tuple(t.shape) for name, t in state.items()}
    if quick:
        shapes = {
            n: s
            for n, s in shapes.items()
            if not (n.startswith("transformer.resblocks.") and int(n.split(".")[2]) >= 2)
        }
    return shapes


def write_checkpoints(
    root: Path, shapes: dict, count: int, model: str = "ViT-B-32"
) -> tuple[Path, list[Path]]:
    """pretrained.safetensors and ``count`` fine-tuned checkpoints (theta0 + 0.01 noise); those
    already in ``root`` (``--checkpoints``) are kept."""
    import torch

    from taskmerge.io.tensors import save_state_dict

    gen = torch.Generator().manual_seed(0)
    pretrained = {n: torch.randn(s, generator=gen) * 0.02 for n, s in shapes.items()}
    base = root / "pretrained.safetensors"
    if not base.exists():
        save_state_dict(pretrained, base)
    paths = []
    for index in range(count):
        path = root / model / "standard" / f"Task{index:02d}" / "finetuned.safetensors"
        paths.append(path)
        if path.exists():
            continue
        tuned = {n: t + 0.001 * torch.randn(t.shape, generator=gen) for n, t in pretrained.items()}
        save_state_dict(tuned, path)
        del tuned
    return base, paths


# --------------------------------------------------------------------------- one merge (worker)
def lazy_merge(method: str, base: dict, paths: list[Path]) -> dict:
    """taskmerge: lazy task vectors + the method's merge."""
    from taskmerge.merging.arithmetic import TaskArithmetic
    from taskmerge.merging.isotropic import IsoC, IsoCTS
    from taskmerge.merging.mask_methods import Consensus
    from taskmerge.merging.ties import Ties
    from taskmerge.merging.tsv import TSVMerge
    from taskmerge.vectors.task_vector import TaskVector

    merger = {
        "TA": lambda: TaskArithmetic(),
        "TIES": lambda: Ties(k=20, agg="mean"),
        "Consensus": lambda: Consensus(prun_thre_k=2, tall_mask_lambda=0.4),
        "TSVM": lambda: TSVMerge(),
        "IsoC": lambda: IsoC(),
        "IsoCTS": lambda: IsoCTS(common_space_fraction=0.8),
        **_issue20_methods(),
    }.get(method, lambda: None)()
    if merger is None:
        merger = _lazy_only_method(method)
    task_vectors = {p.parent.name: TaskVector.lazy(base, p) for p in paths}
    return dict(merger.merge(task_vectors).vector)


def _lazy_only_method(method: str):  # noqa: ANN202
    """The methods of issue 20, with their YAML defaults."""
    from taskmerge.merging.breadcrumbs import Breadcrumbs
    from taskmerge.merging.dare import DareTaskArithmetic, DareTies
    from taskmerge.merging.magmax import MagMax
    from taskmerge.merging.pcb import PCBMerging

    return {
        "DARE": DareTaskArithmetic,
        "DARE-TIES": DareTies,
        "Breadcrumbs": Breadcrumbs,
        "MagMax": MagMax,
        "PCB": PCBMerging,
    }[method]()


def _issue20_methods() -> dict:
    """Model Stock, CART (8-task defaults, lambda 2.0), WUDI, EMR (the unified vector and the
    rescalers; the per-task models are built when evaluated)."""
    from taskmerge.merging.cart import CART
    from taskmerge.merging.emr import EMRMerging
    from taskmerge.merging.model_stock import ModelStock
    from taskmerge.merging.wudi import WUDIMerging

    return {
        "ModelStock": lambda: ModelStock(),
        "CART": lambda: CART(initial_rank_ratio=0.12, scaling_coef=2.0),
        "WUDI": lambda: WUDIMerging(iter_num=WUDI_ITER_NUM[0], device="cpu"),
        "EMR": lambda: EMRMerging(),
    }


def naive_merge(method: str, base: dict, paths: list[Path]) -> dict:
    """The reference repositories' way: every task vector in memory at once."""
    import torch
    from safetensors.torch import load_file

    names = list(base)
    if method in ("TSVM", "IsoC", "IsoCTS"):  # a list of task-vector dicts
        from reference_tsv import reference_iso_merge, reference_tsv_merge

        vectors = []
        for path in paths:
            tuned = load_file(str(path))
            vectors.append({n: tuned[n] - base[n] for n in names})
            del tuned
        if method == "TSVM":  # AntoAndGar/task_singular_vectors
            return reference_tsv_merge(vectors)
        # FusionBench isotropic_merging
        return reference_iso_merge(vectors, 0.8 if method == "IsoCTS" else None)
    flat_ptm = torch.cat([base[n].reshape(-1) for n in names])
    flat = torch.empty(len(paths), flat_ptm.numel())
    for row, path in enumerate(paths):  # nik-dim/tall_masks: state_dict_to_vector per task
        tuned = load_file(str(path))
        torch.cat([tuned[n].reshape(-1) for n in names], out=flat[row])
        flat[row] -= flat_ptm
        del tuned
    if method == "TA":
        merged = flat.sum(0)
    elif method == "TIES":  # ties_utils.ties_merging(reset_thresh=20, merge_func="dis-mean")
        k = flat.shape[1] - int(flat.shape[1] * 0.2)
        kth = flat.abs().kthvalue(k, dim=1, keepdim=True).values
        flat = flat * (flat.abs() >= kth)
        sign = torch.sign(flat.sum(0))
        sign[sign == 0] = torch.sign(sign.sum())
        keep = torch.where(sign.unsqueeze(0) > 0, flat > 0, flat < 0)
        selected = flat * keep
        merged = selected.sum(0) / torch.clamp((selected != 0).sum(0).float(), min=1)
    else:  # Consensus: TALL masks (lambda 0.4) of the sum, kept where >= 2 tasks use them
        mtl = flat.sum(0)
        masks = flat.abs() > (mtl.unsqueeze(0) - flat).abs() * 0.4
        merged = mtl * (masks.sum(0) >= 2)
    out, offset = {}, 0
    for n in names:
        size = base[n].numel()
        out[n] = merged[offset : offset + size].view(base[n].shape)
        offset += size
    return out


def worker(args: argparse.Namespace) -> None:
    """One merge in this (fresh) process; prints a JSON line."""
    import torch
    from safetensors.torch import load_file

    import taskmerge.merging  # noqa: F401 - imports belong to the baseline

    torch.linalg.svd(torch.randn(8, 8))  # warm up the kernels (library init is not the merge)
    torch.bincount(torch.arange(4)).sum()
    probe = PeakRSS()
    start = time.perf_counter()
    base = load_file(str(args.root / "pretrained.safetensors"))
    paths = sorted((args.root / args.model / "standard").glob("Task*/finetuned.safetensors"))
    paths = paths[: args.n]
    merge = lazy_merge if args.worker == "lazy" else naive_merge
    merged = merge(args.method, base, paths)
    seconds = time.perf_counter() - start
    peak = probe.peak_above_baseline()
    l1 = sum(float(t.double().abs().sum()) for t in merged.values())
    print(json.dumps({"peak": peak, "seconds": seconds, "l1": l1, "probe": probe.method}))


# --------------------------------------------------------------------------- driver
def run_worker(kind: str, method: str, n: int, root: Path) -> dict:
    """Run one merge in a fresh interpreter; returns its JSON (or the failure)."""
    cmd = [sys.executable, __file__, "--worker", kind, "--method", method]
    cmd += ["--n", str(n), "--root", str(root), "--wudi-iter-num", str(WUDI_ITER_NUM[0])]
    cmd += ["--model", MODEL[0]]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo."""
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    """Write the checkpoints, run every merge, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 of 12 blocks: a smoke run")
    parser.add_argument("--tasks", type=int, nargs="+", default=[8, 20])
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS + LAZY_ONLY), choices=METHODS + LAZY_ONLY
    )
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baselines")
    parser.add_argument("--dir", type=Path, default=None, help="where the temp dir goes")
    parser.add_argument("--wudi-iter-num", type=int, default=400, help="WUDI's Adam steps")
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model whose shapes")
    parser.add_argument(
        "--checkpoints", type=Path, default=None, help="write the checkpoints here once, keep them"
    )
    parser.add_argument("--worker", choices=("lazy", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    print(machine_line(), flush=True)  # the date and machine of these figures
    WUDI_ITER_NUM[0] = args.wudi_iter_num
    MODEL[0] = args.model
    if args.worker:
        worker(args)
        return

    begin = time.perf_counter()
    shapes = vit_b32_shapes(args.quick, args.model)
    numel = sum(int(_prod(s)) for s in shapes.values())
    size = numel * 4
    if args.checkpoints is not None:
        args.checkpoints.mkdir(parents=True, exist_ok=True)
    root = args.checkpoints or Path(tempfile.mkdtemp(prefix="taskmerge-mem-", dir=args.dir))
    try:
        print(
            f"{args.model}{' (quick: 2 blocks)' if args.quick else ''} image encoder: "
            f"{len(shapes)} tensors, {numel / 1e6:.1f} M params, checkpoint {size / 2**20:.0f} MiB"
        )
        write_checkpoints(root, shapes, max(args.tasks), args.model)
        print(
            f"wrote 1 + {max(args.tasks)} checkpoints to {root} "
            f"in {time.perf_counter() - begin:.0f} s\n"
        )
        rows = []
        for method in args.methods:
            for n in args.tasks:
                lazy = run_worker("lazy", method, n, root)
                naive: dict = {"skipped": "--no-naive"} if args.no_naive else {}
                if method not in NAIVE_COPIES:
                    naive = {"skipped": "no naive baseline"}
                need = (NAIVE_COPIES.get(method, 0) * n + 2) * size
                if not naive and need > available_bytes() - 2**30:
                    naive = {
                        "skipped": f"needs ~{need / 2**30:.0f} GiB, "
                        f"{available_bytes() / 2**30:.0f} GiB available"
                    }
                if not naive:
                    naive = run_worker("naive", method, n, root)
                rows.append((method, n, lazy, naive))
                _print_row(method, n, lazy, naive, size)
        _print_table(rows, size)
        print(
            f"\ntotal {time.perf_counter() - begin:.0f} s; memory probe: "
            f"{next((r[2].get('probe') for r in rows if 'probe' in r[2]), '?')}"
        )
    finally:
        if args.checkpoints is None:
            shutil.rmtree(root, ignore_errors=True)


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for dim in shape:
        out *= dim
    return out


def _print_row(method: str, n: int, lazy: dict, naive: dict, size: int) -> None:
    def show(result: dict) -> str:
        if "peak" in result:
            return f"{result['peak'] / 2**20:.0f} MiB, {result['seconds']:.1f} s"
        return str(result.get("skipped") or result.get("error"))

    print(f"  done {method} N={n}: taskmerge {show(lazy)}; naive {show(naive)}", flush=True)


def _print_table(rows: list, size: int) -> None:
    header = (
        f"{'method':<10}{'N':>3} {'peak MiB':>9} {'x ckpt':>7} {'8->20':>7} {'seconds':>8}"
        f" | {'naive MiB':>9} {'x ckpt':>7} {'naive s':>8}  agree"
    )
    print("\n" + header + "\n" + "-" * len(header))
    first: dict[str, float] = {}
    for method, n, lazy, naive in rows:
        if "error" in lazy:
            print(f"{method:<10}{n:>3}  {lazy['error']}")
            continue
        peak = lazy["peak"]
        growth = ""
        if method in first:
            growth = f"{100 * (peak / first[method] - 1):+.1f}%"
        else:
            first[method] = peak
        line = (
            f"{method:<10}{n:>3} {peak / 2**20:>9.0f} {peak / size:>7.2f} {growth:>7}"
            f" {lazy['seconds']:>8.1f} | "
        )
        if "peak" in naive:
            rel = abs(naive["l1"] - lazy["l1"]) / max(abs(naive["l1"]), 1e-30)
            line += (
                f"{naive['peak'] / 2**20:>9.0f} {naive['peak'] / size:>7.2f}"
                f" {naive['seconds']:>8.1f}  {'yes' if rel < 1e-4 else f'no ({rel:.1e})'}"
            )
        else:
            line += f"skipped: {naive.get('skipped') or naive.get('error')}"
        print(line)
    print("targets: taskmerge peak <= 3.00 x one checkpoint; growth 8->20 tasks <= +10%")


if __name__ == "__main__":
    main()
