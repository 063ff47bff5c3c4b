"""Check a command line before Hydra starts: every config it asks for (each value of a multirun
sweep) composes, and the output directories can be written; a mistake is one line, exit 2."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from taskmerge.app.errors import exit_with, full_tracebacks
from taskmerge.errors import TaskmergeError
from taskmerge.io.atomic import check_writable

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
            for variant in variants:
                compose(config_name, overrides=variant)
    except Exception as exc:  # noqa: BLE001 - every Hydra composition / parsing error
        exit_with(f"{_one_line(str(exc))} (--help lists the config groups and keys)")
    finally:
        GlobalHydra.instance().clear()


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
