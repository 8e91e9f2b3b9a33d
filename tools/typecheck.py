"""Type-check the package with mypy: `python tools/typecheck.py` (tox -e lint runs it).

mypy cannot see the `cortbench.*` layout: the top-level folders are `cortbench.<part>` only through
setuptools' `package-dir` (pyproject.toml), which an editable install serves with an import hook
that mypy never runs, and mypy has no setting that maps a folder to another package name. So this
builds that view (`cortbench/<part>` links to each mapped folder) in `--work` (a temporary folder by
default; a kept one also keeps mypy's cache) and checks `-p cortbench` there with pyproject.toml's
`[tool.mypy]`. The output names the checkout's files (`harness/cli.py`, not `cortbench/harness/cli.py`).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "cortbench"


def parts() -> dict[str, Path]:
    """`harness` -> <checkout>/harness, ... : the package's parts, as pyproject.toml maps them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dir: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    prefix = PACKAGE + "."
    return {
        name.removeprefix(prefix): ROOT / folder
        for name, folder in package_dir.items()
        if name.startswith(prefix) and "." not in name.removeprefix(prefix)
    }


def build_view(work: Path) -> Path:
    """<work>/cortbench/<part> -> the part's folder; returns the folder to run mypy from."""
    package = work / PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    wanted = parts()
    for entry in package.iterdir():  # a part removed or renamed since the last run
        if entry.is_symlink() and entry.name not in wanted:
            entry.unlink()
    for name, folder in wanted.items():
        link = package / name
        if link.is_symlink() and link.resolve() == folder.resolve():
            continue
        if link.is_symlink():
            link.unlink()
        link.symlink_to(folder, target_is_directory=True)
    return work


def check(work: Path, extra: list[str]) -> int:
    view = build_view(work)
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(work / ".mypy_cache"),
        "-p",
        PACKAGE,
        *extra,
    ]
    done = subprocess.run(command, cwd=view, capture_output=True, text=True)
    # cortbench/harness/cli.py -> harness/cli.py (the checkout's path, which editors can open)
    folders = {name: folder.relative_to(ROOT).as_posix() for name, folder in parts().items()}
    pattern = re.compile(rf"^{PACKAGE}/({'|'.join(map(re.escape, folders))})/", re.MULTILINE)
    sys.stdout.write(pattern.sub(lambda m: folders[m.group(1)] + "/", done.stdout))
    sys.stderr.write(done.stderr)
    return done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work", type=Path, help="keep the view and mypy's cache here (default: a temporary folder)"
    )
    args, extra = parser.parse_known_args()  # the rest goes to mypy
    if args.work:
        return check(args.work.resolve(), extra)
    with tempfile.TemporaryDirectory(prefix="cortbench-typecheck-") as work:
        return check(Path(work), extra)


if __name__ == "__main__":
    sys.exit(main())
