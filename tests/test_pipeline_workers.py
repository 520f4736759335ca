"""The pipeline's task runner: independent stages side by side in worker processes, dependencies kept, a
failure raised with its message after the running stages finish."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from safethink.errors import InputError, SafethinkError
from safethink.pipeline._workers import Task, resolve_workers, run_tasks

pytestmark = pytest.mark.timeout(300)


def _stamp(out: str, name: str, seconds: float = 0.0, needs: str | None = None, *, progress) -> str:
    """Write when this task ran and in which process; with ``needs``, read that task's file first."""
    t0 = time.time()
    seen = json.loads(Path(out, needs).read_text())["name"] if needs else None
    progress(f"task {name}", 1, 1)
    time.sleep(seconds)
    Path(out, name).write_text(json.dumps({"name": name, "pid": os.getpid(), "start": t0, "end": time.time(),
                                           "seen": seen, "threads": _threads()}))
    return name.upper()


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _fail(message: str, *, progress) -> None:
    raise InputError(message, path="data.jsonl", line=3)


def _crash(*, progress) -> None:
    return {}["missing"]


def _run(tasks, workers=2, threads=1):
    events, clock = [], []
    results = run_tasks(tasks, workers=workers, threads=threads, progress=lambda *a: events.append(a),
                        started=lambda n: clock.append(("start", n)), finished=lambda n: clock.append(("stop", n)))
    return results, events, clock


def test_two_workers_run_independent_tasks_at_once_and_keep_dependencies(tmp_path):
    out = str(tmp_path)
    tasks = [Task("a", _stamp, (out, "a", 1.5)), Task("b", _stamp, (out, "b", 1.5)),
             Task("c", _stamp, (out, "c", 0.0, "a"), after=("a",))]
    results, events, clock = _run(tasks, threads=1)
    assert results == {"a": "A", "b": "B", "c": "C"}
    rec = {n: json.loads((tmp_path / n).read_text()) for n in "abc"}
    assert rec["a"]["pid"] != rec["b"]["pid"] != os.getpid()
    assert rec["a"]["start"] < rec["b"]["end"] and rec["b"]["start"] < rec["a"]["end"]  # side by side
    assert rec["c"]["seen"] == "a" and rec["c"]["start"] >= rec["a"]["end"]
    assert {r["threads"] for r in rec.values()} == {1}
    assert sorted(e[0] for e in events) == ["task a", "task b", "task c"]  # progress reached this process
    assert clock.index(("start", "c")) > clock.index(("stop", "a"))
    assert sorted(clock) == sorted([(k, n) for n in "abc" for k in ("start", "stop")])


def test_one_worker_runs_the_tasks_here_in_order(tmp_path):
    out = str(tmp_path)
    results, _, clock = _run([Task("a", _stamp, (out, "a")), Task("b", _stamp, (out, "b", 0.0, "a"), after=("a",))],
                             workers=1)
    assert results == {"a": "A", "b": "B"}
    assert json.loads((tmp_path / "a").read_text())["pid"] == os.getpid()
    assert clock == [("start", "a"), ("stop", "a"), ("start", "b"), ("stop", "b")]


def test_a_failed_task_stops_its_dependents_lets_the_running_finish_and_is_raised(tmp_path):
    out = str(tmp_path)
    tasks = [Task("slow", _stamp, (out, "slow", 2.0)), Task("bad", _fail, ("no 'prompt' field",)),
             Task("after bad", _stamp, (out, "after bad"), after=("bad",))]
    with pytest.raises(SafethinkError, match=r"data.jsonl:3: no 'prompt' field"):
        _run(tasks)
    assert (tmp_path / "slow").is_file()  # kept for the next run: stages are cached in the output directory
    assert not (tmp_path / "after bad").exists()


def test_any_other_error_comes_back_with_the_workers_traceback(tmp_path):
    with pytest.raises(RuntimeError, match=r"(?s)stage 'crash' failed in its worker process.*KeyError: 'missing'"):
        _run([Task("crash", _crash)])


def test_tasks_may_only_wait_on_earlier_tasks():
    with pytest.raises(SafethinkError, match="waits on"):
        _run([Task("a", _crash, after=("b",)), Task("b", _crash)])


def test_auto_is_two_workers_on_a_multicore_cpu_and_one_on_a_gpu(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert resolve_workers("auto", "cpu") == (2, 4)
    assert resolve_workers("auto", "cuda") == (1, 8)
    assert resolve_workers(3, "cpu") == (3, 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert resolve_workers("auto", "cpu") == (1, 1)
    with pytest.raises(SafethinkError):
        resolve_workers(0, "cpu")


def _die(*, progress) -> None:
    os._exit(3)  # a worker killed mid-task (the OOM killer, a segfault)


def test_a_worker_that_dies_is_a_clear_error(tmp_path):
    with pytest.raises(SafethinkError, match=r"stage 'die': its worker process died"):
        _run([Task("die", _die)])
