"""The attack interface. Every attack turns prompt records into the conversations sent to the
target model, and records its name, parameters and seed so the run can be rebuilt."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, Protocol, final

from .._registry import Registry
from ..data._schema import PromptRecord
from ..errors import SpecError
from ..models import ChatModel, Conversation

AttackFamily = Literal["none", "template", "encoding", "rewrite", "multi-turn", "optimisation", "model-driven"]


@dataclass
class AttackedPrompt:
    """What an attack made of one record."""

    record_id: str
    messages: Conversation
    """The conversation to send to the target."""
    attack: str
    params: dict[str, Any]
    seed: int
    prefix: str = ""
    """Assistant-turn prefill, for attacks that start the answer (prefilling)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Attack-specific details (e.g. PAIR iterations, GCG loss)."""


class Attack(Protocol):
    name: ClassVar[str]
    family: ClassVar[AttackFamily]
    paper: ClassVar[str]
    """Link to the paper or source that defines the attack."""
    needs_target: ClassVar[bool]
    """True for attacks that query or differentiate the target model (PAIR, TAP, GCG, AutoDAN)."""

    def prepare(self, records: Sequence[PromptRecord], *, seed: int, target: ChatModel | None = None) -> list[AttackedPrompt]:
        """Build one attacked prompt per record, deterministically for a given seed."""
        ...

    def decode_response(self, text: str) -> str:
        """Undo an output encoding the attack asked for (base64, rot13...); identity otherwise."""
        ...


ATTACKS: Registry[Attack] = Registry("attack")


# --- the base class every built-in attack derives from ------------------------------------------

RequestForm = Literal["verbatim", "encoded", "rewritten", "split", "generated"]
"""How the original request survives in the attacked prompt (the contract test checks it)."""


@dataclass(frozen=True)
class Built:
    """What an attack's hook returns for one record; the base class wraps it in an AttackedPrompt."""

    messages: Conversation
    prefix: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class AttackBase:
    """Base class for attacks: mostly declarative class attributes plus one hook.

    :meth:`prepare` is final (subclasses may not override it): it validates inputs, derives one
    random generator per record from ``(seed, attack name, record)`` so results do not depend on
    batch composition, calls the hook :meth:`build`, and stamps every result with the attack's
    name, parameters and seed. Parameters are the dataclass fields of the subclass.
    """

    name: ClassVar[str]
    family: ClassVar[AttackFamily]
    paper: ClassVar[str]
    needs_target: ClassVar[bool] = False
    description: ClassVar[str] = ""
    randomised: ClassVar[bool] = False
    """True when different seeds give different prompts."""
    request_form: ClassVar[RequestForm] = "verbatim"
    needs: ClassVar[tuple[str, ...]] = ()
    """Constructor arguments without a usable default (e.g. ``attacker``, ``judge``, ``templates``)."""
    tags: ClassVar[tuple[str, ...]] = ()
    """Free-form labels shown by ``safethink attacks list`` (e.g. ``evolution``)."""
    style: ClassVar[str | None] = None
    """The training evolution style this attack stands for, spelt as the data manifest records it;
    stamped into every result's ``meta["style"]`` so evaluation splits seen/unseen attacks by it.
    (``style-injection`` has a *parameter* named ``style``; see :meth:`training_style`.)"""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "prepare" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: prepare() is final; implement build() instead")

    @classmethod
    def training_style(cls) -> str | None:
        """:attr:`style` when it names a training evolution style; None where ``style`` is a parameter."""
        if any(f.name == "style" for f in fields(cls)):  # type: ignore[arg-type]
            return None
        return cls.style

    # The hook. Batch-level so model-driven attacks can batch their queries.
    def build(self, records: Sequence[PromptRecord], rngs: Sequence[random.Random],
              target: ChatModel | None) -> list[Built]:
        raise NotImplementedError

    @final
    def prepare(self, records: Sequence[PromptRecord], *, seed: int,
                target: ChatModel | None = None) -> list[AttackedPrompt]:
        """Build one attacked prompt per record, deterministically for a given seed."""
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise SpecError(f"attack {self.name!r}: seed must be an int, got {seed!r}")
        if self.needs_target and target is None:
            raise SpecError(f"attack {self.name!r} queries the target model: pass target=<ChatModel>")
        records = list(records)
        if not records:
            return []
        rngs = [record_rng(seed, self.name, r) for r in records]
        built = self.build(records, rngs, target)
        if len(built) != len(records):
            raise RuntimeError(f"attack {self.name!r} built {len(built)} prompts for {len(records)} records")
        params = self.params()
        trained = self.training_style()
        style = {"style": trained} if trained else {}
        return [
            AttackedPrompt(record_id=r.id, messages=_with_history(r, b.messages), attack=self.name,
                           params=dict(params), seed=seed, prefix=b.prefix, meta={**style, **b.meta})
            for r, b in zip(records, built)
        ]

    def decode_response(self, text: str) -> str:
        """Undo an output encoding the attack asked for; identity by default."""
        return text

    def params(self) -> dict[str, Any]:
        """The constructor arguments, JSON-friendly (models and judges by their spec)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.init}  # type: ignore[arg-type]


class TextAttack(AttackBase):
    """An attack that rewrites the request text alone: fill in :meth:`rewrite`."""

    def rewrite(self, request: str, rng: random.Random) -> str:
        raise NotImplementedError

    def build(self, records: Sequence[PromptRecord], rngs: Sequence[random.Random],
              target: ChatModel | None) -> list[Built]:
        return [Built([{"role": "user", "content": self.rewrite(r.user_text(), g)}])
                for r, g in zip(records, rngs)]


def _with_history(record: PromptRecord, messages: Conversation) -> Conversation:
    """The record's earlier turns (persona system prompt, earlier conversation), then the attack's messages.

    Hooks build only the attacked request, so a multi-turn or persona record reaches the target as its
    user wrote it. An attack's own system message stays first; the record's follows it.
    """
    built = [dict(m) for m in messages]
    history = [{"role": m.role, "content": m.content} for m in record.history]
    if built and built[0]["role"] == "system":
        return built[:1] + history + built[1:]
    return history + built


def record_rng(seed: int, attack: str, record: PromptRecord) -> random.Random:
    """A generator private to one (seed, attack, record): stable across processes and batches."""
    digest = hashlib.sha256(f"{seed}\x1f{attack}\x1f{record.id}\x1f{record.prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    spec = getattr(v, "spec", None)  # ChatModel, Judge
    if isinstance(spec, str):
        return spec
    return str(v)
