"""Versions of the code and libraries, recorded with every result."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("taskmerge", "torch", "torchvision", "open_clip_torch", "hydra-core", "safetensors")


def git_commit() -> str | None:
    """The commit of the working tree this code runs from, if it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str | None]:
    """Python, package versions and the git commit."""
    found: dict[str, str | None] = {"python": platform.python_version(), "git_commit": git_commit()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found
