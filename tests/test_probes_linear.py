"""The linear probe: hidden states, cross-validated fitting and thresholds, the probe file, on the real tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _probes import HARM, SAFE, conv
from safethink.errors import SpecError
from safethink.probes import PROBE_FORMAT, Probe, RequestProbe, fit_linear_probe, load_probe, prompt_states
from safethink.probes._cv import threshold_at_fpr

pytestmark = pytest.mark.timeout(180)


def test_batched_states_equal_one_forward_per_prompt(tiny_model):
    import torch

    convs = [conv("hi"), conv("a much longer request about bread baking in a cold kitchen")]
    last = prompt_states(tiny_model, convs, batch_size=2)
    mean = prompt_states(tiny_model, convs, layers=[1, 2], pool="mean", batch_size=2)
    n_layers = tiny_model.model.config.num_hidden_layers
    assert last.shape == (2, n_layers + 1, tiny_model.model.config.hidden_size)
    assert mean.shape == (2, 2, tiny_model.model.config.hidden_size)
    for i, c in enumerate(convs):
        ids = tiny_model.tokenizer(tiny_model.render(c), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            hs = tiny_model.model(**ids, output_hidden_states=True).hidden_states
        for k in range(n_layers + 1):
            np.testing.assert_allclose(last[i, k], hs[k][0, -1].numpy(), atol=1e-4)
        np.testing.assert_allclose(mean[i, 1], hs[2][0].mean(0).numpy(), atol=1e-4)
    with pytest.raises(SpecError, match="layer 9 is out of range"):
        prompt_states(tiny_model, convs, layers=[9])


def test_threshold_refuses_at_most_the_allowed_share():
    scores = [i / 10 for i in range(10)]  # 0.0 .. 0.9
    t = threshold_at_fpr(scores, 0.2)
    assert sum(s >= t for s in scores) == 2 and 0.7 < t <= 0.8
    assert sum(s >= threshold_at_fpr(scores, 0.0) for s in scores) == 0
    assert threshold_at_fpr([0.5, 0.5, 0.5], 0.5) > 0.5  # ties: none of the tied scores may pass


def test_fit_separates_and_threshold_holds_out_of_fold(tiny_model, tmp_path):
    probe = fit_linear_probe(tiny_model, [conv(t) for t in HARM], [conv(t) for t in SAFE], pool="mean",
                      c=1.0, folds=3, max_fpr=0.1)
    assert probe.metrics["auc"] > 0.9
    assert probe.metrics["oof_benign_flagged"] <= 0.1
    assert probe.metrics["oof_harmful_routed"] <= 0.05 and probe.route_threshold <= probe.threshold
    assert set(probe.metrics["auc_by_layer"]) == {1, 2}  # the embeddings are not a candidate
    scores = probe.score(tiny_model, [conv(HARM[0]), conv(SAFE[0])])
    assert scores[0] > scores[1]
    path = probe.save(tmp_path / "p.json")
    again = RequestProbe.load(path)
    assert again.score(tiny_model, [conv(HARM[0]), conv(SAFE[0])]) == pytest.approx(scores)
    assert again.model == tiny_model.spec and again.layer == probe.layer


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        RequestProbe.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  not json")
    with pytest.raises(SpecError, match=r"bad.json: not a probe file \(line 2"):
        RequestProbe.load(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(SpecError, match="other.json: not a probe file"):
        RequestProbe.load(other)


def test_route_threshold_lets_at_most_the_allowed_share_of_harmful_through():
    from safethink.probes._cv import route_at_fnr

    scores = [i / 10 for i in range(10)]
    r = route_at_fnr(scores, 0.2)
    assert sum(s < r for s in scores) == 2
    assert sum(s < route_at_fnr(scores, 0.0) for s in scores) == 0
    assert sum(s < route_at_fnr([0.3, 0.3, 0.3], 0.5) for s in [0.3, 0.3, 0.3]) == 0  # ties stay above


def _noisy_layers(n_layers: int = 4, n: int = 160, d: int = 6, seed: int = 0):
    """States where every layer carries the label along one direction under its own noise."""
    rng = np.random.default_rng(seed)
    y = np.array([1, 0] * (n // 2))
    x = rng.normal(size=(n, n_layers, d))
    x[:, :, 0] += 0.8 * y[:, None]
    return x.astype(np.float32), y, [str(i // 2) for i in range(n)]  # a harmful row and its twin: one group


def test_ensemble_of_layers_is_chosen_by_cv_and_is_the_mean_of_per_layer_logits(tmp_path):
    from safethink.probes import fit_probe_on_states

    x, y, g = _noisy_layers()
    ids = [0, 1, 2, 3]
    probe = fit_probe_on_states(x, y, g, layer_ids=ids, candidates=[1, 2, 3], model="m", ensembles=(1, 3))
    by_size = probe.metrics["auc_by_ensemble_size"]
    assert by_size[3] > by_size[1] and probe.layer == [1, 2, 3] and probe.layers == [1, 2, 3]
    assert probe.metrics["auc"] == by_size[3] and len(probe.weight) == 3 * x.shape[2]
    singles = [fit_probe_on_states(x, y, g, layer_ids=ids, candidates=[L], model="m") for L in (1, 2, 3)]
    assert all(s.layer == L for s, L in zip(singles, (1, 2, 3)))
    logit = lambda p, v: np.log(p.probabilities(v) / (1 - p.probabilities(v)))  # noqa: E731
    mean_logit = np.mean([logit(s, x[:, L]) for s, L in zip(singles, (1, 2, 3))], axis=0)
    np.testing.assert_allclose(logit(probe, x[:, [1, 2, 3]]), mean_logit, atol=1e-6)
    assert probe.metrics["oof_benign_flagged"] <= 0.05
    again = RequestProbe.load(probe.save(tmp_path / "e.json"))
    assert again.layer == [1, 2, 3]
    np.testing.assert_allclose(again.probabilities(x[:, [1, 2, 3]]), probe.probabilities(x[:, [1, 2, 3]]))
    with pytest.raises(SpecError, match="reads 3 layer"):
        probe.probabilities(x[:, 1])
    only = fit_probe_on_states(x, y, g, layer_ids=ids, candidates=[1, 2, 3], model="m", ensembles=(1,))
    assert isinstance(only.layer, int) and set(only.metrics["auc_by_ensemble_size"]) == {1}
    with pytest.raises(SpecError, match="ensemble sizes"):
        fit_probe_on_states(x, y, g, layer_ids=ids, model="m", ensembles=(0,))


def test_ensemble_probe_scores_a_model_at_its_layers(tiny_model, tmp_path):
    probe = fit_linear_probe(tiny_model, [conv(t) for t in HARM], [conv(t) for t in SAFE], c=1.0, folds=3,
                      ensembles=(2,))
    assert probe.layer == [1, 2]
    convs = [conv(HARM[0]), conv(SAFE[0])]
    states = prompt_states(tiny_model, convs, layers=[1, 2])
    assert probe.score(tiny_model, convs) == pytest.approx(probe.probabilities(states).tolist())
    assert RequestProbe.load(probe.save(tmp_path / "p.json")).score(tiny_model, convs) == pytest.approx(
        probe.score(tiny_model, convs))
    raw = json.loads((tmp_path / "p.json").read_text())
    raw["weight"] = raw["weight"][:-1]
    raw["mean"], raw["scale"] = raw["mean"][:-1], raw["scale"][:-1]
    (tmp_path / "odd.json").write_text(json.dumps(raw))
    with pytest.raises(SpecError, match="do not split evenly"):
        RequestProbe.load(tmp_path / "odd.json")


def test_threshold_holds_on_the_held_out_negatives_and_is_recorded():
    from safethink.probes import threshold_with_negatives

    y = np.array([1] * 10 + [0] * 60)
    scores = np.concatenate([np.linspace(0.6, 1.0, 10), np.linspace(0.0, 0.3, 40), np.linspace(0.2, 0.9, 20)])
    kinds = [None] * 50 + ["code-review"] * 10 + ["persona"] * 10
    t, rec = threshold_with_negatives(scores, y, kinds, max_fpr=0.1, max_negatives_fpr=0.05)
    marked = scores[50:]
    assert (marked >= t).mean() <= 0.05 and rec["held_out_flagged"] == (marked >= t).mean()
    assert (scores[y == 0] >= t).mean() <= 0.1
    assert rec["threshold_set_by"] == "max_negatives_fpr" and t == rec["threshold_at_max_negatives_fpr"]
    assert rec["threshold_at_max_fpr"] < t and rec["held_out_flagged_at_max_fpr"] > 0.05
    assert rec["by_kind"]["persona"]["n"] == 10 and rec["by_kind"]["code-review"]["flagged"] == 0.0
    loose, rec = threshold_with_negatives(scores, y, kinds, max_fpr=0.01, max_negatives_fpr=0.5)
    assert rec["threshold_set_by"] == "max_fpr" and loose == rec["threshold_at_max_fpr"]
    assert threshold_with_negatives(scores, y, [None] * 70, max_fpr=0.1, max_negatives_fpr=0.05) == (
        threshold_at_fpr(scores[y == 0].tolist(), 0.1), {})


def test_fit_on_states_holds_the_threshold_to_realistic_negatives_out_of_fold(tiny_model, tmp_path):
    """Realistic negatives that sit between the classes move the threshold up until at most the allowed share
    of them is flagged out of fold; the probe file keeps the threshold and the record."""
    from safethink.probes import fit_probe_on_states

    rng = np.random.default_rng(0)
    n_h, n_b, n_r = 60, 60, 60
    x = rng.normal(size=(n_h + n_b + n_r, 2, 4))
    x[:n_h, :, 0] += 2.0
    x[n_h + n_b:, :, 0] += 1.0  # long plain requests look half like an attack
    y = [1] * n_h + [0] * (n_b + n_r)
    groups = [f"p{i}" for i in range(n_h)] + [f"p{i}" for i in range(n_b)] + [f"group:g{i // 2}" for i in range(n_r)]
    kinds = [None] * (n_h + n_b) + ["summarise", "persona"] * (n_r // 2)
    plain = fit_probe_on_states(x, y, groups, layer_ids=[0, 1], model="m", max_fpr=0.2, ensembles=(1,))
    held = fit_probe_on_states(x, y, groups, layer_ids=[0, 1], model="m", max_fpr=0.2, ensembles=(1,),
                               negative_kinds=kinds, max_negatives_fpr=0.02)
    neg = held.metrics["negatives"]
    assert "negatives" not in plain.metrics and held.threshold > plain.threshold
    assert neg["threshold_set_by"] == "max_negatives_fpr" and neg["held_out_flagged"] <= 0.02
    assert neg["held_out_flagged_at_max_fpr"] > 0.02 and held.threshold == neg["threshold_at_max_negatives_fpr"]
    assert set(neg["by_kind"]) == {"summarise", "persona"} and neg["n"] == n_r
    again = RequestProbe.load(held.save(tmp_path / "p.json"))
    assert again.threshold == held.threshold and again.metrics["negatives"] == neg
    with pytest.raises(SpecError, match="negative_kinds"):
        fit_probe_on_states(x, y, groups, layer_ids=[0, 1], model="m", negative_kinds=["k"] * len(y))
    with pytest.raises(SpecError, match="max_negatives_fpr"):
        fit_probe_on_states(x, y, groups, layer_ids=[0, 1], model="m", negative_kinds=kinds, max_negatives_fpr=1.0)


def test_a_probe_file_of_format_1_as_written_before_loads_and_scores(tiny_model, tmp_path):
    """The on-disk format is ``safethink-probe/1``: a file with exactly its fields (as ``safethink probe fit``
    has always written them) loads through either entry, is a :class:`Probe`, and scores as its weights say."""
    states = prompt_states(tiny_model, [conv(HARM[0]), conv(SAFE[0])], layers=[2])[:, 0]
    w = (states[0] - states[1]) / np.linalg.norm(states[0] - states[1]) ** 2 * 20
    fields = {"format": "safethink-probe/1", "layer": 2, "pool": "last", "mean": [0.0] * len(w),
              "scale": [1.0] * len(w), "weight": w.tolist(), "bias": -float(w @ (states[0] + states[1]) / 2),
              "threshold": 0.5, "model": tiny_model.spec, "adapter": None, "route_threshold": 0.1,
              "metrics": {"auc": 1.0, "auc_by_layer": {"2": 1.0}}, "target": "intent"}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(fields))
    assert PROBE_FORMAT == fields["format"]
    probe = load_probe(path)
    assert isinstance(probe, RequestProbe) and isinstance(probe, Probe) and probe.route_threshold == 0.1
    high, low = probe.score(tiny_model, [conv(HARM[0]), conv(SAFE[0])])
    assert high > 0.99 and low < 0.01
    assert json.loads(probe.save(tmp_path / "again.json").read_text()) == fields  # written back unchanged
    with pytest.raises(SpecError, match="a linear probe reads the guarded model's hidden states"):
        probe.score(None, [conv(HARM[0])])
