"""The main job: from the built-in seed set to a defended, measured model, offline.

Stages (each cached in the output directory and resumed when run again):

1. ``split``  - split the built-in seed set into train and held-out parts. A harmful request and its
   benign twin always land on the same side, so no held-out prompt has a twin in training.
2. ``data``   - build SCoT and R2D training sets with the offline structured teacher; the retain
   answers are written by the target model itself (self-distillation, cached and shared).
3. ``train``  - train a LoRA adapter per method on the target model.
4. ``probe``  - with ``probe=True`` only: fit the probe guard's classifier on the base model's hidden
   states of the training prompts, each under every evaluation attack (with another template seed); with
   ``probe_wrapper=True``, a wrapper probe on the same prompts (inside an attack or not). Both take
   ``builtin:realistic-train`` as extra benign negatives, and their threshold is held to a false-flag rate
   on those, out of fold by group.
5. ``eval``   - evaluate base vs base + a prompt-only defence vs SCoT vs R2D vs R2D + the pivot guard
   (and R2D behind the probe guard) on the held-out prompts: harmful ones under several attacks, benign
   twins, ordinary requests and safe-but-scary ones, and the held-out realistic requests
   (``builtin:realistic-test``: pasted material, personas, earlier turns); every attempt judged and stored.
6. ``report`` - the before/after table and the HTML report.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .io import atomic_write_text, iter_jsonl, write_jsonl

Stage = Literal["split", "data", "train", "probe", "eval", "report"]

DEFAULT_ATTACKS = (
    "none", "prefix-injection", "refusal-suppression", "style-injection", "aim",
    "evil-confidant", "past-tense", "payload-splitting",
)
FAST_ATTACKS = ("none", "prefix-injection", "refusal-suppression", "past-tense")
"""``--fast``: the attacks with short prompts (the long role-play templates dominate generation time)."""
TRANSFORM_ATTACKS = (
    "none", "prefix-injection", "refusal-suppression", "style-injection", "style-injection-json", "distractors",
    "poems", "wikipedia", "aim", "dev-mode", "evil-confidant", "base64", "rot13", "leetspeak", "disemvowel",
    "misspellings", "caesar", "atbash", "morse", "deep-inception", "past-tense", "payload-splitting", "few-shot",
)
"""The prompt-only transform-attack suite (``benchmarks/defence.py`` runs all of it)."""
REALISTIC_TRAIN = "builtin:realistic-train"
"""Benign requests as real users send them (pasted material, personas, earlier turns): the probes' extra
negatives, and the set their threshold is held to (out of fold, by group)."""
REALISTIC_TEST = "builtin:realistic-test"
"""The held-out realistic requests: never fitted or tuned on, evaluated as a benign set."""
PLAIN_ATTACKS = ("none", "past-tense", "misspellings")
"""Attacks whose forms read as a request a user might write: the wrapper probe's negatives."""
WRAPPER_ATTACKS = tuple(a for a in TRANSFORM_ATTACKS if a not in PLAIN_ATTACKS)
"""The transform attacks that wrap or encode the request: the wrapper probe's positives."""


@dataclass(frozen=True)
class Variant:
    """One row of the before/after table: a model (base or adapter) behind a defence."""

    name: str
    adapter: str | None
    """``scot`` / ``r2d`` (the trained adapter) or None for the base model."""
    guard: str
    guard_args: dict[str, Any] = field(default_factory=dict)


VARIANTS = (
    Variant("base", None, "none"),
    Variant("base + self-reminder", None, "self-reminder"),
    Variant("SCoT", "scot", "scot"),
    Variant("R2D", "r2d", "r2d"),
    Variant("R2D + pivot guard", "r2d", "r2d-pivot"),
)


