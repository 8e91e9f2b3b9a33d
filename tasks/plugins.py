"""One registry mechanism for everything users plug in by name: backends, sandboxes, hint policies,
tasks, scorers, purpose judges, training stages (docs/extending.md).

In-tree code registers with the kind's decorator (`@register_backend("name")`, ...). An installed
package registers through the entry-point group `cortbench.<kind>s` (`cortbench.backends`,
`cortbench.sandboxes`, `cortbench.scorers`, ...; a registry may name its group itself):

    [project.entry-points."cortbench.sandboxes"]
    mybox = "mypkg.sandbox:MySandbox"   # a factory (class or function), registered as "mybox"
    mypkg = "mypkg.plugins"             # or a module whose import registers entries itself

Everything loads lazily: the built-in entries and the group's module entries on the first `names()`
or `create()`, a factory entry point only when its name is asked for. A plug-in that fails to load
is one line naming its entry point, raised when it is asked for by name (and mentioned when an
unknown name is asked for); it never breaks the others. Names already registered (the built-in
ones) are not taken over by entry points.

It lives in `tasks`, the part every other part may import (data flows tasks -> harness -> analyzers
-> leaderboards), so that the task registry uses it too; `cortbench.harness.registry` re-exports it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

import yaml

T = TypeVar("T")


class Registry(Generic[T]):
    """Factories by name, of one kind. `load_builtins` imports the modules whose decorators register
    the built-in entries (lazily, so heavy optional dependencies load only when asked for); `error`
    is what unknown names, plug-ins that fail to load and bad arguments raise (one line); `group`
    is the entry-point group plug-ins use (default: `cortbench.` + the kind in the plural)."""

    def __init__(
        self,
        kind: str,
        error: type[Exception],
        load_builtins: Callable[[], None],
        *,
        group: str | None = None,
    ) -> None:
        self.kind, self.error, self._load_builtins = kind, error, load_builtins
        self.group = group or f"cortbench.{_plural(kind).replace(' ', '_')}"
        self._factories: dict[str, Callable[..., T]] = {}
        self._pending: dict[str, EntryPoint] = {}  # factory entry points, loaded when asked for
        self._broken: dict[str, str] = {}  # entry-point name -> why it did not load (one line)
        self._ready = False

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            self._factories[name] = factory
            return factory

        return decorate

    def names(self) -> list[str]:
        """Every name that can be asked for: registered, or declared by a plug-in not loaded yet."""
        self._prepare()
        return sorted({*self._factories, *self._pending})

    def has(self, name: str) -> bool:
        """Whether `name` is registered (loading its plug-in if it is one); False for a broken one."""
        self._prepare()
        if name not in self._factories and name in self._pending:
            self._load(self._pending.pop(name))
        return name in self._factories

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as `name`; the registry's error (one line) if there is none."""
        if not self.has(name):
            raise self.error(self.missing(name))
        return self._factories[name]

    def create(self, name: str, **kwargs: Any) -> T:
        factory = self.get(name)
        try:
            return factory(**kwargs)
        except TypeError as exc:  # an option this entry does not take: say so in one line
            if exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
                raise self.error(f"{self.kind} {name!r}: {exc}") from None
            raise

    @property
    def broken(self) -> dict[str, str]:
        """Plug-ins that failed to load: entry-point name -> the one line saying why."""
        self._prepare()
        return dict(self._broken)

    def missing(self, name: str, known: Iterable[str] | None = None, also: str = "") -> str:
        """Why `name` cannot be made, in one line: its plug-in's failure, or "unknown <kind>"
        with the `known` names (default: all), `also` (e.g. "(or a .jsonl file)") and any plug-in
        that failed to load (it may have been the one meant)."""
        self._prepare()
        if name in self._broken:
            return self._broken[name]
        line = f"unknown {self.kind} {name!r}; known: {', '.join(self.names() if known is None else known)}"
        line += f" {also}" if also else ""
        if self._broken:
            line += "; plug-ins that failed to load: " + "; ".join(self._broken.values())
        return line

    def _prepare(self) -> None:
        if self._ready:
            return
        self._ready = True
        try:
            self._load_builtins()
        except BaseException:
            self._ready = False
            raise
        for entry in sorted(entry_points(group=self.group), key=lambda e: e.name):
            if entry.name in self._factories:
                continue
            if entry.attr:
                self._pending.setdefault(entry.name, entry)
            else:
                self._load(entry)

    def _load(self, entry: EntryPoint) -> None:
        where = f"the {self.kind} plug-in {entry.name!r} ({self.group}: {entry.name} = {entry.value})"
        try:
            loaded = entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not take the others down
            self._broken[entry.name] = f"{where} failed to load: {_one_line(exc)}"
            return
        if entry.attr and entry.name not in self._factories:  # its import did not register it itself
            if callable(loaded):
                self._factories[entry.name] = loaded
            else:
                self._broken[entry.name] = f"{where} is not a factory: it names a {type(loaded).__name__}"


def _plural(kind: str) -> str:
    if re.search(r"(s|x|z|ch|sh)$", kind):
        return kind + "es"
    if re.search(r"[^aeiou]y$", kind):
        return kind[:-1] + "ies"
    return kind + "s"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class OptionError(ValueError):
    """A KEY=VALUE option that cannot be read; the message is one line."""


def parse_options(items: Iterable[str] | None, flag: str) -> dict[str, Any]:
    """`--backend-arg`, `--sandbox-arg`, `--judge-arg` ... values as keyword arguments: each item is
    KEY=VALUE, KEY a Python identifier, VALUE read as YAML (`4` an int, `0.9` a float, `true` a bool,
    `[a, b]` a list, `null` None, anything else text; `KEY=` is the empty string). Repeating a KEY
    keeps the last. OptionError (one line, naming `flag`) for anything else."""
    options: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise OptionError(f"{flag} takes KEY=VALUE, not {item!r}")
        try:
            options[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            raise OptionError(f"{flag} {item!r}: the value is not valid YAML (quote it)") from None
    return options


_SECRET = re.compile(r"token|key|secret|password", re.I)


def shown_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """`options` as records and reports keep them: values of secret-looking keys (token, api_key,
    password, ...) replaced by "***"."""
    return {k: "***" if _SECRET.search(k) and v not in (None, "") else v for k, v in options.items()}
