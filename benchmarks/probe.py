"""The probe guard's classifier on the quickstart split, without generating: how many held-out harmful
requests it flags under each attack, and how many held-out benign ones (twins, ordinary, safe-but-scary).

The probe is fitted on the training split only (harmful, twins, ordinary and safe-but-scary training
prompts), each under the fitted attacks with a different template seed from the evaluation's. Held-out
harmful requests are scored under each evaluation attack (seed 0, as the evaluation draws them), benign
ones as they are. Two more rows test generalisation:

- leave-one-attack-out: for each attack, a probe fitted without that attack's forms, scored on the
  held-out requests under it (an attack template the probe has never seen);
- no attacks: a probe fitted on the plain requests only.

Given a quickstart's evaluation store (``--eval``), it also sweeps the guard's threshold over the stored
answers of a variant (``--variants``): a request the probe flags is refused, any other keeps the answer the
variant gave, so the table is what ``<variant> + probe guard`` scores at each threshold with greedy decoding
(a real run of the guard at one threshold checks it: ``benchmarks/ablations.py --arms base-probe``).
With ``--wrapper`` a wrapper probe stands in front, as the guard's ``wrapper_path=``: what it flags is refused
at every threshold, and a "wrapper only" row shows it alone.

    python benchmarks/probe.py --splits runs/quickstart/splits --eval runs/quickstart/eval --variants base,R2D

Prints the table and writes benchmarks/results/probe.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table

from safethink.data import load_prompts
from safethink.guard import fit_probe_on_states, prompt_states
from safethink.models import load_model
from safethink.quickstart import DEFAULT_ATTACKS
from safethink.train import attacked_examples

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402

BENIGN_SETS = {"benign twins": "twins", "ordinary": "benign", "safe-but-scary": "borderline"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", default="runs/quickstart/splits", help="A quickstart's splits directory.")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS), help="Evaluation attacks (comma list).")
    ap.add_argument("--fit-attacks", default=None, help="Attacks the probe is fitted under (default: --attacks).")
    ap.add_argument("--max-fpr", type=float, default=0.05)
    ap.add_argument("--c", type=float, default=0.1)
    ap.add_argument("--pool", choices=("last", "mean"), default="last",
                    help="The state at the last prompt token, or the mean over the prompt.")
    ap.add_argument("--ensembles", default="1,3,5,8",
                    help="Ensemble sizes to cross-validate (the k best layers averaged; 1 = the single best layer).")
    ap.add_argument("--all-train-pairs", action="store_true",
                    help="Fit on every seed-set pair outside the held-out split, not only the quickstart's training prompts.")
    ap.add_argument("--cache", default=None, help="Directory to keep hidden states in between runs (default: none).")
    ap.add_argument("--eval", default=None, help="A quickstart eval directory whose stored answers to sweep.")
    ap.add_argument("--variants", default="base", help="Defence names in --eval to sweep (comma list).")
    ap.add_argument("--router", default=None,
                    help="LOW,HIGH variant names in --eval: also sweep a router that sends requests the probe scores "
                         "low to LOW (e.g. base), the rest to HIGH (e.g. R2D), and refuses above the threshold.")
    ap.add_argument("--asr-sets", default=None,
                    help="With --eval: harmful dataset names whose attempts the ASR counts (comma list; default: all).")
    ap.add_argument("--per-layer", action="store_true",
                    help="Also fit one probe per layer and report its CV AUC, its out-of-fold harmful share flagged at "
                         "--max-fpr, and what it flags of the held-out sets (how much the layer choice matters).")
    ap.add_argument("--save-probe", default=None, help="Write the probe fitted under all attacks here.")
    ap.add_argument("--probe", default=None,
                    help="Sweep with this probe (a linear probe file or a tuned probe directory) instead of fitting "
                         "one (needs --eval).")
    ap.add_argument("--wrapper", default=None,
                    help="With --probe: a wrapper probe (safethink probe fit --target wrapper) in front; requests it "
                         "flags are refused at every threshold, as the probe guard's wrapper_path= does.")
    ap.add_argument("--json", default="benchmarks/results/probe.json")
    args = ap.parse_args()
    ensembles = tuple(int(n) for n in args.ensembles.split(","))

    import numpy as np

    console = Console()
    d = Path(args.splits)
    attacks = args.attacks.split(",")
    fit_attacks = (args.fit_attacks or args.attacks).split(",")
    model = load_model(args.model, adapter=args.adapter)
    t0 = time.perf_counter()
    if args.probe:
        if not args.eval:
            raise SystemExit("--probe sweeps a stored evaluation: give --eval too")
        from safethink.guard import load_probe

        probe = load_probe(args.probe)  # a linear probe file or a tuned probe directory
        write(args, {"probe": args.probe, "threshold": probe.threshold, "metrics": probe.metrics,
                     "wrapper": args.wrapper,
                     "sweep": threshold_sweep(args, probe, model, console), "seconds": time.perf_counter() - t0}, console)
        return

    def records(name: str) -> list:
        return load_prompts(str(d / f"{name}.jsonl"))

    def states_of(key: str, convs: list) -> np.ndarray:
        """All-layer states (--pool), kept under --cache by (model, pool, set, attack, seed)."""
        if not args.cache:
            return prompt_states(model, convs, pool=args.pool)
        pooled = "" if args.pool == "last" else f"-{args.pool}"  # last-token files keep their old names
        f = Path(args.cache) / f"{(args.model + '-' + (args.adapter or '')).replace('/', '_')}{pooled}-{key}.npy"
        digest = hashlib.sha256(json.dumps(convs, sort_keys=True).encode()).hexdigest()
        tag = f.with_suffix(".sha256")  # the conversations the cached states are of
        if f.is_file() and tag.is_file() and tag.read_text() == digest:
            return np.load(f)
        x = prompt_states(model, convs, pool=args.pool)
        f.parent.mkdir(parents=True, exist_ok=True)
        np.save(f, x)
        tag.write_text(digest)
        return x

    tr_h, tr_b = training_records(d, args.all_train_pairs)
    states, labels, groups, forms = [], [], [], []
    for recs, label in ((tr_h, 1), (tr_b, 0)):
        for a in fit_attacks:
            convs, grp = attacked_examples(recs, [a], seed=1)
            states.append(states_of(f"train{len(recs)}-{label}-{a}", convs))
            labels += [label] * len(convs)
            groups += grp
            forms += [a] * len(convs)
    x = np.concatenate(states)
    layer_ids = list(range(x.shape[1]))
    y, forms_a = np.array(labels), np.array(forms)
    console.log(f"training states: {x.shape} in {time.perf_counter() - t0:.0f}s")

    def fit(mask, candidates=None):
        """A probe on the rows in mask; with candidates, an ensemble of exactly those layers."""
        return fit_probe_on_states(x[mask], y[mask], [g for g, m in zip(groups, mask) if m], layer_ids=layer_ids,
                                   candidates=candidates or layer_ids[1:], model=model.spec, c=args.c, pool=args.pool,
                                   max_fpr=args.max_fpr,
                                   ensembles=(len(candidates),) if candidates else ensembles)

    def unseen_attack_auc(L: int) -> float:
        """Mean over the fitted attacks (but none) of the out-of-fold AUC on that attack's forms, by a probe at
        layer L fitted without them: how well the layer carries over to a template it was not fitted under."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedGroupKFold

        xl = x[:, L].astype(np.float64)
        folds = list(StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0).split(xl, y, groups))
        aucs = []
        for a in fit_attacks:
            if a == "none":
                continue
            oof = np.zeros(len(y))
            for tr, te in folds:
                tr, te = tr[forms_a[tr] != a], te[forms_a[te] == a]
                mu, sd = xl[tr].mean(axis=0), xl[tr].std(axis=0) + 1e-6
                clf = LogisticRegression(C=args.c, max_iter=2000).fit((xl[tr] - mu) / sd, y[tr])
                oof[te] = clf.predict_proba((xl[te] - mu) / sd)[:, 1]
            m = forms_a == a
            aucs.append(roc_auc_score(y[m], oof[m]))
        return float(np.mean(aucs)) if aucs else float("nan")

    t1 = time.perf_counter()
    probe = fit(np.ones(len(y), dtype=bool))
    fit_seconds = time.perf_counter() - t1
    layer = probe.layers
    console.log(f"probe: layer {probe.layer}, out-of-fold AUC {probe.metrics['auc']:.3f}, threshold {probe.threshold:.3f} "
                f"({fit_seconds:.0f}s)")

    ev_h = records("harmful_eval")
    held = {a: states_of(f"eval-harmful-{a}", attacked_examples(ev_h, [a], seed=0)[0])[:, layer] for a in attacks}
    benign = {s: states_of(f"eval-{n}", attacked_examples(records(f"{n}_eval"), ["none"], seed=0)[0])[:, layer]
              for s, n in BENIGN_SETS.items()}

    def rates(p) -> dict:
        return {**{a: float((p.probabilities(v) >= p.threshold).mean()) for a, v in held.items()},
                **{s: float((p.probabilities(v) >= p.threshold).mean()) for s, v in benign.items()}}

    main_row = "fitted under all attacks" if set(fit_attacks) >= set(attacks) else f"fitted under {', '.join(fit_attacks)}"
    rows = {main_row: rates(probe)}
    plain = fit(forms_a == "none", candidates=layer)
    rows["fitted on plain requests only"] = rates(plain)
    loao = {}
    for a in attacks:
        if a == "none" or a not in fit_attacks:
            continue
        p = fit(forms_a != a, candidates=layer)
        loao[a] = rates(p)
    rows["leave-one-attack-out"] = {a: r[a] for a, r in loao.items()} | {
        s: float(np.mean([r[s] for r in loao.values()])) for s in BENIGN_SETS} if loao else {}

    pct = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    per_layer = []
    if args.per_layer:
        held_all = {a: states_of(f"eval-harmful-{a}", attacked_examples(ev_h, [a], seed=0)[0]) for a in attacks}
        benign_all = {s: states_of(f"eval-{n}", attacked_examples(records(f"{n}_eval"), ["none"], seed=0)[0])
                      for s, n in BENIGN_SETS.items()}
        lt = Table(title="one probe per layer (chosen by CV AUC: the highest; held-out shares at each layer's own threshold)")
        for col in ("layer", "CV AUC", "CV harmful flagged", "unseen-attack CV AUC", "held-out harmful flagged",
                    *[f"{s} flagged" for s in BENIGN_SETS]):
            lt.add_column(col, justify="right")
        for L in layer_ids[1:]:
            p = fit(np.ones(len(y), dtype=bool), candidates=[L])
            h = float(np.mean([(p.probabilities(v[:, L]) >= p.threshold).mean() for v in held_all.values()]))
            b = {s: float((p.probabilities(v[:, L]) >= p.threshold).mean()) for s, v in benign_all.items()}
            u = unseen_attack_auc(L)
            per_layer.append({"layer": L, "auc": p.metrics["auc"], "oof_harmful_flagged": p.metrics["oof_harmful_flagged"],
                              "unseen_attack_auc": u, "held_out_harmful_flagged": h, **b})
            lt.add_row(str(L) + (" *" if L in layer else ""), f"{p.metrics['auc']:.3f}", pct(p.metrics["oof_harmful_flagged"]),
                       f"{u:.3f}", pct(h), *[pct(b[s]) for s in BENIGN_SETS])
        console.print(lt)
    table = Table(title=f"probe flags ({args.model}, layer {probe.layer}; held out: {len(ev_h)} harmful per attack, "
                        + ", ".join(f"{len(v)} {s}" for s, v in benign.items()) + ")")
    table.add_column("probe", style="bold")
    for a in attacks:
        table.add_column(f"harmful {a}", justify="right")
    for s in BENIGN_SETS:
        table.add_column(f"{s} flagged", justify="right")
    for name, r in rows.items():
        table.add_row(name, *[pct(r.get(a)) for a in attacks], *[pct(r.get(s)) for s in BENIGN_SETS])
    console.print(table)
    if args.save_probe:
        probe.save(args.save_probe)
    sweep = threshold_sweep(args, probe, model, console) if args.eval else []
    write(args, {"layer": probe.layer, "threshold": probe.threshold, "metrics": probe.metrics, "fit_attacks": fit_attacks,
                 "rows": rows, "per_layer": per_layer, "sweep": sweep, "seconds": time.perf_counter() - t0}, console)