@dataclass
class QuickstartConfig:
    """Sizes of the quickstart; ``fast`` shrinks everything to a few minutes."""

    out: Path
    model: str = "smollm2-135m"
    fast: bool = False
    seed: int = 0
    eval_fraction: float = 0.25
    """Share of each seed set held out for evaluation (never trained on)."""
    eval_harmful: int = 16
    eval_benign: int = 12
    """Held-out records per benign set (twins, ordinary, safe-but-scary)."""
    eval_realistic: int | None = None
    """Records of :data:`REALISTIC_TEST` evaluated as the benign set "realistic" (None: all 86)."""
    train_harmful: int | None = 60
    """Harmful training prompts (None: all of the training split); each brings its benign twin."""
    extra_benign_ratio: float = 0.5
    """Ordinary and safe-but-scary training prompts, each this many per harmful one."""
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    max_new_tokens: int = 160
    retain_tokens: int = 64
    """Cap on the self-distilled retain answers (training cost on CPU is per token)."""
    epochs: float = 1.0
    evolve: str = "all"
    """Evolution styles (``all``, ``none`` or a comma list, as ``data build --evolve``): each harmful
    training prompt adds one rule-rewritten variant (SCoT's question evolution), so refusals and retain
    answers come 1:1 with the twins on the retain side."""
    gen_batch_size: int = 32
    train_overrides: dict[str, Any] = field(default_factory=dict)
    probe: bool = False
    """Also fit the probe guard and evaluate R2D behind it (adds the probe stage and one variant)."""
    probe_all_pairs: bool = True
    """Fit the probe on every seed-set pair outside the held-out split, not only the ``train_harmful`` used for
    training (measured better: BENCHMARKS.md History, "More training pairs"); ``--fast`` keeps the training split."""
    probe_attacks: tuple[str, ...] = FAST_ATTACKS
    """The attacks the probe is fitted under (the short ones: as good as all eight, at half the cost)."""
    probe_tune: bool = False
    """With ``probe``: fit a tuned probe (LoRA on the base model's lower blocks with a linear head, saved to
    ``out/probe_tuned``) instead of the linear one; its rows are named "tuned probe". Minutes of training
    rather than seconds (about 17 on 2 CPU cores in full mode)."""
    probe_wrapper: bool = True
    """Fit a wrapper probe (``out/wrapper.json``) and add the base model behind it (and, with ``probe``,
    the probe router behind it) to the table. Every request of the fit is a positive under
    ``wrapper_forms`` of :data:`WRAPPER_ATTACKS` and a negative under every one of :data:`PLAIN_ATTACKS`; the
    base model's answers to ``wrapper_documents`` benign ones are documents of ordinary tasks (long plain
    requests, so that the probe does not learn length)."""
    wrapper_all_pairs: bool = False
    """Fit the wrapper probe on the spare seed pairs too, not only the split's training requests (2,078 forms
    against 777, about 3 times the fitting time: BENCHMARKS.md History, "A cheaper wrapper probe in the quickstart")."""
    wrapper_forms: int = 1
    """Wrapper attacks drawn per request of the wrapper fit."""
    wrapper_documents: int = 64
    """Benign requests the base model answers for the wrapper fit's documents (those of 300 characters or more
    are kept)."""
    wrapper_doc_tokens: int = 256
    """Length cap of those answers."""
    negatives: tuple[str, ...] = (REALISTIC_TRAIN,)
    """Benign sources both probes take as extra negatives in their plain form (history included); the wrapper
    probe also takes them as positives under a wrapping attack. ``()`` fits without them."""
    negatives_limit: int | None = None
    """At most this many requests of each ``negatives`` source (None: all)."""
    max_negatives_fpr: float = 0.02
    """Share of the ``negatives`` requests a probe's threshold may flag, out of fold with each group (requests
    sharing pasted material) held out together."""

    @classmethod
    def for_mode(cls, out: Path, *, fast: bool, model: str = "smollm2-135m", seed: int = 0,
                 probe: bool = False, probe_tune: bool = False, probe_wrapper: bool = True,
                 negatives: tuple[str, ...] = (REALISTIC_TRAIN,)) -> QuickstartConfig:
        if fast:
            # A smoke run of every stage (a few minutes on 2 CPU cores): too few steps to change the
            # model's behaviour, and answers too short for the SCoT reasoning to reach its response.
            return cls(out=out, model=model, fast=True, seed=seed, eval_harmful=2, eval_benign=2,
                       eval_realistic=6, train_harmful=4, max_new_tokens=48, retain_tokens=32, attacks=FAST_ATTACKS,
                       probe=probe or probe_tune, probe_tune=probe_tune, probe_all_pairs=False,
                       probe_wrapper=probe_wrapper, wrapper_forms=3, wrapper_documents=16,
                       wrapper_doc_tokens=128, negatives=negatives, negatives_limit=8)
        return cls(out=out, model=model, seed=seed, probe=probe or probe_tune, probe_tune=probe_tune,
                   probe_wrapper=probe_wrapper, negatives=negatives)

    @property
    def wrapper_path(self) -> Path:
        """Where the probe stage writes the wrapper probe (with ``probe_wrapper``)."""
        return self.out / "wrapper.json"

    @property
    def probe_path(self) -> Path:
        """Where the probe stage writes the probe: a file, or for a tuned probe a directory."""
        return self.out / ("probe_tuned" if self.probe_tune else "probe.json")

    @property
    def probe_saved(self) -> bool:
        """Whether a probe of this config's kind has been saved at :attr:`probe_path`."""
        p = self.probe_path
        return (p / "probe.json").is_file() if self.probe_tune else p.is_file()

    def variants(self) -> tuple[Variant, ...]:
        """The table's rows: :data:`VARIANTS`, plus with ``probe`` R2D behind the probe guard, and the probe
        as a router (the base model answers what it is sure is benign, R2D the rest, flagged ones refused)."""
        wrapper = ((Variant("base + wrapper probe", None, "probe", {"path": str(self.wrapper_path)}),)
                   if self.probe_wrapper else ())
        if not self.probe:
            return (*VARIANTS, *wrapper)
        # distinct names for the tuned probe, so one results store never mixes the two probes' answers
        kind = "tuned probe" if self.probe_tune else "probe"
        probe = {"path": str(self.probe_path), "then": "r2d", "states": "base"}
        router = {**probe, "route": "base"}
        if wrapper:  # the wrapper probe guard in front, the router behind it: two probe guards chained
            chain = {"path": str(self.wrapper_path), "states": "base", "then": "probe", "then_args": router}
            wrapper = (*wrapper, Variant(f"wrapper + {kind} router: base / R2D", "r2d", "probe", chain))
        return (*VARIANTS, Variant(f"R2D + {kind} guard", "r2d", "probe", probe),
                Variant(f"{kind} router: base / R2D", "r2d", "probe", router), *wrapper)


