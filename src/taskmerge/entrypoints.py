"""Hydra glue shared by main.py and finetune.py: config -> library objects -> the library's calls.

The rest of the library knows nothing of Hydra; this module instantiates the configured pieces,
validates them before any long work starts, and calls :func:`taskmerge.experiment.run_merge`
or :func:`taskmerge.training.finetune_task` with them.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from taskmerge.checkpoints import check_writable, fingerprint
from taskmerge.data.catalog import resolve_task_names, resolve_task_specs
from taskmerge.distributed import check_world_size, launched_by_torchrun
from taskmerge.errors import ConfigError, TaskmergeError
from taskmerge.evaluation import TaskEvaluator
from taskmerge.finetuning import FinetuningMode, check_forward
from taskmerge.hardware import check_precision, resolve_device, resolve_workers
from taskmerge.merging import MergeMethod, with_lines
from taskmerge.merging.lines import LINES_KEYS
from taskmerge.merging.registry import help_text
from taskmerge.models.clip import ClipBundle
from taskmerge.resume import task_lock
from taskmerge.store import CheckpointStore
from taskmerge.tracking import Tracker
from taskmerge.training import TrainSettings, finetune_task

log = logging.getLogger("taskmerge")
T = TypeVar("T")


def user_errors(job: Callable[..., T]) -> Callable[..., T]:
    """Decorate a Hydra task function: a user's mistake (:class:`TaskmergeError`) ends the run
    with its one-line message on stderr and exit status 2, no traceback; a bug keeps its
    traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback of user errors too."""

    @functools.wraps(job)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return job(*args, **kwargs)
        except TaskmergeError as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            message = " ".join(str(exc).split())
            print(f"taskmerge: error: {message}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    return wrapper


#: Hydra flags after which the command line is left to Hydra (they change what runs).
_HYDRA_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve",
                "--shell-completion", "-sc", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun", "--package", "-p")  # fmt: skip


def check_command_line(config_dir: Path, config_name: str, argv: Sequence[str]) -> None:
    """Compose the configs a command line asks for (every value of a multirun sweep) before
    Hydra starts: an unknown option, group choice or malformed override is one line naming it
    and the fix on stderr, exit status 2, instead of Hydra's multi-line report."""
    if any(arg.split("=")[0] in _HYDRA_FLAGS for arg in argv) or HYDRA_FULL_ERROR():
        return
    outputs = [
        a.split("=", 1)[1] for a in argv if a.startswith(("hydra.run.dir=", "hydra.sweep.dir="))
    ]
    for directory in outputs or ["outputs"]:
        try:
            check_writable(Path(directory).expanduser())
        except TaskmergeError as exc:
            print(f"taskmerge: error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
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
        print(f"taskmerge: error: {_one_line(str(exc))} (--help lists the config groups and keys)",
              file=sys.stderr, flush=True)  # fmt: skip
        raise SystemExit(2) from None
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


def HYDRA_FULL_ERROR() -> bool:  # noqa: N802 - named after the environment variable
    """Whether the user asked for full tracebacks."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def register_resolvers() -> None:
    """OmegaConf resolvers the configs use (``--help`` lists the methods of the registry)."""
    OmegaConf.register_new_resolver("taskmerge_methods", help_text, replace=True)


def instantiate(node: DictConfig, **kwargs: object) -> object:
    """``hydra.utils.instantiate`` that lets the library's own one-line errors through unwrapped."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, TaskmergeError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def build_method(node: DictConfig) -> MergeMethod:
    """Instantiate ``cfg.method``; its LiNeS keys (``apply_lines``, ``tradeoff_target_weight``)
    wrap the method (:func:`taskmerge.merging.with_lines`) instead of reaching its class."""
    keys = OmegaConf.to_container(node, resolve=True)
    options = {key: keys.pop(key) for key in LINES_KEYS if key in keys}
    return with_lines(instantiate(OmegaConf.create(keys)), **options)


def set_default_home(project_root: Path) -> None:
    """Caches and checkpoints default to ``<repo>/cache`` (git-ignored) unless set elsewhere."""
    os.environ.setdefault("TASKMERGE_HOME", str(project_root / "cache"))


def task_names(cfg: DictConfig) -> list[str]:
    """The run's tasks from ``tasks.names`` / ``DATASETS``, else the first ``num_tasks``."""
    return resolve_task_names(cfg.tasks.names, cfg.tasks.list, cfg.num_tasks)


@dataclass
class Setup:
    """What a job works with, built from the config (fails fast on bad input)."""

    bundle: ClipBundle
    pretrained: dict
    evaluator: TaskEvaluator
    store: CheckpointStore
    mode: FinetuningMode
    train: TrainSettings

    @property
    def tasks(self) -> list[str]:
        """Task names in order."""
        return self.evaluator.task_names


def build_setup(
    cfg: DictConfig,
    mode_node: DictConfig | None = None,
    forward: str | None = None,
    names: list[str] | None = None,
) -> Setup:
    """Resolve the tasks, load the model, and build the evaluator and the checkpoint store.

    The evaluator's forward is ``forward``, else ``eval_forward`` when set (a cast: e.g.
    standard checkpoints through the linearized model, "post-hoc linearization"), else the
    mode's own. ``mode_node`` replaces ``cfg.finetuning`` and ``names`` the task list (the
    analyses compare several modes on a task pair).
    """
    specs = resolve_task_specs(names or task_names(cfg))
    mode = instantiate(mode_node if mode_node is not None else cfg.finetuning)
    forward = check_forward(forward or cfg.get("eval_forward") or mode.forward)
    train = instantiate(cfg.train)
    if cfg.eval_batch_size < 1:
        raise ConfigError(f"eval_batch_size={cfg.eval_batch_size}: use a batch size >= 1")
    workers = resolve_workers(cfg.num_workers)
    precision = check_precision(cfg.get("eval_precision", "fp32"))
    check_world_size(int(cfg.get("world_size", 1)), train.batch_size, resolve_device(cfg.device))
    bundle = instantiate(cfg.model)
    pretrained = {k: v.detach().clone() for k, v in bundle.visual.state_dict().items()}
    pretrained_fp = fingerprint(pretrained)
    cache = Path(cfg.paths.cache).expanduser()
    heads_dir = (
        cache / "heads" / bundle.name / f"{bundle.pretrained.replace('/', '_')}-{pretrained_fp}"
    )
    evaluator = TaskEvaluator(
        bundle,
        specs,
        data_root=cfg.paths.data,
        cache_dir=cache,
        heads_dir=heads_dir,
        device=cfg.device,
        batch_size=cfg.eval_batch_size,
        num_workers=workers,
        forward=forward,
        precision=precision,
        params0=pretrained,
        accuracy_dir=cache / "accuracy" / heads_dir.relative_to(cache / "heads"),
        tensor_dir=cache / "tensors" / heads_dir.relative_to(cache / "heads"),
        decode_once=list(cfg.get("decode_once", ["val"])),
    )
    store = CheckpointStore(
        cfg.paths.checkpoints, bundle.name, bundle.pretrained, mode, pretrained, pretrained_fp
    )
    return Setup(bundle, pretrained, evaluator, store, mode, train)


def finetune_command() -> str:
    """The finetune.py command line that matches this job's model and fine-tuning choices."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices
        return f"python finetune.py model={choices['model']} finetuning={choices['finetuning']}"
    except (ValueError, KeyError):
        return "python finetune.py"


def finetune_in_setup(
    setup: Setup, task: str, overwrite: bool = False, world_size: int = 1
) -> dict[str, float]:
    """:func:`finetune_task` of one task with the setup's model, evaluator, store, protocol and
    mode."""
    return finetune_task(
        task, setup.bundle.visual, setup.evaluator, setup.store, setup.train, setup.mode,
        overwrite=overwrite, world_size=world_size,
    )  # fmt: skip


def ensure_checkpoints(setup: Setup, finetune_missing: bool, world_size: int = 1) -> None:
    """Fine-tune the missing checkpoints where allowed; else fail, before any long work.

    Each task is fine-tuned under its directory's lock: a concurrent job that needs the same
    checkpoint waits and then reuses it (see :mod:`taskmerge.resume`).
    """
    missing = setup.store.missing(setup.tasks)
    if missing and not finetune_missing:
        setup.store.require(setup.tasks, finetune_command())
    for task in missing:  # every task's data is there (and the right size) before any training
        setup.evaluator.splits(task)
    for task in missing:
        lock = nullcontext() if launched_by_torchrun() else task_lock(setup.store.task_dir(task))
        with lock:
            if setup.store.path(task).is_file():
                log.info("%s: fine-tuned meanwhile by another job, reused", task)
                continue
            finetune_in_setup(setup, task, world_size=world_size)


def sweep_group() -> str | None:
    """The name of the multirun this job belongs to (its sweep directory), or None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return Path(hydra_cfg.sweep.dir).name
    except ValueError:  # not inside a Hydra job
        pass
    return None


def open_tracker(cfg: DictConfig, run_dir: Path) -> Tracker:
    """The job's tracker; the jobs of one multirun share a W&B group (its sweep directory)
    unless ``logger.group`` is set."""
    extra: dict[str, Any] = {}
    group = sweep_group()
    if group and "group" in cfg.logger and cfg.logger.group is None:
        extra["group"] = group
    return instantiate(  # not recursive: the run config's _target_ nodes stay data
        cfg.logger,
        dir=str(run_dir),
        name=run_dir.name,
        run_config=config_dict(cfg),
        _recursive_=False,
        _convert_="all",
        **extra,
    )


def config_dict(cfg: DictConfig) -> dict:
    """The resolved config as plain containers (for results and W&B)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
