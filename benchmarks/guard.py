"""Pivot guard overhead: tokens/s with the decode-time ``r2d-pivot`` guard vs no guard.

Same model (the bundled one with the R2D pivot/think tokens added, so pivot ids exist and the
guard runs in id mode), same prompts (the built-in benign seed set), greedy decoding, same
max_new_tokens and batch size. The guard's token hook sees every decoded token of every row;
the question is what that costs. The guard runs with ``fail_open=True``, so that answers without pivots
(every answer of a model not trained with R2D) are kept and the two sides decode the same tokens. Tokens are each answer's own tokens (``completion_tokens``).

The machine may be shared, so both methods run interleaved in one process: the prompts are split
into rounds and each round runs both methods, alternating which goes first. Target: the guard at
most 3% slower.

    python benchmarks/guard.py                      # bundled model, 48 prompts, 64 tokens, batch 16
    python benchmarks/guard.py --model hf:/path/to/r2d-model --prompts 96 --batch-size 32
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from _record import RESULTS, record


def with_pivot_tokens(m):
    """Add the R2D special tokens (if missing) and grow the embeddings, as R2D training does."""
    from safethink.data._formats import R2D_SPECIAL_TOKENS

    missing = [t for t in R2D_SPECIAL_TOKENS if t not in m.tokenizer.get_vocab()]
    if missing:
        m.tokenizer.add_tokens(missing, special_tokens=True)
        m.model.resize_token_embeddings(len(m.tokenizer), mean_resizing=False)
    return m


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=6, help="interleaving rounds (prompts split evenly)")
    ap.add_argument("--output", type=Path, default=RESULTS / "guard.json")
    args = ap.parse_args(argv)

    from rich.console import Console

    from safethink.cli._common import quiet_hf
    from safethink.data import load_prompts
    from safethink.guard import GUARDS, pivot_token_ids
    from safethink.models import GenerationConfig, load_model

    console = Console()
    quiet_hf()
    convs = [[{"role": "user", "content": r.prompt}] for r in load_prompts("builtin:benign", limit=args.prompts)]
    m = with_pivot_tokens(load_model(args.model))
    assert pivot_token_ids(m) is not None, "pivot tokens should be single ids now"
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    # fail_open: the bundled model writes no pivots, and a fail-closed guard would replace every answer with a
    # refusal; the hook on every decoded token, which is what is timed, runs either way
    guards = {"none": GUARDS.create("none"),
              "r2d-pivot": GUARDS.create("r2d-pivot", on_unsafe="halt", fail_open=True)}
    guards["none"].generate(m, convs[:2], GenerationConfig(max_new_tokens=4))  # warm-up

    secs = dict.fromkeys(guards, 0.0)
    toks = dict.fromkeys(guards, 0)
    texts: dict[str, list[str]] = {k: [] for k in guards}
    actions: list[str | None] = []
    load_before = os.getloadavg()
    per_round = -(-len(convs) // args.rounds)
    for r in range(args.rounds):
        chunk = convs[r * per_round:(r + 1) * per_round]
        for name in (list(guards) if r % 2 == 0 else list(reversed(guards))):
            t0 = time.perf_counter()
            outs = guards[name].generate(m, chunk, cfg)
            dt_ = time.perf_counter() - t0
            n = sum(int(o.info.get("completion_tokens") or 0) for o in outs)
            secs[name] += dt_
            toks[name] += n
            texts[name].extend(o.raw for o in outs)
            if name == "r2d-pivot":
                actions.extend(o.action for o in outs)
            console.print(f"round {r + 1}/{args.rounds} {name:>9}: {n} tokens in {dt_:.1f}s", style="dim")
    load_after = os.getloadavg()

    base = toks["none"] / secs["none"]
    same = sum(a == b for a, b in zip(texts["none"], texts["r2d-pivot"]))
    rows = []
    for name in guards:
        tps = toks[name] / secs[name]
        rows.append({"guard": name, "tokens": toks[name], "seconds": round(secs[name], 2),
                     "tokens_per_s": round(tps, 1), "vs_none": round(tps / base, 4)})
    slowdown = 1 - (toks["r2d-pivot"] / secs["r2d-pivot"]) / base  # unrounded
    record("guard", rows, out=args.output, argv=None if argv is None else [__file__, *argv],
           title=f"pivot guard overhead: {args.model} + R2D tokens, {len(convs)} prompts, "
                 f"{args.max_new_tokens} new tokens, batch {args.batch_size}, greedy",
           columns={"guard": "guard", "tokens": "tokens", "seconds": lambda r: f"{r['seconds']:.1f}",
                    "tokens/s": lambda r: f"{r['tokens_per_s']:.1f}", "x none": lambda r: f"{r['vs_none']:.3f}"},
           settings={"model": args.model, "pivot_tokens_added": True, "prompts": len(convs),
                     "prompt_source": "builtin:benign", "max_new_tokens": args.max_new_tokens,
                     "batch_size": args.batch_size, "decoding": "greedy", "rounds": args.rounds},
           loadavg_before=load_before, loadavg_after=load_after,
           summary={"slowdown": round(slowdown, 4), "target_max_slowdown": 0.03,
                    "raw_outputs_identical": f"{same}/{len(convs)}",
                    "guard_actions": sum(a is not None for a in actions)})
    print(f"slowdown {slowdown * 100:+.1f}% (target <= 3%); raw outputs identical {same}/{len(convs)}; "
          f"guard actions: {sum(a is not None for a in actions)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
