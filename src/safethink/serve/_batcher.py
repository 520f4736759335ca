"""A micro-batching queue: concurrent requests share one guarded forward pass.

Generation is blocking torch code, so it runs in one worker thread. Requests queue up; the worker
takes the oldest, waits a few milliseconds for more requests with the same generation settings
(up to ``max_batch``) and decodes them together. Requests with other settings wait for the next
round, in arrival order.

A batch succeeds or fails as a whole: a guard that does not return exactly one output per request
fails every request of the batch (answers are paired with requests by position, so a short or long
list cannot be paired safely), and no request is left waiting.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

from ..guard import Guard, GuardedOutput
from ..models import ChatModel, Conversation, GenerationConfig

log = logging.getLogger(__name__)


class GuardOutputMismatch(RuntimeError):
    """The guard returned a number of outputs other than one per request."""


@dataclass
class _Job:
    conversation: Conversation
    config: GenerationConfig
    request_id: str | None = None
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    cancelled: int = 0


class MicroBatcher:
    def __init__(self, model: ChatModel, guard: Guard, *, max_batch: int = 8, window_s: float = 0.01):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.model, self.guard = model, guard
        self.max_batch, self.window_s = max_batch, window_s
        self.stats = BatchStats()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._pending: deque[_Job] = deque()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False

    def submit(self, conversation: Conversation, config: GenerationConfig, request_id: str | None = None) -> Future:
        """Queue one conversation; the future resolves to its :class:`GuardedOutput`, or raises what
        failed the batch (``request_id`` names the request in the server log)."""
        self._ensure_started()
        job = _Job(conversation, config, request_id)
        self._queue.put(job)
        return job.future

    def _ensure_started(self) -> None:
        with self._lock:
            if self._stopping:
                raise RuntimeError("the batcher is shut down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="safethink-batcher", daemon=True)
                self._thread.start()

    def close(self, timeout: float | None = 5.0) -> None:
        with self._lock:
            self._stopping = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    # ------------------------------------------------------------ worker

    def _next(self, timeout: float | None) -> _Job | None:
        if self._pending:
            return self._pending.popleft()
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _collect(self, first: _Job) -> list[_Job]:
        batch = [first]
        # Same-settings requests that were put aside earlier join first, in arrival order.
        for job in list(self._pending):
            if len(batch) < self.max_batch and job.config == first.config:
                self._pending.remove(job)
                batch.append(job)
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                job = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if job is None:  # shutting down: finish this batch, then stop
                self._queue.put(None)
                break
            (batch if job.config == first.config else self._pending).append(job)
        return batch

    def _loop(self) -> None:
        while True:
            first = self._next(None)
            if first is None:
                for job in self._pending:  # put aside when the shutdown came: they will not run
                    job.future.cancel()
                break
            batch = self._collect(first)
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]
            self.stats.cancelled += len(batch) - len(live)
            if not live:
                continue
            self.stats.requests += len(live)
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(live))
            cfg = replace(live[0].config, batch_size=max(len(live), 1))
            ids = [j.request_id for j in live]
            try:
                outs = self.guard.generate(self.model, [j.conversation for j in live], cfg)
                check_outputs(outs, len(live), getattr(self.guard, "name", type(self.guard).__name__))
            except BaseException as e:  # the whole batch fails closed; the server keeps running
                log.error("guarded generation failed for requests %s", ids, exc_info=e)
                for j in live:
                    j.future.set_exception(e)
                continue
            for j, out in zip(live, outs, strict=True):
                j.future.set_result(out)


def check_outputs(outs: object, expected: int, guard: str) -> None:
    """Raise :class:`GuardOutputMismatch` unless ``outs`` is one :class:`GuardedOutput` per request."""
    if not isinstance(outs, list) or len(outs) != expected:
        got = len(outs) if isinstance(outs, list) else type(outs).__name__
        raise GuardOutputMismatch(f"guard {guard!r} returned {got} outputs for {expected} requests")
    bad = [i for i, o in enumerate(outs) if not isinstance(o, GuardedOutput)]
    if bad:
        raise GuardOutputMismatch(f"guard {guard!r} returned something other than a GuardedOutput at {bad}")
