"""One registry type for every name -> thing table (interfaces, templates, heuristics, rules,
dataset formats and generators, interface implementations).

    TEMPLATES: Registry[TemplateInfo] = Registry("template")

    @TEMPLATES.register("ppo")
    def ppo(...): ...

    TEMPLATES.get("ppp")  # UnknownNameError: unknown template 'ppp' (did you mean 'ppo'?); known: ...

Registering a name twice raises (a bug: two things claim one name). A miss raises
`UnknownNameError` (or the `error` given), a `UserError`, whose one line names the closest known name and lists
them all; `key` (e.g. "graph.template") says which configuration key the name came from.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from graph.errors import UnknownNameError, UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to values, in registration order."""

    def __init__(self, kind: str, *, key: str | None = None,
                 error: type[UserError] = UnknownNameError) -> None:
        self.kind = kind
        """What the registry holds, for messages ("interface", "reward rule", ...)."""
        self.key = key
        """The configuration key names come from, when there is one (for messages)."""
        self.error = error
        """The UserError subclass a miss raises (a GraphError for graph names)."""
        self._items: dict[str, T] = {}

    def add(self, name: str, value: T) -> T:
        """Register `value` under `name`; a duplicate name raises ValueError."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = value
        return value

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""

        def deco(value: T) -> T:
            return self.add(name, value)

        return deco

    def get(self, name: str) -> T:
        """The value of `name`; UnknownNameError with the closest match otherwise."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise self.error(self.miss_message(name)) from None

    def miss_message(self, name: object) -> str:
        """The one-line message of a miss: the name, the closest known one, all known ones."""
        close = difflib.get_close_matches(str(name), list(self._items), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        where = f"{self.key}: " if self.key else ""
        return f"{where}unknown {self.kind} {name!r}{hint}; known: {', '.join(sorted(self._items)) or 'none'}"

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
