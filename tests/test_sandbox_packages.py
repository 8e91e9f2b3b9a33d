"""The scientific stack cells import (issue 13) works in a kernel, and installing says it cannot."""

import importlib.util
from pathlib import Path

import pytest

from cortbench.harness.sandbox import DEFAULT_PRELOAD, ExecStatus, LocalSandbox, SandboxConfig

# The core dependencies, in the order the line lists them; optional ones (rdkit, ...) follow.
REFUSAL = "no network: packages cannot be installed; available: numpy, scipy, sympy, mpmath, networkx, pandas, matplotlib"

STACK_CELLS = {
    "scipy": "from scipy.optimize import brentq\nfrom scipy.integrate import quad\nfrom scipy import stats\n"
    "print(round(brentq(lambda x: x * x - 2, 0, 2), 6), round(quad(lambda x: x * x, 0, 1)[0], 6),"
    " round(stats.norm.cdf(0), 3))",
    "networkx": "import networkx as nx\nprint(nx.shortest_path_length(nx.cycle_graph(10), 0, 5))",
    "mpmath": "import mpmath\nmpmath.mp.dps = 30\nprint(mpmath.nstr(mpmath.zeta(2), 20))",
    "pandas": "import pandas as pd\nprint(pd.DataFrame({'a': [1, 2, 3]}).a.sum())",
}
STACK_OUTPUT = {
    "scipy": "1.414214 0.333333 0.5",
    "networkx": "5",
    "mpmath": "1.6449340668482264365",
    "pandas": "6",
}

MATPLOTLIB_CELL = """
import os, tempfile, matplotlib
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.plot([0, 1, 2], [0, 1, 4]); ax.set_title("x squared")
path = os.path.join(tempfile.gettempdir(), "plot.png")
fig.savefig(path)
print(matplotlib.get_backend().lower(), path.startswith(os.getcwd()), matplotlib.get_cachedir().startswith(os.getcwd()),
      os.path.getsize(path) > 1000)
"""

PIP_FORMS = {
    "!pip": "!pip install foo",
    "%pip": "%pip install foo bar",
    "!pip indented": "for _ in range(1):\n    !pip install -q foo",
    "import pip": "import pip\npip.main(['install', 'foo'])",
    "pip console entry": "from pip._internal.cli.main import main\nmain(['install', 'foo'])",
    "subprocess pip": "import subprocess\nsubprocess.run(['pip', 'install', 'foo'])",
    "subprocess python -m pip": "import subprocess, sys\nsubprocess.run([sys.executable, '-m', 'pip', 'install', 'foo'])",
    "os.system pip": "import os\nos.system('pip install foo')",
    "os.system pip3": "import os\nos.system('pip3 install foo')",
    "shell python -m pip": "import subprocess\nsubprocess.run('python3 -m pip install foo', shell=True)",
}


@pytest.mark.parametrize("module", sorted(STACK_CELLS))
async def test_the_scientific_stack_imports_and_works(sandbox, module):
    result = await sandbox.run_code(STACK_CELLS[module], timeout=30)
    assert result.status == ExecStatus.OK, result.output
    assert result.output == STACK_OUTPUT[module]


async def test_matplotlib_draws_headless_into_the_kernels_tmp(sandbox):
    result = await sandbox.run_code(MATPLOTLIB_CELL, timeout=30)
    assert result.status == ExecStatus.OK, result.output
    assert (
        result.output == "agg True True True"
    )  # Agg; the figure and the font cache in the kernel's own folder
    if sandbox.isolated:
        assert (await sandbox.run_code("import os; print(os.getcwd())")).output == "/tmp"


async def test_rdkit_imports_when_installed(sandbox):
    if importlib.util.find_spec("rdkit") is None:
        pytest.skip("rdkit is not installed: pip install 'cortbench[chem]'")
    result = await sandbox.run_code("from rdkit import Chem\nprint(Chem.MolFromSmiles('CCO').GetNumAtoms())")
    assert result.output == "3"


