"""safethink's packages import one way: the layers contract in pyproject.toml ``[tool.importlinter]``, checked
with import-linter (docs/architecture.md). Imports inside functions count."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"

pytestmark = pytest.mark.timeout(120)


def lint(src: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the project's contract on the ``safethink`` package found in ``src``."""
    pytest.importorskip("importlinter", reason="import-linter is in the dev extra")
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(PYPROJECT)!r}, no_cache=True, no_logo=True))")
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=src, env=env,
                          timeout=100)


def test_the_packages_keep_their_layers():
    res = lint(ROOT / "src")
    assert res.returncode == 0, f"a layering violation (see docs/architecture.md):\n{res.stdout}{res.stderr}"
    assert "1 kept, 0 broken" in res.stdout


def test_every_top_level_module_has_a_layer():
    """``exhaustive`` makes a new package without a layer an error; the contract lists exactly what exists."""
    contract, = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    assert contract["type"] == "layers" and contract["containers"] == ["safethink"] and contract["exhaustive"]
    listed = {m.strip() for layer in contract["layers"] for m in layer.replace(":", "|").split("|")}
    pkg = ROOT / "src" / "safethink"
    present = {p.stem if p.is_file() else p.name for p in pkg.iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert listed == present


@pytest.mark.parametrize("module, upward", [
    ("data/_schema.py", "def _reach_up():\n    from ..guard import GUARDS\n"),  # data may not reach the guards
    ("attacks/_base.py", "def _reach_up():\n    from ..probes import fit_probe\n"),  # probes sit above attacks
    ("eval/_plan.py", "def _reach_up():\n    from ..serve import create_app\n"),  # eval and serve are siblings
    ("models/_types.py", "import typing\nif typing.TYPE_CHECKING:\n    from ..data import PromptRecord\n"),
])
def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path, module, upward):
    """The check is not vacuous: the same contract on a copy of the sources with one upward import, hidden in a
    function body (or under TYPE_CHECKING), fails and names the importer."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "safethink", src / "safethink",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    target = src / "safethink" / module
    target.write_text(target.read_text() + "\n\n" + upward)
    res = lint(src)
    assert res.returncode == 1, res.stdout + res.stderr
    importer = "safethink." + module.removesuffix(".py").replace("/", ".")
    assert "0 kept, 1 broken" in res.stdout and importer in res.stdout