ProgressFn = Callable[[str, int, int], None]
"""``(what, done, total)``; total 0 means a status message without a count."""


def _quiet(_what: str, _done: int, _total: int) -> None:
    return None


# ------------------------------------------------------------------ 1. split
def split_seed_set(cfg: QuickstartConfig) -> dict[str, Path]:
    """Write train / held-out JSONL files of the built-in seed set (deterministic under the seed)."""
    from .data import load_prompts

    d = cfg.out / "splits"
    names = ("harmful_train", "twins_train", "benign_train", "borderline_train",
             "harmful_eval", "twins_eval", "benign_eval", "borderline_eval")
    paths = {n: d / f"{n}.jsonl" for n in names}
    if all(p.is_file() for p in paths.values()):
        return paths
    rng = random.Random(cfg.seed)
    harmful = load_prompts("builtin:harmful")
    twins = {r.meta.get("twin_of"): r for r in load_prompts("builtin:twins")}
    pairs = [(h, twins.get(h.meta.get("seed_id"))) for h in harmful]
    rng.shuffle(pairs)
    n_eval = max(1, round(len(pairs) * cfg.eval_fraction))
    # Hold out pairs evenly over categories so every rule is tested.
    by_cat: dict[str, list] = {}
    for p in pairs:
        by_cat.setdefault(p[0].category or "?", []).append(p)
    eval_pairs: list = []
    while len(eval_pairs) < n_eval and any(by_cat.values()):
        for cat in sorted(by_cat):
            if by_cat[cat] and len(eval_pairs) < n_eval:
                eval_pairs.append(by_cat[cat].pop())
    eval_ids = {h.id for h, _ in eval_pairs}
    train_pairs = [p for p in pairs if p[0].id not in eval_ids][:cfg.train_harmful]

    def split(records):
        records = list(records)
        rng.shuffle(records)
        k = max(1, round(len(records) * cfg.eval_fraction))
        return records[k:], records[:k]

    benign_tr, benign_ev = split(load_prompts("builtin:benign"))
    border_tr, border_ev = split(load_prompts("builtin:borderline"))
    # Training mix: every harmful request with its benign twin (same topic, benign intent), plus
    # ordinary and safe-but-scary requests, so the model learns intent rather than topic.
    n_extra = max(1, round(len(train_pairs) * cfg.extra_benign_ratio))
    benign_tr, border_tr = benign_tr[:n_extra], border_tr[:n_extra]
    content = {
        "harmful_train": _split_rows([h for h, _ in train_pairs], "harmful"),
        "twins_train": _split_rows([t for _, t in train_pairs], "benign"),
        "benign_train": _split_rows(benign_tr, "benign"),
        "borderline_train": _split_rows(border_tr, "benign"),
        "harmful_eval": _split_rows([h for h, _ in eval_pairs], "harmful"),
        "twins_eval": _split_rows([t for _, t in eval_pairs], "benign"),
        "benign_eval": _split_rows(benign_ev, "benign"),
        "borderline_eval": _split_rows(border_ev, "benign"),
    }
    for name, rs in content.items():
        write_jsonl(paths[name], rs)
    return paths


