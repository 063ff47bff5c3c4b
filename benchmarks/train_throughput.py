"""Fine-tuning input pipeline against the pure training step, images per second.

    python benchmarks/train_throughput.py [--model ViT-B-32] [--images 96] [--batch 16]
                                          [--steps 6] [--rounds 2]

A real-layout task (JPEG files of 256x320 px in class folders) is fabricated in a temporary
directory; then, in one run, each route trains ``--steps`` optimizer steps of batch ``--batch``
through taskmerge's own loop (:func:`taskmerge.finetune.loop.finetune`: forward, backward,
grad clip, AdamW, schedule) with open_clip's reference train transform:

* pure step: the same loop on a ``TensorDataset`` of batches already preprocessed in memory
  (no input pipeline at all);
* decode-once (``decode_once=[val,train]``): the images decoded once (not timed, done before),
  the reference crop cut from the stored uint8 images, one resampling per batch, in the
  training process on a CPU (:mod:`taskmerge.data.decoded_train`);
* files every epoch (the default): ``preprocess_train`` on each JPEG, DataLoader workers sized
  to the machine (``num_workers=auto``).

Routes are interleaved over ``--rounds`` and the best of each kept (machine noise hits all).
The figure to watch: decode-once's share of the pure step's throughput (target >= 90%).
"""

from __future__ import annotations

import argparse
import copy
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import add_json_flag, write_figures  # noqa: E402
from eval_throughput import Folder, Loader, build, fabricate  # noqa: E402
from machine import machine_line  # noqa: E402

from taskmerge.data.spec import TaskSpec  # noqa: E402
from taskmerge.data.task_data import TaskData  # noqa: E402
from taskmerge.finetune.loop import TrainSettings, finetune  # noqa: E402
from taskmerge.finetune.modes import FinetuningMode  # noqa: E402
from taskmerge.hardware import resolve_workers  # noqa: E402


def main() -> None:
    """Fabricate, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    add_json_flag(parser)
    args = parser.parse_args()
    print(machine_line(), flush=True)
    logging.getLogger().setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="taskmerge-train-"))
    try:
        fabricate(work / "images", args.images)
        bundle = build(args.model, "cpu")
        bundle.train_preprocess = _train_preprocess(args.model)
        spec = TaskSpec("Bench", ("a", "b", "c", "d"), ("a photo of {}.",), 1,
                        Loader(work / "images"))  # fmt: skip

        def data(decode_once: tuple[str, ...]) -> TaskData:
            return TaskData([spec], work, work, bundle.preprocess, work / "tensors", decode_once,
                            num_workers=resolve_workers("auto"),
                            train_preprocess=bundle.train_preprocess)  # fmt: skip

        decoded = data(("val", "train")).train_set("Bench")  # decodes once (not timed)
        files = data(("val",)).train_set("Bench")
        torch.manual_seed(0)
        count = args.batch * args.steps
        preprocessed = TensorDataset(
            torch.stack([bundle.train_preprocess(image) for image, _ in
                         _repeat(Folder(work / "images"), count)]),
            torch.tensor([label for _, label in _repeat(Folder(work / "images"), count)]),
        )  # fmt: skip
        routes = {"pure": preprocessed, "decoded": decoded, "files": files}
        settings = TrainSettings(batch_size=args.batch, warmup_steps=0, save_every=0,
                                 num_workers="auto")  # fmt: skip
        encoder, head = bundle.visual, torch.nn.Linear(bundle.visual.output_dim, 4)
        best = dict.fromkeys(routes, 0.0)
        for _ in range(args.rounds):
            for key, dataset in routes.items():
                epochs = count / len(dataset)  # the same number of steps on every route
                start = time.perf_counter()
                stats = finetune(copy.deepcopy(encoder), head, dataset, epochs, settings,
                                 FinetuningMode(), "cpu", description=key)  # fmt: skip
                seconds = time.perf_counter() - start
                # the steps taken (a split's own Val carve-out can round up one step)
                best[key] = max(best[key], stats["steps"] * args.batch / seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    pure = best["pure"]
    print(f"{args.model} fine-tuning on cpu, batch {args.batch}, {args.steps} steps per route, "
          f"{settings.num_workers} loader workers, {torch.get_num_threads()} threads, "
          f"256x320 px JPEG, reference train transform, best of {args.rounds}")  # fmt: skip
    print("| route | images/s | vs pure step |\n|---|---|---|")
    labels = {"pure": "pure training step (preprocessed tensors in memory)",
              "decoded": "decode-once (decode_once=[val,train]), crop per batch",
              "files": "files decoded every epoch (default)"}  # fmt: skip
    for key, label in labels.items():
        print(f"| {label} | {best[key]:.2f} | {100 * best[key] / pure:.0f}% |")
    write_figures(args.json, {
        "model": args.model, "batch": args.batch, "steps": args.steps, "rounds": args.rounds,
        "images_per_second": {labels[k]: round(v, 2) for k, v in best.items()},
        "share_of_pure_step": {labels[k]: round(v / pure, 3) for k, v in best.items()},
    })  # fmt: skip


def _train_preprocess(model: str):  # noqa: ANN202
    import open_clip

    _, train, _ = open_clip.create_model_and_transforms(model, pretrained=None)
    return train


def _repeat(dataset: Folder, count: int):  # noqa: ANN202
    return (dataset[i % len(dataset)] for i in range(count))


if __name__ == "__main__":
    main()
