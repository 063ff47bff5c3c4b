"""The typed config: every entry point's keys checked after Hydra composes them and before
anything is loaded.

* The top-level keys of each entry point (``device``, ``eval_batch_size``, ``num_tasks``, ...)
  are a pydantic model per script, strict (``eval_batch_size=1.5`` or ``=abc``, ``force=1`` are
  refused), with no NaN or infinity, closed (``+foo=1`` is refused).
* Every node with a ``_target_`` (model, fine-tuning mode, train settings, logger) is checked
  against the signature of what it instantiates: the same rule as the merge methods, whose keys
  come from their registry entry (:mod:`taskmerge.merging.options`).
* Then the facts a type cannot state: a device that exists on this machine, a non-empty task
  list, a grid whose cost is announced when it is large.

A problem is one :class:`~taskmerge.errors.ConfigError` line naming every wrong key, its value,
what is expected and the nearest known key for a misspelled one.
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from taskmerge import validation
from taskmerge.errors import ConfigError
from taskmerge.experiment.adaptive import DEFAULT_TOLERANCE
from taskmerge.hardware import PRECISIONS, check_device
from taskmerge.merging.device import resolve_merge_device
from taskmerge.merging.options import check_options
from taskmerge.models.forward import FORWARDS

log = logging.getLogger("taskmerge")

STRICT = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid", arbitrary_types_allowed=True)
#: A sweep grid with more points than this is announced with its cost.
LARGE_GRID = 100

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Workers = Literal["auto"] | Annotated[int, Field(ge=0)]
Split = Literal["val", "test"]
#: The splits ``decode_once`` can keep decoded (train: :mod:`taskmerge.data.decoded_train`).
DecodedSplit = Literal["train", "val", "test"]


class Common(BaseModel):
    """The keys every entry point shares (``config/common.yaml``)."""

    model_config = STRICT

    device: str = "auto"
    seed: int = 0
    eval_batch_size: PositiveInt = 256
    num_workers: Workers = "auto"
    eval_precision: Literal[PRECISIONS] = "fp32"  # type: ignore[valid-type]
    num_tasks: PositiveInt = 8
    DATASETS: list[str] | None = None
    eval_forward: Literal[FORWARDS] | None = None  # type: ignore[valid-type]
    world_size: PositiveInt = 1
    decode_once: list[DecodedSplit] = Field(default_factory=lambda: ["val"])
    limit_samples: PositiveInt | None = None
    verbose: bool = False


#: Entry point -> its own top-level keys (type, default) beyond :class:`Common` and the nodes.
ENTRY_KEYS: dict[str, dict[str, Any]] = {
    "config": {
        "finetune_missing": (bool, False),
        "force": (bool, False),
        "overwrite": (bool, False),
        "merge_device": (str, "auto"),
        "sweep": (Literal["grid", "adaptive"], "grid"),
        "sweep_tolerance": (NonNegativeFloat, DEFAULT_TOLERANCE),
    },
    "finetune": {"finetune_missing": (bool, True), "overwrite": (bool, False)},
    "eval_single_task": {
        "evaluate": (Literal["finetuned", "zeroshot"], "finetuned"),
        "finetune_missing": (bool, False),
    },
    "analyze": {"finetune_missing": (bool, False), "overwrite": (bool, False)},
    "import": {
        "finetune_missing": (bool, False),
        "source": (str, ...),
        "layout": (
            Literal["auto", "tall_masks", "tangent", "task_vectors", "fusion_bench", "open_clip"],
            "auto",
        ),
        "task": (str | None, None),
        "overwrite": (bool, False),
    },
    "prepare_data": {"action": (Literal["prepare", "status"], "prepare")},
}
ENTRY_KEYS["eval_task_addition"] = ENTRY_KEYS["config"]  # main.py's job on another grid
#: Nested nodes checked as plain sections (no ``_target_``): name -> fields.
SECTIONS: dict[str, dict[str, Any]] = {
    "paths": {"root": (str, ...), "data": (str, ...), "checkpoints": (str, ...),
              "cache": (str, ...), "create": (bool, False)},
    "tasks": {"list": (Literal["standard", "demo"], "standard"), "names": (list[str] | None, None),
              "convention": (Literal["tall_masks", "tsv"], "tall_masks")},
    "protocol": {"name": (str, ...), "trim_population": (Literal["image", "checkpoint"], "image"),
                 "epoch_order": (Literal["reshuffle", "fixed"], "reshuffle"),
                 "task_conventions": (Literal["tall_masks", "tsv"], "tall_masks"),
                 "grids": (dict[str, list[float]], ...)},
    "analysis": {"grid_min": (float, -2.0), "grid_max": (float, 2.0),
                 "grid_points": (PositiveInt, 5), "split": (Split, "test"),
                 "modes": (list[str] | None, None)},
}  # fmt: skip
#: Nodes instantiated from their ``_target_``: checked against its signature.
TARGETS = ("model", "finetuning", "train", "logger")
#: Config name -> the script it configures (for messages).
SCRIPTS = {"config": "main.py", "finetune": "finetune.py", "analyze": "analyze.py",
           "import": "import_checkpoints.py", "prepare_data": "prepare_data.py",
           "eval_single_task": "eval_single_task.py",
           "eval_task_addition": "eval_task_addition.py"}  # fmt: skip


@cache
def _entry_model(entry: str) -> type[BaseModel]:
    fields = dict(ENTRY_KEYS.get(entry, {}))
    return create_model(f"{entry}_keys", __base__=Common, **fields)


@cache
def _section_model(name: str) -> type[BaseModel]:
    return create_model(f"{name}_section", __config__=STRICT, **SECTIONS[name])


@cache
def target_model(target: str) -> type[BaseModel]:
    """The strict model of the keyword arguments of ``target`` (a callable's or a class's
    import path), from its signature and type hints."""
    from hydra.utils import get_object

    obj = get_object(target)
    init = obj.__init__ if inspect.isclass(obj) else obj
    hints = typing.get_type_hints(init, include_extras=True)
    fields: dict[str, Any] = {}
    for key, parameter in inspect.signature(init).parameters.items():
        if key in ("self", "args", "kwargs") or parameter.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            continue
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[key] = (hints.get(key, Any), default)
    return create_model(f"{target}_arguments", __config__=STRICT, **fields)


def _validate(model: type[BaseModel], values: Mapping[str, Any], prefix: str) -> list[str]:
    return validation.problems(model, values, prefix, prefix.rstrip(".") or "the config")


def _node_problems(name: str, node: Any) -> list[str]:
    if not isinstance(node, Mapping):
        return [f"{name}={node!r}: expected a config group (a mapping)"]
    values = dict(node)
    target = values.pop("_target_", None)
    if target is None:
        return [f"{name} has no _target_: choose one of the {name} config group's options"]
    kwargs = {k: v for k, v in values.items() if not k.startswith("_")}
    try:
        model = target_model(str(target))
    except Exception as exc:  # noqa: BLE001 - an import path that does not resolve
        return [f"{name}._target_={target!r} cannot be imported ({exc})"]
    return _validate(model, kwargs, f"{name}.")


def check_config(config: Mapping[str, Any], entry: str) -> None:
    """Check the resolved config (plain containers) of entry point ``entry`` (its config name:
    ``config`` for main.py, ``finetune``, ``analyze``, ``import``, ``prepare_data``).

    Raises:
        ConfigError: every problem found, in one line.
    """
    values = dict(config)
    nodes = {key: values.pop(key) for key in [*TARGETS, *SECTIONS, "method"] if key in values}
    values.pop("hydra", None)
    problems = validation.problems(
        _entry_model(entry), values, "", f"{SCRIPTS.get(entry, entry)}'s config"
    )
    for name, node in nodes.items():
        if name == "method":
            problems += _method_problems(node)
        elif name in SECTIONS:
            problems += _validate(_section_model(name), node, f"{name}.")
        else:
            problems += _node_problems(name, node)
    problems += _fact_problems(values, nodes)
    if problems:
        raise ConfigError("; ".join(problems) + " (--help lists every key)")
    _announce_costs(nodes.get("method"))


def _method_problems(node: Any) -> list[str]:
    if not isinstance(node, Mapping) or "name" not in node:
        return ["method has no name: choose a method (method=<name>, python main.py --help)"]
    options = {k: v for k, v in node.items() if k != "name"}
    try:
        check_options(str(node["name"]), options)
    except ConfigError as exc:
        return [str(exc)]
    return []


def _fact_problems(values: Mapping[str, Any], nodes: Mapping[str, Any]) -> list[str]:
    problems = []
    if isinstance(values.get("device"), str):
        try:
            check_device(values["device"])
        except ConfigError as exc:
            problems.append(str(exc))
    if "merge_device" in values:
        try:
            resolve_merge_device(str(values["merge_device"]))
        except ConfigError as exc:
            problems.append(str(exc))
    for key, value in (("DATASETS", values.get("DATASETS")),
                       ("tasks.names", (nodes.get("tasks") or {}).get("names"))):  # fmt: skip
        if isinstance(value, list) and not value:
            problems.append(
                f"{key}=[] is an empty task list: name at least one task, or drop {key} to run "
                "the first num_tasks tasks"
            )
    return problems


def _announce_costs(method: Any) -> None:
    """One log line when the sweep grid is large (every point is a pass over every Val split)."""
    if not isinstance(method, Mapping):
        return
    for key in ("grid", "tall_mask_lambda"):
        grid = method.get(key)
        if isinstance(grid, list) and len(grid) > LARGE_GRID:
            log.warning(
                "method.%s has %d points: the sweep evaluates every task's Val split %d times; "
                "a coarser grid (or sweep=adaptive) is faster", key, len(grid), len(grid),
            )  # fmt: skip
