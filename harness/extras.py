"""Optional dependencies (the package's extras): one way to import them, and one line, naming the
extra to install, when one is missing; never a 50-line ModuleNotFoundError."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """An optional dependency is not installed. The `cortbench` command (cli.main) turns it into its
    one line and exit status 1, wherever it was raised."""


def require(module: str, extra: str, needed_by: str) -> ModuleType:
    """Import `module`, or raise MissingExtra: "<needed_by> needs <package>: pip install 'cortbench[<extra>]'"."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise MissingExtra(f"{needed_by} needs {package}: pip install 'cortbench[{extra}]'") from None
