"""Peak memory of importing published checkpoints: 8 ViT-B-32-sized tasks, tall_masks layout.

    python benchmarks/import_memory.py [--tasks 8] [--quick]

Writes a fabricated ``single_task/ViT-B-32/<Task>Val/nonlinear_finetuned.pt`` tree (pickled
dicts of ``model.visual.*`` tensors, as the TALL-masks release; random fp32 weights with the
exact shapes of open_clip's ViT-B-32 image encoder, ~335 MB each; ``--quick``: 2 of the 12
blocks) and its ``nonlinear_zeroshot.pt`` into a temporary directory (deleted at the end), then,
in a fresh subprocess, loads the pretrained state dict, resets the peak-memory counter and
imports every task into a checkpoint store (reading each source memory-mapped, converting,
writing safetensors atomically, hashing source and result). Prints the peak resident memory
above that baseline, as a multiple of one checkpoint. Target: at most 2x one checkpoint.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_line  # noqa: E402
from merge_memory import PeakRSS, vit_b32_shapes  # noqa: E402

TASKS = ("Cars", "DTD", "EuroSAT", "GTSRB", "MNIST", "RESISC45", "SVHN", "SUN397")


def write_tree(root: Path, count: int, quick: bool) -> tuple[dict, int]:
    """The fabricated source tree; returns the pretrained visual state and one file's bytes."""
    import torch

    shapes = vit_b32_shapes(quick)
    gen = torch.Generator().manual_seed(0)
    pretrained = {n: torch.randn(s, generator=gen) * 0.02 for n, s in shapes.items()}
    folder = root / "single_task" / "ViT-B-32"
    size = 0
    for index, task in enumerate(TASKS[:count]):
        tuned = {f"model.visual.{n}": t + 0.001 * torch.randn(t.shape, generator=gen)
                 for n, t in pretrained.items()}  # fmt: skip
        path = folder / f"{task}Val" / "nonlinear_finetuned.pt"
        path.parent.mkdir(parents=True)
        torch.save(tuned, path)
        size = path.stat().st_size
        if index == 0:
            zeroshot = {f"model.visual.{n}": t for n, t in pretrained.items()}
            torch.save(zeroshot, path.parent / "nonlinear_zeroshot.pt")
        del tuned
    return pretrained, size


def worker(root: Path, count: int) -> None:
    """Import in this process; print the peak above the baseline as JSON."""
    import torch

    from taskmerge.finetune.modes import FinetuningMode, Linearized
    from taskmerge.interop.importer import import_checkpoints
    from taskmerge.interop.readers import read_tall_masks_checkpoint
    from taskmerge.io.digest import fingerprint
    from taskmerge.store.checkpoints import CheckpointStore

    zeroshot = root / "single_task" / "ViT-B-32" / "CarsVal" / "nonlinear_zeroshot.pt"
    pretrained = {k: v.clone() for k, v in read_tall_masks_checkpoint(zeroshot).items()}
    fp = fingerprint(pretrained)
    store = CheckpointStore(root / "out", "ViT-B-32", "openai", FinetuningMode(), pretrained, fp)
    linear = CheckpointStore(root / "out", "ViT-B-32", "openai", Linearized(), pretrained, fp)
    torch.zeros(1)
    probe = PeakRSS()
    start = time.time()
    report = import_checkpoints(root, "ViT-B-32", store, linear)
    print(json.dumps({
        "peak": probe.peak_above_baseline(), "seconds": time.time() - start,
        "imported": len(report.imported), "probe": probe.method,
    }))  # fmt: skip


def main() -> None:
    """Fabricate, import in a subprocess, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    print(machine_line(), flush=True)  # the date and machine of these figures
    if args.worker is not None:
        worker(args.worker, args.tasks)
        return
    root = Path(tempfile.mkdtemp(prefix="taskmerge-import-"))
    try:
        _, size = write_tree(root, args.tasks, args.quick)
        out = subprocess.run(
            [sys.executable, __file__, "--worker", str(root), "--tasks", str(args.tasks)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        result = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mib = 1024 * 1024
    print(f"import of {result['imported']} ViT-B-32-sized checkpoints ({size / mib:.0f} MiB "
          f"each), {result['seconds']:.1f} s")  # fmt: skip
    ratio = result["peak"] / size
    print(f"peak memory above baseline: {result['peak'] / mib:.0f} MiB = {ratio:.2f}x one "
          f"checkpoint ({result['probe']}; target <= 2x)")  # fmt: skip


if __name__ == "__main__":
    main()