def _split_rows(records, label: str) -> list[dict[str, Any]]:
    """Split-file rows of seed records; twin_of pairs a twin with its harmful request (the probe guard
    keeps a pair in one CV fold)."""
    return [{"id": r.meta.get("seed_id", r.id), "prompt": r.prompt, "label": label, "category": r.category,
             **({"twin_of": r.meta["twin_of"]} if r.meta.get("twin_of") else {})}
            for r in records if r]


# ------------------------------------------------------------------ 2. data
def split_sources(splits: dict[str, Path]) -> tuple[list[str], list[str]]:
    """(harmful, benign) training sources of the seed-set split."""
    return ([str(splits["harmful_train"])],
            [str(splits["twins_train"]), str(splits["borderline_train"]), str(splits["benign_train"])])


def build_training_sets(cfg: QuickstartConfig, harmful: list[str], benign: list[str], progress: ProgressFn = _quiet,
                        *, retain_ratio: float = 1.0, limit: int | None = None, benign_limit: int | None = None,
                        data_dir: str | None = None, check_eval_overlap: bool = False,
                        methods: tuple[str, ...] = ("scot", "r2d"), tag: str = "") -> dict[str, Path]:
    """SCoT and R2D sets from the same prompts; both share the cached self-distilled answers.

    The sets land in ``out/data/<method><tag>``; ``tag`` names a variant of the default mix."""
    from .synth import BuildConfig, build_dataset, parse_styles

    out = {}
    for method in methods:
        bc = BuildConfig(
            method=method, harmful=harmful, benign=benign, teacher="structured", model=cfg.model, seed=cfg.seed,
            evolve=parse_styles(cfg.evolve), retain_ratio=retain_ratio, limit=limit, benign_limit=benign_limit,
            data_dir=data_dir, max_new_tokens=cfg.retain_tokens, check_eval_overlap=check_eval_overlap,
        )
        dest = cfg.out / "data" / f"{method}{tag}"
        build_dataset(bc, dest, cache_dir=cfg.out / "cache" / "retain",
                      progress=lambda what, done, total, m=method: progress(f"data {m}: {what}", done, total))
        out[method] = dest
    return out


def count_rows(path: Path) -> int:
    """Records in a JSONL file of the split."""
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def _retain_ratio(splits: dict[str, Path]) -> float:
    """The ratio that makes the builder keep every benign training prompt of the split."""
    benign = sum(count_rows(splits[k]) for k in ("twins_train", "borderline_train", "benign_train"))
    return benign / max(1, count_rows(splits["harmful_train"]))


# ------------------------------------------------------------------ 3. train
def train_adapters(cfg: QuickstartConfig, data: dict[str, Path], progress: ProgressFn = _quiet) -> dict[str, Path]:
    return {method: train_adapter(cfg, method, data[method], cfg.out / "runs" / method, progress=progress)
            for method in ("scot", "r2d")}


