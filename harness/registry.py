"""One registry mechanism for everything users plug in by name (backends, sandboxes, hint policies,
judges, stages, scorers, ...), with entry-point discovery (docs/extending.md).

Defined in `cortbench.tasks.plugins`, in the part every other part may import (the task registry
uses it too); the harness's parts and plug-ins import it from here."""

from __future__ import annotations

from ..tasks.plugins import OptionError, Registry, parse_options, shown_options

__all__ = ["OptionError", "Registry", "parse_options", "shown_options"]
