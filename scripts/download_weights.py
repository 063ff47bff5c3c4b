"""Download open_clip pretrained weights into the Hugging Face cache (run where there is network).

    python scripts/download_weights.py ViT-B-32 ViT-B-16 ViT-L-14 [--tag openai]

Copy the cache (~/.cache/huggingface) to the offline machine afterwards; taskmerge finds the
weights there without any network access.
"""

from __future__ import annotations

import argparse

import open_clip


def main() -> None:
    """Fetch each model's weights once; prints where they are."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--tag", default="openai")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    for name in args.models:
        path = open_clip.download_pretrained(
            open_clip.get_pretrained_cfg(name, args.tag), cache_dir=args.cache_dir
        )
        print(f"{name}/{args.tag}: {path}")


if __name__ == "__main__":
    main()
