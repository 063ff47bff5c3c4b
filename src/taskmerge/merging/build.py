"""The one way a merge method is built from its config name and keys: Hydra's ``cfg.method``,
the Python API's keywords and ``taskmerge-merge``'s ``--set`` all come here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskmerge.errors import ConfigError
from taskmerge.merging.base import MergeMethod
from taskmerge.merging.lines import LINES_KEYS, with_lines
from taskmerge.merging.registry import method_spec


def build_method(name: str, options: Mapping[str, Any], fixed: bool = False) -> MergeMethod:
    """The method registered as ``name`` with its keys ``options`` (LiNeS' keys wrap it).

    Args:
        name: The config name (``method=<name>``).
        options: The method's keys; ``apply_lines`` / ``tradeoff_target_weight`` go to LiNeS.
        fixed: Nothing is swept (the Python API): LiNeS then applies at ``scaling_coef``
            (multi-task: beta; ``single_task`` editing: alpha).

    Raises:
        ConfigError: an unknown name, or a key the variant fixes itself (e.g.
            ``orthogonalize`` of ``TSVM_2``).
    """
    spec = method_spec(name)
    keys = dict(options)
    lines = {key: keys.pop(key) for key in LINES_KEYS if key in keys}
    pinned = sorted(set(keys) & set(spec.defaults))
    if pinned:
        raise ConfigError(
            f"method {name} sets {', '.join(pinned)} itself ({spec.defaults}): drop "
            f"method.{pinned[0]}, or choose the method that has the value you want"
        )
    method = spec.factory(**keys)
    method.name = spec.name
    coef = keys.get("scaling_coef")
    grid = [coef] if fixed and coef is not None else None
    return with_lines(method, **lines, grid=grid)
