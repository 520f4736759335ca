"""Jailbreak attacks as registered plugins.

Build one with ``ATTACKS.create(name, **params)``; ``attack.prepare(records, seed=...)`` returns
one :class:`AttackedPrompt` per record with the attack's name, parameters and seed recorded.
Importing this package registers every built-in attack (no other side effects).
"""

from . import _autodan, _encodings, _evolution, _gcg, _rewrite, _search, _templates  # noqa: F401  (registration)
from ._base import ATTACKS, Attack, AttackBase, AttackedPrompt, AttackFamily, Built, TextAttack
from ._data import load_prompt_templates

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackBase",
    "AttackFamily",
    "AttackedPrompt",
    "Built",
    "TextAttack",
    "attack_table",
    "load_prompt_templates",
]


def attack_table() -> list[dict[str, object]]:
    """One row per registered attack: name, family, needs_target, needs (required args), tags, style
    (the training evolution style it stands for, or None), paper, description."""
    rows = []
    for name, cls in ATTACKS.items():
        rows.append({"name": name, "family": cls.family, "needs_target": cls.needs_target,
                     "needs": list(getattr(cls, "needs", ())), "tags": list(getattr(cls, "tags", ())),
                     "style": _training_style(cls), "paper": cls.paper,
                     "description": getattr(cls, "description", "")})
    return rows


def _training_style(cls: type) -> str | None:
    get = getattr(cls, "training_style", None)
    return get() if callable(get) else getattr(cls, "style", None)
