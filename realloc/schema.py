"""Introspection of the experiment schema: field docs, key paths and suggestions."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import types
import typing
from functools import cache
from typing import Any

from graph.errors import UserError
from realloc.config import ExperimentConfig


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The one-line docstring under each field of a dataclass, by field name."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = nxt.value.value.strip()
    return docs


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap(tp: Any) -> Any:
    """Strip Optional from a type."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def resolve(path: str) -> tuple[str, Any] | None:
    """Walk a dotted key path through the schema.

    Returns ("field", type) for a known path, or None when a component is unknown.
    Keys of dict-valued fields (model roles, call names) are free.
    """
    tp: Any = ExperimentConfig
    for part in path.split("."):
        tp = _unwrap(tp)
        if dataclasses.is_dataclass(tp):
            hints = _hints(tp)
            if part not in hints:
                return None
            tp = hints[part]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif tp is Any or typing.get_origin(tp) is list:
            return ("field", Any)
        else:
            return None
    return ("field", tp)


def parent_class(path: str) -> type | None:
    """The dataclass that should hold the last component of `path`, if any."""
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    if not parent:
        return ExperimentConfig
    found = resolve(parent)
    if found is None:
        return None
    tp = _unwrap(found[1])
    if typing.get_origin(tp) is dict:
        return None
    return tp if dataclasses.is_dataclass(tp) else None


def suggest(path: str) -> str:
    """Text naming the closest valid keys for an unknown key path."""
    parts = path.split(".")
    # find the first unknown component
    for i in range(1, len(parts) + 1):
        if resolve(".".join(parts[:i])) is None:
            prefix = ".".join(parts[: i - 1])
            cls = parent_class(".".join(parts[:i]))
            if cls is None:
                return ""
            valid = list(_hints(cls))
            close = difflib.get_close_matches(parts[i - 1], valid, n=3, cutoff=0.5)
            where = f"'{prefix}'" if prefix else "the top level"
            hint = f"did you mean {', '.join(repr(f'{prefix}.{c}' if prefix else c) for c in close)}? " if close else ""
            return f"{hint}valid keys at {where}: {', '.join(valid)}"
    return ""


def reference(section: str | None = None) -> str:
    """A reference of the schema's keys with their docs and defaults."""
    lines: list[str] = []

    def walk(cls: type, prefix: str, depth: int) -> None:
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            tp = _unwrap(_hints(cls)[f.name])
            if dataclasses.is_dataclass(tp):
                lines.append(f"{key}:  # {docs.get(f.name, '')}")
                walk(tp, key + ".", depth + 1)
                continue
            if typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
                lines.append(f"{key}.<name>:  # {docs.get(f.name, '')}")
                walk(typing.get_args(tp)[1], f"{key}.<name>.", depth + 1)
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = "???"
            lines.append(f"{key} = {default!r}  # {docs.get(f.name, '')}")

    if section:
        found = resolve(section)
        tp = _unwrap(found[1]) if found else None
        if typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        if not dataclasses.is_dataclass(tp):
            raise UserError(f"unknown config section {section!r}; {suggest(section)}")
        walk(tp, section + ".", 0)
    else:
        walk(ExperimentConfig, "", 0)
    return "\n".join(lines)
