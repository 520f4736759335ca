"""The pipeline config: a YAML file (or a shipped preset) describing every stage of a run.

Validated by pydantic, strictly: an unknown key is an error that names the file and the key's path
(``train.arms[0].methd``), so a typo never silently changes a run. ``--set key=value`` changes one value
after loading (``probes.intent.enabled=true``, ``eval.datasets.0.limit=4``); the value is read as YAML.
``extends: NAME`` starts from a shipped preset (or another file): mappings merge key by key, lists and
values replace.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import InputError
from ._settings import FAST_ATTACKS, REALISTIC_TEST, REALISTIC_TRAIN, QuickstartConfig

SPLIT_FILES = ("harmful_train", "twins_train", "benign_train", "borderline_train",
               "harmful_eval", "twins_eval", "benign_eval", "borderline_eval")
"""The files of the split stage (``out/splits/<name>.jsonl``); a source ``split:<name>`` names one."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitSettings(_Strict):
    """How the built-in seed set is split into training and held-out parts (pairs stay on one side)."""

    eval_fraction: float = Field(0.25, gt=0, lt=1, description="Share of each seed set held out.")
    train_harmful: int | None = Field(60, ge=1, description="Harmful training prompts (null: all of the split).")
    extra_benign_ratio: float = Field(0.5, ge=0, description="Ordinary and safe-but-scary prompts per harmful one.")


class Mix(_Strict):
    """One training mix: prompt sources, and how many benign (retain) prompts come per harmful one."""

    harmful: list[str] = Field(min_length=1)
    benign: list[str] = Field(min_length=1)
    retain_ratio: float | Literal["split"] = Field(
        "split", description="Benign per harmful prompt; 'split' keeps every benign prompt of the sources.")
    tag: str = Field("", description="Suffix of the data directory: out/data/<method><tag>.")
    limit: int | None = Field(None, ge=1, description="Harmful prompts taken from each harmful source (None: all).")
    benign_limit: int | None = Field(None, ge=1, description="Benign prompts taken from each benign source.")
    drop_eval_overlap: bool = Field(False, description="Drop training prompts that are near copies of evaluation "
                                                       "prompts (JBB, XSTest, HarmBench, StrongREJECT) first.")
    overlap_threshold: float = Field(0.8, gt=0, le=1, description="Word-set Jaccard at which a prompt is a near copy.")


def _default_mixes() -> dict[str, Mix]:
    return {"default": Mix(harmful=["split:harmful_train"],
                           benign=["split:twins_train", "split:borderline_train", "split:benign_train"])}


class DataSettings(_Strict):
    evolve: str = Field("all", description="Evolution styles (all, none or a comma list).")
    retain_tokens: int = Field(64, ge=1, description="Cap on the self-distilled retain answers.")
    mixes: dict[str, Mix] = Field(default_factory=_default_mixes)


class Arm(_Strict):
    """One trained adapter: ``out/runs/<name>``, from a mix's data for its method."""

    name: str = Field(min_length=1)
    method: Literal["scot", "r2d"]
    preset: str = "cpu-small"
    mix: str = "default"
    overrides: dict[str, Any] = Field(default_factory=dict)


def _default_arms() -> list[Arm]:
    return [Arm(name="scot", method="scot"), Arm(name="r2d", method="r2d")]


class TrainSettings(_Strict):
    epochs: float = Field(1.0, gt=0)
    overrides: dict[str, Any] = Field(default_factory=dict, description="Training settings of every arm.")
    arms: list[Arm] = Field(default_factory=_default_arms)


class IntentProbe(_Strict):
    enabled: bool = False
    tune: bool = Field(False, description="A tuned probe (LoRA with a linear head); implies enabled.")
    all_pairs: bool = True
    attacks: list[str] = Field(default_factory=lambda: list(FAST_ATTACKS))


class WrapperProbe(_Strict):
    enabled: bool = True
    all_pairs: bool = False
    forms: int = Field(1, ge=1)
    documents: int = Field(64, ge=0)
    doc_tokens: int = Field(256, ge=1)


class ProbeSettings(_Strict):
    negatives: list[str] = Field(default_factory=lambda: [REALISTIC_TRAIN])
    negatives_limit: int | None = Field(None, ge=1)
    max_negatives_fpr: float = Field(0.02, ge=0, le=1)
    intent: IntentProbe = Field(default_factory=IntentProbe)
    wrapper: WrapperProbe = Field(default_factory=WrapperProbe)


