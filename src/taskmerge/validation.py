"""One line per wrong value: pydantic's errors in the words of a command line.

``method.grid[1]='abc': expected a number``, ``num_workers=-1: expected auto or a whole number
>= 0``, ``method.kk is not a key of method sum (did you mean k?)``. Used by the typed config
(:mod:`taskmerge.app.schema`) and the merge methods' keys (:mod:`taskmerge.merging.options`).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


def suggestion(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _bounds(metadata: Sequence[Any]) -> str:
    parts = []
    flat: list[Any] = []
    for item in metadata:
        flat.extend(item.metadata if isinstance(item, FieldInfo) else [item])
    for item in flat:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign} {value}")
    return " " + " and ".join(parts) if parts else ""


def describe(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    """What a value of ``annotation`` is, in words (``a number``, ``a list of numbers``,
    ``one of 'mean', 'sum'``, ``a whole number >= 0``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return describe(args[0], [*metadata, *args[1:]])
    if origin in (typing.Union, types.UnionType):
        options = [describe(a) for a in args if a is not type(None)]
        text = " or ".join(dict.fromkeys(options))
        return text + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return repr(args[0]) if len(args) == 1 else "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, Sequence) or (origin and issubclass(origin, Sequence)):
        item = describe(args[0]) if args else "values"
        return f"a list of {item.removeprefix('a ').removeprefix('an ')}s".replace("ss", "s")
    if origin in (dict, Mapping) or (origin and issubclass(origin, Mapping)):
        value = describe(args[1]) if len(args) > 1 else "values"
        return f"a mapping of names to {value.removeprefix('a ').removeprefix('an ')}s"
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation))) + _bounds(
        metadata
    )


def _path(key: str, parts: Sequence[Any], value: Any) -> tuple[str, Any] | None:
    """``key[1].a`` for parts that index into ``value``; None when a part is not an index (a
    union member's tag)."""
    path = key
    for part in parts:
        if isinstance(value, list) and isinstance(part, int) and part < len(value):
            path, value = f"{path}[{part}]", value[part]
        elif isinstance(value, Mapping) and part in value:
            path, value = f"{path}.{part}", value[part]
        else:
            return None
    return path, value


def problems(
    model: type[BaseModel],
    values: Mapping[str, Any],
    prefix: str = "",
    where: str = "the config",
) -> list[str]:
    """Every problem of ``values`` against ``model``, one sentence each (empty: valid)."""
    try:
        model.model_validate(dict(values))
    except ValidationError as exc:
        errors = exc.errors()
    else:
        return []
    fields: dict[str, FieldInfo] = model.model_fields
    by_key: dict[str, list[dict[str, Any]]] = {}
    for error in errors:
        by_key.setdefault(str(error["loc"][0]) if error["loc"] else "", []).append(error)
    out = []
    for key, group in by_key.items():
        name = f"{prefix}{key}"
        if group[0]["type"] == "extra_forbidden":
            out.append(f"{name} is not a key of {where}{suggestion(key, list(fields))}")
            continue
        if group[0]["type"] == "missing":
            out.append(f"{name} is required: set {name}=<value>")
            continue
        value = values.get(key)
        located = _path(name, group[0]["loc"][1:], value) if len(group) == 1 else None
        if located is not None and len(group[0]["loc"]) > 1:
            path, item = located
            message = (
                str(group[0]["msg"])
                .replace("Input should be a valid", "expected a")
                .replace("Input should be", "expected")
            )
            out.append(f"{path}={item!r}: {message}")
            continue
        if any(e["type"] == "finite_number" for e in group):
            out.append(f"{name}={value!r}: expected a finite number (not NaN or infinity)")
            continue
        field = fields.get(key)
        expected = describe(field.annotation, field.metadata) if field else "another value"
        out.append(f"{name}={value!r}: expected {expected}")
    return out
