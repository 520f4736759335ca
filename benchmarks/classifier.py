"""Does a fine-tuned request classifier separate intent better than the linear probe? An experiment on the
quickstart split, without generating.

The probe guard reads one frozen hidden state with a linear model; here the base model itself is adapted:
LoRA on its first ``--layer`` blocks (the rest are dropped: nothing above the read-out layer matters) and
a linear head on the last prompt token's state at that layer, trained with binary cross-entropy on the
same forms the quickstart's probe is fitted on (every seed pair outside the held-out split, plus the
training split's ordinary and safe-but-scary prompts, under ``--fit-attacks`` with template seed 1). A
``--val-fraction`` of the pairs (grouped: a request, its twin and all their forms together) is kept out of
training to set the threshold at ``--max-fpr`` of benign validation forms.

The held-out prompts (never trained on) are then scored under each evaluation attack (seed 0, as the
evaluation draws them), and the benign sets as they are, by the classifier and by a probe file
(``--probe``, e.g. the quickstart's ``runs/qs/probe.json``) at its own threshold: share flagged, and the
held-out AUC of harmful (all attacks) against benign (all sets).

    python benchmarks/classifier.py --splits runs/qs/splits --probe runs/qs/probe.json

Prints the table and writes benchmarks/results/classifier.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table

from safethink.data import load_prompts
from safethink.guard import RequestProbe
from safethink.models import load_model
from safethink.quickstart import DEFAULT_ATTACKS, FAST_ATTACKS
from safethink.train import attacked_examples

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402
from probe import training_records  # noqa: E402

BENIGN_SETS = {"benign twins": "twins", "ordinary": "benign", "safe-but-scary": "borderline"}


class Classifier:
    """LoRA-adapted first ``layer`` blocks of the base model and a linear head on the last token's state."""

    def __init__(self, model, layer: int, rank: int, seed: int):
        import torch
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)
        net, self.tok = model.model, model.tokenizer
        net.model.layers = net.model.layers[:layer]  # the blocks above the read-out are never run
        net.config.num_hidden_layers = layer
        self.net = get_peft_model(net, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05,
                                                  target_modules="all-linear"))
        self.head = torch.nn.Linear(net.config.hidden_size, 1)
        self.render = model.render

    def logits(self, convs: list) -> "torch.Tensor":  # noqa: F821
        import torch

        texts = [self.render(c) for c in convs]
        self.tok.padding_side, self.tok.truncation_side = "right", "left"  # the last prompt token is read
        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False, truncation=True,
                       max_length=1024)
        inner = self.net.get_base_model().model  # the decoder stack, without the LM head
        h = inner(input_ids=enc.input_ids, attention_mask=enc.attention_mask).last_hidden_state
        last = enc.attention_mask.sum(dim=1) - 1
        # with the blocks above the cut dropped, last_hidden_state is the cut layer's output after the final norm
        return self.head(h[torch.arange(len(texts)), last].float()).squeeze(-1)

    def scores(self, convs: list, batch_size: int = 16) -> list[float]:
        import torch

        self.net.eval()
        order = sorted(range(len(convs)), key=lambda i: -len(self.render(convs[i])))
        out = [0.0] * len(convs)
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                for i, z in zip(idx, torch.sigmoid(self.logits([convs[i] for i in idx])).tolist()):
                    out[i] = z
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", default="runs/qs/splits")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--probe", default=None, help="A probe file to score the same held-out forms with.")
    ap.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS), help="Evaluation attacks (comma list).")
    ap.add_argument("--fit-attacks", default=",".join(FAST_ATTACKS), help="Attacks the classifier is trained under.")
    ap.add_argument("--layer", type=int, default=20, help="Read-out layer (the blocks above it are dropped).")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--max-fpr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="benchmarks/results/classifier.json")
    args = ap.parse_args()

    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    console = Console()
    d = Path(args.splits)
    t0 = time.perf_counter()
    tr_h, tr_b = training_records(d, all_pairs=True)
    convs, labels, groups = [], [], []
    for recs, label in ((tr_h, 1), (tr_b, 0)):
        c, g = attacked_examples(recs, args.fit_attacks.split(","), seed=1)
        convs += c
        labels += [label] * len(c)
        groups += g
    keys = sorted(set(groups))
    random.Random(args.seed).shuffle(keys)
    val_keys = set(keys[:round(len(keys) * args.val_fraction)])
    tr = [i for i, g in enumerate(groups) if g not in val_keys]
    va = [i for i, g in enumerate(groups) if g in val_keys]
    console.log(f"{len(tr)} training forms, {len(va)} validation forms ({len(val_keys)} of {len(keys)} groups)")

    clf = Classifier(load_model(args.model), args.layer, args.rank, args.seed)
    params = [p for p in clf.net.parameters() if p.requires_grad] + list(clf.head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    steps = int(np.ceil(len(tr) / args.batch_size * args.epochs))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10) * max(0.0, 1 - s / steps))
    y = torch.tensor(labels, dtype=torch.float32)
    pos_weight = torch.tensor((len(tr) - sum(labels[i] for i in tr)) / max(1, sum(labels[i] for i in tr)))
    rng = random.Random(args.seed)
    order: list[int] = []
    clf.net.train()
    t_train = time.perf_counter()
    for step in range(steps):
        if len(order) < args.batch_size:
            more = tr[:]
            rng.shuffle(more)
            order += more
        batch, order = order[:args.batch_size], order[args.batch_size:]
        z = clf.logits([convs[i] for i in batch])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y[batch], pos_weight=pos_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 20 == 0 or step == steps - 1:
            console.log(f"step {step + 1}/{steps} loss {loss.item():.3f} ({time.perf_counter() - t_train:.0f}s)")
    t_train = time.perf_counter() - t_train

    val_scores = np.array(clf.scores([convs[i] for i in va]))
    val_y = np.array([labels[i] for i in va])
    ben = np.sort(val_scores[val_y == 0])
    threshold = float(ben[min(len(ben) - 1, int(np.ceil(len(ben) * (1 - args.max_fpr))))])
    val_auc = float(roc_auc_score(val_y, val_scores))
    console.log(f"validation AUC {val_auc:.3f}; threshold {threshold:.3f} flags "
                f"{(val_scores[val_y == 1] >= threshold).mean():.0%} of harmful validation forms")

    ev_h = load_prompts(str(d / "harmful_eval.jsonl"))
    attacks = args.attacks.split(",")
    held = {a: attacked_examples(ev_h, [a], seed=0)[0] for a in attacks}
    benign = {s: attacked_examples(load_prompts(str(d / f"{n}_eval.jsonl")), ["none"], seed=0)[0]
              for s, n in BENIGN_SETS.items()}
    scorers = {"fine-tuned classifier": (lambda cs: np.array(clf.scores(cs)), threshold)}
    if args.probe:
        probe = RequestProbe.load(args.probe)
        base = load_model(args.model)
        scorers[f"linear probe ({Path(args.probe).name}, layers {probe.layer})"] = (
            lambda cs: np.array(probe.score(base, cs)), probe.threshold)
    rows = {}
    for name, (score, thr) in scorers.items():
        sh = {a: score(cs) for a, cs in held.items()}
        sb = {s: score(cs) for s, cs in benign.items()}
        all_h, all_b = np.concatenate(list(sh.values())), np.concatenate(list(sb.values()))
        rows[name] = {"threshold": thr,
                      "auc": float(roc_auc_score(np.r_[np.ones(len(all_h)), np.zeros(len(all_b))], np.r_[all_h, all_b])),
                      **{a: float((v >= thr).mean()) for a, v in sh.items()},
                      **{s: float((v >= thr).mean()) for s, v in sb.items()},
                      "mean harmful": float(np.mean([(v >= thr).mean() for v in sh.values()]))}
    pct = lambda v: f"{100 * v:.0f}%"  # noqa: E731
    table = Table(title=f"held out: {len(ev_h)} harmful per attack, "
                        + ", ".join(f"{len(v)} {s}" for s, v in benign.items())
                        + f"; trained under {args.fit_attacks}")
    table.add_column("scorer", style="bold")
    for col in ("AUC", *attacks, "mean harmful", *BENIGN_SETS):
        table.add_column(col, justify="right")
    for name, r in rows.items():
        table.add_row(name, f"{r['auc']:.3f}", *[pct(r[a]) for a in attacks], pct(r["mean harmful"]),
                      *[pct(r[s]) for s in BENIGN_SETS])
    console.print(table)
    result = {"date": date.today().isoformat(), "machine": machine(),
              "command": "python benchmarks/classifier.py " + " ".join(sys.argv[1:]),
              "validation": {"auc": val_auc, "threshold": threshold, "forms": len(va)},
              "train_seconds": t_train, "steps": steps, "rows": rows, "seconds": time.perf_counter() - t0}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