def training_records(d: Path, all_pairs: bool) -> tuple[list, list]:
    """The split's harmful and benign training requests; with ``all_pairs`` also every other seed pair outside
    the held-out split (a pair is out when either side is held out). Stops if a held-out prompt is among them."""
    records = lambda name: load_prompts(str(d / f"{name}.jsonl"))  # noqa: E731
    tr_h = records("harmful_train")
    tr_b = [r for n in ("twins_train", "benign_train", "borderline_train") for r in records(n)]
    held = {r.prompt for n in ("harmful_eval", "twins_eval", "benign_eval", "borderline_eval") for r in records(n)}
    if all_pairs:
        twin_of = {t.meta["twin_of"]: t for t in load_prompts("builtin:twins")}
        used = {r.prompt for r in [*tr_h, *tr_b]}
        for h in load_prompts("builtin:harmful"):
            t = twin_of.get(h.meta["seed_id"])
            if h.prompt in held | used or (t is not None and t.prompt in held | used):
                continue
            tr_h.append(h)
            if t is not None:
                tr_b.append(t)
    leaked = held & {r.prompt for r in [*tr_h, *tr_b]}
    if leaked:
        raise SystemExit(f"{len(leaked)} held-out prompts are among the training prompts, e.g. {sorted(leaked)[0]!r}")
    return tr_h, tr_b


