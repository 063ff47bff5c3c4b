"""The typed hyperparameters of every merge method, derived from its registry entry.

A method's keys are its class's ``__init__`` arguments; their annotations (``float``,
``Sequence[float] | None``, ``Literal[...]``, ``Annotated`` ranges) become a pydantic model,
strict (``method.k=abc``, ``task_index=1.5``, ``use_ties=1`` are refused), without NaN or
infinity, and closed (an unknown key is refused with the nearest known one). Hydra's
``cfg.method``, the Python API's keywords and ``taskmerge-merge``'s ``--set`` are all checked
here (:func:`check_options`), before anything is loaded.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from taskmerge.errors import ConfigError
from taskmerge.merging.registry import MethodSpec, method_spec
from taskmerge.validation import problems

STRICT = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid", arbitrary_types_allowed=True)


@cache
def options_model(name: str) -> type[BaseModel]:
    """The pydantic model of method ``name``'s keys (its class's ``__init__`` arguments, minus
    those its registry entry fixes, plus LiNeS' keys where LiNeS applies)."""
    spec = method_spec(name)
    hints = typing.get_type_hints(spec.cls.__init__, include_extras=True)
    fields: dict[str, Any] = {}
    for key, parameter in inspect.signature(spec.cls.__init__).parameters.items():
        if key == "self" or key in spec.defaults:
            continue
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[key] = (hints.get(key, Any), default)
    # LiNeS' keys, on every method (LiNeS itself refuses the methods it cannot scale, with
    # the list of those it can)
    fields["apply_lines"] = (bool, False)
    fields["tradeoff_target_weight"] = (float, 2.0)
    return create_model(f"{name}_options", __config__=STRICT, **fields)


def keys_of(name: str) -> list[str]:
    """The keys method ``name`` takes."""
    return list(options_model(name).model_fields)


def check_options(name: str, options: Mapping[str, Any], prefix: str = "method.") -> dict:
    """``options`` checked against method ``name``'s keys; the values as given (only the keys
    given, lists and mappings as plain containers).

    Raises:
        ConfigError: one line naming every wrong key and value (and the nearest key for an
            unknown one).
    """
    spec: MethodSpec = method_spec(name)
    pinned = sorted(set(options) & set(spec.defaults))
    if pinned:
        raise ConfigError(
            f"method {name} sets {', '.join(pinned)} itself ({spec.defaults}): drop "
            f"{prefix}{pinned[0]}, or choose the method that has the value you want"
        )
    model = options_model(name)
    found = problems(model, options, prefix, where=f"method {name}")
    if found:
        if any(key not in model.model_fields for key in options):
            found.append(f"method {name} takes {', '.join(keys_of(name))}")
        raise ConfigError("; ".join(found))
    return model.model_validate(dict(options)).model_dump(exclude_unset=True)
