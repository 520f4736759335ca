"""The one prompt schema every loader produces and every later layer consumes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Label = Literal["harmful", "benign"]


class HistoryMessage(BaseModel):
    """One earlier message of a conversation, sent before the request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"] = Field(description="Who wrote the message.")
    content: str = Field(description="The message text (non-empty).")

    @field_validator("content")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("message content is empty")
        return v


class PromptRecord(BaseModel):
    """A request from a dataset: harmful (should be refused) or benign (should be answered)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Stable id, unique within its source (e.g. 'advbench/17').")
    prompt: str = Field(description="The request text.")
    label: Label = Field(description="'harmful' should be refused; 'benign' should be answered.")
    category: str | None = Field(default=None, description="Source category or policy rule id.")
    source: str = Field(description="Dataset name the record came from.")
    target: str | None = Field(default=None, description="Affirmative target ('Sure, here is ...') for GCG-style attacks.")
    context: str | None = Field(default=None, description="Context string (HarmBench contextual behaviours).")
    meta: dict[str, Any] = Field(default_factory=dict, description="Anything else the source carries (e.g. XSTest type, twin id).")
    history: tuple[HistoryMessage, ...] = Field(
        default=(),
        description="Earlier messages sent before the request: an optional system message first, then user and "
                    "assistant turns alternating, starting with user and ending with assistant (the request is the "
                    "next user turn). Empty for a single-turn request.",
    )

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("prompt is empty")
        return v

    @field_validator("history")
    @classmethod
    def _conversation_shape(cls, v: tuple[HistoryMessage, ...]) -> tuple[HistoryMessage, ...]:
        turns = v[1:] if v and v[0].role == "system" else v
        for i, m in enumerate(turns):
            expected = "user" if i % 2 == 0 else "assistant"
            if m.role != expected:
                where = i + len(v) - len(turns)
                what = "a system message may only come first" if m.role == "system" else f"expected {expected}"
                raise ValueError(f"history[{where}] is {m.role!r}: {what} (user and assistant turns alternate, "
                                 "starting with user)")
        if turns and turns[-1].role != "assistant":
            raise ValueError("history ends with a user turn; it must end with assistant (the request comes next)")
        return v

    def user_text(self) -> str:
        """The request as sent to a model (context first when there is one)."""
        return f"{self.context}\n\n---\n\n{self.prompt}" if self.context else self.prompt

    def messages(self) -> list[dict[str, str]]:
        """The conversation as sent to a model: the history, then the request as the last user turn."""
        return [{"role": m.role, "content": m.content} for m in self.history] + [
            {"role": "user", "content": self.user_text()}]


def pair_key(rec: PromptRecord) -> str:
    """The id a harmful request and its benign twin share: a twin's ``twin_of``, else the group of requests
    that share pasted material (``meta.group``, as in ``builtin:realistic``), else the request's own id as its
    file wrote it (``harmful_train/harmful-044`` is ``harmful-044`` there; ``twin_of`` names that).

    Everything that keeps related requests together uses it: a probe's cross-validation folds, the attacks
    drawn for a pair, the ids of frame twins."""
    if rec.meta.get("twin_of"):
        return str(rec.meta["twin_of"])
    if rec.meta.get("group"):
        return f"group:{rec.meta['group']}"
    if rec.meta.get("seed_id"):
        return str(rec.meta["seed_id"])
    prefix = f"{rec.source}/"
    return rec.id[len(prefix):] if rec.id.startswith(prefix) else rec.id
