"""The bad-input tables' shared pieces: homes to damage, the checks every case makes, and
fabricated damage of the stored files."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from taskmerge.io.tensors import CHECKSUM_KEY

PAIR = "DATASETS=[Digits,Colors]"
#: A merge of the fabricated home's two tasks that fine-tunes nothing.
QUICK = [PAIR, "logger=none", "finetune_missing=false"]
MODE_DIR = Path("checkpoints") / "taskmerge-tiny" / "standard"


def checkpoint(home: Path, task: str = "Colors") -> Path:
    """A task's checkpoint in a home."""
    return home / MODE_DIR / task / "finetuned.safetensors"


def copy_home(home: Path, where: Path) -> Path:
    """A private copy of ``home`` (to damage)."""
    copy = where / "home"
    shutil.copytree(home, copy)
    return copy


def files_under(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its modification time (what a case must not change)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def assert_one_line(
    proc: subprocess.CompletedProcess, words: str | Iterable[str], prog: str = "taskmerge"
) -> str:
    """Exit status 2, exactly one ``<prog>: error:`` line holding every word, no traceback, no
    progress bar (no work started). Returns the line."""
    words = [words] if isinstance(words, str) else list(words)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:], proc.stdout[-1000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for word in words:
        assert word in errors[0], (word, errors[0])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "it/s" not in proc.stderr and "%|" not in proc.stderr, proc.stderr[-2000:]
    return errors[0]


def rewrite(
    transform: Callable[[dict], dict], keep_checksum: bool = False
) -> Callable[[Path], None]:
    """A damage that rewrites a checkpoint's tensors (with its header; without the checksum
    unless ``keep_checksum``: a file written by another tool)."""

    def damage(path: Path) -> None:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
        if not keep_checksum:
            meta.pop(CHECKSUM_KEY, None)
        save_file(transform(state), str(path), metadata=meta)

    return damage


def header(update: dict[str, str]) -> Callable[[Path], None]:
    """A damage that changes a checkpoint's header only."""

    def damage(path: Path) -> None:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
        save_file(state, str(path), metadata={**meta, **update})

    return damage


def nan(state: dict) -> dict:
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    return state


def int_dtype(state: dict) -> dict:
    state["ln_pre.weight"] = state["ln_pre.weight"].to(torch.int32)
    return state


def wrong_shape(state: dict) -> dict:
    state["ln_pre.weight"] = state["ln_pre.weight"][:-1].clone()
    return state


def wrong_keys(state: dict) -> dict:
    state["ln_pre.gain"] = state.pop("ln_pre.weight")
    return state


def zeroed(state: dict) -> dict:
    state["conv1.weight"].zero_()
    return state


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")
