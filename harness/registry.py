"""One registry mechanism for everything users plug in by name (sandboxes, backends, ...)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Factories by name. `load_builtins` imports the modules whose decorators register the
    built-in entries, lazily, so heavy optional dependencies load only when asked for."""

    def __init__(self, kind: str, error: type[Exception], load_builtins: Callable[[], None]) -> None:
        self.kind, self.error, self._load_builtins = kind, error, load_builtins
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            self._factories[name] = factory
            return factory

        return decorate

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._factories)

    def create(self, name: str, **kwargs: Any) -> T:
        known = self.names()
        if name not in self._factories:
            raise self.error(f"unknown {self.kind} {name!r}; known: {', '.join(known)}")
        try:
            return self._factories[name](**kwargs)
        except TypeError as exc:  # an option this entry does not take: say so in one line
            if exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
                raise self.error(f"{self.kind} {name!r}: {exc}") from None
            raise
