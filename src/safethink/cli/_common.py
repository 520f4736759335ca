"""Shared CLI helpers: consoles, progress bars, quiet library logging, and the option grammar every
command follows (``--out``, ``--dtype``, repeatable ``--arg KEY=VALUE``, repeatable lists that also take
comma lists, hidden deprecated spellings)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..errors import SpecError

console = Console()
err_console = Console(stderr=True)


def quiet_hf() -> None:
    """Silence transformers' own progress bars and advisory warnings in CLI output (and the deprecation and
    advisory warnings transformers and PEFT raise from their own code, which say nothing a user can act on)."""
    import warnings

    for module in (r"transformers\.", r"peft\."):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # transformers missing is reported elsewhere
        pass


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator:
    """A rich progress bar on stderr; yields ``advance(n)``."""
    prog = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False,
    )
    with prog:
        task = prog.add_task(description, total=total)
        yield lambda n=1: prog.advance(task, n)


# --- the one option grammar shared by every command -------------------------------------------------

DTYPE_HELP = "float32 (fp32), bfloat16 (bf16) or float16 (fp16)"
"""What every ``--dtype`` accepts (``auto`` where a command has a default that depends on the device)."""

ARG_HELP = "Plugin option KEY=VALUE (repeatable)"
"""The start of every ``--arg`` help text."""


def split_list(values: Sequence[str] | None) -> list[str]:
    """A repeatable list option's values, each of which may also be a comma list: ``--attacks a --attacks
    b,c`` -> ``["a", "b", "c"]``. Blank items are dropped."""
    return [v.strip() for item in values or () for v in item.split(",") if v.strip()]


def parse_pairs(pairs: Sequence[str] | None, *, option: str = "--arg", yaml_values: bool = True) -> dict[str, Any]:
    """``KEY=VALUE`` items of a repeatable option into a dict. With ``yaml_values`` a value is read as a
    YAML scalar or list (``3`` -> 3, ``true`` -> True, ``[a, b]``), else kept as the string. A key given
    twice, or an item without ``=``, is an error naming the option."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"{option} {pair!r}: expected key=value")
        if key in out:
            raise SpecError(f"{option} {key!r} given twice")
        if not yaml_values:
            out[key] = value
            continue
        try:
            out[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key] = value
    return out


def deprecated(old: str, new: str, *short: str) -> Any:
    """A hidden option that keeps an old spelling working; using it prints one deprecation line on stderr.
    The command merges it with the current option through :func:`either`."""

    def note(value: Any) -> Any:
        if value not in (None, [], ()):
            err_console.print(f"warning: {old} is deprecated; use {new}", highlight=False, markup=False,
                              soft_wrap=True)
        return value

    return typer.Option(old, *short, hidden=True, callback=note)


def either(current: Any, old: Any, name: str, *, required: bool = False) -> Any:
    """The value of an option given under its current spelling or under its deprecated one. Lists from
    both are joined; a single value given under both spellings is an error, and so is a required option
    given under neither."""
    if isinstance(current, list) or isinstance(old, list):
        merged = [*(current or []), *(old or [])]
        if required and not merged:
            raise SpecError(f"missing option {name}")
        return merged or None
    if old is not None and current is not None:
        raise SpecError(f"{name} given twice (once under a deprecated spelling)")
    value = current if current is not None else old
    if required and value is None:
        raise SpecError(f"missing option {name}")
    return value


def split_ints(values: Sequence[str] | None, option: str) -> list[int]:
    """:func:`split_list` of whole numbers; anything else is an error naming the option and its values."""
    items = split_list(values)
    try:
        return [int(v) for v in items]
    except ValueError:
        raise SpecError(f"{option} {','.join(values or ())!r}: expected whole numbers (repeatable, or a comma "
                        "list such as 1,3,5)") from None