def train_adapter(cfg: QuickstartConfig, method: str, data: Path, dest: Path, overrides: dict[str, Any] | None = None,
                  progress: ProgressFn = _quiet) -> Path:
    """One ``cpu-small`` run (cached: a finished run in ``dest`` is kept)."""
    from .train import load_train_config, train

    if (dest / "safethink_run.json").is_file():
        return dest
    merged = {"method": method, "epochs": cfg.epochs, "seed": cfg.seed, **cfg.train_overrides, **(overrides or {})}
    tc = load_train_config(preset="cpu-small", overrides=merged)
    label = f"train {dest.name}"
    progress(label, 0, 0)
    train(tc, model=cfg.model, data=data, out=dest, keep_checkpoints=False,
          callbacks=[_StepProgress(lambda d, t: progress(label, d, t))])
    return dest


def _StepProgress(fn: Callable[[int, int], None]) -> Any:
    """A TrainerCallback that reports optimizer steps to ``fn(done, total)``."""
    from transformers import TrainerCallback

    class StepProgress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            fn(state.global_step, state.max_steps)

    return StepProgress()


# ------------------------------------------------------------------ 4. probe
def fit_quickstart_probe(cfg: QuickstartConfig, splits: dict[str, Path], progress: ProgressFn = _quiet) -> Path:
    """The probe guard's classifier on the base model (cached in :attr:`QuickstartConfig.probe_path`): the
    training prompts of the split (with ``probe_all_pairs``, every other seed pair outside the held-out split
    too), harmful and benign, each under ``probe_attacks``; with ``probe_tune`` a tuned probe."""
    from .models import load_model
    from .probes import fit_probe as fit_probe_from_sources

    dest = cfg.probe_path
    harmful, benign = _probe_sources(cfg, splits)
    if cfg.probe_saved:
        if _fitted_on(dest, harmful, benign, list(cfg.probe_attacks), _negative_options(cfg)):
            return dest
        progress(f"probe: {dest} was fitted on other requests, attacks or negatives; fitting it again", 0, 0)
    n = sum(count_rows(Path(p)) for p in [*harmful, *benign]) * len(cfg.probe_attacks) + _negative_count(cfg)
    state = {"done": 0}

    def advance(k: int) -> None:
        state["done"] += k
        progress("probe: hidden states", state["done"], n)

    model = load_model(cfg.model)
    if cfg.probe_tune:
        def step(k: int) -> None:
            state["done"] += k
            progress("probe: tuning steps", state["done"], 0)

        progress("probe: tuning steps", 0, 0)
        probe = fit_probe_from_sources(model, harmful, benign, attacks=cfg.probe_attacks, seed=cfg.seed, tune=True,
                                       progress=step, **_negative_options(cfg))
        probe.save(dest)
        progress(f"probe: tuned at block {probe.layer}, validation AUC {probe.metrics['auc']:.2f}", 0, 0)
        return dest
    progress("probe: hidden states", 0, n)
    probe = fit_probe_from_sources(model, harmful, benign, attacks=cfg.probe_attacks, seed=cfg.seed, progress=advance,
                                   **_negative_options(cfg))
    probe.save(dest)
    progress(f"probe: layer {probe.layer}, cross-validated AUC {probe.metrics['auc']:.2f}", 0, 0)
    return dest


