"""Cells cannot install packages: the one line that says so, and the stand-ins for pip that print it.

A kernel has no network, so a real `pip install` fails only after its retries, with a wall of
text that hides the reason. Models ask for packages in every form: `!pip install x` and
`%pip install x` (IPython syntax, which the kernel rewrites), `import pip; pip.main([...])`,
`subprocess.run(["pip", "install", x])`, `os.system("python -m pip install x")`. Each of them
meets a stand-in instead, on the kernel's PATH and first on its import path, that prints
`refusal()` and fails. A courtesy, not a fence: the boundary is what stops the network.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import sys

# Import names a cell might reach for, in the order the refusal lists those that are importable.
CANDIDATES = (
    "numpy", "scipy", "sympy", "mpmath", "networkx", "pandas", "matplotlib", "rdkit", "sklearn",
    "statsmodels", "gmpy2", "z3", "cvxpy", "PIL",
)  # fmt: skip
COMMANDS = ("pip", "pip3", f"pip{sys.version_info[0]}.{sys.version_info[1]}", "conda", "mamba")
# `!pip install x`, `%pip install x`, `!python -m pip ...`, `%conda install ...`: a whole line
# that Python cannot parse (only looked for in cells that do not compile).
SHELL_INSTALL = re.compile(
    r"^([ \t]*)(?:!|%{1,2})[ \t]*(?:pip\d*(?:\.\d+)?|python\d*(?:\.\d+)?[ \t]+-m[ \t]+pip|conda|mamba|uv[ \t]+pip)\b.*$",
    re.M,
)
PIP_MAIN = '''"""A stand-in for pip: the sandbox has no network, so nothing can be installed."""

MESSAGE = {message!r}


def main(args=None):
    print(MESSAGE)
    return 1
'''
PIP_ALIASES = {  # module -> source, for the entry points pip has had (console scripts, pip.main)
    "pip/__main__.py": "import sys\n\nfrom pip import main\n\nsys.exit(main())\n",
    "pip/_internal/__init__.py": "from pip import main  # noqa: F401\n",
    "pip/_internal/main.py": "from pip import main  # noqa: F401\n",
    "pip/_internal/cli/__init__.py": "",
    "pip/_internal/cli/main.py": "from pip import main\n\ncli = main\n",
}


@functools.cache
def refusal() -> str:
    """The line a cell reads when it tries to install: what is importable instead."""
    available = [name for name in CANDIDATES if _importable(name)]
    return f"no network: packages cannot be installed; available: {', '.join(available)} and the standard library"


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def rewrite_shell_lines(code: str) -> str:
    """`!pip install x` lines (and their kin) become a print of the refusal, at the same line and
    indentation, so the rest of the cell still runs and its line numbers do not move."""
    return SHELL_INSTALL.sub(lambda m: f"{m.group(1)}print({refusal()!r})", code)


def stand_in_paths(root: str) -> tuple[str, str]:
    """The stand-ins' folders below `root`: (for PATH, for the import path)."""
    return os.path.join(root, "bin"), os.path.join(root, "python")


def write_stand_ins(root: str) -> tuple[str, str]:
    """Write the pip stand-ins below `root`; returns `stand_in_paths(root)`."""
    bindir, pydir = stand_in_paths(root)
    message = refusal().replace("'", "")
    script = f"#!/bin/sh\necho '{message}'\nexit 1\n"
    files = {os.path.join(bindir, name): (script, 0o755) for name in COMMANDS}
    files[os.path.join(pydir, "pip/__init__.py")] = (PIP_MAIN.format(message=refusal()), 0o644)
    files |= {os.path.join(pydir, path): (source, 0o644) for path, source in PIP_ALIASES.items()}
    for path, (text, mode) in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
        os.chmod(path, mode)
    for folder, _, _ in os.walk(root):
        os.chmod(folder, 0o755)  # the kernels' host id must traverse them whatever the umask
    return bindir, pydir
