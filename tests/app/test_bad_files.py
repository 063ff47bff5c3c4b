"""Bad inputs, family 5: damaged stored files.

* The user's own files (checkpoints, datasets) are refused with one line naming the file and the
  fix, exit status 2, before any work: truncated, empty, NaN, another dtype, shape or keys,
  altered bytes (the checksum in the header), another pretrained model or mode, a merged model
  or another task's checkpoint in a task's folder, a missing dataset or one of the wrong size.
* Caches (heads, accuracies, metrics, the results store, decoded and demo data, the tiny
  model's weights, training states) that fail to parse are discarded and rebuilt with one
  warning naming the file; the run completes with the numbers of an intact cache.
* A copied home reuses its finished results (its keys do not depend on where it is).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from taskmerge.finetune.modes import Linearized
from tests.helpers.cases import (
    MODE_DIR,
    QUICK,
    assert_one_line,
    checkpoint,
    copy_home,
    empty,
    files_under,
    header,
    int_dtype,
    nan,
    rewrite,
    truncate,
    wrong_keys,
    wrong_shape,
    zeroed,
)
from tests.helpers.images import rng_images, write_idx

pytestmark = pytest.mark.slow


def _small_mnist(home: Path) -> None:
    raw = home / "data" / "MNIST" / "raw"
    write_idx(raw, "train", rng_images(20, (28, 28)), list(range(10)) * 2, gz=False)
    write_idx(raw, "t10k", rng_images(5, (28, 28), seed=1), [0, 1, 2, 3, 4], gz=False)


def _misplaced(path: Path) -> None:
    shutil.copy(checkpoint(path.parents[4], "Digits"), path)  # Digits' checkpoint as Colors'


#: (id, arguments, damage of the Colors checkpoint (or of the home), words of the one line)
USER_FILES: list[tuple[str, list[str], Callable[[Path], None] | None, list[str]]] = [
    ("truncated", QUICK, truncate, ["Colors", "truncated"]),
    ("zero-bytes", QUICK, empty, ["Colors", "not a readable"]),
    ("nan", QUICK, rewrite(nan), ["conv1.weight holds NaN or Inf"]),
    ("int-dtype", QUICK, rewrite(int_dtype), ["ln_pre.weight has dtype I32"]),
    ("wrong-shape", QUICK, rewrite(wrong_shape), ["ln_pre.weight has shape"]),
    ("wrong-keys", QUICK, rewrite(wrong_keys), ["missing keys"]),
    ("altered-bytes", QUICK, rewrite(zeroed, keep_checksum=True),
     ["Colors", "do not match the checksum"]),
    ("other-pretrained", QUICK, header({"pretrained_fingerprint": "0123456789abcdef"}),
     ["other pretrained weights"]),
    ("mixed-modes", QUICK,
     header({"finetuning": "linear", "finetuning_spec": Linearized().fingerprint()}),
     ["finetuning=linear"]),
    ("merged-model", QUICK,
     header({"format": "taskmerge/merged-image-encoder/v1", "method": "ties"}),
     ["is a merged model", "not the fine-tuned checkpoint of Colors"]),
    ("another-task", QUICK, _misplaced, ["is the checkpoint of Digits, not of Colors"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "damage", "words"), [c[1:] for c in USER_FILES], ids=[c[0] for c in USER_FILES]
)
def test_a_damaged_checkpoint_is_refused_naming_it(
    entries,
    fabricated_home: Path,
    tmp_path: Path,
    args,
    damage,
    words,  # noqa: ANN001
) -> None:
    home = copy_home(fabricated_home, tmp_path)
    damage(checkpoint(home))
    before = files_under(home / "checkpoints")
    run = tmp_path / "run"
    proc = entries.run("main.py", [*args, f"hydra.run.dir={run}"], {"TASKMERGE_HOME": str(home)},
                       cwd=tmp_path)  # fmt: skip
    assert_one_line(proc, words)
    assert files_under(home / "checkpoints") == before
    assert not (run / "results.json").exists()


DATA = [
    ("missing-checkpoint", ["DATASETS=[Digits,Shapes]", "logger=none", "finetune_missing=false"],
     ["no fine-tuned checkpoint"]),
    ("missing-dataset", ["DATASETS=[MNIST]", "logger=none"], ["MNIST not found"]),
    ("wrong-size-dataset", ["DATASETS=[MNIST]", "logger=none"],
     ["train has 20 samples, expected 60000"]),
    ("offline-weights", ["model=ViT-B-32", "logger=none"], ["not in the local cache"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "args", "words"), DATA, ids=[c[0] for c in DATA])
def test_missing_or_wrong_data_is_one_line(
    entries,
    fabricated_home: Path,
    tmp_path: Path,
    case: str,
    args: list[str],
    words,  # noqa: ANN001
) -> None:
    home = copy_home(fabricated_home, tmp_path)
    if case == "wrong-size-dataset":
        _small_mnist(home)
    proc = entries.run("main.py", [*args, f"hydra.run.dir={tmp_path / 'run'}"],
                       {"TASKMERGE_HOME": str(home)}, cwd=tmp_path)  # fmt: skip
    assert_one_line(proc, words)


# --------------------------------------------------------------------------- caches
ZEROSHOT = ["method=zeroshot", *QUICK]


@pytest.fixture(scope="module")
def warm(entries, fabricated_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: ANN001
    """A home on which one merge ran: every cache is filled; its results as reference."""
    where = tmp_path_factory.mktemp("warm")
    home = copy_home(fabricated_home, where)
    run = where / "run"
    proc = entries.run("main.py", [*ZEROSHOT, f"hydra.run.dir={run}"],
                       {"TASKMERGE_HOME": str(home)}, cwd=where)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"home": home, "results": json.loads((run / "results.json").read_text())}


def _only(home: Path, pattern: str) -> Path:
    found = sorted(home.rglob(pattern))
    assert len(found) == 1, found
    return found[0]


#: (id, file of the warm home (glob), damage, the warning's words)
CACHES = [
    ("empty-metrics", f"{MODE_DIR}/Colors/metrics.json", empty, "measured again"),
    ("garbage-metrics", f"{MODE_DIR}/Colors/metrics.json",
     lambda p: p.write_text("[1, 2"), "measured again"),
    ("results-entry-null", "cache/results/*.json", lambda p: p.write_text("null"),
     "computed again"),
    ("results-entry-old-layout", "cache/results/*.json",
     lambda p: p.write_text(json.dumps({"complete": True, "method": "zeroshot"})),
     "computed again"),
    ("empty-head", "cache/heads/*/*/Colors.safetensors", empty, "rebuilt from the text tower"),
    ("truncated-head", "cache/heads/*/*/Colors.safetensors", truncate, "rebuilt"),
    ("truncated-demo-data", "cache/demo-data/*/Colors-test.npz", truncate, "generated again"),
    ("truncated-tiny-weights", "cache/tiny/*.safetensors", truncate, "unpacked again"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("pattern", "damage", "words"), [c[1:] for c in CACHES], ids=[c[0] for c in CACHES]
)
def test_a_damaged_cache_is_rebuilt_with_one_warning(
    entries,
    warm: dict,
    tmp_path: Path,
    pattern: str,
    damage,
    words: str,  # noqa: ANN001
) -> None:
    home = copy_home(warm["home"], tmp_path)
    damaged = _only(home, pattern)
    damage(damaged)
    force = [] if pattern.startswith("cache/results") else ["force=true"]
    run = tmp_path / "run"
    proc = entries.run("main.py", [*ZEROSHOT, *force, f"hydra.run.dir={run}"],
                       {"TASKMERGE_HOME": str(home)}, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr  # Hydra's job log goes to stdout
    warnings = [line for line in log.splitlines() if words in line]
    assert len(warnings) == 1 and damaged.name in warnings[0], log[-3000:]
    assert "Traceback" not in proc.stderr
    results = json.loads((run / "results.json").read_text())
    assert results["test"] == warm["results"]["test"]  # the numbers of an intact cache
    assert "reused" not in results


@pytest.mark.parametrize("kind", ["not-a-state", "truncated"])
def test_a_damaged_training_state_starts_over(
    entries,
    fabricated_home: Path,
    tmp_path: Path,
    kind: str,  # noqa: ANN001
) -> None:
    import torch

    home = copy_home(fabricated_home, tmp_path)
    state = home / MODE_DIR / "Shapes" / "training-state.pt"
    state.parent.mkdir(parents=True)
    torch.save([1, 2, 3] if kind == "not-a-state" else {"step": torch.zeros(1000)}, state)
    if kind == "truncated":
        truncate(state)
    proc = entries.run("finetune.py", ["DATASETS=[Shapes]", "train.epochs_scale=0.05"],
                       {"TASKMERGE_HOME": str(home)}, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "training-state.pt is unreadable" in log and "starting over" in log, log[-3000:]
    assert (home / MODE_DIR / "Shapes" / "finetuned.safetensors").is_file()


# --------------------------------------------------------------------------- relocation
def test_a_copied_home_reuses_its_results(entries, warm: dict, tmp_path: Path) -> None:  # noqa: ANN001
    moved = tmp_path / "elsewhere"
    shutil.copytree(warm["home"], moved)  # new paths, new modification times
    run = tmp_path / "run"
    proc = entries.run("main.py", [*ZEROSHOT, f"hydra.run.dir={run}"],
                       {"TASKMERGE_HOME": str(moved)}, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["reused"]["key"] == warm["results"]["job_key"]
    assert results["test"] == warm["results"]["test"]