def test_scipy_and_networkx_are_preloaded_not_matplotlib():
    assert {"scipy.optimize", "scipy.special", "scipy.integrate", "scipy.stats", "networkx"} <= set(
        DEFAULT_PRELOAD
    )
    assert not any(name.startswith(("matplotlib", "pandas")) for name in DEFAULT_PRELOAD)


async def test_kernels_draw_independent_scipy_samples(sandbox):
    code = "from scipy import stats\nprint(stats.norm.rvs())"
    draws = {(await sandbox.run_code(code)).output for _ in range(3)}
    assert len(draws) == 3


@pytest.mark.parametrize("form", sorted(PIP_FORMS))
async def test_every_way_to_pip_install_gets_one_clear_line(sandbox, form):
    result = await sandbox.run_code(PIP_FORMS[form], timeout=30)
    assert result.status == ExecStatus.OK, result.output
    assert result.output.startswith(REFUSAL) and result.output.endswith(" and the standard library")
    assert "\n" not in result.output


async def test_the_line_lists_optional_packages_only_when_importable(sandbox):
    output = (await sandbox.run_code("!pip install foo")).output
    assert ("rdkit" in output) == (importlib.util.find_spec("rdkit") is not None)


async def test_a_failed_install_then_an_import_still_shows_the_line(sandbox):
    code = "import subprocess, sys\nsubprocess.check_call([sys.executable, '-m', 'pip', 'install', 'foo'])\nimport foo"
    result = await sandbox.run_code(code, timeout=30)
    assert result.status == ExecStatus.ERROR and result.error_name == "CalledProcessError"
    assert result.output.splitlines()[-1].startswith(REFUSAL)


async def test_the_rest_of_a_cell_with_pip_lines_runs_with_its_line_numbers(sandbox):
    async with sandbox.session() as kernel:
        ran = await kernel.run("x = 2\n!pip install foo\nprint(x ** 10)")
        failed = await kernel.run("!pip install foo\n1 / 0")
    assert ran.output.splitlines() == [ran.output.splitlines()[0], "1024"]
    assert ran.output.startswith(REFUSAL)
    assert 'File "<cell-2>", line 2' in failed.output and REFUSAL in failed.output


async def test_valid_python_and_other_shell_lines_are_left_alone(sandbox):
    in_string = await sandbox.run_code("s = '''\n!pip install foo\n'''\nprint(repr(s))")
    assert in_string.output == "'\\n!pip install foo\\n'"
    other = await sandbox.run_code("!ls")
    assert other.error_name == "SyntaxError"


async def test_pip_stand_ins_work_without_namespaces():
    async with LocalSandbox(SandboxConfig(isolation="none", warm_kernels=0)) as sb:
        for form in ("!pip", "subprocess pip", "subprocess python -m pip"):
            assert (await sb.run_code(PIP_FORMS[form], timeout=30)).output.startswith(REFUSAL), form


async def test_a_preloaded_matplotlib_writes_nothing_into_the_hosts_tmp():
    """The zygote pre-loads before it leaves the host's filesystem, with HOME=/tmp: a library that
    writes caches on import (matplotlib's font list) must write them in a private folder."""
    caches = [Path("/tmp/.cache/matplotlib"), Path("/tmp/.config/matplotlib")]
    if any(path.exists() for path in caches):
        pytest.skip("the host's /tmp already holds a matplotlib cache")
    config = SandboxConfig(warm_kernels=0, preload=(*DEFAULT_PRELOAD, "matplotlib.pyplot"))
    async with LocalSandbox(config) as sb:
        assert "matplotlib.pyplot" in sb.preloaded
        result = await sb.run_code(MATPLOTLIB_CELL, timeout=30)
    assert result.output.startswith("agg True"), result.output
    assert not any(path.exists() for path in caches)
