"""``safethink attacks list`` and ``safethink attacks apply``."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..errors import SpecError
from ._common import ARG_HELP, console, deprecated, either, parse_pairs, quiet_hf

attacks_app = typer.Typer(help="Jailbreak attacks: list them, or apply one to a prompt.", no_args_is_help=True)


@attacks_app.command("list")
def list_attacks() -> None:
    """Table of registered attacks: name, family, whether it needs the target model, tags, paper."""
    from ..attacks import attack_table

    table = Table(title="attacks")
    for col in ("name", "family", "needs_target", "needs", "tags", "paper"):
        table.add_column(col, overflow="fold")
    for row in attack_table():
        table.add_row(str(row["name"]), str(row["family"]), "yes" if row["needs_target"] else "no",
                      ", ".join(row["needs"]) or "-", ", ".join(row["tags"]) or "-",  # type: ignore[arg-type]
                      str(row["paper"]) or "-")
    console.print(table)


def apply(
    attack: Annotated[str, typer.Option(help="Attack name (see `safethink attacks list`).")],
    prompt: Annotated[str, typer.Option(help="The request to attack.")],
    seed: Annotated[int, typer.Option(help="Seed for attacks with random choices.")] = 0,
    arg: Annotated[Optional[list[str]], typer.Option("--arg", help=f"{ARG_HELP}: an attack parameter, read as a YAML "
                                                     "scalar, e.g. --arg mode=both, --arg templates=DIR, "
                                                     "--arg judge=keyword-gcg.")] = None,
    target: Annotated[Optional[str], typer.Option(help="Target model spec, for attacks that query it (pair, tap, gcg, autodan).")] = None,
    attacker: Annotated[Optional[str], typer.Option(help="Attacker model spec, for model-driven attacks (pair, tap, persuasion, translation).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole AttackedPrompt as JSON.")] = False,
    param: Annotated[Optional[list[str]], deprecated("--param", "--arg", "-p")] = None,
) -> None:
    """Apply one attack to one prompt and print the attacked prompt."""
    import dataclasses

    from ..attacks import ATTACKS
    from ..data._schema import PromptRecord

    params = parse_pairs(either(arg, param, "--arg"))
    cls = ATTACKS.get(attack)  # unknown names fail before any model is loaded
    if attacker is not None:
        params["attacker"] = attacker
    if not prompt.strip():
        raise SpecError("--prompt is empty")
    if cls.needs_target and target is None:
        raise SpecError(f"attack {attack!r} queries the target model: pass --target <model spec>")
    quiet_hf()
    built = ATTACKS.create(attack, **params)
    tmodel = None
    if target is not None:
        from ..models import load_model

        tmodel = load_model(target)
    record = PromptRecord(id="cli", prompt=prompt, label="harmful", source="cli")
    out = built.prepare([record], seed=seed, target=tmodel)[0]
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(out), ensure_ascii=False, indent=2))
        return
    if len(out.messages) == 1 and not out.prefix:
        console.print(out.messages[0]["content"], highlight=False, markup=False)
        return
    for m in out.messages:
        console.print(f"[bold]--- {m['role']} ---[/]", highlight=False)
        console.print(m["content"], highlight=False, markup=False)
    if out.prefix:
        console.print("[bold]--- assistant (prefilled) ---[/]", highlight=False)
        console.print(out.prefix, highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    attacks_app.command("apply")(apply)
    app.add_typer(attacks_app, name="attacks")
