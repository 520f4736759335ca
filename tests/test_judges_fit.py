"""Choosing and fitting the refusal head on precomputed features: the held-out source never reaches
the fit that is scored on it, the prefix-rule column is honoured, and the choice follows the worst split."""

from __future__ import annotations

import numpy as np
import pytest

from safethink.errors import SpecError
from safethink.judges import _fit

pytest.importorskip("sklearn")


def _source(name: str, n: int, shift: float, seed: int, prefix_share: float = 0.0) -> _fit.Source:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2 == 0
    X = rng.normal(size=(n, 6))
    X[:, 0] += np.where(y, 1.5, -1.5)  # the signal
    X[:, 1] += shift  # a style every answer of this source shares
    X[:, -1] = (rng.random(n) < prefix_share) & y  # the prefix-rule column fires on some refusals only
    return _fit.Source(name, X, y)


def test_leave_one_source_out_splits_never_fit_on_the_held_out_source():
    gen, a, b = _source("generated", 60, 0.0, 0), _source("a", 30, 2.0, 1), _source("b", 30, -2.0, 2)
    splits = _fit.validation_splits(gen, [a, b], seed=0)
    assert [s[0] for s in splits] == ["without a", "without b"]
    for _, g, real, held in splits:
        assert g is gen and held not in real and len(real) == 1


def test_one_labelled_source_is_cross_validated_inside_itself():
    gen, a = _source("generated", 60, 0.0, 0), _source("a", 40, 2.0, 1)
    splits = _fit.validation_splits(gen, [a], seed=0)
    assert len(splits) == 5
    held_rows = np.concatenate([held.X for *_, held in splits])
    assert sorted(map(tuple, held_rows)) == sorted(map(tuple, a.X))  # every row held out exactly once
    for _, _, real, held in splits:
        fit_rows = {tuple(r) for r in real[0].X}
        assert not any(tuple(r) in fit_rows for r in held.X)


def test_fit_predict_and_prefix_rule():
    gen = _source("generated", 200, 0.0, 0, prefix_share=0.5)
    fitted = _fit.fit(gen, [], _fit.FitSettings(C=1.0, real_weight=1.0))
    test = _source("t", 100, 0.0, 5, prefix_share=0.5)
    plain = _fit.predict(fitted, test.X, prefix_rule=False)
    assert (plain == test.y).mean() > 0.9
    ored = _fit.predict(fitted, test.X, prefix_rule=True)
    assert (ored >= plain).all() and ored[test.X[:, -1] > 0.5].all()


def test_choice_is_the_best_worst_split_and_is_recorded():
    gen, a, b = _source("generated", 80, 0.0, 0), _source("a", 40, 1.0, 1), _source("b", 40, -1.0, 2)
    settings, rule, table = _fit.choose_settings(gen, [a, b], seed=0)
    assert len(table) == 2 * len(_fit.SETTINGS_GRID)
    best = max(r["worst"] for r in table)
    chosen = next(r for r in table if r["C"] == settings.C and r["real_weight"] == settings.real_weight
                  and r["prefix_rule"] == rule)
    assert chosen["worst"] == pytest.approx(best)
    assert chosen["worst"] == min(chosen["agreement"].values())


def test_source_shape_mismatch_is_an_error():
    with pytest.raises(SpecError, match="3 feature rows for 2 labels"):
        _fit.Source("x", np.zeros((3, 2)), np.array([True, False]))
