"""``safethink probe fit``, ``safethink probe score`` and ``safethink probe eval``: the probe guard's classifier."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ._common import console, deprecated, either, quiet_hf, split_ints, split_list

probe_app = typer.Typer(help="The probe guard: fit a linear probe on a model's hidden states, or score requests.",
                        no_args_is_help=True)


@probe_app.command("fit")
def fit(
    harmful: Annotated[list[str], typer.Option(help="Harmful prompt source: dataset name, path or builtin:harmful (repeatable).")],
    benign: Annotated[list[str], typer.Option(help="Benign prompt source, e.g. builtin:twins (repeatable).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Probe file to write (JSON); with --tune, a directory.")],
    model: Annotated[str, typer.Option(help="The model the guard will protect: smollm2-135m or hf:<id|path>.")] = "smollm2-135m",
    adapter: Annotated[Optional[str], typer.Option(help="A trained adapter run on top of --model.")] = None,
    attacks: Annotated[Optional[list[str]], typer.Option(help="Prompt-only attack every request is fitted under "
                                                              "(repeatable, or a comma list; default: none).")] = None,
    forms_per_request: Annotated[Optional[int], typer.Option(
        min=1, help="Put each request under this many of --attacks, drawn per request pair (default: under all); "
                    "fits a long attack list at a fixed cost.")] = None,
    layer: Annotated[Optional[list[str]], typer.Option(help="Candidate layer (repeatable, or a comma list); default: "
                                                            "every layer.")] = None,
    pool: Annotated[str, typer.Option(help="last (the state at the last prompt token) or mean (over the prompt).")] = "last",
    max_fpr: Annotated[float, typer.Option(min=0.0, max=0.99, help="Share of benign requests the threshold may refuse (cross-validated).")] = 0.05,
    max_fnr: Annotated[float, typer.Option(min=0.0, max=0.99, help="Share of harmful requests the route threshold (route=base) may send to the base model (cross-validated).")] = 0.05,
    c: Annotated[float, typer.Option(min=1e-6, help="Inverse L2 strength of the logistic regression.")] = 0.1,
    ensembles: Annotated[Optional[list[str]], typer.Option(help="Ensemble size to cross-validate (repeatable, or a "
                                                                "comma list; default 1,3,5,8): the k best layers, their "
                                                                "logits averaged (1: the single best layer).")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="At most this many requests per source.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    data_dir: Annotated[Optional[str], typer.Option(help="Directory with local copies of public datasets.")] = None,
    tune: Annotated[bool, typer.Option("--tune", help="Fine-tune a tuned probe instead (LoRA on the lower blocks and a "
                                                      "linear head; minutes of training, not seconds).")] = False,
    tune_layer: Annotated[Optional[int], typer.Option(min=1, help="--tune: read-out block (default: 2/3 of the depth).")] = None,
    epochs: Annotated[float, typer.Option(min=0.01, help="--tune: passes over the training forms.")] = 2.0,
    rank: Annotated[int, typer.Option(min=1, help="--tune: LoRA rank.")] = 8,
    lr: Annotated[float, typer.Option(min=1e-7, help="--tune: learning rate.")] = 5e-4,
    val_fraction: Annotated[float, typer.Option(min=0.01, max=0.9, help="--tune: share of request groups kept out "
                                                                       "of training to set the thresholds.")] = 0.15,
    target: Annotated[str, typer.Option(help="intent: harmful vs benign requests; wrapper: any request inside one of "
                                             "--attacks vs the same requests under --plain-attacks (a probe "
                                             "guard in front of others: then=probe).")] = "intent",
    plain_attacks: Annotated[Optional[list[str]], typer.Option(help="--target wrapper: an attack whose forms count as "
                                                                    "plain requests (repeatable, or a comma list; "
                                                                    "default: none; rewrites such as past-tense).")] = None,
    documents: Annotated[Optional[int], typer.Option(min=0, help="--target wrapper: long plain requests added as "
                                                     "negatives: the model answers this many benign requests and each "
                                                     "answer becomes the document of an ordinary task (summarise, "
                                                     "reply ...), so that length is not taken for an attack "
                                                     "(default 200).")] = None,
    negatives: Annotated[Optional[list[str]], typer.Option(
        help="Benign requests as real users send them (pasted documents, personas, earlier turns), e.g. "
             "builtin:realistic-train (repeatable): negatives in their plain form, history included (with --target "
             "wrapper also positives under a wrapping attack); the threshold also keeps --max-negatives-fpr of them "
             "flagged, out of fold by group.")] = None,
    negatives_limit: Annotated[Optional[int], typer.Option(min=1, help="At most this many requests per --negatives "
                                                                       "source.")] = None,
    max_negatives_fpr: Annotated[float, typer.Option(min=0.0, max=0.99, help="Share of the --negatives requests the "
                                                     "threshold may flag (held out by group).")] = 0.02,
) -> None:
    """Fit a probe that tells harmful from benign requests by the model's hidden state (or, with --target
    wrapper, requests inside an attack from plain ones); writes --out."""
    from ..errors import SpecError
    from ..models import load_model
    from ..probes import PROBE_TARGETS, fit_probe

    harmful, benign, negatives = split_list(harmful), split_list(benign), split_list(negatives)
    attacks, plain_attacks = ",".join(split_list(attacks)) or "none", ",".join(split_list(plain_attacks)) or "none"
    layer = split_ints(layer, "--layer") or None
    ensembles = ",".join(split_list(ensembles)) or "1,3,5,8"
    if pool not in ("last", "mean"):
        raise SpecError(f"--pool {pool!r}: expected last or mean")
    try:
        sizes = tuple(int(n) for n in ensembles.split(","))
    except ValueError:
        raise SpecError(f"--ensembles {ensembles!r}: expected a comma list of whole numbers, e.g. 1,3,5,8") from None
    if tune and (adapter or layer or pool != "last"):
        raise SpecError("--tune fits on the base model at one read-out block: use --tune-layer, not --layer, "
                        "and neither --adapter nor --pool")
    attack_list = [a for a in attacks.split(",") if a]
    plain_list = [a for a in plain_attacks.split(",") if a]
    if target not in PROBE_TARGETS:
        raise SpecError(f"--target {target!r}: expected one of {', '.join(PROBE_TARGETS)}")
    if target == "wrapper":
        attack_list += [a for a in plain_list if a not in attack_list]
    elif plain_attacks != "none" or documents is not None:
        raise SpecError("--plain-attacks and --documents are for --target wrapper")
    kind = {"target": target, "plain_attacks": plain_list, "documents": documents, "negatives": negatives or [],
            "negatives_limit": negatives_limit, "max_negatives_fpr": max_negatives_fpr}
    quiet_hf()
    m = load_model(model, adapter=adapter)
    if tune:
        with console.status("tuning: step 0") as status:
            state = {"steps": 0}

            def step(k: int) -> None:
                state["steps"] += k
                status.update(f"tuning: step {state['steps']}")

            probe = fit_probe(m, harmful, benign, attacks=attack_list, seed=seed, limit=limit,
                              data_dir=data_dir, forms_per_request=forms_per_request, tune=True,
                              layer=tune_layer, epochs=epochs, rank=rank, lr=lr,
                              val_fraction=val_fraction, max_fpr=max_fpr, max_fnr=max_fnr, progress=step,
                              **kind)
    else:
        with console.status("computing hidden states and cross-validating layers"):
            probe = fit_probe(m, harmful, benign, attacks=attack_list, seed=seed, limit=limit,
                              data_dir=data_dir, forms_per_request=forms_per_request, layers=layer,
                              pool=pool, c=c, max_fpr=max_fpr, max_fnr=max_fnr, ensembles=sizes, **kind)
    probe.save(out)
    mt = probe.metrics
    where = "validation" if tune else "out-of-fold"
    pos, neg = ("wrapped", "plain") if target == "wrapper" else ("harmful", "benign")
    table = Table(title=f"{'tuned ' if tune else ''}{'wrapper ' if target == 'wrapper' else ''}probe -> {out}")
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("examples", f"{mt['n_harmful']} {pos}, {mt['n_benign']} {neg} ({mt['n_groups']} groups)")
    if tune:
        table.add_row("read-out block", f"{probe.layer} (LoRA r={rank}, {mt['steps']} steps, {mt['train_seconds']:.0f} s)")
    else:
        table.add_row("layer" if len(probe.layers) == 1 else "layers (mean of their logits)", f"{probe.layer} ({probe.pool})")
    table.add_row(f"{where} AUC", f"{mt['auc']:.3f}")
    table.add_row("threshold", f"{probe.threshold:.4f}")
    table.add_row(f"{where} flagged", f"{pos} {100 * mt['oof_harmful_flagged']:.0f}%, {neg} {100 * mt['oof_benign_flagged']:.0f}%")
    if mt.get("negatives"):
        neg = mt["negatives"]
        table.add_row(f"{where} flagged: --negatives", f"{100 * neg['held_out_flagged']:.1f}% of {neg['n']} (at most "
                      f"{100 * neg['max_fpr']:.0f}%; threshold set by {neg['threshold_set_by'].replace('_', '-')})")
    if target == "intent":
        table.add_row("route threshold", f"{probe.route_threshold:.4f}")
        table.add_row(f"{where} routed to base", f"harmful {100 * mt['oof_harmful_routed']:.0f}%, benign {100 * mt['oof_benign_routed']:.0f}%")
    console.print(table)
    if target == "wrapper":
        console.print(f"use it in front of an intent probe: --guard probe --arg path={out} --arg then=probe --arg "
                      f"'then_args={{path: <intent probe>}}', or alone: --arg path={out}")
    else:
        console.print(f"use it: safethink serve --guard probe --arg path={out}, or {{guard: probe, args: {{path: {out}}}}} in an eval spec")


@probe_app.command("score")
def score(
    probe: Annotated[Path, typer.Argument(help="A probe file (or tuned probe directory) from `safethink probe fit`.")],
    prompt: Annotated[list[str], typer.Argument(help="Requests to score.")],
    model: Annotated[str, typer.Option()] = "smollm2-135m",
    adapter: Annotated[Optional[str], typer.Option()] = None,
) -> None:
    """Print p(harmful) of each request and whether the probe guard would refuse it."""
    from ..models import load_model
    from ..probes import load_probe

    p = load_probe(probe)
    quiet_hf()
    m = load_model(model, adapter=adapter)
    table = Table(title=f"{probe} (threshold {p.threshold:.4f})")
    for col in ("p(wrapped)" if p.target == "wrapper" else "p(harmful)", "refused", "request"):
        table.add_column(col, overflow="fold")
    for text, s in zip(prompt, p.score(m, [[{"role": "user", "content": t}] for t in prompt])):
        table.add_row(f"{s:.4f}", "yes" if s >= p.threshold else "no", text)
    console.print(table)


@probe_app.command("eval")
def evaluate(
    probe: Annotated[list[Path], typer.Argument(help="Probe files (or tuned probe directories) from `safethink probe "
                                                     "fit`; several are compared side by side.")],
    harmful: Annotated[Optional[list[str]], typer.Option(help="Harmful prompt source, sent under each of --attacks "
                                                              "(repeatable).")] = None,
    benign: Annotated[Optional[list[str]], typer.Option(help="Benign prompt source, sent verbatim with its history "
                                                             "(repeatable), e.g. builtin:realistic-test.")] = None,
    attacks: Annotated[Optional[list[str]], typer.Option(help="Prompt-only attack for the harmful sources "
                                                              "(repeatable, or a comma list; default: none).")] = None,
    model: Annotated[str, typer.Option()] = "smollm2-135m",
    adapter: Annotated[Optional[str], typer.Option()] = None,
    threshold: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Override the probes' thresholds.")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="At most this many requests per source.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the attack templates and of --limit's sample.")] = 0,
    data_dir: Annotated[Optional[str], typer.Option(help="Directory with local copies of public datasets.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also write the rates to this JSON file.")] = None,
    json_old: Annotated[Optional[Path], deprecated("--json", "--out")] = None,
) -> None:
    """Print the share of each source each probe flags (would refuse), per attack and per kind; nothing is
    generated, as a probe acts on the prompt alone."""
    import json
    import shlex
    import sys

    from ..errors import SpecError
    from ..io import atomic_write_text
    from ..models import load_model
    from ..probes import flag_rates, load_probe

    harmful, benign, json_out = split_list(harmful), split_list(benign), either(json_out, json_old, "--out")
    attacks = ",".join(split_list(attacks)) or "none"
    if not harmful and not benign:
        raise SpecError("probe eval: give at least one --harmful or --benign source")
    probes = [load_probe(p) for p in probe]
    quiet_hf()
    m = load_model(model, adapter=adapter)
    with console.status("computing hidden states"):
        rows = flag_rates(m, probes, harmful=harmful or [], benign=benign or [],
                          attacks=[a for a in attacks.split(",") if a], threshold=threshold, limit=limit, seed=seed,
                          data_dir=data_dir)
    table = Table(title="share flagged (refused before generation)")
    for col in ("source", "attack", "n"):
        table.add_column(col, justify="right" if col == "n" else "left")
    for path, p, r0 in zip(probe, probes, rows[0]["probes"]):
        table.add_column(f"{path.name}\n{p.target}, >= {r0['threshold']:.4g}", justify="right")

    def cell(flagged: int, n: int) -> str:
        return f"{100 * flagged / n:.1f}% ({flagged})"

    for r in rows:
        table.add_row(r["source"], r["attack"], str(r["n"]), *[cell(c["flagged"], r["n"]) for c in r["probes"]])
        kinds = r["probes"][0].get("by_kind", {})
        for kind, k in kinds.items():
            table.add_row(f"  {kind}", "", str(k["n"]), *[cell(c["by_kind"][kind]["flagged"], k["n"]) for c in r["probes"]])
    for label in ("harmful", "benign"):
        own = [r for r in rows if r["label"] == label]
        if len(own) > 1:
            n = sum(r["n"] for r in own)
            table.add_row(f"all {label}", "", str(n), *[cell(sum(r["probes"][i]["flagged"] for r in own), n)
                                                         for i in range(len(probes))], style="bold")
    console.print(table)
    if json_out:
        atomic_write_text(json_out, json.dumps({
            "probes": [str(p) for p in probe], "model": model, "adapter": adapter, "seed": seed,
            "command": shlex.join(["safethink", *sys.argv[1:]]), "rows": rows}, indent=1))
        console.print(f"wrote {json_out}")


def register(app: typer.Typer) -> None:
    app.add_typer(probe_app, name="probe")