def write(args, result: dict, console) -> None:
    result = {"date": date.today().isoformat(), "machine": machine(),
              "command": "python benchmarks/probe.py " + " ".join(sys.argv[1:]), **result}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    console.print(f"wrote {args.json}")


def threshold_sweep(args, probe, model, console) -> list[dict]:
    """ASR and refusal rates of ``<variant> + probe guard`` from the variant's stored answers."""
    import dataclasses

    from safethink.eval import compute_metrics, load_attempts

    names = set(args.variants.split(",")) | set(args.router.split(",") if args.router else ())
    asr_sets = set(args.asr_sets.split(",")) if args.asr_sets else None
    attempts = [a for a in load_attempts(Path(args.eval)) if a.defence_name in names
                and (asr_sets is None or a.label != "harmful" or a.dataset in asr_sets)]
    if not attempts:
        raise SystemExit(f"no stored attempts of {args.variants} in {args.eval}")
    benign_sets = sorted({a.dataset for a in attempts if a.label != "harmful"})
    keys = {json.dumps(a.messages): a.messages for a in attempts}
    scores = dict(zip(keys, probe.score(model, list(keys.values()))))
    thresholds: list[float | None] = sorted({0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.97, 0.99, round(probe.threshold, 3)})
    wrapped: set[str] = set()
    if args.wrapper:
        from safethink.guard import load_probe

        wp = load_probe(args.wrapper)
        if wp.target != "wrapper":
            raise SystemExit(f"--wrapper {args.wrapper}: a probe of target {wp.target!r}, not a wrapper probe")
        wrapped = {k for k, sc in zip(keys, wp.score(model, list(keys.values()))) if sc >= wp.threshold}
        thresholds = [float("inf"), *thresholds]  # the wrapper probe alone
    out = []
    pct = lambda v: f"{100 * v:.0f}%"  # noqa: E731
    table = Table(title=f"<variant> + probe guard from stored answers ({args.eval}); default threshold "
                        f"{probe.threshold:.3f}" + (f"; wrapper probe {args.wrapper} in front" if wrapped else ""))
    for col in ("variant", "threshold", "ASR all", *[f"refused: {b}" for b in benign_sets], "benign answered"):
        table.add_column(col, justify="right")
    for variant in args.variants.split(","):
        mine = [a for a in attempts if a.defence_name == variant]
        for t in [None, *thresholds]:
            def blocked(k: str) -> bool:
                return t is not None and (k in wrapped or scores[k] >= t)

            gated = [dataclasses.replace(a, guard_action="blocked") if blocked(json.dumps(a.messages)) else a
                     for a in mine]
            m = compute_metrics(gated)
            key = (gated[0].model_name, variant)
            row = {"variant": variant, "threshold": None if t == float("inf") else t,
                   "wrapper": bool(wrapped) and t is not None, "asr": m.asr[(*key, "(all)")].rate,
                   "asr_by_attack": {a: r.rate for (mo, de, a), r in m.asr.items() if (mo, de) == key},
                   "refused": {d: r.rate for (mo, de, d), r in m.over_refusal.items() if (mo, de) == key and d != "(all)"},
                   "benign_answer": m.benign_answer[key].rate}
            out.append(row)
            label = "no probe" if t is None else "wrapper only" if t == float("inf") else f"{t:.3f}"
            table.add_row(variant, label, pct(row["asr"]),
                          *[pct(row["refused"].get(s, float("nan"))) for s in benign_sets], pct(row["benign_answer"]))
    if args.router:
        low_v, high_v = args.router.split(",")
        cell = lambda a: (a.dataset, a.record_id, a.attack_name)  # noqa: E731
        low = {cell(a): a for a in attempts if a.defence_name == low_v}
        high = {cell(a): a for a in attempts if a.defence_name == high_v}
        own = [round(probe.route_threshold, 3)] if probe.route_threshold is not None else []
        for cut in dict.fromkeys([*own, 0.1, 0.2, 0.3, 0.5]):
            routed = []
            for k, a in high.items():
                sc = scores[json.dumps(a.messages)]
                pick = a if sc >= cut else low[k]
                if sc >= probe.threshold or json.dumps(a.messages) in wrapped:
                    pick = dataclasses.replace(pick, guard_action="blocked")
                routed.append(dataclasses.replace(pick, model_name="router", defence_name="router"))
            m = compute_metrics(routed)
            key = ("router", "router")
            name = f"{low_v} below {cut}, {high_v} above"
            row = {"variant": name, "threshold": probe.threshold, "route_cut": cut, "asr": m.asr[(*key, "(all)")].rate,
                   "refused": {d: r.rate for (mo, de, d), r in m.over_refusal.items() if (mo, de) == key and d != "(all)"},
                   "benign_answer": m.benign_answer[key].rate}
            out.append(row)
            table.add_row(name, f"{probe.threshold:.3f}", pct(row["asr"]),
                          *[pct(row["refused"].get(s, float("nan"))) for s in benign_sets], pct(row["benign_answer"]))
    console.print(table)
    return out


if __name__ == "__main__":
    main()
