"""The first bad-input table (the 39 cases the README promised before the family tables of
``test_bad_config.py``, ``test_bad_files.py`` and ``test_bad_places.py``): every user mistake is
one line naming the problem and the fix, exit status 2, no traceback, before any fine-tuning or
sweep starts, nothing written into the checkpoints and no results.

Each case runs the real entry point (through the warm ``entries`` server) against a home whose
checkpoints the fixture fabricates (two demo tasks, from the shipped tiny CLIP), so nothing is
fine-tuned.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from taskmerge.finetune.modes import Linearized
from tests.helpers.cases import (
    PAIR,
    QUICK,
    assert_one_line,
    checkpoint,
    copy_home,
    empty,
    int_dtype,
    nan,
    rewrite,
    truncate,
    wrong_keys,
    wrong_shape,
)
from tests.helpers.images import rng_images, write_idx

pytestmark = pytest.mark.slow


def _other_pretrained(path: Path) -> None:
    state = load_file(str(path))
    save_file(state, str(path), metadata={"pretrained_fingerprint": "0123456789abcdef"})


def _linear_mode(path: Path) -> None:
    state = load_file(str(path))
    meta = {"finetuning": "linear", "finetuning_spec": Linearized().fingerprint()}
    save_file(state, str(path), metadata=meta)


def _small_mnist(root: Path) -> None:
    raw = root / "data" / "MNIST" / "raw"
    write_idx(raw, "train", rng_images(20, (28, 28)), list(range(10)) * 2, gz=False)
    write_idx(raw, "t10k", rng_images(5, (28, 28), seed=1), [0, 1, 2, 3, 4], gz=False)


#: (id, entry point, arguments, damage of the home or None, words the message must contain)
CASES = [
    ("unknown-key", "main.py", ["method.nope=1", *QUICK], None, "method.nope"),
    ("unknown-method", "main.py", ["method=nope", *QUICK], None, "available options in 'method'"),
    ("unknown-mode", "main.py", ["finetuning=nope", *QUICK], None, "finetuning/nope"),
    ("malformed-override", "main.py", ["tasks.names=[", *QUICK], None, "no viable alternative"),
    ("ties-k-150", "main.py", ["method=ties", "method.k=150", *QUICK], None, "method.k=150"),
    ("ties-k-0", "main.py", ["method=ties", "method.k=0", *QUICK], None, "(0, 100]"),
    ("negative-lambda", "main.py", ["method=tall_mask", "method.tall_mask_lambda=[-0.2]", *QUICK],
     None, "negative values"),
    ("empty-grid", "main.py", ["method=sum", "method.grid=[]", *QUICK], None, "grid is empty"),
    ("prun-thre-k", "main.py", ["method=consensus", "method.prun_thre_k=5", *QUICK], None,
     "prun_thre_k=5 is more than the 2 tasks"),
    ("bad-agg", "main.py", ["method=ties", "method.agg=max", *QUICK], None, "method.agg"),
    ("task-index", "main.py", ["method=negation", "method.task_index=7", *QUICK], None,
     "task_index=7 is out of range"),
    ("lines-refused", "main.py", ["method=tall_mask", "+method.apply_lines=true", *QUICK], None,
     "does not take apply_lines"),
    ("bad-forward", "main.py", ["eval_forward=tangent", *QUICK], None, "eval_forward='tangent'"),
    ("bad-regex", "main.py", ["finetuning=pattern", "finetuning.patterns=['(bias']", *QUICK], None,
     "regular expression"),
    ("num-tasks-0", "main.py", ["num_tasks=0", "logger=none", "finetune_missing=false"], None,
     "num_tasks=0: expected a whole number >= 1"),
    ("duplicate-task", "main.py", ["DATASETS=[Digits,Digits]", "logger=none"], None,
     "appear twice"),
    ("unknown-task", "main.py", ["DATASETS=[NoSuchTask]", "logger=none"], None,
     "unknown task 'NoSuchTask'"),
    ("missing-checkpoint", "main.py", ["DATASETS=[Digits,Shapes]", "logger=none",
                                       "finetune_missing=false"], None, "no fine-tuned checkpoint"),
    ("truncated-checkpoint", "main.py", QUICK,
     truncate, "truncated"),
    ("zero-byte-checkpoint", "main.py", QUICK, empty, "not a readable"),
    ("nan-checkpoint", "main.py", QUICK, rewrite(nan), "NaN or Inf"),
    ("int-dtype-checkpoint", "main.py", QUICK, rewrite(int_dtype), "has dtype I32"),
    ("wrong-shape-checkpoint", "main.py", QUICK, rewrite(wrong_shape), "has shape"),
    ("wrong-keys-checkpoint", "main.py", QUICK, rewrite(wrong_keys), "missing keys"),
    ("other-pretrained", "main.py", QUICK, _other_pretrained, "other pretrained weights"),
    ("mixed-modes", "main.py", QUICK, _linear_mode, "finetuning=linear"),
    ("missing-dataset", "main.py", ["DATASETS=[MNIST]", "logger=none"], None, "MNIST not found"),
    ("wrong-size-dataset", "main.py", ["DATASETS=[MNIST]", "logger=none"], "mnist",
     "train has 20 samples, expected 60000"),
    ("read-only-output", "main.py", ["hydra.run.dir=/proc/taskmerge-run", *QUICK], None,
     "cannot write /proc/taskmerge-run"),
    ("offline-weights", "main.py", ["model=ViT-B-32", "logger=none"], None,
     "not in the local cache"),
    ("world-size-divides", "finetune.py", ["world_size=3", PAIR], None,
     "does not divide train.batch_size=128"),
    ("world-size-devices", "finetune.py", ["world_size=1024", "train.batch_size=1024", PAIR],
     None, "CPU cores"),
    ("batch-size-0", "finetune.py", ["train.batch_size=0", PAIR], None, "train.batch_size=0"),
    ("eval-batch-0", "main.py", ["eval_batch_size=0", *QUICK], None, "eval_batch_size=0"),
    ("workers-negative", "main.py", ["num_workers=-1", *QUICK], None, "num_workers=-1"),
    ("precision-unknown", "main.py", ["eval_precision=fp16", *QUICK], None,
     "eval_precision='fp16': expected one of 'fp32', 'tf32', 'bf16'"),
    ("analysis-one-task", "analyze.py", ["DATASETS=[Digits]", "logger=none"], None,
     "needs two tasks"),
    ("import-missing-source", "import_checkpoints.py", ["source=/nonexistent/ckpts"], None,
     "does not exist"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("script", "args", "damage", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_is_one_clear_line_before_any_work(
    entries,  # noqa: ANN001
    fabricated_home: Path,
    tmp_path: Path,
    script: str,
    args: list[str],
    damage,  # noqa: ANN001
    words: str,
) -> None:
    home = fabricated_home
    if damage is not None:
        home = copy_home(fabricated_home, tmp_path)
        if damage == "mnist":
            _small_mnist(home)
        else:
            damage(checkpoint(home))
    before = sorted(p for p in (home / "checkpoints").rglob("*") if p.is_file())
    if not any(a.startswith("hydra.run.dir") for a in args):
        args = [*args, f"hydra.run.dir={tmp_path / 'run'}"]
    proc = entries.run(script, args, {"TASKMERGE_HOME": str(home)}, cwd=tmp_path)
    assert_one_line(proc, words)
    after = sorted(p for p in (home / "checkpoints").rglob("*") if p.is_file())
    assert after == before  # nothing written into the checkpoints
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_full_disk_leaves_no_partial_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing results on a full disk: one clear error, no results.json, no temp file left."""
    from taskmerge.errors import StorageError
    from taskmerge.experiment.results import write_results

    real_replace = os.replace

    def full(src, dst) -> None:  # noqa: ANN001
        if str(dst).endswith("results.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StorageError, match="no space left on the device.*free disk space"):
        write_results({"complete": True}, tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(os, "replace", real_replace)
    write_results({"complete": True}, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == {"complete": True}
