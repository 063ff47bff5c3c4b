"""Check a command line before Hydra starts: every config it asks for (each value of a multirun
sweep) composes, and the output directories can be written; a mistake is one line, exit 2."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from taskmerge.app.config import resolved
from taskmerge.app.errors import exit_with, full_tracebacks
from taskmerge.app.schema import check_config
from taskmerge.errors import TaskmergeError
from taskmerge.io.atomic import check_writable
from taskmerge.validation import suggestion

#: Hydra flags after which the command line is left to Hydra (they change what runs).
_HYDRA_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve",
                "--shell-completion", "-sc", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun", "--package", "-p")  # fmt: skip


def check_command_line(config_dir: Path, config_name: str, argv: Sequence[str]) -> None:
    """Compose the configs a command line asks for (every value of a multirun sweep) before
    Hydra starts: an unknown option, group choice or malformed override is one line naming it
    and the fix on stderr, exit status 2, instead of Hydra's multi-line report."""
    if any(arg.split("=")[0] in _HYDRA_FLAGS for arg in argv) or full_tracebacks():
        return
    outputs = [
        a.split("=", 1)[1] for a in argv if a.startswith(("hydra.run.dir=", "hydra.sweep.dir="))
    ]
    for directory in outputs or ["outputs"]:
        try:
            check_writable(Path(directory).expanduser())
        except TaskmergeError as exc:
            exit_with(exc)
    overrides = [a for a in argv if not a.startswith("-") and not a.startswith("hydra")]
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        sweeps = [(o.get_key_element(), list(o.sweep_string_iterator())) for o in parsed
                  if o.is_sweep_override()]  # fmt: skip
        firsts = [f"{key}={values[0]}" for key, values in sweeps]
        variants = [fixed + firsts] + [
            fixed + firsts[:i] + [f"{key}={value}"] + firsts[i + 1 :]
            for i, (key, values) in enumerate(sweeps)
            for value in values[1:]
        ]
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            configs = []
            for variant in variants:
                try:
                    configs.append(compose(config_name, overrides=variant))
                except Exception as exc:  # noqa: BLE001 - every Hydra composition error
                    raise _Reported(_composition_error(exc, config_name, variant)) from None
    except _Reported as exc:
        exit_with(f"{exc} (--help lists the config groups and keys)")
    except Exception as exc:  # noqa: BLE001 - every Hydra parsing error
        exit_with(f"{_one_line(str(exc))} (--help lists the config groups and keys)")
    finally:
        GlobalHydra.instance().clear()
    for cfg in configs:  # the typed config of every job, before any of them starts
        try:
            check_config(resolved(cfg), config_name)
        except TaskmergeError as exc:
            exit_with(exc)


class _Reported(Exception):
    """A composition error already turned into one line."""


_NOT_IN_STRUCT = re.compile(r"Could not override '([^']+)'")
_NO_OPTION = re.compile(r"Could not find '([^'/]+)/([^']+)'")


def _composition_error(exc: Exception, config_name: str, variant: Sequence[str]) -> str:
    """One line for a composition error; for a key that does not exist, the nearest key of the
    same node (``method.scaling_coeff`` -> ``method.scaling_coef``)."""
    missing = _NO_OPTION.search(str(exc))
    if missing:
        group, choice = missing.groups()
        options = str(exc).partition("Available options in")[2].partition(":")[2].split()
        return _one_line(str(exc)) + suggestion(choice, options).replace(
            "(did you mean ", f"(did you mean {group}="
        )
    found = _NOT_IN_STRUCT.search(str(exc))
    if not found or "not in struct" not in f"{exc} {exc.__cause__}":
        return _one_line(str(exc))
    key = found.group(1)
    parent, _, leaf = key.rpartition(".")
    hint = ""
    try:
        from hydra import compose

        node = compose(config_name, overrides=[o for o in variant if not o.startswith(key + "=")])
        for part in parent.split(".") if parent else []:
            node = node[part]
        hint = suggestion(leaf, [str(k) for k in node.keys()])
    except Exception:  # noqa: BLE001 - no suggestion then
        pass
    if hint and parent:
        hint = hint.replace("(did you mean ", f"(did you mean {parent}.")
    return f"{key} is not a key of the config{hint}: check its spelling (+{key}=... adds a key)"


def _one_line(message: str) -> str:
    """A Hydra error report as one line: its statements, then any list of options."""
    message = message.split("Config search path")[0]
    head, _, options = message.partition("Available options in")
    lines = [line.strip() for line in head.splitlines() if line.strip()]
    text = " ".join(line if line.endswith((".", ":")) else line + ";" for line in lines)
    if options:
        group, _, names = options.partition(":")
        text += f" available options in{group}: {', '.join(names.split())}"
    return text.rstrip(";")
