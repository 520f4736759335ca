"""Fitting and choosing the refusal classifier head, on features already computed (pure numpy/sklearn).

Training data comes in *sources*: the generated texts, and one source per model whose answers humans
labelled. The settings (regularisation, weight of the real answers, whether XSTest's prefix rule is OR'ed
in) are chosen by how well a head fitted without a source agrees with that source's labels, so they are
chosen for answers of a model the head has not seen; the worst source decides. With one labelled source,
5-fold cross-validation inside it stands in; with none, cross-validation on the generated texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._numeric import fit_logistic
from ..errors import MissingExtraError, SpecError


@dataclass(frozen=True)
class Source:
    """Labelled feature rows from one place: ``generated`` or a model's human-labelled answers."""

    name: str
    X: np.ndarray
    y: np.ndarray
    """True where the answer is a refusal (full or partial)."""

    def __post_init__(self) -> None:
        if len(self.X) != len(self.y):
            raise SpecError(f"source {self.name!r}: {len(self.X)} feature rows for {len(self.y)} labels")


@dataclass(frozen=True)
class FitSettings:
    C: float
    """Inverse L2 strength of the logistic regression."""
    real_weight: float
    """Sample weight of a human-labelled answer relative to a generated text."""


@dataclass(frozen=True)
class Fitted:
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def p_refused(self, X: np.ndarray) -> np.ndarray:
        z = ((X - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))


SETTINGS_GRID: tuple[FitSettings, ...] = tuple(FitSettings(c, w) for c in (0.01, 0.03, 0.1) for w in (1.0, 3.0))
PREFIX_RULE_COLUMN = -1
"""The feature column holding XSTest's prefix rule (see ``_classifier.featurize``)."""


def fit(generated: Source, real: Sequence[Source], settings: FitSettings) -> Fitted:
    """One logistic-regression head on the generated texts plus the real answers, standardised features."""
    X = np.vstack([generated.X, *(s.X for s in real)]).astype(np.float64)
    y = np.concatenate([generated.y, *(s.y for s in real)]).astype(int)
    w = np.concatenate([np.ones(len(generated.y)), *(np.full(len(s.y), settings.real_weight) for s in real)])
    mean = X.mean(axis=0)
    scale = np.maximum(X.std(axis=0), 1e-3)  # MiniLM has a few near-constant dimensions
    try:
        clf = fit_logistic((X - mean) / scale, y, c=settings.C, max_iter=3000, sample_weight=w)
    except ImportError:
        raise MissingExtraError("scikit-learn", "embed", "training the refusal classifier") from None
    return Fitted(mean=mean, scale=scale, coef=clf.coef_[0].copy(), intercept=float(clf.intercept_[0]))


def predict(fitted: Fitted, X: np.ndarray, *, prefix_rule: bool, threshold: float = 0.5) -> np.ndarray:
    refused = fitted.p_refused(X) >= threshold
    return refused | (X[:, PREFIX_RULE_COLUMN] > 0.5) if prefix_rule else refused


def _folds(n: int, y: np.ndarray, seed: int, k: int = 5) -> list[np.ndarray]:
    from sklearn.model_selection import StratifiedKFold

    k = max(2, min(k, int(min(y.sum(), (~y).sum()))))
    return [test for _, test in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n), y)]


def _subset(s: Source, idx: np.ndarray, name: str | None = None) -> Source:
    return Source(name or s.name, s.X[idx], s.y[idx])


def validation_splits(generated: Source, real: Sequence[Source], seed: int) -> list[tuple[str, Source, list[Source], Source]]:
    """``(label, generated part, real parts, held-out part)`` for every validation split."""
    if len(real) >= 2:
        return [(f"without {h.name}", generated, [s for s in real if s is not h], h) for h in real]
    if len(real) == 1:
        only = real[0]
        out = []
        for i, test in enumerate(_folds(len(only.y), only.y, seed)):
            keep = np.setdiff1d(np.arange(len(only.y)), test)
            out.append((f"{only.name} fold {i + 1}", generated, [_subset(only, keep)], _subset(only, test)))
        return out
    out = []
    for i, test in enumerate(_folds(len(generated.y), generated.y, seed)):
        keep = np.setdiff1d(np.arange(len(generated.y)), test)
        out.append((f"generated fold {i + 1}", _subset(generated, keep), [], _subset(generated, test)))
    return out


def choose_settings(generated: Source, real: Sequence[Source], *, seed: int = 0,
                    grid: Sequence[FitSettings] = SETTINGS_GRID) -> tuple[FitSettings, bool, list[dict[str, Any]]]:
    """The settings and prefix-rule choice with the best worst-split agreement (ties: the better mean, then
    the stronger regulariser, then no prefix rule); returns them with every candidate's scores."""
    splits = validation_splits(generated, real, seed)
    table = []
    for st in grid:
        fits = [(label, fit(g, r, st), held) for label, g, r, held in splits]
        for rule in (False, True):
            acc = {label: float((predict(f, held.X, prefix_rule=rule) == held.y).mean()) for label, f, held in fits}
            table.append({"C": st.C, "real_weight": st.real_weight, "prefix_rule": rule, "agreement": acc,
                          "worst": min(acc.values()), "mean": float(np.mean(list(acc.values())))})
    best = max(table, key=lambda r: (round(r["worst"], 6), round(r["mean"], 6), -r["C"], not r["prefix_rule"]))
    return FitSettings(best["C"], best["real_weight"]), bool(best["prefix_rule"]), table
