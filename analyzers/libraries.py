"""Library adoption: which modules the model's code imports, where first, and how often.

Imports are read with `ast` from each cell alone: `import a.b as c`, `from a.b import c`,
`__import__("a")` and `importlib.import_module("a")` (also as a bare `import_module("a")`), at any
depth (inside functions, conditionals, try blocks). Relative imports and imports of computed names
are ignored. A module counts by its top-level name (`rdkit.Chem` -> `rdkit`).

A cell that does not parse on its own is counted as unparseable and scanned line by line with a
conservative regex that only accepts a line starting with `import x` or `from x import`; what it
finds is marked `via_regex`. So a model that writes `from rdkit import Chem` in a cell with a typo
elsewhere still counts as adopting rdkit, and nothing in strings or comments is picked up by `ast`.

The CoRT paper's headline out-of-distribution figure is RDKit adoption: the share of trajectories
on chemistry problems that import rdkit (81.3% for its model).
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

ImportForm = Literal["import", "from", "__import__", "import_module", "regex"]

STDLIB = frozenset(sys.stdlib_module_names)
CHEMISTRY_MODULE = "rdkit"

_NEWLINE = re.compile(r"\r\n|\r|\n")
_NAME = r"[A-Za-z_]\w*(?:[ \t]*\.[ \t]*[A-Za-z_]\w*)*"
_IMPORT_LINE = re.compile(
    rf"^[ \t]*import[ \t]+({_NAME}(?:[ \t]+as[ \t]+\w+)?(?:[ \t]*,[ \t]*{_NAME}(?:[ \t]+as[ \t]+\w+)?)*)[ \t]*(?:#.*)?$",
    re.M,
)
_FROM_LINE = re.compile(rf"^[ \t]*from[ \t]+({_NAME})[ \t]+import\b", re.M)


@dataclass(frozen=True)
class Import:
    """One imported module as written (`name`), its top-level module, and where in the cell."""

    name: str
    form: ImportForm
    offset: int  # characters into the cell's code

    @property
    def top(self) -> str:
        return self.name.split(".", 1)[0]


@dataclass(frozen=True)
class CellImports:
    imports: list[Import]
    parseable: bool


def is_stdlib(module: str) -> bool:
    return module.split(".", 1)[0] in STDLIB


def imports_in(code: str) -> CellImports:
    """The imports of one cell, in the order they appear."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: null bytes
        return CellImports(_regex_imports(code), False)
    if "import" not in code:  # every form below spells "import"
        return CellImports([], True)
    found: list[tuple[int, int, str, ImportForm]] = []
    dynamic = "__import__" in code or "import_module" in code  # else statements are enough (faster)
    for node in ast.walk(tree) if dynamic else _statements(tree.body):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, node.col_offset, a.name, "import") for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.append((node.lineno, node.col_offset, node.module, "from"))
        elif isinstance(node, ast.Call):
            name = _dynamic_import(node)
            if name is not None:
                found.append((node.lineno, node.col_offset, name, _call_form(node)))
    found.sort(key=lambda f: (f[0], f[1]))
    starts = _line_starts(code)
    return CellImports(
        [Import(n, form, _char_offset(code, starts, ln, col)) for ln, col, n, form in found], True
    )


def _statements(body: list) -> Iterator[ast.AST]:
    """Every statement at any depth (function and class bodies, branches, handlers, match cases),
    without descending into expressions: imports are statements."""
    for node in body:
        yield node
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            inner = getattr(node, name, None)
            if isinstance(inner, list):
                yield from _statements(inner)


def _call_form(node: ast.Call) -> ImportForm:
    func = node.func
    return "__import__" if isinstance(func, ast.Name) and func.id == "__import__" else "import_module"


def _dynamic_import(node: ast.Call) -> str | None:
    """The module of `__import__("x")`, `importlib.import_module("x")` or `import_module("x")`,
    when it is a literal absolute name."""
    func = node.func
    if isinstance(func, ast.Name) and func.id in ("__import__", "import_module"):
        pass
    elif not (
        isinstance(func, ast.Attribute)
        and func.attr == "import_module"
        and isinstance(func.value, ast.Name)
        and func.value.id == "importlib"
    ):
        return None
    if not node.args or not isinstance(node.args[0], ast.Constant) or not isinstance(node.args[0].value, str):
        return None
    name = node.args[0].value.strip()
    if isinstance(func, ast.Name) and func.id == "__import__":
        level = (
            node.args[4]
            if len(node.args) > 4
            else next((k.value for k in node.keywords if k.arg == "level"), None)
        )
        if isinstance(level, ast.Constant) and level.value not in (0, None):
            return None
    if not name or name.startswith(".") or not all(p.isidentifier() for p in name.split(".")):
        return None
    return name


def _line_starts(code: str) -> list[int]:
    return [0, *(m.end() for m in _NEWLINE.finditer(code))]


def _char_offset(code: str, starts: list[int], lineno: int, col: int) -> int:
    """ast's col_offset counts UTF-8 bytes; turn (line, byte column) into a character offset."""
    start = starts[lineno - 1] if lineno - 1 < len(starts) else len(code)
    line = code[start : start + col]
    if not line.isascii():
        end = starts[lineno] if lineno < len(starts) else len(code)
        col = len(code[start:end].encode()[:col].decode("utf-8", "ignore"))
    return start + col


def _regex_imports(code: str) -> list[Import]:
    """Statement-start `import a, b.c as d` and `from a.b import ...` lines of an unparseable cell."""
    found: list[Import] = []
    for match in _IMPORT_LINE.finditer(code):
        for part in match.group(1).split(","):
            name = re.split(r"[ \t]+as[ \t]+", part.strip())[0]
            found.append(Import(re.sub(r"\s+", "", name), "regex", match.start(1)))
    found.extend(
        Import(re.sub(r"\s+", "", m.group(1)), "regex", m.start(1)) for m in _FROM_LINE.finditer(code)
    )
    found.sort(key=lambda i: i.offset)
    return found


def module_rows(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per top-level module a trajectory imports, from its cell rows (in cell order; each
    with `cell_index`, `executed`, `offset` and `import_list`, a list of `Import`)."""
    rows: dict[str, dict[str, Any]] = {}
    for cell in cells:
        seen_here: set[str] = set()
        for imp in cell["import_list"]:
            top = imp.top
            row = rows.get(top)
            if row is None:
                row = rows[top] = {
                    "module": top,
                    "stdlib": top in STDLIB,
                    "first_cell_index": cell["cell_index"],
                    "first_offset": None if cell["offset"] is None else cell["offset"] + imp.offset,
                    "cells": 0,
                    "executed": False,
                    "via_regex_only": True,
                    "names": [],
                }
            if top not in seen_here:
                row["cells"] += 1
                seen_here.add(top)
            row["executed"] = row["executed"] or cell["executed"]
            row["via_regex_only"] = row["via_regex_only"] and imp.form == "regex"
            if imp.name not in row["names"]:
                row["names"].append(imp.name)
    return list(rows.values())