def fit_quickstart_wrapper(cfg: QuickstartConfig, splits: dict[str, Path], progress: ProgressFn = _quiet) -> Path:
    """The wrapper probe on the base model (cached in :attr:`QuickstartConfig.wrapper_path`): the split's
    training requests (with ``wrapper_all_pairs``, the spare seed pairs too), harmful and benign alike, each
    under ``wrapper_forms`` of :data:`WRAPPER_ATTACKS` (positive) and under every one of :data:`PLAIN_ATTACKS`
    (negative), plus the model's answers to ``wrapper_documents`` benign ones as documents of ordinary tasks
    (negative), plus the ``negatives`` requests as sent (negative) and under one wrapping attack each
    (positive); its threshold at 1% of the plain forms and at most ``max_negatives_fpr`` of the ``negatives``
    out of fold."""
    from .models import load_model
    from .probes import fit_probe as fit_probe_from_sources

    dest = cfg.wrapper_path
    harmful, benign = _probe_sources(cfg, splits) if cfg.wrapper_all_pairs else split_sources(splits)
    attacks = [*WRAPPER_ATTACKS, *PLAIN_ATTACKS]
    settings = {"forms_per_request": cfg.wrapper_forms, "documents_asked": cfg.wrapper_documents,
                "document_tokens": cfg.wrapper_doc_tokens, **_negative_options(cfg)}
    if dest.is_file():
        if _fitted_on(dest, harmful, benign, attacks, settings):
            return dest
        progress(f"wrapper probe: {dest} was fitted on other requests, attacks or settings; fitting it again", 0, 0)
    n = (sum(count_rows(Path(p)) for p in [*harmful, *benign]) * (cfg.wrapper_forms + len(PLAIN_ATTACKS))
         + _negative_count(cfg) * (cfg.wrapper_forms + 1) + cfg.wrapper_documents)  # documents: at most this many
    state = {"done": 0}

    def advance(k: int) -> None:
        state["done"] += k
        progress("wrapper probe: hidden states", state["done"], n)

    model = load_model(cfg.model)
    progress("wrapper probe: hidden states", 0, n)
    probe = fit_probe_from_sources(model, harmful, benign, attacks=attacks, seed=cfg.seed, target="wrapper",
                                   plain_attacks=PLAIN_ATTACKS, forms_per_request=cfg.wrapper_forms,
                                   documents=cfg.wrapper_documents, document_tokens=cfg.wrapper_doc_tokens,
                                   max_fpr=0.01, progress=advance, **_negative_options(cfg))
    probe.save(dest)
    progress(f"wrapper probe: layer {probe.layer}, cross-validated AUC {probe.metrics['auc']:.2f}", 0, 0)
    return dest


def _negative_options(cfg: QuickstartConfig) -> dict[str, Any]:
    """The realistic-negative arguments of ``fit_probe_from_sources``, as its ``fitted_on`` record keeps them (a
    probe fitted with others is fitted again)."""
    return {"negatives": list(cfg.negatives), "negatives_limit": cfg.negatives_limit,
            "max_negatives_fpr": cfg.max_negatives_fpr}


def _negative_count(cfg: QuickstartConfig) -> int:
    """Requests the ``negatives`` sources hold (for the progress bar)."""
    from .data import load_prompts

    return sum(len(load_prompts(s, label="benign", limit=cfg.negatives_limit, seed=cfg.seed)) for s in cfg.negatives)


def _probe_sources(cfg: QuickstartConfig, splits: dict[str, Path]) -> tuple[list[str], list[str]]:
    """The probe stage's harmful and benign request files: the split's training files, and with
    ``probe_all_pairs`` the spare seed pairs too."""
    harmful, benign = split_sources(splits)
    if cfg.probe_all_pairs:
        spare_h, spare_t = _spare_pairs(cfg, splits)
        harmful, benign = [*harmful, str(spare_h)], [*benign, str(spare_t)]
    return harmful, benign


def _fitted_on(dest: Path, harmful: list[str], benign: list[str], attacks: list[str],
               settings: dict[str, Any] | None = None) -> bool:
    """Whether the probe saved at ``dest`` was fitted on these request files (in any order) and attacks, and
    with ``settings`` (keys of its ``fitted_on`` record). One fitted otherwise is fitted again; the evaluation
    then answers again, as the probe's content is part of each attempt's key."""
    from .probes import load_probe

    fitted = load_probe(dest).metrics.get("fitted_on", {})
    return (sorted(fitted.get("harmful", [])), sorted(fitted.get("benign", [])), fitted.get("attacks")) == (
        sorted(harmful), sorted(benign), attacks) and all(fitted.get(k) == v for k, v in (settings or {}).items())


