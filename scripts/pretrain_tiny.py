"""Rebuild the tiny CLIP's shipped pretrained weights (src/taskmerge/models/assets/).

    python scripts/pretrain_tiny.py [--steps 1500] [--seed 0] [--device cuda]

Pretrains contrastively on the demo caption corpus (about 20 minutes on 2 CPU cores, one on a
GPU), zeroes the token-embedding rows no demo caption uses, rounds to float16 and writes the
xz-compressed safetensors file.
"""

from __future__ import annotations

import argparse
import time

import torch

from taskmerge.data.demo_tasks import DEMO_TASKS
from taskmerge.models.tiny import (
    ASSET,
    TINY_MODEL_NAME,
    compress_for_shipping,
    pretrain_tiny_state_dict,
)


def demo_vocabulary_tokens() -> torch.Tensor:
    """Token ids of every caption and prompt the demo can produce."""
    import open_clip

    tokenizer = open_clip.get_tokenizer(TINY_MODEL_NAME)
    texts = [
        t.format(c) for task in DEMO_TASKS.values() for t in task.templates for c in task.classnames
    ]
    return tokenizer(texts).flatten()


def main() -> None:
    """Pretrain, compress and write the asset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.time()
    state = pretrain_tiny_state_dict(args.steps, args.seed, args.device)
    payload = compress_for_shipping(state, demo_vocabulary_tokens())
    ASSET.parent.mkdir(parents=True, exist_ok=True)
    ASSET.write_bytes(payload)
    print(
        f"wrote {ASSET} ({len(payload) / 1e6:.2f} MB) in {time.time() - start:.0f} s "
        f"on {args.device}"
    )


if __name__ == "__main__":
    main()
