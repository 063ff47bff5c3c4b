"""A run that stops on a user error leaves no empty run folder behind; other libraries' INFO
lines are hidden unless ``verbose=true``; checks come in the order a user fixes them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from taskmerge.app.run_folder import LibraryFilter, RunFolder, quiet_libraries
from taskmerge.app.schema import check_config
from taskmerge.errors import ConfigError
from tests.helpers.cases import assert_one_line
from tests.helpers.configs import compose


def hydra_folder(where: Path, log: str = "", *extra: str) -> Path:
    """A run folder as Hydra leaves it before the job: ``.hydra/`` and the job's log."""
    (where / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (where / ".hydra" / name).write_text("a: 1\n")
    (where / "main.log").write_text(log)
    for name in extra:
        (where / name).write_text("{}")
    return where


def test_a_fresh_folder_is_removed(tmp_path: Path) -> None:
    folder = RunFolder(hydra_folder(tmp_path / "run"), "main.log")
    (tmp_path / "run" / "main.log").write_text("[INFO] main.py: merge with sum ...\n")  # this job's
    assert folder.discard()
    assert not (tmp_path / "run").exists() and tmp_path.exists()


@pytest.mark.parametrize(
    ("before", "during"),
    [
        (("results.json",), ()),  # an earlier job's results
        ((), ("results.json",)),  # something this job wrote
        ((), ("sweep.png",)),
    ],
)
def test_a_folder_that_held_anything_else_is_kept(tmp_path: Path, before, during) -> None:  # noqa: ANN001
    run = hydra_folder(tmp_path / "run", "", *before)
    folder = RunFolder(run, "main.log")
    for name in during:
        (run / name).write_text("{}")
    assert not folder.discard()
    assert sorted(p.name for p in run.iterdir()) == sorted([".hydra", "main.log", *before, *during])


def test_an_earlier_runs_log_is_kept(tmp_path: Path) -> None:
    run = hydra_folder(tmp_path / "run", "[INFO] fine-tuned Digits: val 0.9 test 0.9\n")
    assert not RunFolder(run, "main.log").discard()
    assert (run / "main.log").read_text().startswith("[INFO] fine-tuned")


def test_an_unknown_file_in_hydra_dir_is_kept(tmp_path: Path) -> None:
    run = hydra_folder(tmp_path / "run")
    (run / ".hydra" / "notes.txt").write_text("mine")
    assert not RunFolder(run, "main.log").discard()
    assert (run / ".hydra" / "notes.txt").exists()


def _captured(verbose: bool) -> list[str]:
    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(f"{record.name}:{record.levelname}:{record.getMessage()}")

    root = logging.getLogger()
    handler, level = Keep(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # another library's logging.config (import-linter's, in this session) may have disabled
    # loggers that existed then: these lines are about the filter, not about that
    names = ["taskmerge", "taskmerge.experiment.sweep", "open_clip.factory",
             "huggingface_hub.file_download", "hydra"]  # fmt: skip
    disabled = {name: logging.getLogger(name).disabled for name in names}
    for name in names:
        logging.getLogger(name).disabled = False
    try:
        quiet_libraries(verbose)
        quiet_libraries(verbose)  # idempotent: one filter, whatever the number of calls
        assert sum(isinstance(f, LibraryFilter) for f in handler.filters) == (0 if verbose else 1)
        logging.info("Loaded ViT-B-32 model config.")  # open_clip logs on the root logger
        logging.getLogger("open_clip.factory").info("Loading pretrained weights")
        logging.getLogger("huggingface_hub.file_download").warning("slow download")
        logging.getLogger("taskmerge").info("main.py: merge with sum")
        logging.getLogger("taskmerge.experiment.sweep").info("sum: merging 2 task vectors")
        logging.getLogger("hydra").info("Launching 2 jobs")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for name, state in disabled.items():
            logging.getLogger(name).disabled = state
    return handler.lines


def test_library_info_lines_hidden_unless_verbose() -> None:
    assert _captured(verbose=False) == [
        "huggingface_hub.file_download:WARNING:slow download",
        "taskmerge:INFO:main.py: merge with sum",
        "taskmerge.experiment.sweep:INFO:sum: merging 2 task vectors",
        "hydra:INFO:Launching 2 jobs",
    ]
    verbose = _captured(verbose=True)
    assert "root:INFO:Loaded ViT-B-32 model config." in verbose
    assert "open_clip.factory:INFO:Loading pretrained weights" in verbose
    assert len(verbose) == 6


@pytest.mark.parametrize("entry", ["config", "finetune", "analyze", "import", "prepare_data"])
def test_verbose_is_a_key_of_every_entry_point(entry: str) -> None:
    from taskmerge.app.config import config_dict

    overrides = ["source=/x"] if entry == "import" else []
    values = config_dict(compose(entry, [*overrides, "verbose=true"]))
    assert values["verbose"] is True
    check_config(values, entry)
    with pytest.raises(ConfigError, match="verbose"):
        check_config({**values, "verbose": "loud"}, entry)


@pytest.mark.slow
def test_a_user_error_leaves_no_run_folder(entries, tmp_path: Path) -> None:  # noqa: ANN001
    """The source is checked before the open_clip weights (which are not here either), and
    the run folder Hydra made for the job is gone; one that held results stays."""
    run = tmp_path / "run"
    args = ["source=/nonexistent/ckpts", "model=ViT-B-32", f"hydra.run.dir={run}"]
    proc = entries.run("import_checkpoints.py", args, {"TASKMERGE_HOME": str(tmp_path / "h")})
    line = assert_one_line(proc, ["source=/nonexistent/ckpts", "does not exist"])
    assert "open_clip weights" not in line
    assert not run.exists()
    kept = hydra_folder(tmp_path / "kept", "", "results.json")
    args[-1] = f"hydra.run.dir={kept}"
    proc = entries.run("import_checkpoints.py", args, {"TASKMERGE_HOME": str(tmp_path / "h")})
    assert_one_line(proc, "source=/nonexistent/ckpts")
    assert (kept / "results.json").exists()