def _spare_pairs(cfg: QuickstartConfig, splits: dict[str, Path]) -> tuple[Path, Path]:
    """The seed pairs the split left out of training (beyond ``train_harmful``) and did not hold out, as two
    JSONL files; a pair with either side among the split's prompts is skipped."""
    from .data import load_prompts

    taken = {row["prompt"] for p in splits.values() for _, row in iter_jsonl(p)}
    twins = {t.meta.get("twin_of"): t for t in load_prompts("builtin:twins")}
    pairs = [(h, twins.get(h.meta.get("seed_id"))) for h in load_prompts("builtin:harmful")]
    spare = [(h, t) for h, t in pairs if t is not None and h.prompt not in taken and t.prompt not in taken]
    h_dest, t_dest = cfg.out / "splits" / "harmful_spare.jsonl", cfg.out / "splits" / "twins_spare.jsonl"
    write_jsonl(h_dest, _split_rows([h for h, _ in spare], "harmful"))
    write_jsonl(t_dest, _split_rows([t for _, t in spare], "benign"))
    return h_dest, t_dest


# ------------------------------------------------------------------ 5. eval
def split_eval_datasets(cfg: QuickstartConfig, splits: dict[str, Path]) -> list[dict[str, Any]]:
    """The held-out parts of the seed set as eval-spec dataset entries."""
    return [
        {"source": str(splits["harmful_eval"]), "label": "harmful", "limit": cfg.eval_harmful, "name": "held-out harmful"},
        {"source": str(splits["twins_eval"]), "label": "benign", "limit": cfg.eval_benign, "name": "benign twins"},
        {"source": str(splits["benign_eval"]), "label": "benign", "limit": cfg.eval_benign, "name": "ordinary"},
        {"source": str(splits["borderline_eval"]), "label": "benign", "limit": cfg.eval_benign, "name": "safe-but-scary"},
        realistic_eval_dataset(cfg.eval_realistic),
    ]


def realistic_eval_dataset(limit: int | None = None) -> dict[str, Any]:
    """:data:`REALISTIC_TEST` as an eval-spec benign dataset named "realistic" (``limit``: a sample of it). It is
    not part of the seed split: nothing of the quickstart is fitted or tuned on it."""
    return {"source": REALISTIC_TEST, "label": "benign", "name": "realistic",
            **({"limit": limit} if limit is not None else {})}


