"""``safethink guards list``, ``safethink judges list`` and ``safethink presets list``.

With ``models list`` and ``attacks list`` (in their own modules) every registry has one listing command
of the same shape. The old top-level ``safethink guards`` stays as a hidden alias.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import typer
from rich.table import Table

from ._common import console, err_console

guards_app = typer.Typer(help="Guards (defences around generation): list them.", invoke_without_command=True)
judges_app = typer.Typer(help="Judges (what an answer is, how harmful): list them.", no_args_is_help=True)
presets_app = typer.Typer(help="Ready-made settings: training presets and pipeline presets.", no_args_is_help=True)


def _first_sentence(text: str | None) -> str:
    """The first sentence of a docstring or comment block (its lines joined)."""
    para = " ".join((text or "").strip().split("\n\n", 1)[0].split())
    return re.split(r"(?<=\.)\s+(?=[A-Z`])", para, maxsplit=1)[0]


@guards_app.command("list")
def list_guards() -> None:
    """Table of registered guards: name, kind, where the defence comes from, what it does."""
    from ..guard import GUARDS

    table = Table(title="guards")
    for col in ("name", "kind", "source", "what it does"):
        table.add_column(col, overflow="fold")
    for name, cls in GUARDS.items():
        table.add_row(name, getattr(cls, "kind", ""), getattr(cls, "paper", "") or "safethink",
                      _first_sentence(cls.__doc__))
    console.print(table)


@guards_app.callback()
def guards_alias(ctx: typer.Context) -> None:
    """Guards (defences around generation): list them."""
    if ctx.invoked_subcommand is None:  # the old `safethink guards`, before the `list` subcommand
        err_console.print("warning: `safethink guards` is deprecated; use `safethink guards list`", highlight=False,
                          markup=False, soft_wrap=True)
        list_guards()


def judge_rows() -> list[dict[str, Any]]:
    """One row per registered judge: name, what it measures (refusal or harm), the options it takes
    (``--arg KEY=VALUE``), its measured agreement with human labels on held-out models (None when it was
    never validated), and the first sentence of its docstring."""
    from ..judges import JUDGES, judge_measures, judge_validation

    rows = []
    for name, cls in JUDGES.items():
        config = getattr(cls, "Config", None)
        fields = getattr(config, "model_fields", {}) or {}
        found = judge_validation(name) or {}
        rows.append({"name": name, "measures": judge_measures(name),
                     "options": list(fields),
                     "agreement": found.get("held_out_agreement"), "description": _first_sentence(cls.__doc__)})
    return rows


@judges_app.command("list")
def list_judges() -> None:
    """Table of registered judges: name, what the headline rate measures, required arguments, validated
    agreement with human labels (on models the judge was not fitted or chosen on)."""
    table = Table(title="judges")
    from ..judges import judge_validation

    for col in ("name", "measures", "options (--arg)", "held-out agreement", "what it does"):
        table.add_column(col, overflow="fold")
    rows = judge_rows()
    for r in rows:
        agreement = "unvalidated" if r["agreement"] is None else f"{100 * float(r['agreement']):.1f}%"
        table.add_row(r["name"], r["measures"], ", ".join(r["options"]) or "-", agreement, r["description"])
    console.print(table)
    validated = next((judge_validation(r["name"]) for r in rows if r["agreement"] is not None), None)
    if validated:
        console.print(f"held-out agreement: the lowest per-model agreement against {validated['labels']} "
                      f"(measured by: {validated['command']})", highlight=False, markup=False, soft_wrap=True)


def preset_rows() -> list[dict[str, str]]:
    """Every named preset: the training presets (``safethink train --preset``; the first comment line of
    each YAML file's opening comment says what it is for) and the pipeline presets (``safethink run``; their
    ``description``, and the alias ``safethink quickstart [--fast]`` of the two quickstart ones)."""
    from ..pipeline import load_pipeline, preset_names
    from ..train import PRESETS

    rows = []
    for name in PRESETS:
        text = resources.files("safethink.train").joinpath("presets", f"{name}.yaml").read_text(encoding="utf-8")
        comment = "\n".join(ln.lstrip("#").strip() for ln in text.splitlines() if ln.startswith("#"))
        rows.append({"kind": "train", "name": name, "use": f"safethink train --preset {name}",
                     "description": _first_sentence(comment)})
    aliases = {"quickstart": "safethink quickstart", "quickstart-fast": "safethink quickstart --fast"}
    for name in preset_names():
        pc = load_pipeline(name)
        use = f"safethink run {name}" + (f" (or {aliases[name]})" if name in aliases else "")
        rows.append({"kind": "pipeline", "name": name, "use": use, "description": pc.description})
    return rows


@presets_app.command("list")
def list_presets() -> None:
    """Table of presets: training presets and pipeline presets (safethink run), with the command that uses each."""
    table = Table(title="presets")
    for col in ("kind", "name", "use", "what it sets"):
        table.add_column(col, overflow="fold")
    for r in preset_rows():
        table.add_row(r["kind"], r["name"], r["use"], r["description"])
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(guards_app, name="guards")
    app.add_typer(judges_app, name="judges")
    app.add_typer(presets_app, name="presets")
