"""The pipeline's resolved settings: one flat record the stages read (:class:`QuickstartConfig`), the
attack lists the shipped presets use, and the table's rows (:class:`Variant`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    workers: int | str = "auto"
    """Processes running independent stages side by side (see :func:`~safethink.pipeline._workers.resolve_workers`)."""
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
        """The settings of the shipped preset ``quickstart`` (``quickstart-fast`` with ``fast``), with the
        options of ``safethink quickstart`` applied."""
        from ._config import load_pipeline, quickstart_sets

        name = "quickstart-fast" if fast else "quickstart"
        sets = quickstart_sets(model=model, seed=seed, probe=probe, probe_tune=probe_tune,
                               probe_wrapper=probe_wrapper, negatives=negatives)
        return load_pipeline(name, sets).settings(out)

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
        """The table's rows as the ``quickstart`` preset declares them: :data:`VARIANTS`, plus with ``probe``
        R2D behind the probe guard and the probe as a router (the base model answers what it is sure is benign,
        R2D the rest, flagged ones refused), and with ``probe_wrapper`` the rows behind the wrapper probe."""
        from ._config import load_pipeline

        return resolve_variants(load_pipeline("quickstart").eval.variants, self)


def resolve_variants(entries: Any, cfg: QuickstartConfig) -> tuple[Variant, ...]:
    """Declared variant entries (``eval.variants`` of a pipeline config) as the rows of ``cfg``: an entry whose
    ``requires`` names a probe ``cfg`` does not fit is left out; ``{intent}`` in a name becomes ``probe`` or
    ``tuned probe`` (distinct names, so one results store never mixes the two probes' answers), and
    ``{intent_path}`` / ``{wrapper_path}`` in guard arguments the probes' files in the output directory."""
    fitted = {"intent": cfg.probe, "wrapper": cfg.probe_wrapper}
    names = {"intent": "tuned probe" if cfg.probe_tune else "probe"}
    paths = {"intent_path": str(cfg.probe_path), "wrapper_path": str(cfg.wrapper_path)}
    return tuple(Variant(_fill(e.name, names), e.adapter, e.guard, _fill(e.args, paths))
                 for e in entries if all(fitted[r] for r in e.requires))


def _fill(value: Any, names: dict[str, str]) -> Any:
    """``value`` with each ``{key}`` of ``names`` replaced, in strings at any depth of dicts and lists."""
    if isinstance(value, str):
        for k, v in names.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


StageProgress = Callable[[str, int, int], None]
"""``(what, done, total)``; total 0 means a status message without a count."""


def _quiet(_what: str, _done: int, _total: int) -> None:
    return None