def eval_specs(cfg: QuickstartConfig, datasets: list[dict[str, Any]], runs: dict[str, Path],
               variants: tuple[Variant, ...] = VARIANTS, judges: list[dict[str, Any]] | None = None) -> list[Any]:
    """One eval spec per variant, all writing to the same results store."""
    from .eval import parse_spec

    specs = []
    for v in variants:
        model = {"spec": cfg.model, "name": v.name.split(" + ")[0]}
        if v.adapter:
            run = Path(runs[v.adapter])
            if (run / "config.json").is_file() and not (run / "adapter_config.json").is_file():
                model["spec"] = f"hf:{run}"  # a full fine-tuning run holds a whole model
            else:
                model["adapter"] = str(run)
        specs.append(parse_spec({
            "name": "quickstart", "models": [model],
            "defences": [{"guard": v.guard, "args": v.guard_args, "name": v.name}],
            "attacks": [{"name": a} for a in cfg.attacks], "datasets": datasets,
            "judges": judges or [{"name": "default", "primary": True}],
            "generation": {"max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.gen_batch_size},
            "seed": cfg.seed, "out": str(cfg.out / "eval"),
        }, source="quickstart"))
    return specs


def run_evaluations(specs: list[Any], progress: ProgressFn = _quiet) -> Path:
    from .eval import run_eval

    for spec in specs:
        name = spec.defences[0].display
        state = {"done": 0, "total": 0}

        def on_event(e, name=name, state=state):
            if e.kind == "plan":
                state["total"], state["done"] = e.total, e.done
            elif e.kind == "advance":
                state["done"] += e.n
            progress(f"eval {name}", state["done"], state["total"])

        run_eval(spec, progress=on_event)
    return Path(specs[0].out)


# ------------------------------------------------------------------ 6. report
@dataclass
class SummaryRow:
    variant: str
    asr: dict[str, float]
    """attack -> ASR on held-out harmful prompts."""
    asr_all: float
    asr_ci: tuple[float, float]
    over_refusal: dict[str, float]
    """benign set -> refusal rate."""
    benign_answer: float


def summarise(eval_dir: Path, variants: tuple[Variant, ...] = VARIANTS) -> tuple[list[SummaryRow], list[str], list[str]]:
    """The before/after table, computed from the stored attempts (a pure function of the log)."""
    from .eval import compute_metrics, load_attempts

    m = compute_metrics(load_attempts(eval_dir))
    rows = []
    attacks = [a for a in m.attacks]
    sets = [d for d in m.datasets if any(k[2] == d for k in m.over_refusal)]
    for v in variants:
        pairs = [(mo, de) for (mo, de, at) in m.asr if de == v.name]
        if not pairs:
            continue
        mo, de = pairs[0]
        allr = m.asr[(mo, de, "(all)")]
        rows.append(SummaryRow(
            variant=v.name,
            asr={a: m.asr[(mo, de, a)].rate for a in attacks if (mo, de, a) in m.asr},
            asr_all=allr.rate, asr_ci=allr.ci,
            over_refusal={s: m.over_refusal[(mo, de, s)].rate for s in sets if (mo, de, s) in m.over_refusal},
            benign_answer=m.benign_answer[(mo, de)].rate if (mo, de) in m.benign_answer else float("nan"),
        ))
    return rows, attacks, sets


def run_quickstart(cfg: QuickstartConfig, progress: ProgressFn = _quiet
                   ) -> tuple[tuple[list[SummaryRow], list[str], list[str]], Any]:
    """Every stage in order; stages already done are skipped. Returns the table (``summarise``'s
    rows, attacks, benign sets) and the report files. Each stage's wall time is written to
    ``out/timings.json`` as it ends (:class:`StageClock`)."""
    from .eval import render_report

    cfg.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg.out / "quickstart.json", json.dumps(
        {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()}, indent=1, default=str))
    clock = StageClock(cfg.out / "timings.json", cfg.model)
    progress("split seed set", 0, 0)
    with clock("split"):
        splits = split_seed_set(cfg)
    harmful, benign = split_sources(splits)
    with clock("data"):
        data = build_training_sets(cfg, harmful, benign, progress, retain_ratio=_retain_ratio(splits))
    runs = {}
    for method in ("scot", "r2d"):
        with clock(f"train {method}"):
            runs[method] = train_adapter(cfg, method, data[method], cfg.out / "runs" / method, progress=progress)
    if cfg.probe:
        with clock("probe"):
            fit_quickstart_probe(cfg, splits, progress)
    if cfg.probe_wrapper:
        with clock("wrapper probe"):
            fit_quickstart_wrapper(cfg, splits, progress)
    variants = cfg.variants()
    specs = eval_specs(cfg, split_eval_datasets(cfg, splits), runs, variants)
    for spec in specs:
        with clock(f"eval {spec.defences[0].display}"):
            eval_dir = run_evaluations([spec], progress)
    progress("report", 0, 0)
    with clock("report"):
        files = render_report(eval_dir)
    return summarise(eval_dir, variants), files


class StageClock:
    """Wall time per stage, written (atomically) to a JSON file as each stage ends, with what decides it:
    the machine's CPU count, torch's threads and the dtype ``auto`` loads the model in. A stage served from the
    output directory's cache shows as the seconds it took to find it there."""

    def __init__(self, path: Path, model: str):
        self.path = path
        self.stages: dict[str, float] = {}
        self.started = time.perf_counter()
        self.machine = _machine_facts(model)

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[stage] = round(time.perf_counter() - t0, 1)
            atomic_write_text(self.path, json.dumps({
                "stages": self.stages, "total_seconds": round(time.perf_counter() - self.started, 1),
                "machine": self.machine}, indent=1))


def _machine_facts(model: str) -> dict[str, Any]:
    import os

    import torch

    from .models._hf import pick_device_dtype

    device, dtype = pick_device_dtype(None, None)
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
            "auto_dtype": str(dtype).removeprefix("torch."), "model": model}
