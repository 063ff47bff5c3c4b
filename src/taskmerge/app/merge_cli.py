"""``taskmerge-merge``: merge checkpoints on disk into a safetensors checkpoint, no experiment.

    taskmerge-merge --pretrained zeroshot.safetensors \\
        --finetuned MNIST=ckpt/MNIST/finetuned.safetensors SVHN=ckpt/SVHN/finetuned.safetensors \\
        --method ties --scaling-coef 0.4 --set k=20 --save-to merged.safetensors
    taskmerge-merge --pretrained zeroshot.safetensors --finetuned-dir ckpt/ViT-B-32/standard \\
        --method sum --scaling-coef 0.3 --save-to merged.safetensors

The fine-tuned checkpoints are read lazily, one tensor at a time (memory: about three copies of
one model, whatever the number of tasks). ``--set key=value`` gives any YAML key of the method
(``config/method/<name>.yaml``); nothing is swept.
"""

from __future__ import annotations

import ast
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from taskmerge.app.errors import USER_ERROR, OneLineParser, print_user_error
from taskmerge.errors import ConfigError, TaskmergeError
from taskmerge.store.layout import FINETUNED_FILE


def _value(text: str) -> Any:
    """A Python literal (number, bool, list, None) or else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {"true": True, "false": False, "null": None}.get(text.lower(), text)


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{what} {item!r} is not NAME=VALUE: write e.g. MNIST=path/to/file")
        pairs[key] = value
    return pairs


def finetuned_paths(items: Sequence[str], directory: str | None) -> dict[str, Path]:
    """Task -> checkpoint from ``NAME=PATH`` items and/or a ``<mode>`` checkpoint directory."""
    paths = {task: Path(path) for task, path in _pairs(items, "--finetuned").items()}
    if directory:
        root = Path(directory).expanduser()
        found = sorted(p.parent.name for p in root.glob(f"*/{FINETUNED_FILE}"))
        if not found:
            raise ConfigError(f"no */{FINETUNED_FILE} under {root}: point --finetuned-dir at a "
                              "<checkpoints>/<model>/<finetuning> directory")  # fmt: skip
        paths.update({task: root / task / FINETUNED_FILE for task in found})
    if not paths:
        raise ConfigError(
            "no fine-tuned checkpoints: give --finetuned NAME=PATH or --finetuned-dir"
        )
    return paths


#: ``merge``'s own arguments: not method keys.
RESERVED = ("pretrained", "finetuned", "method", "save_to", "overwrite", "return_state_dict")


@contextmanager
def _log_lines() -> Iterator[None]:
    """taskmerge's log lines on stderr (``taskmerge-merge: <line>``) while the merge runs."""
    logger = logging.getLogger("taskmerge")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("taskmerge-merge: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def merge_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``taskmerge-merge``; returns the exit status."""
    parser = OneLineParser(prog="taskmerge-merge", description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True, help="pretrained checkpoint")
    parser.add_argument("--finetuned", nargs="*", default=[], metavar="TASK=PATH")
    parser.add_argument("--finetuned-dir", default=None, help="<checkpoints>/<model>/<mode>")
    parser.add_argument("--method", default="sum", help="a method name (main.py --help lists)")
    parser.add_argument("--scaling-coef", type=float, default=None)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="options")
    parser.add_argument("--save-to", required=True, help="output .safetensors (or directory)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --save-to (never an input)"
    )
    args = parser.parse_args(argv)
    from taskmerge.api import merge

    try:
        options = {key: _value(value) for key, value in _pairs(args.options, "--set").items()}
        reserved = sorted(set(options) & set(RESERVED))
        if reserved:
            raise ConfigError(
                f"--set {reserved[0]}=... is an option of taskmerge-merge itself, not a method "
                f"key: use --{reserved[0].replace('_', '-')}"
            )
        if args.scaling_coef is not None:
            options["scaling_coef"] = args.scaling_coef
        paths = finetuned_paths(args.finetuned, args.finetuned_dir)
        with _log_lines():  # e.g. "pretrained is a whole CLIP: its image tower ... is merged"
            merge(args.pretrained, paths, method=args.method, save_to=args.save_to,
                  overwrite=args.overwrite, **options)  # fmt: skip
    except TaskmergeError as exc:
        print_user_error(exc, "taskmerge-merge")
        return USER_ERROR
    print(f"merged {len(paths)} checkpoints with {args.method} -> {args.save_to}")
    return 0


if __name__ == "__main__":
    raise SystemExit(merge_main())
