"""The interface registry: what a catalog entry holds, how one is registered, looked up, and
how a call's arguments are built from YAML values.

`graph.catalog` registers every interface (its argument dataclasses) with `interface`; import
the entries through it.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from graph.errors import GraphError
from graph.registry import Registry
from graph.spec import CallKind


@dataclass(frozen=True)
class InterfaceInfo:
    """One catalog entry.

    `inputs` and `outputs` name the role of each position in a call's input and output
    keys: a call binds its own key names to these roles by position. The first
    `required_inputs` inputs must be given; the rest are optional.
    """

    name: str
    kind: CallKind
    args_type: type
    doc: str
    needs_weights: bool = True
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    required_inputs: int = 0


INTERFACES: Registry[InterfaceInfo] = Registry("interface", error=GraphError)
"""The catalog: interface name -> InterfaceInfo."""


def interface(name: str, kind: CallKind, *, inputs: tuple[str, ...], outputs: tuple[str, ...] = (),
              required: int | None = None, needs_weights: bool = True) -> Callable[[type], type]:
    """Class decorator: register an args dataclass as interface `name` of `kind`.

    `inputs`/`outputs` are the roles of a call's keys by position; `required` inputs
    (default: all) must be present.
    """

    def register(cls: type) -> type:
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        INTERFACES.add(name, InterfaceInfo(name, kind, cls, doc, needs_weights, tuple(inputs), tuple(outputs),
                                       len(inputs) if required is None else required))
        return cls

    return register


def known_interfaces() -> tuple[str, ...]:
    """Names of every registered interface, sorted."""
    return tuple(sorted(INTERFACES))


def get_interface(name: str) -> InterfaceInfo:
    """Look up an interface; an unknown name lists the known ones and the closest match."""
    return INTERFACES.get(name)


def make_args(name: str, values: Mapping[str, Any] | None, *, where: str = "") -> Any:
    """Build the typed args of interface `name`, naming any unknown or ill-typed argument."""
    info = get_interface(name)
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(info.args_type)}
    prefix = f"{where}: " if where else ""
    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise GraphError(
                f"{prefix}unknown argument {key!r} for interface {name!r}{hint}; "
                f"known: {', '.join(sorted(fields)) or 'none'}"
            )
    coerced = {}
    for key, value in values.items():
        default = fields[key].default
        coerced[key] = _coerce(default, value, f"{prefix}argument {key!r} of interface {name!r}")
    try:
        return info.args_type(**coerced)
    except (TypeError, ValueError) as exc:
        raise GraphError(f"{prefix}interface {name!r}: {exc}") from None


def _coerce(default: Any, value: Any, what: str) -> Any:
    """Check `value` against the type of the field's default; ints widen to floats."""
    if default is dataclasses.MISSING or default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, tuple):
        if isinstance(value, list | tuple):
            return tuple(value)
    else:
        return value
    raise GraphError(f"{what} must be {type(default).__name__}, got {value!r}")
