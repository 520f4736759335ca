"""The ``safethink`` command line. Thin: parse options, call one library layer, print with rich.

Each command group lives in its own module with a ``register(app)`` function.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from ..errors import SafethinkError

app = typer.Typer(
    name="safethink",
    help="Teach language models to reason about safety before they answer (SCoT, R2D), "
    "guard them at decode time, and measure how well they resist jailbreaks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


# Command modules, each with a ``register(app)`` function, in help order.
COMMAND_MODULES = ("_models", "_data", "_train", "_probe", "_serve", "_attacks", "_judge", "_eval", "_lists",
                   "_run", "_quickstart")


def _register_all() -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":  # command group not installed in this build
                continue
            raise
        mod.register(app)


_register_all()


def main() -> None:
    """Console entry point: library errors become one line on stderr and exit code 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=os.environ.get("SAFETHINK_LOG", "WARNING"))
    try:
        app()
    except SafethinkError as e:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
