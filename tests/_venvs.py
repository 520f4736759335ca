"""Cached virtual environments for third-party clients run against ``safethink serve`` (lm-eval, garak).

Each tool gets its own venv (``python -m venv --system-site-packages``), so its pins (garak wants
an older transformers and openai than safethink) never touch safethink's environment, while the
installed CPU torch is reused: the install is constrained to the exact torch version already
present, so pip can never pull a CUDA build. Venvs live under ``$SAFETHINK_TOOL_VENVS`` (default:
``$SAFETHINK_HOME/tool-venvs``, by default ``~/.cache/safethink/tool-venvs``), one folder per tool
and requirement set, and are built once: a finished venv holds ``.safethink-ok`` (with the install
time), a half-built one is removed and rebuilt. A lock file keeps parallel test processes from building the same venv.

If the install fails and the package index cannot be reached, the calling test is skipped with a
message that says so; any other install failure fails the test.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import pytest

INSTALL_TIMEOUT_S = 1800


def venv_root() -> Path:
    env = os.environ.get("SAFETHINK_TOOL_VENVS")
    if env:
        return Path(env).expanduser()
    from safethink._home import safethink_home

    return safethink_home() / "tool-venvs"


def _torch_pin() -> str:
    return "torch==" + metadata.version("torch").split("+")[0]


def _registry_reachable(requirement: str) -> bool:
    """Ask the configured package index (pip's own settings, proxies included) about one package."""
    name = requirement.split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip()
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "index", "versions", name],
                           capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def tool_python(name: str, requirements: list[str]) -> Path:
    """The Python of a venv with ``requirements`` installed (built on first use, then cached)."""
    if not requirements or not name.replace("-", "").isalnum():
        raise ValueError(f"tool_python needs a plain name and at least one requirement, got {name!r}, {requirements!r}")
    pin = _torch_pin()
    key = hashlib.sha256(json.dumps([requirements, pin, sys.version]).encode()).hexdigest()[:12]
    root = venv_root()
    venv = root / f"{name}-{key}"
    python = venv / "bin" / "python"
    done = venv / ".safethink-ok"
    if done.is_file():
        return python
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():  # another process built it while this one waited
            return python
        shutil.rmtree(venv, ignore_errors=True)
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
            pins.write(pin + "\n")
        try:
            r = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                                "-c", pins.name, *requirements],
                               capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            shutil.rmtree(venv, ignore_errors=True)
            pytest.fail(f"installing {requirements} into {venv} took over {INSTALL_TIMEOUT_S} s")
        finally:
            os.unlink(pins.name)
        if r.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            tail = "\n".join((r.stdout + r.stderr).splitlines()[-15:])
            if not _registry_reachable(requirements[0]):
                pytest.skip(f"{name}: the package index is unreachable, so {' '.join(requirements)} "
                            f"cannot be installed:\n{tail}")
            pytest.fail(f"installing {' '.join(requirements)} into {venv} failed:\n{tail}")
        seconds = round(time.monotonic() - start, 1)
        done.write_text(json.dumps({"requirements": requirements, "constraint": pin, "install_s": seconds}) + "\n")
        print(f"[{name}] built {venv} in {seconds} s", file=sys.stderr)
    return python
