"""A safety policy as data: the rules a model checks a request against (SCoT taxonomy by default)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import InputError

DEFAULT_POLICY_PATH = Path(__file__).parent / "policies" / "scot.yaml"


class PolicyRule(BaseModel):
    """One rule of a policy; its ``id`` is written verbatim into the reasoning."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="Stable id used in SCoT category lines, e.g. 'illicit/violent'.")
    name: str = Field(min_length=1, description="Short human name.")
    rule: str = Field(min_length=1, description="One sentence saying what the model must not do.")
    enabled: bool = Field(default=True, description="Disabled rules are kept in the file but not checked.")
    aliases: list[str] = Field(default_factory=list, description="Dataset category names that map to this rule.")
    examples: list[str] = Field(default_factory=list, description="Example requests for the offline classifier.")


class Policy(BaseModel):
    """An ordered list of rules; the order is the order of the SCoT category lines."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="Policy id recorded in data manifests.")
    version: str = Field(default="1", description="Version of this policy text.")
    description: str = Field(default="", description="What the policy is for.")
    rules: list[PolicyRule] = Field(min_length=1, description="The rules, in reasoning order.")

    @model_validator(mode="after")
    def _unique(self) -> Policy:
        ids = [r.id for r in self.rules]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate rule id(s): {sorted(dup)}")
        if not self.active:
            raise ValueError("every rule is disabled")
        return self

    @property
    def active(self) -> list[PolicyRule]:
        return [r for r in self.rules if r.enabled]

    @property
    def ids(self) -> list[str]:
        """Ids of the enabled rules, in order."""
        return [r.id for r in self.active]

    def rule(self, rule_id: str) -> PolicyRule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    def map_category(self, category: str | None) -> list[str]:
        """Enabled rule ids a dataset category names (by id or alias); [] when it names none."""
        if not category:
            return []
        key = _norm(category)
        return [r.id for r in self.active if key == _norm(r.id) or key in {_norm(a) for a in r.aliases}]

    def content_hash(self) -> str:
        """sha256 of the policy's canonical JSON (changes whenever any rule text changes)."""
        blob = json.dumps(self.model_dump(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def ref(self) -> str:
        """``<id>@<hash prefix>``: how manifests name the policy."""
        return f"{self.id}@{self.content_hash()[:16]}"

    def with_rules(self, enable: list[str] | None = None, disable: list[str] | None = None) -> Policy:
        """A copy with some rules switched on or off (e.g. enable the optional 'copyright')."""
        known = {r.id for r in self.rules}
        for rid in (enable or []) + (disable or []):
            if rid not in known:
                raise InputError(f"policy {self.id}: no rule {rid!r}; rules are {', '.join(sorted(known))}")
        rules = [r.model_copy(update={"enabled": (r.enabled or r.id in (enable or [])) and r.id not in (disable or [])})
                 for r in self.rules]
        return self.model_copy(update={"rules": rules})


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


def load_policy(path: str | Path | None = None) -> Policy:
    """Load a policy YAML (or JSON) file; ``None`` gives the default SCoT taxonomy."""
    import yaml

    p = Path(path) if path is not None else DEFAULT_POLICY_PATH
    if not p.is_file():
        raise InputError("no such policy file", path=str(p))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise InputError(f"bad YAML: {getattr(e, 'problem', e)}", path=str(p),
                         line=None if line is None else line + 1) from None
    if not isinstance(data, dict):
        raise InputError("expected a mapping with 'id' and 'rules'", path=str(p))
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise InputError(f"{loc}: {err['msg']}", path=str(p)) from None


def default_policy() -> Policy:
    return load_policy(None)
