"""``mock:<file.jsonl>``: a scripted backend that replays answers from a file, for tests and CI.

One JSON object per line::

    {"text": "<think> Fine. [SAFE] </think> [SAFE] Hello! [SAFE]"}
    {"text": "...", "tokens": ["<think>", " Fine", ". ", "[SAFE]", ...], "finish_reason": "stop"}

Answers are used in order, one per conversation (rows of a batch in order, then the next call),
starting again from the first when the file runs out. ``text`` is the completion; ``tokens``
(optional) is how it is streamed to a token hook piece by piece, by default words and R2D tokens.
A hook that halts a row cuts the answer after that piece (``finish_reason="hook"``), so decode-time
guards run against it exactly as against a real model. ``max_new_tokens`` counts pieces; stop
strings cut the text. The model has no tokenizer and keeps every conversation it was asked in
``calls``, so a test can check what the guard sent.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._r2d_tokens import R2D_SPECIAL_TOKENS
from ..errors import InputError
from ._base import Backend, Report, Row
from ._types import Completion, Conversation, GenerationConfig, TokenEvent, TokenHook

_PIECES = re.compile("|".join(re.escape(t) for t in R2D_SPECIAL_TOKENS) + r"|\s*[^\s\[<]+|\s+|[\[<]")


def split_pieces(text: str) -> list[str]:
    """Default streaming pieces: each R2D token alone, otherwise words with their leading space."""
    pieces = _PIECES.findall(text)
    return pieces if "".join(pieces) == text else [text]


@dataclass(frozen=True)
class MockAnswer:
    text: str
    tokens: tuple[str, ...]
    finish_reason: str = "stop"


def read_answers(path: str | Path) -> list[MockAnswer]:
    p = Path(path)
    if not p.is_file():
        raise InputError("no such mock answer file (expected JSON lines with a 'text' field)", path=str(p))
    answers = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"not JSON: {e.msg}", path=str(p), line=n) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise InputError("expected an object with a string 'text'", path=str(p), line=n)
        tokens = obj.get("tokens")
        if tokens is None:
            tokens = split_pieces(obj["text"])
        elif not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)) or "".join(tokens) != obj["text"]:
            raise InputError("'tokens' must be a list of strings that join to 'text'", path=str(p), line=n)
        reason = obj.get("finish_reason", "stop")
        if reason not in ("stop", "length"):
            raise InputError(f"finish_reason {reason!r}: expected 'stop' or 'length'", path=str(p), line=n)
        answers.append(MockAnswer(obj["text"], tuple(tokens), reason))
    if not answers:
        raise InputError("the mock answer file has no answers", path=str(p))
    return answers


class MockChatModel(Backend):
    """Replays the answers of a JSON-lines file, in order (see the module docstring)."""

    hook_mode = "live"
    tokenizer = None

    def __init__(self, answers: Sequence[MockAnswer], *, spec: str):
        self.answers = list(answers)
        self.spec = spec
        self.calls: list[list[Conversation]] = []
        self._next = 0
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | Path, *, spec: str) -> MockChatModel:
        return cls(read_answers(path), spec=spec)

    def _take(self, n: int) -> list[MockAnswer]:
        with self._lock:
            out = [self.answers[(self._next + k) % len(self.answers)] for k in range(n)]
            self._next += n
            return out

    def _complete(self, batch: list[Row], config: GenerationConfig, hook: TokenHook | None,
                  report: Report) -> list[Completion]:
        with self._lock:
            self.calls.append([[dict(m) for m in r.conversation] for r in batch])
        out = [self._one(r.index, answer, config, hook, r.conversation)
               for r, answer in zip(batch, self._take(len(batch)))]
        report(len(out))
        return out

    def _one(self, row: int, answer: MockAnswer, config: GenerationConfig, hook: TokenHook | None,
             conversation: Conversation) -> Completion:
        pieces = list(answer.tokens[:config.max_new_tokens])
        reason = answer.finish_reason if len(pieces) == len(answer.tokens) else "length"
        if hook is not None:
            for k in range(len(pieces)):
                if hook(TokenEvent(row=row, token_id=None, piece=pieces[k])):
                    pieces, reason = pieces[:k + 1], "hook"
                    break
        text = "".join(pieces)
        for s in config.stop:
            cut = text.find(s)
            if cut >= 0:
                text, reason = text[:cut], "stop"
        prompt_tokens = sum(len(m.get("content", "").split()) for m in conversation)
        return Completion(text=text, finish_reason=reason, prompt_tokens=prompt_tokens,
                          completion_tokens=len(pieces), raw_text=text)
