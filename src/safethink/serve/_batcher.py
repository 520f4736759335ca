"""A micro-batching queue: concurrent requests share one guarded forward pass.

Generation is blocking torch code, so it runs in one worker thread. Requests queue up; the worker
takes the oldest, waits a few milliseconds for more requests with the same generation settings
(up to ``max_batch``) and decodes them together. Requests with other settings wait for the next
round, in arrival order.

A batch succeeds or fails as a whole: a guard that does not return exactly one output per request
fails every request of the batch (answers are paired with requests by position, so a short or long
list cannot be paired safely), and no request is left waiting.

A request nobody waits for any more is stopped with :meth:`MicroBatcher.cancel`: a queued one is
dropped before its batch starts; a running one is halted at the next decoding step (see
``_cancel.py``). Its future resolves only once its generation has really stopped, so a caller that
counts work in flight by futures counts work actually running.
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
from ._cancel import GenerationCancelled, StoppableModel

log = logging.getLogger(__name__)


class GuardOutputMismatch(RuntimeError):
    """The guard returned a number of outputs other than one per request."""


@dataclass
class _Job:
    conversation: Conversation
    config: GenerationConfig
    request_id: str | None = None
    future: Future = field(default_factory=Future)
    stop: threading.Event = field(default_factory=threading.Event)
    """Set when nobody waits for the answer any more (timed out, client gone, shutdown)."""


@dataclass
class BatchStats:
    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    cancelled: int = 0
    """Requests dropped before their batch started."""
    stopped: int = 0
    """Requests stopped while being generated."""


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
        self._jobs: dict[Future, _Job] = {}

    def submit(self, conversation: Conversation, config: GenerationConfig, request_id: str | None = None) -> Future:
        """Queue one conversation; the future resolves to its :class:`GuardedOutput`, or raises what
        failed the batch (``request_id`` names the request in the server log), or
        :class:`GenerationCancelled` when the request was stopped with its whole batch."""
        self._ensure_started()
        job = _Job(conversation, config, request_id)
        with self._lock:
            self._jobs[job.future] = job
        job.future.add_done_callback(self._forget)
        self._queue.put(job)
        return job.future

    def cancel(self, future: Future) -> bool:
        """Stop the request behind ``future``: nobody waits for its answer any more. A queued request
        is dropped (its future is cancelled now: True); a running one is halted at the next decoding
        step, and its future resolves once its generation has stopped (False)."""
        with self._lock:
            job = self._jobs.get(future)
        if job is None:  # already done
            return future.cancelled()
        job.stop.set()
        return future.cancel()

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._jobs.pop(future, None)

    @property
    def in_flight(self) -> int:
        """Requests queued or being generated (a stopped one counts until its generation stops)."""
        with self._lock:
            return len(self._jobs)

    def _ensure_started(self) -> None:
        with self._lock:
            if self._stopping:
                raise RuntimeError("the batcher is shut down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="safethink-batcher", daemon=True)
                self._thread.start()

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop taking requests, stop every queued or running one, and wait for the worker."""
        with self._lock:
            self._stopping = True
            thread = self._thread
            jobs = list(self._jobs.values())
        for job in jobs:
            job.stop.set()
            job.future.cancel()
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
            live = [j for j in batch if not j.stop.is_set() and j.future.set_running_or_notify_cancel()]
            running = {id(j) for j in live}
            for j in batch:
                if id(j) not in running:
                    j.future.cancel()  # stopped while it was being collected
            self.stats.cancelled += len(batch) - len(live)
            if live:
                self._run(live)

    def _run(self, live: list[_Job]) -> None:
        self.stats.requests += len(live)
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(live))
        cfg = replace(live[0].config, batch_size=max(len(live), 1))
        ids = [j.request_id for j in live]
        convs = [j.conversation for j in live]
        model = StoppableModel(self.model, convs, [j.stop for j in live])
        try:
            outs = self.guard.generate(model, convs, cfg)
            check_outputs(outs, len(live), getattr(self.guard, "name", type(self.guard).__name__))
        except GenerationCancelled as e:
            log.info("requests %s stopped: nobody waits for them any more", ids)
            self.stats.stopped += len(live)
            for j in live:
                j.future.set_exception(e)
            return
        except BaseException as e:  # the whole batch fails closed; the server keeps running
            log.error("guarded generation failed for requests %s", ids, exc_info=e)
            for j in live:
                j.future.set_exception(e)
            return
        self.stats.stopped += sum(j.stop.is_set() for j in live)
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
