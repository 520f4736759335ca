"""The pipeline's probe stage: the intent probe (linear or tuned) and the wrapper probe on the base model,
each cached in the output directory and fitted again only when its requests, attacks or settings changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import iter_jsonl, write_jsonl
from ._settings import PLAIN_ATTACKS, WRAPPER_ATTACKS, StageProgress, QuickstartConfig, _quiet
from ._stages import _split_rows, count_rows, split_sources


# ------------------------------------------------------------------ 4. probe
def fit_quickstart_probe(cfg: QuickstartConfig, splits: dict[str, Path], progress: StageProgress = _quiet) -> Path:
    """The probe guard's classifier on the base model (cached in :attr:`QuickstartConfig.probe_path`): the
    training prompts of the split (with ``probe_all_pairs``, every other seed pair outside the held-out split
    too), harmful and benign, each under ``probe_attacks``; with ``probe_tune`` a tuned probe."""
    from ..models import load_model
    from ..probes import fit_probe as fit_probe_from_sources

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


def fit_quickstart_wrapper(cfg: QuickstartConfig, splits: dict[str, Path], progress: StageProgress = _quiet) -> Path:
    """The wrapper probe on the base model (cached in :attr:`QuickstartConfig.wrapper_path`): the split's
    training requests (with ``wrapper_all_pairs``, the spare seed pairs too), harmful and benign alike, each
    under ``wrapper_forms`` of :data:`WRAPPER_ATTACKS` (positive) and under every one of :data:`PLAIN_ATTACKS`
    (negative), plus the model's answers to ``wrapper_documents`` benign ones as documents of ordinary tasks
    (negative), plus the ``negatives`` requests as sent (negative) and under one wrapping attack each
    (positive); its threshold at 1% of the plain forms and at most ``max_negatives_fpr`` of the ``negatives``
    out of fold."""
    from ..models import load_model
    from ..probes import fit_probe as fit_probe_from_sources

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
    from ..data import load_prompts

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
    from ..probes import load_probe

    fitted = load_probe(dest).metrics.get("fitted_on", {})
    return (sorted(fitted.get("harmful", [])), sorted(fitted.get("benign", [])), fitted.get("attacks")) == (
        sorted(harmful), sorted(benign), attacks) and all(fitted.get(k) == v for k, v in (settings or {}).items())


def _spare_pairs(cfg: QuickstartConfig, splits: dict[str, Path]) -> tuple[Path, Path]:
    """The seed pairs the split left out of training (beyond ``train_harmful``) and did not hold out, as two
    JSONL files; a pair with either side among the split's prompts is skipped."""
    from ..data import load_prompts

    taken = {row["prompt"] for p in splits.values() for _, row in iter_jsonl(p)}
    twins = {t.meta.get("twin_of"): t for t in load_prompts("builtin:twins")}
    pairs = [(h, twins.get(h.meta.get("seed_id"))) for h in load_prompts("builtin:harmful")]
    spare = [(h, t) for h, t in pairs if t is not None and h.prompt not in taken and t.prompt not in taken]
    h_dest, t_dest = cfg.out / "splits" / "harmful_spare.jsonl", cfg.out / "splits" / "twins_spare.jsonl"
    write_jsonl(h_dest, _split_rows([h for h, _ in spare], "harmful"))
    write_jsonl(t_dest, _split_rows([t for _, t in spare], "benign"))
    return h_dest, t_dest
