"""A warm process that runs the entry points one command at a time, each in a fork of itself.

``python -m tests.helpers.entry_server``: imports everything the root scripts import once, then
reads one JSON request per line on stdin (``script``, ``args``, ``env``, ``cwd``, ``timeout``),
runs it in a forked child exactly as ``python <script> <args>`` would (its own environment,
working directory, stdout and stderr) and answers one JSON line (``returncode``, ``stdout``,
``stderr``). The server itself never runs a job, so every child starts from the same state and
no thread pool exists when it forks.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import tempfile
import traceback

import torch  # noqa: F401 - the imports every entry point pays, paid once here

import taskmerge.app.analyze  # noqa: F401
import taskmerge.app.finetune  # noqa: F401
import taskmerge.app.import_checkpoints  # noqa: F401
import taskmerge.app.merge  # noqa: F401
import taskmerge.app.prepare  # noqa: F401
import taskmerge.app.report  # noqa: F401


def _child(request: dict, out: str, err: str) -> None:
    """Run one command in this (forked) process and exit with its status."""
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_TRUNC), fd)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    signal.alarm(int(request.get("timeout", 600)))
    sys.argv = [request["script"], *request["args"]]
    code = 0
    try:
        runpy.run_path(request["script"], run_name="__main__")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - reported as the interpreter would
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve() -> None:
    """Answer requests until stdin closes."""
    for line in sys.stdin:
        request = json.loads(line)
        with tempfile.TemporaryDirectory(prefix="entry-") as tmp:
            out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
            for path in (out, err):
                open(path, "w").close()
            pid = os.fork()
            if pid == 0:
                _child(request, out, err)
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            with open(out) as o, open(err) as e:
                answer = {"returncode": code, "stdout": o.read(), "stderr": e.read()}
        sys.__stdout__.write(json.dumps(answer) + "\n")
        sys.__stdout__.flush()


if __name__ == "__main__":
    serve()
