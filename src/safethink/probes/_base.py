"""What every probe is (:class:`Probe`), what it can score, and its files: the format names, reading a
probe file with errors that name the file, and :func:`load_probe`, which reads either kind."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from ..errors import SpecError
from ..models import ChatModel, Conversation

Pool = Literal["last", "mean"]
"""How a linear probe reads a prompt: the state at its last token, or the mean over its tokens."""
PROBE_TARGETS = ("intent", "wrapper")
"""What a probe scores: ``intent`` (is the request harmful) or ``wrapper`` (does an attack wrap it)."""
PROBE_FORMAT = "safethink-probe/1"
"""The ``"format"`` of a linear probe file (:class:`~safethink.probes.RequestProbe`)."""
TUNED_FORMAT = "safethink-tuned-probe/1"
"""The ``"format"`` of a tuned probe directory's ``probe.json`` (:class:`~safethink.probes.TunedProbe`)."""


@runtime_checkable
class Probe(Protocol):
    """A classifier that reads a prompt before anything is generated and gives p(``target``) for it.

    ``score`` takes the guarded model because a linear probe reads that model's hidden states; a tuned
    probe runs its own adapted copy of the base model and only checks that it matches. A request whose
    score is at or above ``threshold`` is flagged; below ``route_threshold`` (an intent probe's) it is sure
    enough to be benign for the base model to answer it."""

    model: str
    """The spec of the model the probe was fitted on."""
    target: str
    """One of :data:`PROBE_TARGETS`."""
    layer: Any
    """The layer read (a list for an ensemble of layers), or the tuned probe's read-out block."""
    threshold: float
    route_threshold: float | None
    metrics: dict[str, Any]
    """How it was fitted and how it did on held-out requests (``fitted_on``, ``auc``, rates)."""

    @property
    def layers(self) -> list[int]:
        """The layers (or the read-out block) whose states the probe reads."""
        ...

    def score(self, model: ChatModel | None, conversations: Sequence[Conversation], *, batch_size: int = 16,
              base: bool = False) -> list[float]:
        """p(``target``) of each conversation, read from ``model`` (``base``: with its adapter switched off)."""
        ...

    def mismatch(self, model: ChatModel, *, base: bool = False) -> str | None:
        """Why the probe cannot read ``model``'s states (or its base model's), or None."""
        ...

    def save(self, path: str | Path) -> Path:
        ...


def load_probe(path: str | Path) -> Any:
    """A linear probe file or a tuned probe directory, by what ``path`` is."""
    from ._linear import RequestProbe
    from ._tuned import TunedProbe

    p = Path(path)
    return TunedProbe.load(p) if p.is_dir() else RequestProbe.load(p)


def read_probe_json(cls: Any, path: Path, fmt: str, kind: str, malformed: str, /, **extra: Any) -> Any:
    """``cls(**fields)`` from a JSON file whose ``"format"`` is ``fmt``; errors name the file and what is wrong.
    Every format ever written stays readable: a new field gets a default, a renamed one a new format name."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SpecError(f"{path}: not a probe file (line {e.lineno}: {e.msg})") from None
    if not isinstance(raw, dict) or raw.get("format") != fmt:
        raise SpecError(f"{path}: not a {kind} (expected \"format\": \"{fmt}\")")
    raw.pop("format")
    try:
        probe = cls(**raw, **extra)
    except TypeError as e:
        raise SpecError(f"{path}: malformed {malformed} ({e})") from None
    if probe.target not in PROBE_TARGETS:
        raise SpecError(f"{path}: target {probe.target!r} is not one of {', '.join(PROBE_TARGETS)}")
    return probe


def same_adapter(a: str | None, b: str | None) -> bool:
    """Whether two adapter paths (or None) name the same adapter."""
    if a is None or b is None:
        return a == b
    return Path(a).resolve() == Path(b).resolve() if Path(a).exists() and Path(b).exists() else a == b
