"""Running a pipeline's independent stages side by side: trainings, probe fits and evaluation rows as tasks with
dependencies, on worker processes of one or a few threads each.

On a CPU, two processes of one thread get more done than one process of two: the bundled model generated the
realistic benign set at 1.44x the rate that way on 2 cores (BENCHMARKS.md, "Quickstart wall time"), because a
small model's matrix products are too short to keep two threads busy. Every stage is cached in the output
directory, so the order the tasks finish in changes nothing but the time; a failed task stops new ones,
lets the running ones finish (their output is kept for the next run) and is raised.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import SafethinkError
from ._settings import StageProgress


@dataclass
class Task:
    """One stage: ``fn(*args, progress=..., **kwargs)``, after the tasks named in ``after`` have finished."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()


def resolve_workers(setting: int | str, device: str) -> tuple[int, int]:
    """``(workers, threads per worker)`` for a ``workers`` setting: ``auto`` is two processes sharing the CPU
    cores on a CPU with at least two, else one process with every core (on a GPU: one, which holds the GPU)."""
    cpus = os.cpu_count() or 1
    if setting == "auto":
        workers = 2 if device == "cpu" and cpus >= 2 else 1
    else:
        workers = int(setting)
        if workers < 1:
            raise SafethinkError(f"workers must be at least 1 or 'auto', got {setting!r}")
    return workers, max(1, cpus // workers)


def run_tasks(tasks: Sequence[Task], *, workers: int, threads: int, progress: StageProgress,
              started: Callable[[str], None], finished: Callable[[str], None]) -> dict[str, Any]:
    """Run ``tasks`` (each after those it names), ``workers`` at a time; return each task's result by name.
    ``started`` and ``finished`` are called in this process with a task's name (the stage clock). With one
    worker the tasks run here, in the given order."""
    names = [t.name for t in tasks]
    for t in tasks:
        unknown = [a for a in t.after if a not in names[:names.index(t.name)]]
        if unknown:
            raise SafethinkError(f"task {t.name!r} waits on {unknown}, which are not earlier tasks")
    if workers <= 1:
        results = {}
        for t in tasks:
            started(t.name)
            try:
                results[t.name] = t.fn(*t.args, progress=progress, **t.kwargs)
            finally:
                finished(t.name)
        return results
    return _run_parallel(list(tasks), workers, threads, progress, started, finished)


def _run_parallel(tasks: list[Task], workers: int, threads: int, progress: StageProgress,
                  started: Callable[[str], None], finished: Callable[[str], None]) -> dict[str, Any]:
    import multiprocessing
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's thread pools
    events = ctx.Queue()
    results: dict[str, Any] = {}
    failure: tuple[str, Any] | None = None
    waiting = list(tasks)
    running: dict[Any, str] = {}

    def drain() -> None:
        while True:
            try:
                what, done, total = events.get_nowait()
            except queue_mod.Empty:
                return
            progress(what, done, total)

    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads, events, _quiet_settings())) as pool:
        while waiting or running:
            if failure is None:
                for t in [t for t in waiting if all(a in results for a in t.after)]:
                    if len(running) >= workers:
                        break
                    waiting.remove(t)
                    started(t.name)
                    running[pool.submit(_in_worker, t.fn, t.args, t.kwargs)] = t.name
            if not running:  # nothing left that can start: a stage failed, or one it waits on did
                break
            done, _ = wait(list(running), timeout=0.25, return_when=FIRST_COMPLETED)
            drain()
            for fut in done:
                name = running.pop(fut)
                finished(name)
                try:
                    status, value = fut.result()
                except BrokenProcessPool:
                    raise SafethinkError(f"stage {name!r}: its worker process died (killed, or out of memory?); "
                                         "run again to resume, or with --set workers=1") from None
                if status == "ok":
                    results[name] = value
                elif failure is None:
                    failure = (name, value)
        drain()
    if failure is not None:
        name, (kind, message, trace) = failure
        if kind == "safethink":
            raise SafethinkError(message)
        raise RuntimeError(f"stage {name!r} failed in its worker process:\n{trace}")
    return results


_EVENTS: Any = None


def _quiet_settings() -> tuple[list[Any], tuple[int, bool] | None]:
    """This process's warning filters and transformers' log level and progress bars, for the workers to print
    what it prints."""
    import sys
    import warnings

    hf = sys.modules.get("transformers.utils.logging")
    return list(warnings.filters), (hf.get_verbosity(), hf.is_progress_bar_enabled()) if hf is not None else None


def _init_worker(threads: int, events: Any, quiet: tuple[list[Any], tuple[int, bool] | None]) -> None:
    """Each worker computes on ``threads`` threads (PyTorch and BLAS), sends progress to ``events`` and
    filters warnings and logs as its parent does."""
    import warnings

    global _EVENTS
    _EVENTS = events
    filters, hf = quiet
    warnings.filters[:] = filters
    if hf is not None:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(hf[0])
        if not hf[1]:
            hf_logging.disable_progress_bar()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _progress(what: str, done: int, total: int) -> None:
    _EVENTS.put((what, done, total))


def _in_worker(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, Any]:
    """Run one task; its error comes back as text (safethink's errors keep their one-line message), since not
    every exception survives the trip between processes."""
    try:
        return "ok", fn(*args, progress=_progress, **kwargs)
    except SafethinkError as e:
        return "error", ("safethink", str(e), traceback.format_exc())
    except Exception as e:  # noqa: BLE001 - reported in the parent with the worker's traceback
        return "error", ("other", f"{type(e).__name__}: {e}", traceback.format_exc())
