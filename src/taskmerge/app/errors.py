"""A user's mistake ends a run as one line on stderr and exit status 2, no traceback.

A :class:`~taskmerge.errors.TaskmergeError` is something the user can fix; anything else is a bug
and keeps its traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from tqdm import tqdm

from taskmerge.errors import TaskmergeError

T = TypeVar("T")
#: The exit status of a user's mistake.
USER_ERROR = 2


def full_tracebacks() -> bool:
    """Whether the user asked for full tracebacks (``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def print_user_error(message: object, prog: str = "taskmerge") -> None:
    """``<prog>: error: <message>`` on one line of stderr (white space folded), after closing any
    progress bar still open so the message starts a line of its own."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def exit_with(message: object, prog: str = "taskmerge") -> NoReturn:
    """Print the one-line error and exit with :data:`USER_ERROR`."""
    print_user_error(message, prog)
    raise SystemExit(USER_ERROR)


def user_errors(job: Callable[..., T]) -> Callable[..., T]:
    """Decorate a job: a :class:`TaskmergeError` ends it with its one-line message and exit
    status 2; a bug keeps its traceback."""

    @functools.wraps(job)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return job(*args, **kwargs)
        except TaskmergeError as exc:
            if full_tracebacks():
                raise
            exit_with(exc)

    return wrapper


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (``<prog>: error: ...``), exit 2."""

    def error(self, message: str) -> NoReturn:  # noqa: D102
        exit_with(f"{message} ({self.prog} --help lists the options)", self.prog)
