"""Bad inputs, family 6: the Python API and ``taskmerge-merge``. A mistake is a
``TaskmergeError`` naming the argument (the command: one line, exit 2); nothing the user has is
replaced, and a merge is never written over one of its own inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import taskmerge
from taskmerge.app.merge_cli import merge_main
from taskmerge.errors import CheckpointError, ConfigError
from taskmerge.io.tensors import load_state_dict, save_state_dict
from tests.helpers.checkpoints import write_checkpoints


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, dict[str, Path], dict[str, torch.Tensor]]:
    pretrained, paths = write_checkpoints(tmp_path, 2)
    base = tmp_path / "pretrained.safetensors"
    save_state_dict(pretrained, base)
    return base, paths, pretrained


@pytest.mark.parametrize(
    ("pretrained", "finetuned", "options", "words"),
    [
        (42, {"a": {}}, {}, "pretrained=42 (int): expected an nn.Module"),
        (None, {"a": {}}, {}, "pretrained=None"),
        ("base", ["m1", "m2"], {}, "finetuned=['m1', 'm2'] (list): expected a non-empty mapping"),
        ("base", {}, {}, "finetuned={} (dict): expected a non-empty mapping"),
        ("base", {"a": 3}, {}, "finetuned['a']=3 (int)"),
        ("base", "tuned", {"kk": 1}, "method.kk is not a key of method sum"),
        ("base", "tuned", {"method": "ties", "k": "abc"}, "method.k='abc': expected a number"),
        ("base", "tuned", {"scaling_coef": float("nan")}, "expected a finite number"),
        ("base", "tuned", {"method": 3}, "method=3 (int): expected a method name"),
        ("base", "tuned", {"return_state_dict": "yes"}, "return_state_dict='yes'"),
    ],
)
def test_wrong_arguments_are_named(files, pretrained, finetuned, options, words) -> None:  # noqa: ANN001
    base, paths, _ = files
    pretrained = base if pretrained == "base" else pretrained
    finetuned = paths if finetuned == "tuned" else finetuned
    options = {"scaling_coef": 0.3, **options}
    with pytest.raises(ConfigError) as raised:
        taskmerge.merge(pretrained, finetuned, **options)
    assert words in str(raised.value)


def test_save_to_never_replaces_a_file_or_an_input(files, tmp_path: Path) -> None:  # noqa: ANN001
    base, paths, _ = files
    target = tmp_path / "merged.safetensors"
    target.write_bytes(b"mine")
    with pytest.raises(ConfigError, match="exists: choose another file, or pass overwrite=True"):
        taskmerge.merge(base, paths, scaling_coef=0.3, save_to=target)
    assert target.read_bytes() == b"mine"
    taskmerge.merge(base, paths, scaling_coef=0.3, save_to=target, overwrite=True)
    assert set(load_file(str(target))) == set(load_file(str(base)))
    for inside in (paths["Task0"], base):
        before = inside.read_bytes()
        with pytest.raises(ConfigError, match="is one of the merge's inputs"):
            taskmerge.merge(base, paths, scaling_coef=0.3, save_to=inside, overwrite=True)
        assert inside.read_bytes() == before


def test_a_merged_model_is_not_taken_for_a_fine_tuned_one(files, tmp_path: Path) -> None:  # noqa: ANN001
    base, paths, _ = files
    merged = tmp_path / "merged.safetensors"
    taskmerge.merge(base, paths, scaling_coef=0.3, save_to=merged)
    with pytest.raises(CheckpointError, match="is a merged model"):
        taskmerge.merge(base, {**paths, "Task2": merged}, scaling_coef=0.3)


def test_a_truncated_or_altered_pretrained_file_is_named(files, tmp_path: Path) -> None:  # noqa: ANN001
    base, paths, _ = files
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(base.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=f"{cut}.*not a readable|{cut}.*truncated"):
        taskmerge.merge(cut, paths, scaling_coef=0.3)
    altered = tmp_path / "altered.safetensors"
    data = bytearray(base.read_bytes())
    data[-8:] = b"\x00" * 8  # the last tensor's bytes, the header intact
    altered.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        taskmerge.merge(altered, paths, scaling_coef=0.3)


def test_a_whole_clip_as_pretrained_gives_its_image_tower(
    tiny_clip,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,  # noqa: ANN001
) -> None:
    tower = tiny_clip.visual.state_dict()
    tuned = {k: v + 0.01 for k, v in tower.items()}
    whole = {k: v for k, v in tiny_clip.model.state_dict().items()}
    with caplog.at_level("INFO", logger="taskmerge"):
        merged = taskmerge.merge(whole, {"a": tuned}, scaling_coef=0.5)
    assert "whole CLIP: its image tower (visual.*)" in caplog.text
    assert set(merged) == set(tower)
    assert torch.allclose(merged["conv1.weight"], tower["conv1.weight"] + 0.005)
    other = {k.replace("ln_pre", "ln_0"): v for k, v in tuned.items()}
    with pytest.raises(CheckpointError, match="missing keys"):
        taskmerge.merge(whole, {"a": other}, scaling_coef=0.5)


def test_a_whole_clip_with_another_tower_is_refused_naming_the_keys(tiny_clip) -> None:  # noqa: ANN001
    whole = dict(tiny_clip.model.state_dict())
    tuned = {
        k.replace("ln_pre", "ln_0"): v + 0.01 for k, v in tiny_clip.visual.state_dict().items()
    }
    with pytest.raises(CheckpointError) as info:
        taskmerge.merge(whole, {"a": tuned}, scaling_coef=0.5)
    message = str(info.value)
    assert "whole CLIP whose image tower (visual.*) does not match" in message
    assert "missing keys ['ln_0.bias', 'ln_0.weight']" in message
    assert "unexpected keys ['ln_pre.bias', 'ln_pre.weight']" in message
    assert "ln_final" not in message and "token_embedding" not in message  # the text side


def test_an_open_clip_training_checkpoint_as_pretrained(
    tiny_clip,  # noqa: ANN001
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """open_clip's own training checkpoint: ``{"epoch", "name", "state_dict": {"module.*"}}``
    (DDP-wrapped CLIP), a weights-only ``.pt``."""
    tower = tiny_clip.visual.state_dict()
    state = {f"module.{k}": v for k, v in tiny_clip.model.state_dict().items()}
    path = tmp_path / "epoch_32.pt"
    torch.save({"epoch": 32, "name": "run", "state_dict": state}, path)
    tuned = {k: v - 0.02 for k, v in tower.items()}
    with caplog.at_level("INFO", logger="taskmerge"):
        merged = taskmerge.merge(path, {"a": tuned}, scaling_coef=0.5)
    assert "whole CLIP: its image tower (module.visual.*)" in caplog.text
    assert set(merged) == set(tower)
    assert torch.allclose(merged["conv1.weight"], tower["conv1.weight"] - 0.01)


# --------------------------------------------------------------------------- taskmerge-merge
def test_the_command_takes_a_whole_clip_file_as_pretrained(tiny_clip, tmp_path: Path,  # noqa: ANN001
                                                           capsys) -> None:  # fmt: skip
    """The issue's command: ``taskmerge-merge --pretrained <the cached tiny CLIP> --finetuned
    Digits=... Colors=...`` with image-tower checkpoints: one line says the tower is used."""
    tower = tiny_clip.visual.state_dict()
    whole = tmp_path / "tiny-clip.safetensors"
    save_state_dict(dict(tiny_clip.model.state_dict()), whole)
    paths = {}
    for shift, task in ((0.02, "Digits"), (-0.04, "Colors")):
        paths[task] = tmp_path / f"{task}.safetensors"
        save_state_dict({k: v + shift for k, v in tower.items()}, paths[task])
    out = tmp_path / "merged.safetensors"
    code, err = _cli(capsys, "--pretrained", str(whole), "--finetuned",
                     *[f"{t}={p}" for t, p in paths.items()], "--scaling-coef", "0.5",
                     "--save-to", str(out))  # fmt: skip
    assert code == 0, err
    assert "taskmerge-merge: pretrained is a whole CLIP: its image tower (visual.*)" in err
    merged = load_state_dict(out)
    assert set(merged) == set(tower)
    assert torch.allclose(merged["conv1.weight"], tower["conv1.weight"] - 0.01, atol=1e-6)
    save_state_dict({k.replace("ln_pre", "ln_0"): v for k, v in tower.items()}, paths["Colors"])
    save_state_dict({k.replace("ln_pre", "ln_0"): v for k, v in tower.items()}, paths["Digits"])
    code, err = _cli(capsys, "--pretrained", str(whole), "--finetuned",
                     *[f"{t}={p}" for t, p in paths.items()], "--scaling-coef", "0.5",
                     "--save-to", str(tmp_path / "other.safetensors"))  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "missing keys ['ln_0.bias', 'ln_0.weight']" in lines[0]


def _cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    try:
        code = merge_main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--set", "kk=20"], "method.kk is not a key of method sum (did you mean k?)"),
        (["--set", "k=abc", "--method", "ties"], "method.k='abc': expected a number"),
        (["--scaling-coef", "nan"], "expected a finite number"),
        (["--scaling-coef", "abc"], "invalid float value"),
        (["--set", "save_to=x"], "--set save_to=... is an option of taskmerge-merge itself"),
        (["--method", "nope"], "unknown method 'nope'"),
    ],
)
def test_command_mistakes_are_one_line(files, tmp_path: Path, capsys, extra, words) -> None:  # noqa: ANN001
    base, paths, _ = files
    argv = ["--pretrained", str(base), "--finetuned", *[f"{t}={p}" for t, p in paths.items()],
            "--save-to", str(tmp_path / "out.safetensors")]  # fmt: skip
    if "--scaling-coef" not in extra:
        argv += ["--scaling-coef", "0.3"]
    code, err = _cli(capsys, *argv, *extra)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "taskmerge-merge: error:" in lines[0], err
    assert words in lines[0]
    assert not (tmp_path / "out.safetensors").exists()


def test_the_command_does_not_write_into_its_inputs(files, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    base, paths, _ = files
    root = paths["Task0"].parents[1]  # <checkpoints>/model/standard
    before = paths["Task1"].read_bytes()
    code, err = _cli(
        capsys,
        "--pretrained",
        str(base),
        "--finetuned-dir",
        str(root),
        "--scaling-coef",
        "0.3",
        "--save-to",
        str(paths["Task1"]),
        "--overwrite",
    )
    assert code == 2 and "is one of the merge's inputs" in err
    assert paths["Task1"].read_bytes() == before
