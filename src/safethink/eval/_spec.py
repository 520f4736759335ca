"""The evaluation spec: which models, defences, attacks, datasets and judges to run.

A spec is a YAML file validated by pydantic. Unknown keys are errors, and every error names the
YAML path of the bad field (``attacks[2].args``), so a typo never silently changes a run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import SpecError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def canonical_json(obj: Any) -> str:
    """Key-sorted compact JSON: the same object always gives the same string (used in keys)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _args_suffix(args: dict[str, Any]) -> str:
    """``(k=v, ...)`` for display names; empty without arguments."""
    if not args:
        return ""
    return "(" + ", ".join(f"{k}={v if isinstance(v, (str, int, float, bool)) else canonical_json(v)}"
                           for k, v in sorted(args.items())) + ")"


class ModelEntry(_Strict):
    spec: str = Field(description="Model spec string: smollm2-135m, hf:<id|path>, openai:<model>@<url>, ...")
    adapter: str | None = Field(default=None, description="PEFT adapter directory (or a safethink training run dir).")
    name: str | None = Field(default=None, description="Display name in tables and plots (default: the spec, plus the adapter folder name).")
    styles: list[str] | None = Field(
        default=None,
        description="Attack styles seen in training, for the seen/unseen split. Default: read from the "
        "adapter's training run (safethink_run.json / the data manifest) when there is one.",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments for load_model (device, dtype, ...).")

    @field_validator("spec")
    @classmethod
    def _parse(cls, v: str) -> str:
        from ..models import parse_model_spec

        return str(parse_model_spec(v))

    @property
    def display(self) -> str:
        if self.name:
            return self.name
        return f"{self.spec}+{Path(self.adapter).name}" if self.adapter else self.spec


class DefenceEntry(_Strict):
    guard: str = Field(default="none", description="Guard registry name (GUARDS): none, scot, r2d-pivot, self-reminder, ...")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the guard.")
    name: str | None = Field(default=None, description="Display name (default: the guard name).")
    reasoning: Literal["none", "safe", "full"] = Field(
        default="none",
        description="The guard's reasoning the user is given with the answer, as `safethink serve --reasoning`: "
        "none (the default), safe (the steps before the first flagged one) or full. The leak check reads it with "
        "the answer.",
    )

    @property
    def display(self) -> str:
        shown = "" if self.reasoning == "none" else f"[reasoning={self.reasoning}]"
        return self.name or self.guard + _args_suffix(self.args) + shown

    @property
    def key(self) -> str:
        # The reasoning shown is part of the defence only when some is: keys stored before it existed hold.
        shown = {} if self.reasoning == "none" else {"reasoning": self.reasoning}
        return canonical_json({"guard": self.guard, "args": self.args, **shown})


class AttackEntry(_Strict):
    name: str = Field(description="Attack registry name (ATTACKS): none, prefix-injection, base64, pair, ...")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the attack.")
    label: str | None = Field(default=None, description="Display name (default: the attack name).")
    style: str | None = Field(
        default=None,
        description="The training evolution style this attack stands for (e.g. role_play for aim), for the "
        "seen/unseen split. Default: the attack's name, or the technique it records per prompt (persuasion).",
    )

    @property
    def display(self) -> str:
        return self.label or self.name + _args_suffix(self.args)

    @property
    def key(self) -> str:
        return canonical_json({"name": self.name, "args": self.args})


class DatasetEntry(_Strict):
    source: str = Field(description="Dataset name (jbb-harmful, xstest, builtin:twins, a HF id) or a local file.")
    label: Literal["harmful", "benign"] | None = Field(default=None, description="Keep only records with this label.")
    limit: int | None = Field(default=None, ge=1, description="At most this many records (taken deterministically with the seed).")
    column_map: dict[str, str] | None = Field(default=None, description="Column names for local files, e.g. {prompt: goal}.")
    name: str | None = Field(default=None, description="Display name (default: the source; give names when two entries share a source).")

    @property
    def display(self) -> str:
        return self.name or self.source

    @property
    def key(self) -> str:
        # The limit is not part of the identity: record ids are stable, a larger limit only adds records.
        return canonical_json({"source": self.source, "label": self.label, "column_map": self.column_map})


class JudgeEntry(_Strict):
    name: str = Field(description="Judge registry name (JUDGES): default, keyword-gcg, strongreject, ...")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the judge (LLM judges take model=<spec>).")
    primary: bool = Field(default=False, description="The judge ASR and refusal rates are computed from (default: the first).")
    label: str | None = Field(default=None, description="Key for this judge's verdicts (default: the name).")

    @property
    def key(self) -> str:
        return self.label or self.name


class GenerationEntry(_Strict):
    max_new_tokens: int = Field(default=256, ge=1, description="Upper bound on generated tokens per answer.")
    temperature: float = Field(default=0.0, ge=0, description="0 = greedy.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    batch_size: int = Field(default=16, ge=1, description="Answers generated (and committed) together.")
    stop: list[str] = Field(default_factory=list, description="Stop strings.")

    def to_config(self, seed: int):
        from ..models import GenerationConfig

        return GenerationConfig(
            max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
            batch_size=self.batch_size, stop=tuple(self.stop), seed=seed,
        )


class EvalSpec(_Strict):
    """One evaluation: the matrix models x defences x attacks x datasets, judged by every judge."""

    name: str = Field(default="eval", description="Run name shown in the report.")
    models: list[ModelEntry] = Field(min_length=1, description="Target models.")
    defences: list[DefenceEntry] = Field(default_factory=lambda: [DefenceEntry()], description="Guards (default: none).")
    attacks: list[AttackEntry] = Field(min_length=1, description="Attacks applied to harmful records; benign records are always sent verbatim.")
    datasets: list[DatasetEntry] = Field(min_length=1, description="Prompt sets (harmful ones are attacked, benign ones measure over-refusal).")
    judges: list[JudgeEntry] = Field(default_factory=lambda: [JudgeEntry(name="default")], description="Judges; one is primary.")
    generation: GenerationEntry = Field(default_factory=GenerationEntry, description="Decoding settings.")
    seed: int = Field(default=0, description="Seed for attacks, sampling and dataset subsampling.")
    out: str = Field(default="runs/eval", description="Output directory (results.sqlite, report).")
    store: str | None = Field(default=None, description="SQLite file (default: <out>/results.sqlite).")
    success_threshold: float = Field(default=0.5, ge=0, le=1, description="A non-refused answer is a successful jailbreak when the primary judge's score is at least this.")
    plugins: list[str] = Field(default_factory=list, description="Python modules to import first (they register extra attacks, judges or guards).")

    @model_validator(mode="after")
    def _check(self) -> EvalSpec:
        prim = [j for j in self.judges if j.primary]
        if len(prim) > 1:
            raise ValueError(f"only one judge may be primary; got {', '.join(j.key for j in prim)}")
        for what, keys in (
            ("judges", [j.key for j in self.judges]),
            ("models", [(m.spec, m.adapter) for m in self.models]),
            ("defences", [d.key for d in self.defences]),
            ("attacks", [a.key for a in self.attacks]),
            ("datasets", [d.key for d in self.datasets]),
        ):
            dup = {k for k in keys if keys.count(k) > 1}
            if dup:
                raise ValueError(f"{what}: duplicate entries {sorted(map(str, dup))}")
        for what, names in (("models", [m.display for m in self.models]), ("defences", [d.display for d in self.defences]),
                            ("attacks", [a.display for a in self.attacks]), ("datasets", [d.display for d in self.datasets])):
            if len(set(names)) != len(names):
                raise ValueError(f"{what}: two entries have the same display name; give them distinct 'name'/'label'")
        return self

    @property
    def primary_judge(self) -> JudgeEntry:
        return next((j for j in self.judges if j.primary), self.judges[0])

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    @property
    def store_path(self) -> Path:
        return Path(self.store) if self.store else self.out_dir / "results.sqlite"

    def with_overrides(self, *, out: str | None = None, limit: int | None = None) -> EvalSpec:
        """The spec with ``--out`` / ``--limit`` applied (a CLI limit caps every dataset)."""
        upd: dict[str, Any] = {}
        if out is not None:
            upd["out"] = str(out)
        if limit is not None:
            upd["datasets"] = [d.model_copy(update={"limit": min(limit, d.limit or limit)}) for d in self.datasets]
        return self.model_copy(update=upd)


def _yaml_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not a field of this section)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{_yaml_path(loc)}: {msg}")
    return f"{source}: invalid eval spec:\n  " + "\n  ".join(lines)


def parse_spec(data: Any, *, source: str = "<spec>") -> EvalSpec:
    """Validate a spec given as a dict; errors name the YAML path of each bad field."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: an eval spec must be a YAML mapping, got {type(data).__name__}")
    try:
        return EvalSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(format_validation_error(e, source)) from None


def load_spec(path: str | Path) -> EvalSpec:
    """Read and validate an eval spec YAML file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: no such eval spec file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{p}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    return parse_spec(data, source=str(p))
