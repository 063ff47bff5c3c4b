"""The reference repos' argparse flags, read as Hydra overrides before Hydra parses.

The fine-tuning and evaluation scripts of nik-dim/tall_masks, wang-kee/LiNeS,
AntoAndGar/task_singular_vectors, gortizji/tangent_task_arithmetic and
kyrie-23/linear_task_arithmetic take argparse flags (their ``src/args.py`` / ``src/utils/args.py``):
their READMEs run ``finetune.py --model=ViT-B-32 --world-size=2``,
``finetune.py --finetuning-mode=linear-2 ...``, ``eval_single_task.py --finetuning-mode=none`` and
``eval_task_addition.py --finetuning-mode=standard``. :func:`translate` turns those flags (both
``--flag=value`` and ``--flag value``) into the Hydra overrides that mean the same thing and
says so in one line on stderr; every other argument (Hydra overrides, Hydra's own flags) is
passed on untouched. Another flag of the references' parsers is refused in one line naming the
Hydra key to use instead; any other ``--flag`` in one line too (exit 2).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from taskmerge.app.errors import exit_with
from taskmerge.validation import suggestion

#: Hydra's own command-line flags (hydra/_internal/utils.py ``get_args_parser``): left to Hydra.
HYDRA_FLAGS = frozenset(
    {"--help", "--hydra-help", "--version", "--cfg", "--resolve", "--package", "--run",
     "--multirun", "--shell-completion", "--config-path", "--config-name", "--config-dir",
     "--experimental-rerun", "--info"}
)  # fmt: skip

#: ``--finetuning-mode`` choices of the references (kyrie-23's ``src/args.py``: standard,
#: linear, posthoc, none, linear-2) -> the overrides, per config name; None: refused.
_MODES: dict[str, dict[str, list[str] | None]] = {
    "finetune": {
        "standard": ["finetuning=standard"],
        "linear": ["finetuning=linear"],
        "linear-2": ["finetuning=linear-2"],
        "posthoc": None,
        "none": None,
    },
    "eval_single_task": {
        "none": ["evaluate=zeroshot"],
        "standard": ["finetuning=standard"],
        "linear": ["finetuning=linear"],
        "linear-2": ["finetuning=linear-2"],
        "posthoc": ["finetuning=standard", "eval_forward=linear"],
    },
    "merge": {
        "standard": ["finetuning=standard"],
        "linear": ["finetuning=linear"],
        "linear-2": ["finetuning=linear-2"],
        "posthoc": ["finetuning=standard", "eval_forward=linear"],
        "none": None,
    },
}
_MODE_REFUSALS = {
    ("finetune", "posthoc"): "post-hoc linearization needs no fine-tuning of its own: fine-tune "
    "with --finetuning-mode=standard, then evaluate with --finetuning-mode=posthoc",
    ("finetune", "none"): "--finetuning-mode=none fine-tunes nothing: use standard, linear or "
    "linear-2 (eval_single_task.py --finetuning-mode=none scores the pretrained model)",
    ("merge", "none"): "--finetuning-mode=none has no task vectors to merge: "
    "eval_single_task.py --finetuning-mode=none scores the pretrained model (or method=zeroshot)",
}

#: Config name of each entry point -> the table its --finetuning-mode is read with.
_MODE_TABLE = {"finetune": "finetune", "eval_single_task": "eval_single_task"}


def _mode(config_name: str, value: str) -> list[str]:
    table_name = _MODE_TABLE.get(config_name, "merge")
    table = _MODES[table_name]
    if value not in table:
        exit_with(
            f"--finetuning-mode={value} is not a fine-tuning mode{suggestion(value, list(table))}:"
            f" use one of {', '.join(table)} (or the Hydra key finetuning=<mode>)"
        )
    overrides = table[value]
    if overrides is None:
        exit_with(_MODE_REFUSALS[(table_name, value)])
    return overrides


#: Flags read as overrides: name -> (config name, value) -> overrides.
MAPPED: dict[str, Callable[[str, str], list[str]]] = {
    "--model": lambda _, value: [f"model={value}"],
    "--world-size": lambda _, value: [f"world_size={value}"],
    "--finetuning-mode": _mode,
    "--data-location": lambda _, value: [f"paths.data={value}"],
}

#: The references' other flags (tall_masks ``src/utils/args.py``, tangent / linear-2
#: ``src/args.py``) -> the Hydra key a user sets instead.
HYDRA_KEYS: dict[str, str] = {
    "--eval-datasets": "DATASETS=[A,B]",
    "--train-dataset": "DATASETS=[A,B]",
    "--batch-size": "train.batch_size=<n>",
    "--num-grad-accumulation": "train.grad_accumulation=<n>",
    "--lr": "train.lr=<lr>",
    "--wd": "train.weight_decay=<wd>",
    "--warmup_length": "train.warmup_steps=<n>",
    "--warmup-length": "train.warmup_steps=<n>",
    "--epochs": "train.epochs_scale=<factor> (epochs come from each task's entry)",
    "--checkpoint-every": "train.save_every=<steps>",
    "--seed": "seed=<n>",
    "--save": "paths.checkpoints=<folder>",
    "--model-location": "paths.checkpoints=<folder>",
    "--load": "paths.checkpoints=<folder> (checkpoints are found by model, mode and task)",
    "--cache-dir": "paths.cache=<folder>",
    "--results-db": "hydra.run.dir=<folder> (results.json is written there)",
    "--exp_name": "hydra.run.dir=<folder>",
    "--n-eval-points": "method.grid=[...] (the coefficients swept on Val)",
    "--max-coefficient": "method.grid=[...] (the coefficients swept on Val)",
    "--control-threshold": "method.control_threshold=<fraction> (with method=negation)",
}
#: Reference flags with no Hydra key: why not.
NO_KEY: dict[str, str] = {
    "--ls": "label smoothing is not part of the reference protocol (0.0 in every README "
    "command): drop the flag",
    "--port": "the DDP port is chosen free automatically: drop the flag",
    "--openclip-cachedir": "open_clip weights are read from the Hugging Face cache: set HF_HOME "
    "or model.pretrained=/path/to/open_clip_model.safetensors",
}


def translate(config_name: str, argv: Sequence[str]) -> list[str]:
    """``argv`` with the reference flags replaced by their Hydra overrides (in place, in
    order); prints ``taskmerge: reference flags read as: <overrides>`` on stderr when any.

    Exits with status 2 and one line for a reference flag with no mapping (naming the Hydra
    key), an unknown ``--flag``, a flag without its value, or a flag that repeats an override
    given in Hydra form too.
    """
    out: list[str] = []
    read: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        name, equals, value = arg.partition("=")
        if not arg.startswith("--") or name in HYDRA_FLAGS:
            out.append(arg)
            continue
        if name in HYDRA_KEYS:
            exit_with(f"{name} (a flag of the reference scripts) is a Hydra key here: use "
                      f"{HYDRA_KEYS[name]}")  # fmt: skip
        if name in NO_KEY:
            exit_with(f"{name} (a flag of the reference scripts) has no counterpart: "
                      f"{NO_KEY[name]}")  # fmt: skip
        if name not in MAPPED:
            known = [*MAPPED, *HYDRA_KEYS, *NO_KEY, *HYDRA_FLAGS]
            exit_with(
                f"unknown option {name}{suggestion(name, known)}: taskmerge takes Hydra "
                "overrides key=value (the reference flags --model, --world-size, "
                "--finetuning-mode and --data-location are read too; --help lists the keys)"
            )
        if not equals:
            if i >= len(args) or args[i].startswith("-"):
                exit_with(f"{name} needs a value: {name}=<value>")
            value = args[i]
            i += 1
        overrides = MAPPED[name](config_name, value)
        out.extend(overrides)
        read.extend(overrides)
    _refuse_repeats(read, [a for a in argv if not a.startswith("-")])
    if read:
        print(f"taskmerge: reference flags read as: {' '.join(read)}", file=sys.stderr, flush=True)
    return out


def _refuse_repeats(read: Sequence[str], given: Sequence[str]) -> None:
    """A key set by a flag and by a Hydra override (or by two flags) is ambiguous: refused."""
    keys = [o.partition("=")[0] for o in read]
    for key in {k for k in keys if keys.count(k) > 1}:
        exit_with(f"{key} is set twice by the reference flags: give it once")
    for override in given:
        key = override.lstrip("+~").partition("=")[0]
        if key in keys:
            exit_with(f"{key} is set by a reference flag and by {override}: give it once")
