"""The curated public API: ``import safethink`` is fast (nothing heavy imported), its names load on first
use, and every subpackage's ``__all__`` names things that exist."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

import safethink

API = ("build_dataset", "create_guard", "fit_probe", "load_model", "load_prompts", "render_report", "run_eval",
       "train")
SUBPACKAGES = ("models", "data", "synth", "attacks", "judges", "eval", "serve")


def run_python(code: str) -> subprocess.CompletedProcess:
    """A fresh interpreter, so that nothing an earlier test imported counts."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=240)


def test_import_safethink_imports_nothing_heavy():
    proc = run_python("""
        import sys
        import safethink
        heavy = sorted(m for m in ("torch", "transformers", "numpy", "peft", "trl", "safethink.models",
                                   "safethink.train", "safethink.guard") if m in sys.modules)
        print(heavy)
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_all_and_dir():
    assert sorted(safethink.__all__) == sorted(["__version__", *API])
    listed = dir(safethink)
    assert set(API) <= set(listed) and {"models", "eval", "guard"} <= set(listed)
    assert "importlib" not in listed and "sys" not in listed  # the module's helpers stay out of sight
    with pytest.raises(AttributeError, match="no attribute 'load_modle'"):
        safethink.load_modle  # noqa: B018


@pytest.mark.parametrize(("name", "home"), [
    ("load_model", "safethink.models"), ("load_prompts", "safethink.data"), ("build_dataset", "safethink.synth"),
    ("create_guard", "safethink.guard"), ("fit_probe", "safethink.probes"), ("run_eval", "safethink.eval"), ("render_report", "safethink.eval"),
])
def test_names_are_the_subpackage_functions(name, home):
    assert getattr(safethink, name) is getattr(importlib.import_module(home), name)
    assert name in vars(safethink)  # cached after the first use


def test_train_stays_the_function_after_the_subpackage_is_imported():
    proc = run_python("""
        import safethink
        first = safethink.train
        import safethink.train                       # the import system sets the subpackage on safethink
        from safethink.train import load_train_config, train
        from safethink import train as again
        assert callable(first) and not isinstance(first, type(safethink))
        assert safethink.train is first is train is again, (safethink.train, first, train)
        assert load_train_config(preset="cpu-small").method
        print("ok")
        """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_create_guard_builds_a_registered_guard():
    guard = safethink.create_guard("r2d-pivot", on_unsafe="rollback")
    assert guard.build_spec == {"name": "r2d-pivot", "args": {"on_unsafe": "rollback"}}


def test_load_prompts_reads_the_builtin_seeds():
    records = safethink.load_prompts("builtin:harmful", limit=3, seed=0)
    assert len(records) == 3 and all(r.label == "harmful" and r.prompt.strip() for r in records)


@pytest.mark.parametrize("pkg", SUBPACKAGES)
def test_subpackage_all_is_curated(pkg):
    mod = importlib.import_module(f"safethink.{pkg}")
    assert len(set(mod.__all__)) == len(mod.__all__)
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, f"safethink.{pkg}.__all__ names what it does not define: {missing}"
    assert not [n for n in mod.__all__ if n.startswith("_")]


def test_internals_left_out_of_all_are_still_importable():
    from safethink.eval import is_jailbroken, outcome_of  # noqa: F401
    from safethink.judges import parse_judge_args, strongreject_score  # noqa: F401
    from safethink.models import ProgressFn, validate_messages  # noqa: F401
    from safethink.serve import MicroBatcher  # noqa: F401

    assert "is_jailbroken" not in importlib.import_module("safethink.eval").__all__
    assert "MicroBatcher" not in importlib.import_module("safethink.serve").__all__
    assert "load_model" in importlib.import_module("safethink.models").__all__
