"""Bad inputs, family 1: a wrong config (a mistyped key or option, a value of the wrong type,
out of range, not finite, an empty list, a device this machine does not have).

Each case runs the real entry point (``tests.helpers.entries``) on a home with fabricated
checkpoints (nothing is fine-tuned) and requires exit status 2, exactly one line
``taskmerge: error: ...`` naming the problem and the fix, no traceback, no progress bar, nothing
written among the checkpoints and no ``results.json``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cases import PAIR, QUICK, assert_one_line, files_under

pytestmark = pytest.mark.slow

#: (id, entry point, arguments, words the one line must contain)
CASES = [
    # ---- keys and options that do not exist
    ("unknown-key", "main.py", ["method.nope=1", *QUICK], "method.nope is not a key"),
    ("misspelled-key", "main.py", ["method.scaling_coeff=0.4", *QUICK],
     "did you mean method.scaling_coef?"),
    ("misspelled-top-key", "main.py", ["num_task=3", *QUICK], "did you mean num_tasks?"),
    ("appended-method-key", "main.py", ["+method.kk=1", *QUICK],
     ["method.kk is not a key of method sum", "did you mean k?"]),
    ("appended-top-key", "main.py", ["+foo=1", *QUICK], "foo is not a key of main.py's config"),
    ("appended-train-key", "main.py", ["+train.lrr=1", *QUICK], "did you mean lr?"),
    ("unknown-method", "main.py", ["method=nope", *QUICK], "available options in 'method'"),
    ("misspelled-method", "main.py", ["method=tie", *QUICK], "did you mean method=ties?"),
    ("unknown-mode", "main.py", ["finetuning=nope", *QUICK], "finetuning/nope"),
    ("malformed-override", "main.py", ["tasks.names=[", *QUICK], "no viable alternative"),
    ("variant-key", "main.py", ["method=TSVM_2", "+method.orthogonalize=polar", *QUICK],
     "TSVM_2 sets orthogonalize itself"),
    # ---- values of the wrong type
    ("k-not-a-number", "main.py", ["method=ties", "method.k=abc", *QUICK],
     "method.k='abc': expected a number"),
    ("grid-item-not-a-number", "main.py", ["method=ties", "method.grid=[0.1,abc]", *QUICK],
     "method.grid[1]='abc'"),
    ("grid-not-a-list", "main.py", ["method.grid=0.3", *QUICK], "method.grid=0.3"),
    ("scaling-coef-not-a-number", "main.py", ["method.scaling_coef=abc", *QUICK],
     "method.scaling_coef='abc'"),
    ("lambda-not-a-number", "main.py",
     ["method=tall_mask", "method.tall_mask_lambda=[0.2,abc]", *QUICK], "tall_mask_lambda"),
    ("task-index-fraction", "main.py", ["method=negation", "method.task_index=1.5", *QUICK],
     "method.task_index=1.5: expected a whole number"),
    ("use-ties-number", "main.py", ["method=tall_mask", "method.use_ties=1", *QUICK],
     "method.use_ties=1: expected true or false"),
    ("agg-unknown", "main.py", ["method=ties", "method.agg=max", *QUICK],
     "method.agg='max': expected one of 'mean', 'sum'"),
    ("lr-not-a-number", "main.py", ["train.lr=abc", *QUICK], "train.lr='abc'"),
    ("eval-batch-text", "main.py", ["eval_batch_size=abc", *QUICK], "eval_batch_size='abc'"),
    ("eval-batch-fraction", "main.py", ["eval_batch_size=1.5", *QUICK],
     "eval_batch_size=1.5: expected a whole number"),
    ("num-tasks-text", "main.py", ["num_tasks=abc", "logger=none"], "num_tasks='abc'"),
    ("num-tasks-fraction", "main.py", ["num_tasks=2.5", "logger=none"], "num_tasks=2.5"),
    ("seed-text", "finetune.py", ["seed=abc", PAIR], "seed='abc'"),
    ("force-text", "main.py", ["force=yes", *QUICK], "force='yes': expected true or false"),
    ("sweep-unknown", "main.py", ["sweep=fast", *QUICK],
     "sweep='fast': expected one of 'grid', 'adaptive'"),
    ("sweep-tolerance-negative", "main.py", ["sweep_tolerance=-0.01", *QUICK],
     "sweep_tolerance=-0.01"),
    ("sweep-tolerance-text", "main.py", ["sweep_tolerance=small", *QUICK],
     "sweep_tolerance='small'"),
    ("workers-fraction", "main.py", ["num_workers=1.5", *QUICK], "num_workers=1.5"),
    ("decode-once-split", "main.py", ["decode_once=[trian]", *QUICK], "decode_once[0]='trian'"),
    ("merge-device-name", "main.py", ["merge_device=gpu", *QUICK], "merge_device='gpu'"),
    ("patterns-not-a-list", "main.py", ["finetuning=pattern", "finetuning.patterns=bias", *QUICK],
     "finetuning.patterns='bias'"),
    ("quick-gelu-text", "main.py", ["model=ViT-B-32", "model.quick_gelu=maybe", "logger=none"],
     "model.quick_gelu='maybe'"),
    ("action-unknown", "prepare_data.py", ["action=download"], "action='download'"),
    ("import-layout-unknown", "import_checkpoints.py", ["source=/tmp", "layout=zip"],
     "layout='zip'"),
    # ---- values out of range, not finite, empty
    ("grid-nan", "main.py", ["method.grid=[nan,0.5]", *QUICK], "method.grid[0]=nan"),
    ("scaling-coef-inf", "main.py", ["method.scaling_coef=inf", *QUICK], "finite"),
    ("epochs-scale-nan", "finetune.py", ["train.epochs_scale=nan", PAIR], "train.epochs_scale=nan"),
    ("ties-k-150", "main.py", ["method=ties", "method.k=150", *QUICK], "method.k=150"),
    ("ties-k-0", "main.py", ["method=ties", "method.k=0", *QUICK], "(0, 100]"),
    ("negative-lambda", "main.py", ["method=tall_mask", "method.tall_mask_lambda=[-0.2]", *QUICK],
     "negative values"),
    ("empty-grid", "main.py", ["method=sum", "method.grid=[]", *QUICK], "grid is empty"),
    ("prun-thre-k", "main.py", ["method=consensus", "method.prun_thre_k=5", *QUICK],
     "prun_thre_k=5 is more than the 2 tasks"),
    ("task-index", "main.py", ["method=negation", "method.task_index=7", *QUICK],
     "task_index=7 is out of range"),
    ("lines-refused", "main.py", ["method=tall_mask", "+method.apply_lines=true", *QUICK],
     "does not take apply_lines"),
    ("bad-forward", "main.py", ["eval_forward=tangent", *QUICK], "eval_forward='tangent'"),
    ("bad-regex", "main.py", ["finetuning=pattern", "finetuning.patterns=['(bias']", *QUICK],
     "regular expression"),
    ("num-tasks-0", "main.py", ["num_tasks=0", "logger=none", "finetune_missing=false"],
     "num_tasks=0"),
    ("num-tasks-too-many", "main.py", ["num_tasks=9", "logger=none"],
     "num_tasks=9 is out of range"),
    ("empty-task-list", "main.py", ["DATASETS=[]", "logger=none"], "DATASETS=[] is an empty"),
    ("empty-task-names", "main.py", ["tasks.names=[]", "logger=none"],
     "tasks.names=[] is an empty"),
    ("blank-task-list", "main.py", ["DATASETS=", "logger=none"], "DATASETS=''"),
    ("duplicate-task", "main.py", ["DATASETS=[Digits,Digits]", "logger=none"], "appear twice"),
    ("unknown-task", "main.py", ["DATASETS=[NoSuchTask]", "logger=none"],
     "unknown task 'NoSuchTask'"),
    ("batch-size-0", "finetune.py", ["train.batch_size=0", PAIR], "train.batch_size=0"),
    ("eval-batch-0", "main.py", ["eval_batch_size=0", *QUICK], "eval_batch_size=0"),
    ("workers-negative", "main.py", ["num_workers=-1", *QUICK], "num_workers=-1"),
    ("precision-unknown", "main.py", ["eval_precision=fp16", *QUICK], "eval_precision='fp16'"),
    ("world-size-0", "finetune.py", ["world_size=0", PAIR], "world_size=0"),
    ("world-size-divides", "finetune.py", ["world_size=3", PAIR],
     "does not divide train.batch_size=128"),
    ("world-size-devices", "finetune.py", ["world_size=1024", "train.batch_size=1024", PAIR],
     "CPU cores"),
    ("analysis-grid-0", "analyze.py", ["analysis.grid_points=0", PAIR, "logger=none"],
     "analysis.grid_points=0"),
    ("analysis-one-task", "analyze.py", ["DATASETS=[Digits]", "logger=none"], "needs two tasks"),
    # ---- devices this machine does not have
    ("device-unknown", "main.py", ["device=gpu0", *QUICK], "device='gpu0' is not a device"),
    ("device-absent", "main.py", ["device=cuda:3", *QUICK], "device=cuda:3"),
    # ---- every job of a multirun is checked before the first starts
    ("multirun-bad-value", "main.py", ["-m", "method=sum,ties", "method.grid=[0.1,abc]", *QUICK],
     "method.grid[1]='abc'"),
    ("multirun-bad-choice", "main.py", ["-m", "method=sum,nope", *QUICK], "method/nope"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("script", "args", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_wrong_config_is_one_line_before_any_work(
    entries,
    fabricated_home: Path,
    tmp_path: Path,
    script: str,
    args: list[str],
    words,  # noqa: ANN001
) -> None:
    before = files_under(fabricated_home / "checkpoints")
    run = tmp_path / "run"
    target = "hydra.sweep.dir" if "-m" in args else "hydra.run.dir"
    proc = entries.run(script, [*args, f"{target}={run}"], {"TASKMERGE_HOME": str(fabricated_home)},
                       cwd=tmp_path)  # fmt: skip
    assert_one_line(proc, words)
    assert files_under(fabricated_home / "checkpoints") == before  # the user's work untouched
    assert not list(run.rglob("results.json"))


def test_the_config_checks_name_every_problem_at_once(entries, fabricated_home: Path,  # noqa: ANN001
                                                      tmp_path: Path) -> None:  # fmt: skip
    proc = entries.run(
        "main.py", ["eval_batch_size=1.5", "device=gpu0", "method.grid=[0.2,x]", *QUICK,
                    f"hydra.run.dir={tmp_path / 'run'}"],
        {"TASKMERGE_HOME": str(fabricated_home)}, cwd=tmp_path,
    )  # fmt: skip
    assert_one_line(proc, ["eval_batch_size=1.5", "device='gpu0'", "method.grid[1]='x'"])
