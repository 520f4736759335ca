"""The one ``generate`` every model backend shares.

:meth:`Backend.generate` checks the prefixes, pairs each conversation with its prefix into a
:class:`Row`, hands all rows to the backend's single hook :meth:`Backend._complete`, reports
progress as the hook finishes rows, and trims every answer by one rule (:func:`trim_answer`).
A new backend subclasses :class:`Backend` and implements ``_complete`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ._types import Completion, Conversation, GenerationConfig, ProgressFn, TokenHook, check_prefixes

Report = Callable[[int], None]
"""Called by a backend's ``_complete`` with the number of rows it has just finished."""


@dataclass(frozen=True)
class Row:
    """One conversation of a ``generate`` call."""

    index: int
    """Its position in the caller's list (``TokenEvent.row`` for a token hook)."""
    conversation: Conversation
    prefix: str = ""
    """Text the assistant turn already starts with ("" for none)."""


def make_rows(conversations: Sequence[Conversation], prefixes: Sequence[str] | None) -> list[Row]:
    """Pair every conversation with its prefix (one prefix per conversation, or none at all)."""
    check_prefixes(conversations, prefixes)
    return [Row(i, c, prefixes[i] if prefixes else "") for i, c in enumerate(conversations)]


def trim_answer(completion: Completion, prefix: str) -> Completion:
    """The answer rule: a finished answer is stripped, a continuation of a prefix keeps its leading
    space (prefix + text reads right; rstrip only), a cut one (``finish_reason == "length"``) is left
    as is. The raw text is never touched."""
    if completion.finish_reason != "length":
        completion.text = completion.text.rstrip() if prefix else completion.text.strip()
    return completion


def length_batches(lengths: Sequence[int], batch_size: int, *, min_fill: float = 0.5) -> list[list[int]]:
    """Indices of ``lengths`` grouped into padded batches: longest first, at most ``batch_size`` each, and a
    batch closes before a text shorter than ``min_fill`` times its longest. Padding costs what real tokens cost
    (in the forward pass and in every later step's attention), so one long pasted document must not pad a
    whole batch of short requests to its length: on the realistic benign set (one 1,306-token request, most
    under 300) grouping this way generated the same requests 1.6x faster than fixed batches of 32
    (BENCHMARKS.md, "Quickstart wall time")."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        cur = batches[-1] if batches else None
        if cur is None or len(cur) >= batch_size or lengths[i] < min_fill * lengths[cur[0]]:
            batches.append([i])
        else:
            cur.append(i)
    return batches


def reporter(progress: ProgressFn | None) -> Report:
    """The ``report`` a backend's hook calls: forwards finished-row counts to ``progress``, skipping
    empty ones."""
    def report(n: int) -> None:
        if progress is not None and n > 0:
            progress(n)

    return report


class Backend:
    """Base of the model backends: one :meth:`generate`, one hook to implement (:meth:`_complete`)."""

    spec: str
    hook_mode: Literal["live", "post-hoc"] = "live"
    """``live``: the hook sees tokens while decoding; ``post-hoc``: after it (the row is cut where it halts)."""
    trim_answers: bool = True
    """Apply :func:`trim_answer` to every answer; False returns the backend's text verbatim."""

    def generate(
        self,
        conversations: Sequence[Conversation],
        config: GenerationConfig = GenerationConfig(),
        *,
        prefixes: Sequence[str] | None = None,
        hook: TokenHook | None = None,
        progress: ProgressFn | None = None,
    ) -> list[Completion]:
        """Answer every conversation, in order (see :class:`~._types.ChatModel`)."""
        rows = make_rows(conversations, prefixes)
        return self._finish(rows, self._complete(rows, config, hook, reporter(progress)))

    def _complete(self, batch: list[Row], config: GenerationConfig, hook: TokenHook | None,
                  report: Report) -> list[Completion]:
        """Answer ``batch`` in its order (each with ``row.prefix`` prefilled, not repeated in the
        answer); call ``report(n)`` as ``n`` rows finish; show a token hook ``TokenEvent(row=row.index)``."""
        raise NotImplementedError

    def _finish(self, rows: list[Row], done: list[Completion]) -> list[Completion]:
        if len(done) != len(rows):
            raise RuntimeError(f"{type(self).__name__}._complete returned {len(done)} answers for {len(rows)} rows")
        if not self.trim_answers:
            return list(done)
        return [trim_answer(c, r.prefix) for r, c in zip(rows, done)]

    def close(self) -> None:
        """Release resources (servers, GPU memory)."""
