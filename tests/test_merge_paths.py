"""taskmerge.merge on checkpoint paths (read lazily), save_to, and the taskmerge-merge command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import taskmerge
from taskmerge.app.merge_cli import merge_main
from taskmerge.io.tensors import save_state_dict
from tests.helpers.checkpoints import write_checkpoints


@pytest.mark.parametrize(
    ("method", "options"),
    [("sum", {"scaling_coef": 0.3}), ("ties", {"k": 20, "scaling_coef": 0.5}),
     ("TSVM", {"scaling_coef": 1.0})],
)  # fmt: skip
def test_paths_merge_like_state_dicts_and_save(tmp_path: Path, method: str, options: dict) -> None:
    pretrained, paths = write_checkpoints(tmp_path, 3)
    base = tmp_path / "pretrained.safetensors"
    save_state_dict(pretrained, base)
    in_memory = taskmerge.merge(
        pretrained, {t: load_file(str(p)) for t, p in paths.items()}, method, **options
    )
    out = tmp_path / "out" / "merged.safetensors"
    from_disk = taskmerge.merge(base, paths, method, save_to=out, **options)
    written = load_file(str(out))
    for name, value in in_memory.items():
        assert torch.equal(from_disk[name], value) and torch.equal(written[name], value), name
    with safe_open(str(out), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["method"] == method and json.loads(meta["tasks"]) == list(paths)


def test_per_task_methods_save_one_file_per_task(tmp_path: Path) -> None:
    pretrained, paths = write_checkpoints(tmp_path, 2)
    out = tmp_path / "masks-out"
    merged = taskmerge.merge(pretrained, paths, "tall_mask", tall_mask_lambda=0.4, save_to=out)
    assert sorted(p.name for p in out.iterdir()) == [f"{t}.safetensors" for t in sorted(paths)]
    for task in paths:
        assert torch.equal(load_file(str(out / f"{task}.safetensors"))["conv1.weight"],
                           merged[task]["conv1.weight"])  # fmt: skip


def test_command_line_form(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pretrained, paths = write_checkpoints(tmp_path, 3)
    base = tmp_path / "pretrained.safetensors"
    save_state_dict(pretrained, base)
    out = tmp_path / "cli.safetensors"
    status = merge_main(
        ["--pretrained", str(base), "--finetuned-dir", str(tmp_path / "model" / "standard"),
         "--method", "ties", "--scaling-coef", "0.5", "--set", "k=20", "agg=mean",
         "--save-to", str(out)]
    )  # fmt: skip
    assert status == 0 and "merged 3 checkpoints" in capsys.readouterr().out
    expected = taskmerge.merge(base, paths, "ties", k=20, agg="mean", scaling_coef=0.5)
    written = load_file(str(out))
    assert all(torch.equal(written[n], v) for n, v in expected.items())
    assert merge_main(["--pretrained", str(base), "--finetuned", "oops", "--save-to", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("taskmerge-merge: error: --finetuned 'oops' is not NAME=VALUE")
    missing = ["--pretrained", str(base), "--finetuned", "A=/nope.safetensors", "--save-to", "x",
               "--scaling-coef", "0.3"]  # fmt: skip
    assert merge_main(missing) == 2 and "checkpoint not found" in capsys.readouterr().err
