"""Running the root scripts as a user does, fast: :class:`EntryPoints` keeps one warm server
(:mod:`tests.helpers.entry_server`) that forks a fresh child per command, so a table of many
command lines pays Python's and torch's imports once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class EntryPoints:
    """``run("main.py", [...], env, cwd)`` -> ``subprocess.CompletedProcess`` of that command.

    Args:
        env: The server's environment (what the interpreter reads at import time, e.g.
            ``HF_HUB_OFFLINE`` and ``HF_HOME``); each command gets its own on top.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.server = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.entry_server"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=self.env, text=True,
        )  # fmt: skip

    def run(
        self,
        script: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | Path = ".",
        timeout: int = 600,
    ) -> subprocess.CompletedProcess:
        """Run ``python <script> <args>`` (``script`` relative to the repository root)."""
        request = {
            "script": str(ROOT / script), "args": list(args), "env": {**self.env, **(env or {})},
            "cwd": str(cwd), "timeout": timeout,
        }  # fmt: skip
        assert self.server.stdin is not None and self.server.stdout is not None
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        answer = json.loads(self.server.stdout.readline())
        return subprocess.CompletedProcess(
            [script, *args], answer["returncode"], answer["stdout"], answer["stderr"]
        )

    def close(self) -> None:
        """Stop the server."""
        if self.server.stdin is not None:
            self.server.stdin.close()
        self.server.wait(timeout=60)


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without what would change a command's behaviour."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return {**env, **extra}
