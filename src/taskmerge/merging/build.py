"""The one way a merge method is built from its config name and keys: Hydra's ``cfg.method``,
the Python API's keywords and ``taskmerge-merge``'s ``--set`` all come here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskmerge.merging.base import MergeMethod
from taskmerge.merging.lines import LINES_KEYS, with_lines
from taskmerge.merging.options import check_options
from taskmerge.merging.registry import method_spec


def build_method(name: str, options: Mapping[str, Any], fixed: bool = False) -> MergeMethod:
    """The method registered as ``name`` with its keys ``options`` (LiNeS' keys wrap it).

    Args:
        name: The config name (``method=<name>``).
        options: The method's keys; ``apply_lines`` / ``tradeoff_target_weight`` go to LiNeS.
        fixed: Nothing is swept (the Python API): LiNeS then applies at ``scaling_coef``
            (multi-task: beta; ``single_task`` editing: alpha).

    Raises:
        ConfigError: an unknown name, a key of the wrong type, an unknown key, or a key the
            variant fixes itself (e.g. ``orthogonalize`` of ``TSVM_2``): see
            :func:`taskmerge.merging.options.check_options`.
    """
    spec = method_spec(name)
    keys = check_options(name, options)
    lines = {key: keys.pop(key) for key in LINES_KEYS if key in keys}
    method = spec.factory(**keys)
    method.name = spec.name
    coef = keys.get("scaling_coef")
    grid = [coef] if fixed and coef is not None else None
    return with_lines(method, **lines, grid=grid)
