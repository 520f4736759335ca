"""``safethink quickstart``: the whole journey on the bundled model, offline, with a before/after table.

An alias of ``safethink run quickstart`` (``quickstart-fast`` with ``--fast``): each option is a ``--set``
assignment of that preset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import split_list


def quickstart(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (stages are cached here and resumed).")] = Path("runs/quickstart"),
    fast: Annotated[bool, typer.Option("--fast", help="A smoke run of every stage (about a minute on 2 CPU cores): fewer prompts, attacks and steps.")] = False,
    model: Annotated[str, typer.Option(help="Target model spec.")] = "smollm2-135m",
    seed: Annotated[int, typer.Option()] = 0,
    probe: Annotated[bool, typer.Option("--probe", help="Also fit the probe guard and evaluate R2D behind it, and "
                                        "the probe as a base / R2D router (on 2 CPU cores about 12 more minutes "
                                        "in full mode).")] = False,
    probe_tune: Annotated[bool, typer.Option("--probe-tune", help="As --probe, with a tuned probe (LoRA on the "
                                             "lower blocks and a linear head; about 17 more minutes of training on "
                                             "2 CPU cores in full mode).")] = False,
    probe_wrapper: Annotated[bool, typer.Option("--probe-wrapper/--no-probe-wrapper", help="Fit a wrapper probe "
                                                "(refuses requests that come inside an attack template or encoding) "
                                                "and evaluate the base model behind it, and with --probe the probe "
                                                "router behind it (on 2 CPU cores about 4 more minutes in full "
                                                "mode).")] = True,
    negatives: Annotated[Optional[list[str]], typer.Option(
        help="Benign requests as real users send them, taken by the probes as extra negatives, with their threshold "
             "held to at most 2% of them flagged out of fold (repeatable; default builtin:realistic-train; 'none' "
             "fits without).")] = None,
) -> None:
    """Build SCoT and R2D data from the built-in seed set, train both adapters on the bundled model,
    evaluate base vs defended models under attack, print the before/after table, write the HTML report.

    The same as `safethink run quickstart` (`quickstart-fast` with --fast)."""
    from ..pipeline import REALISTIC_TRAIN, load_pipeline, quickstart_sets
    from ._run import run_and_print

    sources = tuple(s for s in (split_list(negatives) or [REALISTIC_TRAIN]) if s != "none")
    sets = quickstart_sets(model=model, seed=seed, probe=probe, probe_tune=probe_tune, probe_wrapper=probe_wrapper,
                           negatives=sources)
    pc = load_pipeline("quickstart-fast" if fast else "quickstart", sets)
    run_and_print(pc, out, f"safethink quickstart ({model}, held-out prompts, {'fast' if fast else 'full'})")


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
