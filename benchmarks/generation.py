"""Generation throughput: safethink's batched generation vs a plain per-prompt loop.

Both sides use the same model, the same prompts (the built-in benign seed set), the same chat
template, greedy decoding and the same max_new_tokens. Tokens are counted honestly: only the
tokens of each answer up to (not including) its end-of-turn token; padding that a finished row
produces while the rest of its batch keeps decoding is not counted.

The machine may be shared, so the methods run interleaved in one process: the prompts are
split into rounds and every method does each round in turn (rotating the order), so a burst of
load from elsewhere hits all methods alike. Report the ratios, not only the absolute numbers.

    python benchmarks/generation.py                      # bundled model, 32 prompts, 64 tokens
    python benchmarks/generation.py --model hf:/path/to/model --prompts 64 --batch-sizes 1,8,32
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "generation.json"


def loop_generate(m, convs, max_new_tokens: int) -> tuple[int, list[list[int]]]:
    """The baseline: one ``model.generate`` call per prompt, no padding, no batching."""
    import torch

    tok, total, answers = m.tokenizer, 0, []
    eos = set(m._eos_ids)
    for conv in convs:
        enc = tok(m.render(conv), return_tensors="pt", add_special_tokens=False).to(m.device)
        with torch.inference_mode():
            out = m.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                   temperature=None, top_p=None, top_k=None,
                                   eos_token_id=sorted(eos), pad_token_id=tok.pad_token_id)
        ids = out[0, enc.input_ids.shape[1]:].tolist()
        n = next((j for j, t in enumerate(ids) if t in eos), len(ids))
        total += n
        answers.append(ids[:n])
    return total, answers


def ours_generate(m, convs, max_new_tokens: int, batch_size: int) -> tuple[int, list[list[int]]]:
    from safethink.models import GenerationConfig

    outs = m.generate(convs, GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size))
    return sum(o.completion_tokens for o in outs), [o.token_ids for o in outs]




from _machine import machine  # noqa: E402 - shared with the other benchmarks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,4,16")
    ap.add_argument("--rounds", type=int, default=2, help="interleaving rounds (prompts split evenly)")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from safethink.cli._common import quiet_hf
    from safethink.data import load_prompts
    from safethink.io import atomic_write_text
    from safethink.models import GenerationConfig, load_model

    console = Console()
    quiet_hf()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    convs = [[{"role": "user", "content": r.prompt}] for r in load_prompts("builtin:benign", limit=args.prompts)]
    m = load_model(args.model)
    m.generate(convs[:2], GenerationConfig(max_new_tokens=4))  # warm-up: first-call allocations

    methods = ["loop"] + [f"batch {b}" for b in sizes]
    secs = dict.fromkeys(methods, 0.0)
    toks = dict.fromkeys(methods, 0)
    answers: dict[str, list] = {k: [] for k in methods}
    load_before = os.getloadavg()
    per_round = -(-len(convs) // args.rounds)
    for r in range(args.rounds):
        chunk = convs[r * per_round:(r + 1) * per_round]
        order = methods[r % len(methods):] + methods[:r % len(methods)]
        for name in order:
            t0 = time.perf_counter()
            if name == "loop":
                n, ans = loop_generate(m, chunk, args.max_new_tokens)
            else:
                n, ans = ours_generate(m, chunk, args.max_new_tokens, int(name.split()[1]))
            secs[name] += time.perf_counter() - t0
            toks[name] += n
            answers[name].extend(ans)
            console.print(f"round {r + 1}/{args.rounds} {name:>9}: {n} tokens in "
                          f"{time.perf_counter() - t0:.1f}s", style="dim")
    load_after = os.getloadavg()

    base = toks["loop"] / secs["loop"]
    rows = []
    for name in methods:
        tps = toks[name] / secs[name]
        same = sum(a == b for a, b in zip(answers[name], answers["loop"]))
        rows.append({"method": name, "tokens": toks[name], "seconds": round(secs[name], 2),
                     "tokens_per_s": round(tps, 1), "vs_loop": round(tps / base, 2),
                     "answers_identical_to_loop": f"{same}/{len(convs)}"})
    table = Table(title=f"generation throughput: {args.model}, {len(convs)} prompts, "
                        f"{args.max_new_tokens} new tokens, greedy")
    for col in ("method", "tokens", "seconds", "tokens/s", "x loop", "same answers"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for row in rows:
        table.add_row(row["method"], str(row["tokens"]), f"{row['seconds']:.1f}", f"{row['tokens_per_s']:.1f}",
                      f"{row['vs_loop']:.2f}x", row["answers_identical_to_loop"])
    console.print(table)
    result = {
        "benchmark": "generation", "date": dt.date.today().isoformat(),
        "command": "python benchmarks/generation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model, "prompts": len(convs), "prompt_source": "builtin:benign",
        "max_new_tokens": args.max_new_tokens, "decoding": "greedy", "rounds": args.rounds,
        "machine": machine(), "loadavg_before": load_before, "loadavg_after": load_after,
        "results": rows,
    }
    atomic_write_text(args.output, json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
