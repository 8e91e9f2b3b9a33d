"""Build time only: the editable install's half of `lm_eval --tasks cort_math` with no --include_path.

lm-eval 0.4.13 finds tasks only by walking its own lm_eval/tasks/ folder on disk. A wheel puts our
YAMLs there as the package lm_eval.tasks.cortbench; an editable install (`pip install -e .`) gets an
import hook instead and no files, so lm-eval would not see them. This setuptools command
(pyproject.toml, [tool.setuptools.cmdclass]) adds to the editable wheel one stub per task YAML, at
lm_eval/tasks/cortbench/, that includes the file in this checkout: pip installs the stubs into
site-packages like any wheel file and uninstalling removes them; edits to a task are live, a new task
file needs `pip install -e .` again. Nothing here runs when cortbench or lm-eval is imported.
(setuptools' editable wheel has no other way in: it installs no package files, and no data files.)
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path

from setuptools.command.editable_wheel import editable_wheel

TASK_FILES = "tasks/lm_eval_tasks"  # in the checkout; a wheel installs it as lm_eval/tasks/cortbench
STUBS = "lm_eval/tasks/cortbench"  # in the wheel's root, which is site-packages
STUB_NOTE = "# Written by an editable install of cortbench (tasks/lm_eval_editable.py). The task:"


class EditableWheel(editable_wheel):
    """setuptools' editable wheel, then the task stubs added to it (with their RECORD lines)."""

    def run(self) -> None:
        super().run()
        source = Path(self.project_dir, TASK_FILES).resolve()
        stubs = {
            f"{STUBS}/{task_file.name}": f"{STUB_NOTE}\ninclude: {json.dumps(str(task_file))}\n".encode()
            for task_file in sorted(source.glob("*.yaml"))
        }  # json.dumps: a YAML string, whatever the path holds
        wheels = list(Path(self.dist_dir).glob(f"{self.distribution.get_name()}-*.editable-*.whl"))
        if len(wheels) != 1:  # setuptools named it otherwise: lm-eval would silently miss the tasks
            raise RuntimeError(f"cortbench: expected one editable wheel in {self.dist_dir}, found {wheels}")
        add_to_wheel(wheels[0], stubs)


def add_to_wheel(wheel: Path, files: dict[str, bytes]) -> None:
    """Rewrite `wheel` with `files` added, each recorded in its RECORD (hash and size), as pip checks."""
    with zipfile.ZipFile(wheel) as old:
        entries = {info: old.read(info) for info in old.infolist()}
    [record] = [info for info in entries if info.filename.endswith(".dist-info/RECORD")]
    rows = [row for row in csv.reader(io.StringIO(entries.pop(record).decode())) if row]
    rows = [row for row in rows if row[0] != record.filename]  # RECORD lists itself last, with no hash
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append([name, f"sha256={digest}", str(len(data))])
    rows.append([record.filename, "", ""])
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as new:
        for info, data in entries.items():
            new.writestr(info, data)
        for name, data in files.items():
            new.writestr(name, data)
        new.writestr(record, text.getvalue())
