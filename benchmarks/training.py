"""Training throughput: safethink's SCoT and R2D (+CPO) trainers vs plain TRL SFTTrainer.

Same model, same LoRA adapter config, same tokenised rows, same batches. Each trainer runs its
own ``training_step`` (collator -> compute_loss -> backward) and an AdamW step; dataloading and
logging are left out so that only the loss code differs. Tokens = non-padding tokens of the batch.

The machine may be shared, so the trainers of one data family run interleaved: in every round
each does the same batch, in rotating order, so a burst of load from elsewhere hits all alike.
Round 0 is a warm-up and not timed. One run; report the ratios as well as the absolute numbers.

    python benchmarks/training.py                       # bundled SmolLM2-135M, batch 8, 6 timed steps
    python benchmarks/training.py --model hf:/path --steps 20 --batch-size 16
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from _record import RESULTS, record

CATS = ["harassment/threatening", "hate/threatening", "illicit/violent", "self-harm/intent/instructions",
        "sexual/minors", "violence/graphic", "misinformation", "privacy/sensitive"]
ANSWER = ("Here is a careful answer. First, think about what you need and gather it. Then work through the "
          "task step by step, checking each part before moving on. Finally, review the result and fix "
          "anything that looks wrong. If you get stuck, break the problem into smaller pieces.")


def _records(method: str, n: int, seed: int) -> list[dict]:
    """SCoT / R2D records in the training-set format, from the built-in seed prompts."""
    from safethink.data import load_prompts

    harmful = load_prompts("builtin:harmful", limit=n // 2, seed=seed)
    benign = load_prompts("builtin:benign", limit=n - n // 2, seed=seed)
    rows = []
    for p in harmful + benign:
        bad = p.label == "harmful"
        if method == "scot":
            lines = [f"* {c}: Yes. Reason: the request asks for {c} content." if bad and c == p.category
                     else f"* {c}: No." for c in CATS]
            concl = (f"Therefore, the request violates {p.category}. I need to reject the request." if bad
                     else "Therefore, the request is safe and I can generate the response.")
            resp = (f"I'm sorry, but I can't help with that. The request violates {p.category}." if bad else ANSWER)
            text = "\n".join(["#### Verify Request", f"The user asks: {p.prompt[:60]}", *lines, concl,
                              "#### Response", resp])
        else:
            steps = (["The user asks for something that could cause real harm. [UNSAFE]",
                      "Helping would break the rules, so I should change course. [RETHINK]",
                      "I will explain why I cannot help and offer a safe alternative. [SAFE]"] if bad else
                     ["The user asks an ordinary question. [SAFE]", "Nothing here is harmful. [SAFE]",
                      "I will answer it helpfully and clearly. [SAFE]"])
            resp = "I can't help with that, but I can point you to safety resources. [SAFE]" if bad else ANSWER + " [SAFE]"
            text = "<think>\n" + "\n".join(steps) + "\n</think> [SAFE]\n" + resp
        rows.append({"id": p.id, "method": method, "kind": "refusal" if bad else "retain",
                     "label": p.label, "categories": [p.category] if bad else [], "style": "original",
                     "source": p.source, "messages": [{"role": "user", "content": p.prompt},
                                                       {"role": "assistant", "content": text}]})
    return rows


def _trainers(method: str, model_dir: str, records: list, out: Path, args) -> tuple[dict, list, object]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    from safethink.data._training import TrainingRecord
    from safethink.train import SafetyCollator, SafetySFTConfig, SafetyTrainer, add_r2d_tokens, grow_embeddings, pivot_ids
    from safethink.train._data import encode_records
    from safethink.train._trainer import _expose_head_bias, _pretrained

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = None
    if method == "r2d":
        add_r2d_tokens(tok)
        ids = pivot_ids(tok)
    recs = [TrainingRecord.model_validate(r) for r in records]
    rows, _ = encode_records(tok, recs, max_length=args.max_length, retain_weight=0.5 if method == "scot" else 1.0)
    plain_rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]

    def lora():
        return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM",
                          trainable_token_indices=ids.all if ids else None)

    def model():
        set_seed(0)
        m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        grow_embeddings(m, tok)
        return m

    common = dict(per_device_train_batch_size=args.batch_size, learning_rate=1e-4, report_to="none", bf16=False,
                  gradient_checkpointing=False, max_length=args.max_length, optim="adamw_torch", disable_tqdm=True,
                  seed=0)
    variants = {"trl-sft": SFTTrainer(model=model(), args=SFTConfig(output_dir=str(out / "trl"), **common),
                                      train_dataset=Dataset.from_list(plain_rows), processing_class=tok,
                                      peft_config=lora())}
    specs = {"scot": [("safethink-scot", dict(method="scot", retain_weight=0.5))],
             "r2d": [("safethink-r2d-ce", dict(method="r2d", cpo_weight=0.0)),
                     ("safethink-r2d-cpo", dict(method="r2d", cpo_weight=1.0,
                                                pivot_safe_id=ids.safe if ids else None,
                                                pivot_unsafe_id=ids.unsafe if ids else None))]}[method]
    # TRL 1.16's fused LM head reads lm_head.bias, which PEFT's trainable-token wrapper does not forward;
    # SafetyTrainer applies this one-line compatibility fix itself, the plain TRL baseline needs it too.
    _expose_head_bias(_pretrained(variants["trl-sft"].model))
    for name, extra in specs:
        # fused_lm_head=True: the same LM-head kernel as the plain TRL baseline, so only the losses differ
        cfg = SafetySFTConfig(output_dir=str(out / name), fused_lm_head=True, **common, **extra)
        variants[name] = SafetyTrainer(model=model(), args=cfg, train_dataset=Dataset.from_list(rows),
                                       processing_class=tok, peft_config=lora(),
                                       data_collator=SafetyCollator(tok.pad_token_id, with_weights=method == "scot"))
    return variants, rows, tok


def _bench_family(method: str, model_dir: str, args, out: Path) -> dict:
    import torch

    variants, rows, tok = _trainers(method, model_dir, _records(method, args.examples, args.seed), out, args)
    rng = random.Random(args.seed)
    batches = [rng.sample(rows, args.batch_size) for _ in range(args.steps + 1)]
    for t in variants.values():
        t.create_optimizer_and_scheduler(num_training_steps=args.steps + 1)
        t.current_gradient_accumulation_steps = 1
    times = {k: 0.0 for k in variants}
    tokens = 0
    names = list(variants)
    for rnd, rows_b in enumerate(batches):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for name in order:
            t = variants[name]
            batch = t.data_collator([dict(r) if name != "trl-sft" else {"input_ids": r["input_ids"], "labels": r["labels"]}
                                     for r in rows_b])
            n_items = (batch["labels"][:, 1:] != -100).sum()
            start = time.perf_counter()
            t.training_step(t.model, batch, n_items)
            t.optimizer.step()
            t.optimizer.zero_grad()
            if rnd > 0:
                times[name] += time.perf_counter() - start
        if rnd > 0:
            tokens += sum(len(r["input_ids"]) for r in rows_b)
    del variants
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    base = tokens / times["trl-sft"]
    return {name: {"tokens_per_s": tokens / sec, "seconds": sec, "ratio_vs_trl": (tokens / sec) / base}
            for name, sec in times.items()} | {"_tokens": tokens,
                                               "_mean_len": sum(len(r["input_ids"]) for r in rows) / len(rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per trainer (plus one warm-up)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "training.json")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers
    import trl
    from transformers.utils import logging as hf_logging

    from safethink.train import resolve_base_model

    hf_logging.set_verbosity_error()
    model_dir = resolve_base_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        results = {m: _bench_family(m, model_dir, args, Path(tmp) / m) for m in ("scot", "r2d")}
    r2d = results["r2d"]
    summary = {
        "scot_vs_trl": results["scot"]["safethink-scot"]["ratio_vs_trl"],
        "r2d_cpo_vs_trl": r2d["safethink-r2d-cpo"]["ratio_vs_trl"],
        "cpo_cost": 1 - r2d["safethink-r2d-cpo"]["tokens_per_s"] / r2d["safethink-r2d-ce"]["tokens_per_s"],
    }
    rows = [{"data": f"{fam} (mean {res['_mean_len']:.0f} tokens)", "trainer": name, **r}
            for fam, res in results.items() for name, r in res.items() if not name.startswith("_")]
    record("training", rows, out=args.out, title="training throughput (tokens/s, timed steps only)",
           columns={"data": "data", "trainer": "trainer", "tokens/s": lambda r: f"{r['tokens_per_s']:.0f}",
                    "vs TRL SFT": lambda r: f"{r['ratio_vs_trl']:.3f}"},
           settings={k: v for k, v in vars(args).items() if k != "out"},
           versions={"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
           tokens_timed={fam: res["_tokens"] for fam, res in results.items()}, summary=summary)
    print(f"\nCPO cost (r2d-cpo vs r2d-ce): {summary['cpo_cost'] * 100:+.1f}%")


if __name__ == "__main__":
    main()
