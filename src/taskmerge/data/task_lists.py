"""Look up any task by name: the 20 standard tasks and the offline demo tasks."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from taskmerge.data.demo_data import DemoLoader
from taskmerge.data.demo_tasks import DEMO_TASKS
from taskmerge.data.spec import STANDARD_TASKS, TaskSpec
from taskmerge.errors import ConfigError


@cache
def get_task_spec(name: str, convention: str = "tall_masks") -> TaskSpec:
    """The specification of a standard or demo task (``convention``: the real tasks' class-name,
    template and image conventions, ``tall_masks`` or ``tsv``; the demo tasks have one).

    Raises:
        ConfigError: for an unknown name, listing the known ones.
    """
    if name in DEMO_TASKS:
        task = DEMO_TASKS[name]
        return TaskSpec(name, task.classnames, task.templates, task.epochs, DemoLoader(name))
    from taskmerge.data.real_tasks import REAL_TASKS, build_real_tasks

    if name in REAL_TASKS:
        return (
            REAL_TASKS[name] if convention == "tall_masks" else build_real_tasks(convention)[name]
        )
    raise ConfigError(
        f"unknown task {name!r}: choose from {list(STANDARD_TASKS)} or the demo tasks "
        f"{list(DEMO_TASKS)}"
    )


def is_demo_task(name: str) -> bool:
    """Whether ``name`` is one of the generated offline tasks."""
    return name in DEMO_TASKS


#: The task lists a config can name (``tasks.list``); ``num_tasks`` takes a prefix of one.
TASK_LISTS: dict[str, tuple[str, ...]] = {"standard": STANDARD_TASKS, "demo": tuple(DEMO_TASKS)}


def resolve_task_names(
    names: Sequence[str] | str | None, task_list: str = "standard", num_tasks: int | None = None
) -> list[str]:
    """The tasks of a run: an explicit list, else the first ``num_tasks`` of a task list.

    As in the reference repos, an explicit list (``tasks.names`` / ``DATASETS``) wins over
    ``num_tasks``; an empty string or list means "not given".

    Raises:
        ConfigError: an unknown list, or ``num_tasks`` outside 1..len(list).
    """
    if names:
        return [names] if isinstance(names, str) else list(names)
    if task_list not in TASK_LISTS:
        raise ConfigError(f"unknown task list {task_list!r}: use one of {list(TASK_LISTS)}")
    full = TASK_LISTS[task_list]
    if num_tasks is None:
        return list(full)
    if not 1 <= int(num_tasks) <= len(full):
        raise ConfigError(
            f"num_tasks={num_tasks} is out of range for the {task_list} task list: use 1.."
            f"{len(full)} (8, 14 and 20 are the standard benchmarks), or give DATASETS=[...]"
        )
    return list(full[: int(num_tasks)])


def resolve_task_specs(names: Sequence[str], convention: str = "tall_masks") -> list[TaskSpec]:
    """Specs for a list of names, failing on the first unknown one or on duplicates."""
    if not names:
        raise ConfigError("the task list is empty: give num_tasks=N or DATASETS=[Task,...]")
    if len(set(names)) != len(names):
        duplicates = sorted({name for name in names if list(names).count(name) > 1})
        raise ConfigError(f"tasks {duplicates} appear twice in {list(names)}: list each task once")
    return [get_task_spec(name, convention) for name in names]
