"""Model Stock, CART, WUDI and EMR through the Python API (state dicts and paths, save_to) and
the taskmerge-merge command: the same weights as the method classes on the task vectors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import taskmerge
from taskmerge.app.merge_cli import merge_main
from taskmerge.io.tensors import save_state_dict
from taskmerge.merging.build import build_method
from taskmerge.vectors.task_vector import TaskVector
from tests.helpers.checkpoints import write_checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [
    ("model_stock", {}),
    ("cart", {"scaling_coef": 1.9, "initial_rank_ratio": 0.5}),
    ("wudi", {"iter_num": 20, "device": "cpu"}),
]


@pytest.mark.parametrize(("method", "options"), CASES)
def test_api_on_paths_equals_the_method(tmp_path: Path, method: str, options: dict) -> None:
    pretrained, paths = write_checkpoints(tmp_path, 3)
    base = tmp_path / "pretrained.safetensors"
    save_state_dict(pretrained, base)
    out = tmp_path / "merged.safetensors"
    merged = taskmerge.merge(base, paths, method, save_to=out, **options)
    tvs = {t: TaskVector.from_state_dicts(pretrained, load_file(str(p))) for t, p in paths.items()}
    [candidate] = build_method(method, options, fixed=True).candidates(pretrained, tvs)
    expected = dict(candidate.shared)
    written = load_file(str(out))
    for name, value in expected.items():
        assert torch.equal(merged[name], value) and torch.equal(written[name], value), name


def test_emr_gives_one_model_per_task_through_the_api_and_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pretrained, paths = write_checkpoints(tmp_path, 3)
    base = tmp_path / "pretrained.safetensors"
    save_state_dict(pretrained, base)
    merged = taskmerge.merge(pretrained, paths, "emr")
    tvs = {t: TaskVector.from_state_dicts(pretrained, load_file(str(p))) for t, p in paths.items()}
    [candidate] = build_method("emr", {}).candidates(pretrained, tvs)
    out = tmp_path / "emr-out"
    status = merge_main(
        ["--pretrained", str(base), "--finetuned-dir", str(tmp_path / "model" / "standard"),
         "--method", "emr", "--save-to", str(out)]
    )  # fmt: skip
    assert status == 0
    for task in paths:
        written = load_file(str(out / f"{task}.safetensors"))
        for name, value in dict(candidate.for_task(task)).items():
            assert torch.equal(merged[task][name], value) and torch.equal(written[name], value)
    # the command line takes the methods' keys too
    cart_out = tmp_path / "cart.safetensors"
    status = merge_main(
        ["--pretrained", str(base), "--finetuned-dir", str(tmp_path / "model" / "standard"),
         "--method", "cart", "--scaling-coef", "2.0", "--set", "initial_rank_ratio=0.5",
         "--save-to", str(cart_out)]
    )  # fmt: skip
    assert status == 0
    expected = taskmerge.merge(base, paths, "cart", scaling_coef=2.0, initial_rank_ratio=0.5)
    assert all(torch.equal(load_file(str(cart_out))[n], v) for n, v in expected.items())
    with pytest.raises(taskmerge.errors.ConfigError, match="needs scaling_coef"):
        taskmerge.merge(base, paths, "cart")
