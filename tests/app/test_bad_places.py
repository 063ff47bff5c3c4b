"""Bad inputs, families 2-4: where a job writes.

* Nothing a user has is replaced: another job's ``results.json`` in the run directory, an
  analysis already there, a checkpoint ``import_checkpoints.py`` did not write.
* No long work is done and then lost: a mistyped destination, a read-only checkpoints folder,
  a task another run is fine-tuning, a full disk: one line, before training or sweeping
  wherever it can be known before, and never a partial file.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

from tests.helpers.cases import MODE_DIR, QUICK, assert_one_line, copy_home, files_under

pytestmark = pytest.mark.slow


def _run(entries, home: Path, cwd: Path, args: list[str], script: str = "main.py"):  # noqa: ANN001, ANN202
    return entries.run(script, args, {"TASKMERGE_HOME": str(home)}, cwd=cwd)


@pytest.fixture
def small_disk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A small file system (a tmpfs; 2 MiB unless the test's ``disk_size`` mark says), for the
    faults of a full or read-only disk."""
    mark = request.node.get_closest_marker("disk_size")
    size = mark.args[0] if mark else "2m"
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


# --------------------------------------------------------------------------- nothing replaced
def test_another_jobs_results_are_not_replaced(entries, fabricated_home: Path,  # noqa: ANN001
                                               tmp_path: Path) -> None:  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text('{"mine": true}')
    proc = _run(entries, fabricated_home, tmp_path, [*QUICK, f"hydra.run.dir={run}"])
    assert_one_line(proc, [str(run / "results.json"), "overwrite=true"])
    assert json.loads((run / "results.json").read_text()) == {"mine": True}


def test_a_rerun_in_the_same_run_dir_is_allowed_and_another_job_is_not(
    entries,
    fabricated_home: Path,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    home = copy_home(fabricated_home, tmp_path)
    run = tmp_path / "run"
    first = _run(entries, home, tmp_path, ["method=zeroshot", *QUICK, f"hydra.run.dir={run}"])
    assert first.returncode == 0, first.stderr[-3000:]
    again = _run(entries, home, tmp_path, ["method=zeroshot", *QUICK, f"hydra.run.dir={run}"])
    assert again.returncode == 0, again.stderr[-3000:]  # the same job: its own results
    other = _run(entries, home, tmp_path, ["method=average", *QUICK, f"hydra.run.dir={run}"])
    assert_one_line(other, ["holds the results of another job", "overwrite=true"])
    assert json.loads((run / "results.json").read_text())["method"] == "zeroshot"
    forced = _run(entries, home, tmp_path,
                  ["method=average", *QUICK, "overwrite=true", f"hydra.run.dir={run}"])  # fmt: skip
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert json.loads((run / "results.json").read_text())["method"] == "average"


def test_an_existing_analysis_is_not_replaced(entries, fabricated_home: Path,  # noqa: ANN001
                                              tmp_path: Path) -> None:  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    (run / "disentanglement.json").write_text("{}")
    proc = _run(
        entries,
        fabricated_home,
        tmp_path,
        ["DATASETS=[Digits,Colors]", "logger=none", f"hydra.run.dir={run}"],
        "analyze.py",
    )
    assert_one_line(proc, ["disentanglement.json exists", "overwrite=true"])
    assert (run / "disentanglement.json").read_text() == "{}"


def test_an_import_does_not_replace_a_fine_tuned_checkpoint(
    entries,
    fabricated_home: Path,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    home = copy_home(fabricated_home, tmp_path)
    mine = home / MODE_DIR / "Colors" / "finetuned.safetensors"
    before = mine.read_bytes()
    source = tmp_path / "colors.safetensors"
    source.write_bytes((home / MODE_DIR / "Digits" / "finetuned.safetensors").read_bytes())
    proc = _run(entries, home, tmp_path, [f"source={source}", "task=Colors"],
                "import_checkpoints.py")  # fmt: skip
    assert_one_line(proc, ["was not written by an import", "overwrite=true"])
    assert mine.read_bytes() == before


# --------------------------------------------------------------------------- no work lost
@pytest.mark.parametrize("script", ["main.py", "finetune.py"])
def test_a_mistyped_destination_is_refused_before_fine_tuning(
    entries,
    fabricated_home: Path,
    tmp_path: Path,
    script: str,  # noqa: ANN001
) -> None:
    args = ["DATASETS=[Digits]", "paths.checkpoints=/nonexistent/ckpts", "logger=none"]
    proc = _run(entries, fabricated_home, tmp_path, [*args, f"hydra.run.dir={tmp_path / 'r'}"]
                if script == "main.py" else args[:2], script)  # fmt: skip
    assert_one_line(proc, ["/nonexistent", "paths.create=true"])
    assert not Path("/nonexistent").exists()


def test_an_unwritable_checkpoints_folder_is_refused_before_training(
    entries,
    fabricated_home: Path,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    proc = _run(entries, fabricated_home, tmp_path, ["DATASETS=[Shapes]",
                                                     "paths.checkpoints=/proc/ckpts"],
                "finetune.py")  # fmt: skip
    assert_one_line(proc, ["cannot write /proc/ckpts"])


@pytest.mark.disk_size("64m")  # room for two checkpoints before it turns read-only
def test_a_read_only_checkpoints_folder_is_refused_before_the_sweep(
    entries,
    fabricated_home: Path,
    small_disk: Path,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    ckpts = small_disk / "ckpts"
    for task in ("Digits", "Colors"):  # the checkpoints, without their metrics
        target = ckpts / "taskmerge-tiny" / "standard" / task
        target.mkdir(parents=True)
        (target / "finetuned.safetensors").write_bytes(
            (fabricated_home / MODE_DIR / task / "finetuned.safetensors").read_bytes()
        )
    _read_only(small_disk)
    proc = _run(
        entries,
        fabricated_home,
        tmp_path,
        [*QUICK, f"paths.checkpoints={ckpts}", f"hydra.run.dir={tmp_path / 'r'}"],
    )
    assert_one_line(proc, ["cannot write", "read-only"])


def test_a_task_another_run_fine_tunes_is_refused(
    entries,
    fabricated_home: Path,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    home = copy_home(fabricated_home, tmp_path)
    task_dir = home / MODE_DIR / "Shapes"
    task_dir.mkdir(parents=True)
    with FileLock(str(task_dir / ".finetune.lock")):  # another run holds it
        proc = _run(entries, home, tmp_path, ["DATASETS=[Shapes]"], "finetune.py")
    assert_one_line(proc, ["another run is fine-tuning Shapes"])
    assert not (task_dir / "finetuned.safetensors").exists()


def test_a_full_disk_while_saving_the_training_state_is_one_line(
    entries,
    fabricated_home: Path,
    small_disk: Path,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    home = copy_home(fabricated_home, tmp_path)
    ckpts = small_disk / "ckpts"
    proc = _run(entries, home, tmp_path, ["DATASETS=[Shapes]", f"paths.checkpoints={ckpts}",
                                          "train.save_every=1", "train.epochs_scale=0.05"],
                "finetune.py")  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("taskmerge: error:")]
    assert len(errors) == 1 and "no space left" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    left = files_under(ckpts)
    assert not any(name.endswith((".tmp", "training-state.pt", "finetuned.safetensors"))
                   for name in left), left  # fmt: skip