class Dataset(_Strict):
    source: str = Field(description="A prompt source, or split:<name> for a file of the split stage.")
    label: Literal["harmful", "benign"]
    name: str
    limit: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _split_name(self) -> Dataset:
        if self.source.startswith("split:") and self.source[6:] not in SPLIT_FILES:
            raise ValueError(f"unknown split file {self.source!r}; expected split:<one of {', '.join(SPLIT_FILES)}>")
        return self


class VariantEntry(_Strict):
    """A row of the table: the base model (no adapter) or an arm's adapter, behind a guard."""

    name: str = Field(min_length=1)
    adapter: str | None = None
    guard: str
    args: dict[str, Any] = Field(default_factory=dict)
    requires: list[Literal["intent", "wrapper"]] = Field(default_factory=list)


class Generation(_Strict):
    max_new_tokens: int = Field(160, ge=1)
    batch_size: int = Field(32, ge=1)


class EvalSettings(_Strict):
    attacks: list[str] = Field(min_length=1)
    datasets: list[Dataset] = Field(min_length=1)
    judges: list[dict[str, Any]] = Field(default_factory=lambda: [{"name": "default", "primary": True}])
    generation: Generation = Field(default_factory=Generation)
    variants: list[VariantEntry] = Field(min_length=1)


class PipelineConfig(_Strict):
    """The whole run: split -> data -> train -> probes -> eval -> report."""

    name: str
    description: str = ""
    fast: bool = Field(False, description="A smoke run (named so in the table's title).")
    model: str = "smollm2-135m"
    seed: int = 0
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="Processes that run independent stages side by side (trainings, probe fits, "
        "evaluation rows), sharing the CPU cores; auto: 2 on a CPU with at least 2 cores, else 1.")
    split: SplitSettings = Field(default_factory=SplitSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    probes: ProbeSettings = Field(default_factory=ProbeSettings)
    eval: EvalSettings

    @model_validator(mode="after")
    def _references(self) -> PipelineConfig:
        arms = [a.name for a in self.train.arms]
        if len(set(arms)) < len(arms):
            raise ValueError(f"train.arms: names must be unique, got {arms}")
        for i, a in enumerate(self.train.arms):
            if a.mix not in self.data.mixes:
                raise ValueError(f"train.arms[{i}].mix: unknown mix {a.mix!r}; data.mixes has {sorted(self.data.mixes)}")
        names = [v.name for v in self.eval.variants]
        if len(set(names)) < len(names):
            raise ValueError(f"eval.variants: names must be unique, got {names}")
        for i, v in enumerate(self.eval.variants):
            if v.adapter is not None and v.adapter not in arms:
                raise ValueError(f"eval.variants[{i}].adapter: no arm named {v.adapter!r}; train.arms has {arms}")
        return self

    def settings(self, out: Path) -> QuickstartConfig:
        """The flat settings the stages read, with the output directory ``out``."""
        limits = {d.source: d.limit for d in self.eval.datasets}
        p, w = self.probes, self.probes.wrapper
        return QuickstartConfig(
            out=Path(out), model=self.model, fast=self.fast, seed=self.seed, workers=self.workers,
            eval_fraction=self.split.eval_fraction, eval_harmful=limits.get("split:harmful_eval") or 0,
            eval_benign=limits.get("split:twins_eval") or 0, eval_realistic=limits.get(REALISTIC_TEST),
            train_harmful=self.split.train_harmful, extra_benign_ratio=self.split.extra_benign_ratio,
            attacks=tuple(self.eval.attacks), max_new_tokens=self.eval.generation.max_new_tokens,
            retain_tokens=self.data.retain_tokens, epochs=self.train.epochs, evolve=self.data.evolve,
            gen_batch_size=self.eval.generation.batch_size, train_overrides=dict(self.train.overrides),
            probe=p.intent.enabled or p.intent.tune, probe_all_pairs=p.intent.all_pairs,
            probe_attacks=tuple(p.intent.attacks), probe_tune=p.intent.tune, probe_wrapper=w.enabled,
            wrapper_all_pairs=w.all_pairs, wrapper_forms=w.forms, wrapper_documents=w.documents,
            wrapper_doc_tokens=w.doc_tokens, negatives=tuple(p.negatives), negatives_limit=p.negatives_limit,
            max_negatives_fpr=p.max_negatives_fpr)


# ------------------------------------------------------------------ loading
def preset_names() -> list[str]:
    """The shipped pipeline presets (``safethink run NAME``)."""
    folder = resources.files("safethink.pipeline").joinpath("presets")
    return sorted(f.name.removesuffix(".yaml") for f in folder.iterdir() if f.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    return resources.files("safethink.pipeline").joinpath("presets", f"{name}.yaml").read_text(encoding="utf-8")


def _is_file_ref(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml")) or "/" in ref or Path(ref).is_file()


def _read(ref: str, seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], str]:
    """The raw mapping of a preset name or a YAML file (``extends`` applied) and where it came from."""
    if _is_file_ref(ref):
        path = Path(ref)
        if not path.is_file():
            raise InputError(f"no pipeline config file {ref}")
        where, text = str(path), path.read_text(encoding="utf-8")
    else:
        if ref not in preset_names():
            raise InputError(f"unknown pipeline preset {ref!r}; shipped presets: {', '.join(preset_names())} "
                             "(or give a YAML file)")
        where, text = f"preset {ref}", preset_text(ref)
    if where in seen:
        raise InputError(f"{where}: extends itself (via {' -> '.join(seen)})")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML: {e}", path=where) from e
    if not isinstance(raw, dict):
        raise InputError("a pipeline config is a mapping of sections", path=where)
    base = raw.pop("extends", None)
    if base is None:
        return raw, where
    if not isinstance(base, str):
        raise InputError("extends: a preset name or a YAML file", path=where)
    if _is_file_ref(base) and not Path(base).is_absolute() and where != f"preset {ref}":
        base = str(Path(where).parent / base)
    parent, _ = _read(base, (*seen, where))
    return _merge(parent, raw), where


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _set(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.path=value`` (the value read as YAML; a number in the path indexes a list)."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--set {assignment!r}: expected key.path=value")
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise InputError(f"--set {key}: {'.'.join(parts[:i]) or 'the config'} is a list of {len(node)}; "
                                 f"{part!r} is not an index of it")
            part = int(part)
        elif not isinstance(node, dict):
            raise InputError(f"--set {key}: {'.'.join(parts[:i])} is a value, not a section")
        if last:
            try:
                node[part] = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise InputError(f"--set {key}: the value is not valid YAML: {e}") from e
        else:
            if isinstance(node, dict) and node.get(part) is None:
                node[part] = {}
            node = node[part]


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _explain(e: ValidationError, where: str) -> InputError:
    lines = []
    for err in e.errors():
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{_loc(err['loc'])}: {msg}")
    return InputError("; ".join(lines), path=where)


def load_pipeline(ref: str, sets: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """A preset name (``quickstart``) or a YAML file, validated, with each ``key=value`` of ``sets`` applied."""
    if _is_file_ref(ref):
        return _load(ref, tuple(sets))
    return _load_preset(ref, tuple(sets)).model_copy(deep=True)


@functools.lru_cache(maxsize=32)
def _load_preset(ref: str, sets: tuple[str, ...]) -> PipelineConfig:
    return _load(ref, sets)


def _load(ref: str, sets: tuple[str, ...]) -> PipelineConfig:
    raw, where = _read(ref)
    try:
        PipelineConfig.model_validate(raw)
    except ValidationError as e:
        raise _explain(e, where) from None
    for s in sets:
        _set(raw, s)
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as e:
        raise _explain(e, f"{where} with --set {' --set '.join(sets)}") from None


def quickstart_sets(*, model: str = "smollm2-135m", seed: int = 0, probe: bool = False, probe_tune: bool = False,
                    probe_wrapper: bool = True, negatives: tuple[str, ...] | list[str] = (REALISTIC_TRAIN,)
                    ) -> list[str]:
    """The ``--set`` assignments of ``safethink quickstart``'s options."""
    return [f"model={json.dumps(model)}",
            f"seed={int(seed)}", f"probes.intent.enabled={str(bool(probe or probe_tune)).lower()}",
            f"probes.intent.tune={str(bool(probe_tune)).lower()}",
            f"probes.wrapper.enabled={str(bool(probe_wrapper)).lower()}",
            f"probes.negatives={json.dumps(list(negatives))}"]
