"""The one prompt schema every loader produces and every later layer consumes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Label = Literal["harmful", "benign"]


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

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("prompt is empty")
        return v

    def user_text(self) -> str:
        """The request as sent to a model (context first when there is one)."""
        return f"{self.context}\n\n---\n\n{self.prompt}" if self.context else self.prompt
