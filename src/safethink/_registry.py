"""Registries for extension points (attacks, judges, guards, teachers).

A plugin class registers under a unique name; registering a duplicate raises. Objects built
through :meth:`Registry.create` remember how they were built (name + arguments), so a run can be
rebuilt exactly from its log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import SpecError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, type[T]] = {}

    def register(self, name: str | None = None) -> Callable[[type[T]], type[T]]:
        """Class decorator; the name defaults to the class attribute ``name``."""

        def deco(cls: type[T]) -> type[T]:
            key = name or getattr(cls, "name", None)
            if not key:
                raise ValueError(f"{cls.__name__}: a registered {self.kind} needs a name")
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered ({self._items[key].__name__})")
            self._items[key] = cls
            return cls

        return deco

    def get(self, name: str) -> type[T]:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise SpecError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build a registered plugin and record ``build_spec = {"name", "args"}`` on it."""
        cls = self.get(name)
        try:
            obj = cls(**kwargs)
        except TypeError as e:
            raise SpecError(f"{self.kind} {name!r}: bad arguments {kwargs}: {e}") from None
        obj.build_spec = {"name": name, "args": dict(kwargs)}  # type: ignore[attr-defined]
        return obj

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def items(self) -> list[tuple[str, type[T]]]:
        return sorted(self._items.items())
