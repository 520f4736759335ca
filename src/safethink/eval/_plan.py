"""Resolve a spec into plugin objects and the list of matrix cells, before any model is loaded."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..attacks._base import ATTACKS
from ..data._schema import PromptRecord
from ..errors import SafethinkError, SpecError
from ..guard._base import GUARDS
from ..judges._base import JUDGES
from ._spec import AttackEntry, DatasetEntry, DefenceEntry, EvalSpec, ModelEntry, canonical_json

VERBATIM = AttackEntry(name="none")
"""Benign records are always sent as they are: over-refusal is measured on the plain request."""


def import_plugins(spec: EvalSpec) -> None:
    """Populate the registries: the built-in plugin packages, then the spec's own plugin modules."""
    for pkg in ("safethink.attacks", "safethink.judges", "safethink.guard"):
        importlib.import_module(pkg)
    for i, mod in enumerate(spec.plugins):
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise SpecError(f"plugins[{i}]: cannot import {mod!r} ({e})") from None


def check_names(spec: EvalSpec) -> None:
    """Fail before loading anything when a spec names an unknown plugin."""
    for i, a in enumerate(spec.attacks):
        _known(ATTACKS, a.name, f"attacks[{i}].name")
    _known(ATTACKS, VERBATIM.name, "the verbatim attack for benign records")
    for i, d in enumerate(spec.defences):
        _known(GUARDS, d.guard, f"defences[{i}].guard")
    for i, j in enumerate(spec.judges):
        _known(JUDGES, j.name, f"judges[{i}].name")


def _known(reg, name: str, where: str) -> None:
    if name not in reg:
        raise SpecError(f"{where}: unknown {reg.kind} {name!r}; known: {', '.join(reg.names()) or '(none registered)'}")


def _at(e: SafethinkError, where: str) -> SafethinkError:
    """The same kind of error, prefixed with the spec entry it came from."""
    try:
        return type(e)(f"{where}: {e}")
    except TypeError:  # error classes with a structured constructor (MissingExtraError)
        return SafethinkError(f"{where}: {e}")


def build_attack(entry: AttackEntry, where: str) -> Any:
    try:
        return ATTACKS.create(entry.name, **entry.args)
    except SafethinkError as e:
        raise _at(e, where) from None


def build_guard(entry: DefenceEntry, where: str) -> Any:
    try:
        return GUARDS.create(entry.guard, **entry.args)
    except SafethinkError as e:
        raise _at(e, where) from None


def build_judges(spec: EvalSpec) -> dict[str, Any]:
    """Judges keyed by their verdict key, the primary one first."""
    order = [spec.primary_judge] + [j for j in spec.judges if j is not spec.primary_judge]
    out = {}
    for j in order:
        try:
            out[j.key] = JUDGES.create(j.name, **j.args)
        except SafethinkError as e:
            raise _at(e, f"judges[{spec.judges.index(j)}]") from None
    return out


def load_dataset(entry: DatasetEntry, where: str, seed: int) -> list[PromptRecord]:
    try:
        from ..data import load_prompts
    except ImportError as e:  # the loader layer is missing from this build
        raise SafethinkError(f"{where}: the dataset loaders (safethink.data.load_prompts) are not available: {e}") from None
    try:
        records = load_prompts(entry.source, label=entry.label, column_map=entry.column_map,
                               limit=entry.limit, seed=seed)
    except SafethinkError as e:
        raise _at(e, where) from None
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise SafethinkError(f"{where}: record id {r.id!r} occurs twice in {entry.source}; ids must be unique")
        seen.add(r.id)
    if not records:
        raise SafethinkError(f"{where}: {entry.source} gave no records" + (f" with label {entry.label}" if entry.label else ""))
    return records


def model_styles(entry: ModelEntry) -> list[str]:
    """Attack styles the model saw in training: from the spec, else from its training run's manifest."""
    if entry.styles is not None:
        return list(entry.styles)
    if not entry.adapter:
        return []
    run = Path(entry.adapter) / "safethink_run.json"
    try:
        info = json.loads(run.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if isinstance(info.get("styles"), list):
        return [str(s) for s in info["styles"]]
    # A training run keeps the manifest of the data it was trained on (train/_run.py).
    manifest = info.get("data_manifest")
    if isinstance(manifest, dict) and isinstance(manifest.get("styles"), list):
        return [str(s) for s in manifest["styles"]]
    # The training run points at its data directory; the data manifest lists the evolution styles.
    cfg = info.get("config") if isinstance(info.get("config"), dict) else {}
    for cand in (info.get("data"), info.get("data_dir"), cfg.get("data"), cfg.get("data_dir")):
        if isinstance(cand, str):
            try:
                man = json.loads((Path(cand) / "manifest.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(man.get("styles"), list):
                return [str(s) for s in man["styles"]]
    return []


@dataclass
class Cell:
    """One (model, defence, attack, dataset) cell and the records it attacks."""

    model: ModelEntry
    defence: DefenceEntry
    attack: AttackEntry
    dataset: DatasetEntry
    records: list[PromptRecord]
    keys: list[str] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    """Indexes into ``records`` of attempts not yet stored."""


def plan_cells(spec: EvalSpec, datasets: dict[str, list[PromptRecord]]) -> list[Cell]:
    """Harmful records get every attack; benign records are sent verbatim once per model x defence."""
    cells = []
    for m in spec.models:
        for d in spec.defences:
            for ds in spec.datasets:
                recs = datasets[ds.key]
                harmful = [r for r in recs if r.label == "harmful"]
                benign = [r for r in recs if r.label == "benign"]
                if harmful:
                    cells += [Cell(m, d, a, ds, harmful) for a in spec.attacks]
                if benign:
                    cells.append(Cell(m, d, VERBATIM, ds, benign))
    return cells


def generation_json(spec: EvalSpec) -> str:
    return canonical_json(spec.generation.model_dump())
