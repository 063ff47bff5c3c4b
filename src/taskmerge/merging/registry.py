"""The one declaration of every merge method: its config name and what it supports.

A method class declares itself where it is defined::

    @register_method("sum", scaled=True, lines="multitask")
    class TaskArithmetic(MergeMethod): ...

Everything that lists methods is derived from here: the Python API's method table and its
check for an explicit ``scaling_coef``, which methods take LiNeS (and the error message for the
others), ``python main.py --help`` and the tests' parametrisation. The config name is also the
file name of the method's YAML, ``config/method/<name>.yaml`` (a test checks the two agree).

Every module of :mod:`taskmerge.merging` is imported on the first lookup, so a new method is its
module and its YAML: nothing else lists it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from taskmerge.errors import ConfigError

LinesMode = Literal["multitask", "editing"]


@dataclass(frozen=True)
class MethodSpec:
    """What a merge method is and supports.

    Attributes:
        name: The config name (``method=<name>``, ``config/method/<name>.yaml``).
        cls: The class; ``defaults`` are passed to it on top of the caller's keywords.
        scaled: Its result is scaled by a coefficient (swept on Val; the Python API, which
            sweeps nothing, needs ``scaling_coef``).
        lines: How LiNeS (``apply_lines``) applies: ``"multitask"`` (scale the merged vector,
            alpha from the norms, beta swept), ``"editing"`` (single-task editing), or None
            (refused).
        summary: One line for ``--help`` (default: the first line of the class docstring).
        defaults: Keyword arguments that make this variant (e.g. ``orthogonalize="whiten"``).
    """

    name: str
    cls: type
    scaled: bool
    lines: LinesMode | None = None
    summary: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_data(self) -> bool:
        """The method learns from data (AdaMerging, RegMean, Fisher): it needs a
        :class:`~taskmerge.merging.data_methods.MergeData` besides the task vectors."""
        return bool(getattr(self.cls, "needs_data", False))

    @property
    def factory(self) -> Callable[..., Any]:
        """The class with this variant's defaults bound."""
        return partial(self.cls, **self.defaults) if self.defaults else self.cls


_REGISTRY: dict[str, MethodSpec] = {}
_DISCOVERED = False


def register_method(
    name: str,
    *,
    scaled: bool,
    lines: LinesMode | None = None,
    summary: str = "",
    **defaults: Any,
) -> Callable[[type], type]:
    """Class decorator: declare a merge method under its config name (see :class:`MethodSpec`).

    A class may be registered several times with different ``defaults`` (variants such as
    ``TSVM_2``). The first registration sets the class's ``name`` attribute.
    """

    def decorator(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"method {name!r} is registered twice")
        doc = (cls.__doc__ or "").strip().splitlines()
        text = summary or (doc[0].replace("``", "") if doc else name)
        _REGISTRY[name] = MethodSpec(name, cls, scaled, lines, text, dict(defaults))
        if "name" not in cls.__dict__:
            cls.name = name
        return cls

    return decorator


def _discover() -> None:
    """Import every module of the merging package (each registers its methods)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    package = importlib.import_module("taskmerge.merging")
    modules = [
        f"taskmerge.merging.{module.name}" for module in pkgutil.iter_modules(package.__path__)
    ]
    for module in modules:
        importlib.import_module(module)
    # one order whatever was imported first (a test importing a method module directly would
    # otherwise move its methods first): by module, then by registration within a module
    rank = {module: index for index, module in enumerate(modules)}
    ordered = sorted(_REGISTRY.items(), key=lambda item: rank.get(item[1].cls.__module__, -1))
    _REGISTRY.clear()
    _REGISTRY.update(ordered)
    _DISCOVERED = True


def method_specs() -> dict[str, MethodSpec]:
    """Config name -> spec, for every registered method."""
    _discover()
    return dict(_REGISTRY)


def method_names() -> list[str]:
    """Every method's config name, by module (alphabetical), then registration order."""
    return list(method_specs())


def method_spec(name: str) -> MethodSpec:
    """The spec of one method.

    Raises:
        ConfigError: An unknown name (the message lists the known ones).
    """
    specs = method_specs()
    if name not in specs:
        raise ConfigError(f"unknown method {name!r}: choose one of {', '.join(specs)}")
    return specs[name]


def data_free_names() -> list[str]:
    """The methods that need only the task vectors (every one but those that learn from data)."""
    return [name for name, spec in method_specs().items() if not spec.needs_data]


def lines_methods(mode: LinesMode | None = None) -> list[str]:
    """Names of the methods that take ``apply_lines`` (of one mode, or of either)."""
    return [
        name
        for name, spec in method_specs().items()
        if spec.lines is not None and (mode is None or spec.lines == mode)
    ]


def help_text() -> str:
    """One line per method for ``--help``: name, what it is, coefficient and LiNeS support."""
    lines = []
    for name, spec in method_specs().items():
        flags = []
        if spec.scaled:
            flags.append("coefficient swept on Val")
        if spec.lines:
            flags.append(f"LiNeS: {spec.lines}")
        if spec.needs_data:
            flags.append("learns from data")
        suffix = f" [{'; '.join(flags)}]" if flags else ""
        lines.append(f"  {name:<12} {spec.summary}{suffix}")
    return "\n".join(lines)
