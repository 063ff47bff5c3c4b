"""AdaMerging's peak memory at 8 and 20 tasks, taskmerge's streamed gradients vs a naive
all-in-memory implementation, and seconds per step.

    python benchmarks/adamerging_memory.py [--tasks 8 20] [--steps 3] [--device cpu|cuda]

Fabricates T fine-tuned copies of the shipped tiny CLIP image tower (taskmerge-tiny; random
changes) as safetensors checkpoints in a temporary directory, then runs, each in a fresh
subprocess, ``--steps`` layer-wise AdaMerging steps (batch 16 per task, random 32x32 images,
random 10-class heads):

- ``taskmerge``: :class:`taskmerge.merging.adamerging.AdaMerging` over lazy task vectors (read
  one tensor at a time from the files), merged weights rebuilt tensor by tensor, one backward
  per task, coefficient gradients as inner products streamed over the tasks;
- ``naive``: the reference's way (EnnengYang/AdaMerging): every task vector in memory, the
  merge theta0 + sum_t clamp(lambda_t) tau_t inside one autograd graph with all tasks' losses,
  ``loss.backward()``, ``torch.optim.Adam``.

Prints, per (implementation, T), the peak memory above the child's baseline after setup
(CPU: resident set, VmHWM; CUDA: ``torch.cuda.max_memory_allocated`` above the allocated
baseline) in MB and as a multiple of one checkpoint, the ratio T=20 / T=8 and seconds per step.
Target: taskmerge's peak at 20 tasks within 10% of 8 tasks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]


def write_checkpoints(directory: Path, tasks: int) -> None:
    import torch

    from taskmerge.io.tensors import save_state_dict
    from taskmerge.models.tiny import load_tiny_clip

    visual = load_tiny_clip(directory / "cache").visual
    base = {k: v.detach().clone() for k, v in visual.state_dict().items()}
    save_state_dict(base, directory / "pretrained.safetensors")
    for index in range(tasks):
        gen = torch.Generator().manual_seed(index)
        tuned = {k: v + 1e-2 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
        save_state_dict(tuned, directory / f"task{index}.safetensors")


def child(impl: str, tasks: int, directory: Path, steps: int, device: str) -> dict:
    import torch
    from merge_memory import PeakRSS
    from torch import nn
    from torch.func import functional_call

    from taskmerge.adapt.model_data import ModelData
    from taskmerge.io.tensors import load_state_dict
    from taskmerge.merging.adamerging import AdaMerging, entropy_loss
    from taskmerge.models.tiny import load_tiny_clip
    from taskmerge.vectors.task_vector import TaskVector

    torch.manual_seed(0)
    module = load_tiny_clip(directory / "cache").visual.to(device).eval().requires_grad_(False)
    pretrained = load_state_dict(directory / "pretrained.safetensors")
    names = [f"T{i}" for i in range(tasks)]
    heads = {t: nn.Linear(128, 10).to(device).requires_grad_(False) for t in names}
    batches = {t: [torch.randn(16, 3, 32, 32, device=device)] for t in names}
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        meter = PeakRSS()
    start = time.perf_counter()
    if impl == "taskmerge":
        vectors = {
            t: TaskVector.lazy(pretrained, directory / f"task{i}.safetensors")
            for i, t in enumerate(names)
        }
        method = AdaMerging(granularity="layer", steps=steps)
        method.attach(ModelData(module, heads, adapt=batches, device=device))
        method.merge_with_data({k: v.to(device) for k, v in pretrained.items()}, vectors)
    else:
        base = {k: v.to(device) for k, v in pretrained.items()}
        taus = []
        for index in range(tasks):
            tuned = load_state_dict(directory / f"task{index}.safetensors")
            taus.append({k: (tuned[k].to(device) - base[k]) for k in base})
        keys = list(base)
        raw = torch.full((tasks, len(keys)), 0.3, device=device, requires_grad=True)
        optimizer = torch.optim.Adam([raw], lr=1e-3, betas=(0.9, 0.999))
        for _ in range(steps):
            coefs = raw.clamp(0, 1)
            merged = {
                k: base[k] + sum(coefs[i, j] * taus[i][k] for i in range(tasks))
                for j, k in enumerate(keys)
            }
            loss = sum(
                entropy_loss(heads[t](functional_call(module, merged, (batches[t][0],))))
                for t in names
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    seconds = (time.perf_counter() - start) / max(steps, 1)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - baseline
    else:
        peak = meter.peak_above_baseline()
    checkpoint = sum(v.numel() * v.element_size() for v in pretrained.values())
    return {"peak": peak, "seconds_per_step": seconds, "checkpoint": checkpoint}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[8, 20])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=3, metavar=("IMPL", "T", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        impl, tasks, directory = args.child
        print(json.dumps(child(impl, int(tasks), Path(directory), args.steps, args.device)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_checkpoints(directory, max(args.tasks))
        results: dict[tuple[str, int], dict] = {}
        for impl in ("taskmerge", "naive"):
            for tasks in args.tasks:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", impl, str(tasks), str(directory),
                     "--steps", str(args.steps), "--device", args.device],
                    check=True, capture_output=True, text=True, cwd=ROOT,
                )  # fmt: skip
                results[impl, tasks] = json.loads(out.stdout.strip().splitlines()[-1])
    one = next(iter(results.values()))["checkpoint"]
    print(f"AdaMerging layer-wise, tiny CLIP ({one / 2**20:.1f} MB per checkpoint), "
          f"{args.steps} steps, batch 16 per task, device {args.device}")  # fmt: skip
    print(f"{'implementation':<12} {'T':>3} {'peak MB':>9} {'x ckpt':>7} {'s/step':>8}")
    for (impl, tasks), r in results.items():
        print(f"{impl:<12} {tasks:>3} {r['peak'] / 2**20:>9.1f} {r['peak'] / one:>7.1f} "
              f"{r['seconds_per_step']:>8.3f}")  # fmt: skip
    low, high = min(args.tasks), max(args.tasks)
    for impl in ("taskmerge", "naive"):
        ratio = results[impl, high]["peak"] / max(results[impl, low]["peak"], 1)
        print(f"{impl}: peak at {high} tasks / at {low} tasks = {ratio:.2f}")
    ours, naive = results["taskmerge", high]["peak"], results["naive", high]["peak"]
    print(f"at {high} tasks: naive / taskmerge peak = {naive / max(ours, 1):.1f}x")


if __name__ == "__main__":
    main()
