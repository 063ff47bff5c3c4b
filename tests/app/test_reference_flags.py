"""The reference repos' command lines run as written: their argparse flags are read as the Hydra
overrides they mean (one line says which), other flags are one line naming the Hydra key.

The table is every fine-tuning and evaluation command line of the five reference READMEs
(nik-dim/tall_masks, wang-kee/LiNeS, AntoAndGar/task_singular_vectors,
gortizji/tangent_task_arithmetic, kyrie-23/linear_task_arithmetic; the last two run their
scripts as ``python src/<script>.py``, here the root script). Offline, each composes and passes
every check, and stops only at the missing ViT-B-32 weights, in one line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from taskmerge.app.reference_flags import HYDRA_KEYS, translate
from tests.helpers.cases import assert_one_line

_TRAIN = "--model=ViT-B-32 --world-size=2"
#: (script, the README's flags, the Hydra form the log line must give, the READMEs using it)
README_LINES = [
    ("finetune.py", _TRAIN, "model=ViT-B-32 world_size=2", "tall_masks, LiNeS, TSV"),
    ("finetune.py", f"--finetuning-mode=standard {_TRAIN}",
     "finetuning=standard model=ViT-B-32 world_size=2", "tangent, linear-2"),
    ("finetune.py", f"--finetuning-mode=linear {_TRAIN}",
     "finetuning=linear model=ViT-B-32 world_size=2", "tangent, linear-2"),
    ("finetune.py", f"--finetuning-mode=linear-2 {_TRAIN}",
     "finetuning=linear-2 model=ViT-B-32 world_size=2", "linear-2"),
    ("eval_single_task.py", "--model=ViT-B-32 --finetuning-mode=none",
     "model=ViT-B-32 evaluate=zeroshot", "all five"),
    ("eval_single_task.py", "--model=ViT-B-32 --finetuning-mode=standard",
     "model=ViT-B-32 finetuning=standard", "all five"),
    ("eval_single_task.py", "--model=ViT-B-32 --finetuning-mode=linear",
     "model=ViT-B-32 finetuning=linear", "tangent, linear-2"),
    ("eval_single_task.py", "--model=ViT-B-32 --finetuning-mode=linear-2",
     "model=ViT-B-32 finetuning=linear-2", "linear-2"),
    ("eval_single_task.py", "--model=ViT-B-32 --finetuning-mode=posthoc",
     "model=ViT-B-32 finetuning=standard eval_forward=linear", "tangent"),
    ("eval_task_addition.py", "--model=ViT-B-32 --finetuning-mode=standard",
     "model=ViT-B-32 finetuning=standard", "tangent, linear-2"),
    ("eval_task_addition.py", "--model=ViT-B-32 --finetuning-mode=linear",
     "model=ViT-B-32 finetuning=linear", "tangent, linear-2"),
    ("eval_task_addition.py", "--model=ViT-B-32 --finetuning-mode=linear-2",
     "model=ViT-B-32 finetuning=linear-2", "linear-2"),
    ("eval_task_addition.py", "--model=ViT-B-32 --finetuning-mode=posthoc",
     "model=ViT-B-32 finetuning=standard eval_forward=linear", "tangent"),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("script", "flags", "hydra_form", "readmes"), README_LINES,
                         ids=[f"{c[0]} {c[1]}" for c in README_LINES])  # fmt: skip
def test_every_reference_readme_line_runs_until_the_missing_weights(
    entries,  # noqa: ANN001
    tmp_path: Path,
    script: str,
    flags: str,
    hydra_form: str,
    readmes: str,  # noqa: ARG001 - documents the table
) -> None:
    proc = entries.run(script, [*flags.split(), f"hydra.run.dir={tmp_path / 'run'}"],
                       {"TASKMERGE_HOME": str(tmp_path / "home")}, cwd=tmp_path)  # fmt: skip
    assert f"taskmerge: reference flags read as: {hydra_form}\n" in proc.stderr, proc.stderr
    assert_one_line(proc, ["ViT-B-32/openai", "not in the local cache"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "flags", "words"),
    [
        ("finetune.py", ["--lr=1e-4"], "--lr (a flag of the reference scripts) is a Hydra key "
         "here: use train.lr=<lr>"),
        ("finetune.py", ["--modle=ViT-B-32"], "unknown option --modle (did you mean --model?)"),
        ("finetune.py", ["--finetuning-mode=posthoc"], "fine-tune with --finetuning-mode=standard"),
        ("eval_task_addition.py", ["--finetuning-mode=none"], "eval_single_task.py"),
        ("finetune.py", ["--finetuning-mode=linear2"], "(did you mean linear-2?)"),
    ],
)  # fmt: skip
def test_other_flags_are_one_line_naming_the_hydra_form(
    entries,  # noqa: ANN001
    tmp_path: Path,
    script: str,
    flags: list[str],
    words: str,
) -> None:
    proc = entries.run(script, [*flags, f"hydra.run.dir={tmp_path / 'run'}"],
                       {"TASKMERGE_HOME": str(tmp_path / "home")}, cwd=tmp_path)  # fmt: skip
    assert_one_line(proc, words)
    assert not (tmp_path / "run").exists()


def test_flags_become_overrides_in_place_and_the_rest_is_untouched(capsys) -> None:  # noqa: ANN001
    argv = ["-m", "--model", "ViT-L-14", "method=sum,ties", "--finetuning-mode=linear-2",
            "--data-location=/data", "--cfg", "job", "+method.k=20"]  # fmt: skip
    assert translate("config", argv) == [
        "-m", "model=ViT-L-14", "method=sum,ties", "finetuning=linear-2", "paths.data=/data",
        "--cfg", "job", "+method.k=20",
    ]  # fmt: skip
    err = capsys.readouterr().err
    assert err == (
        "taskmerge: reference flags read as: model=ViT-L-14 finetuning=linear-2 paths.data=/data\n"
    )
    assert translate("config", ["model=tiny", "method=sum"]) == ["model=tiny", "method=sum"]
    assert capsys.readouterr().err == ""  # nothing to say without reference flags


@pytest.mark.parametrize(
    ("config_name", "argv", "words"),
    [
        ("finetune", ["--model=ViT-B-32", "model=ViT-L-14"], "model is set by a reference flag "
         "and by model=ViT-L-14"),
        ("finetune", ["--model=ViT-B-32", "--model=ViT-L-14"], "model is set twice"),
        ("finetune", ["--world-size"], "--world-size needs a value"),
        ("finetune", ["--finetuning-mode=none"], "fine-tunes nothing"),
        ("eval_single_task", ["--finetuning-mode=tangent"], "use one of none, standard, linear"),
        ("finetune", ["--seed=3"], "use seed=<n>"),
        ("finetune", ["--port=1234"], "has no counterpart: the DDP port"),
    ],
)  # fmt: skip
def test_wrong_flags_are_one_line(capsys, config_name: str, argv: list[str], words: str) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as exit_info:
        translate(config_name, argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("taskmerge: error: "), lines
    assert words in lines[0]


def test_every_hydra_key_named_for_a_reference_flag_exists() -> None:
    """The keys the refusals name are keys of the configs (or Hydra's own)."""
    from hydra import compose, initialize_config_dir

    from taskmerge.app.tables import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["method=negation"])
    for flag, form in HYDRA_KEYS.items():
        key = form.split("=")[0]
        if key.startswith("hydra."):
            continue
        node = cfg
        for part in key.split("."):
            assert part in node, (flag, key)
            node = node[part]
