"""What a probe is fitted on and measured with: attacked forms, realistic negatives, documents, ``fit_probe``
from prompt sources or conversations, and flag rates per source."""

from __future__ import annotations

import numpy as np
import pytest

from _probes import CFG, HARM, SAFE, conv, two_point_probe, write_sources
from safethink.errors import SpecError
from safethink.guard import GUARDS
from safethink.models import GenerationConfig

pytestmark = pytest.mark.timeout(180)


def test_attacked_examples_group_a_request_with_its_twin_and_attacked_forms():
    from safethink.data._schema import PromptRecord
    from safethink.probes import attacked_examples

    recs = [PromptRecord(id="h1", prompt="how to pick a lock", label="harmful", source="t"),
            PromptRecord(id="t1", prompt="how do locks work", label="benign", source="t", meta={"twin_of": "h1"}),
            PromptRecord(id="x", prompt="bake bread", label="benign", source="t")]
    convs, groups = attacked_examples(recs, ["none", "prefix-injection"], seed=1)
    assert len(convs) == 6
    assert groups == ["h1", "h1", "x", "h1", "h1", "x"]
    assert convs[0][-1]["content"] == "how to pick a lock"
    assert "how to pick a lock" in convs[3][-1]["content"] and convs[3] != convs[0]
    with pytest.raises(SpecError, match="queries a target model"):
        attacked_examples(recs, ["pair"], seed=1)


def test_attacked_examples_per_record_draws_k_attacks_shared_by_a_pair():
    from safethink.attacks import ATTACKS
    from safethink.data._schema import PromptRecord
    from safethink.probes import attacked_examples

    recs = []
    for i in range(12):
        recs.append(PromptRecord(id=f"h{i}", prompt=f"how to pick lock model {i}", label="harmful", source="t"))
        recs.append(PromptRecord(id=f"t{i}", prompt=f"how does lock model {i} work", label="benign", source="t",
                                 meta={"twin_of": f"h{i}"}))
    attacks = ["none", "base64", "rot13", "atbash", "morse", "disemvowel"]  # seed-free transforms
    form = {(r.id, a): ATTACKS.create(a).prepare([r], seed=0)[0].messages for r in recs for a in attacks}
    convs, groups = attacked_examples(recs, attacks, seed=3, per_record=2)
    assert len(convs) == 2 * len(recs)
    drawn: dict[str, set] = {}
    for c in convs:
        (rid, a), = [k for k, v in form.items() if v == c]
        drawn.setdefault(rid, set()).add(a)
    assert all(len(v) == 2 for v in drawn.values()) and len(drawn) == len(recs)
    assert all(drawn[f"h{i}"] == drawn[f"t{i}"] for i in range(12)), "a request and its twin share their attacks"
    assert len({frozenset(v) for v in drawn.values()}) > 1, "pairs draw different attacks"
    assert attacked_examples(recs, attacks, seed=3, per_record=2) == (convs, groups), "the draw is seeded"
    assert attacked_examples(recs, attacks, seed=4, per_record=2)[0] != convs
    assert attacked_examples(recs, attacks[:2], seed=3, per_record=5) == attacked_examples(recs, attacks[:2], seed=3)
    with pytest.raises(SpecError, match="per_record"):
        attacked_examples(recs, attacks, seed=3, per_record=0)


def test_pairs_from_split_files_share_a_fold_key(tmp_path):
    """File records get ids prefixed with the file's stem; a twin's twin_of names the id as written."""
    from safethink.data import load_prompts
    from safethink.probes import attacked_examples

    (tmp_path / "harm.jsonl").write_text('{"id": "h-7", "prompt": "how to pick a lock"}\n'
                                         '{"prompt": "how to hotwire a car"}\n')
    (tmp_path / "twins.jsonl").write_text('{"id": "t-7", "prompt": "how do locks work", "twin_of": "h-7"}\n')
    harm = load_prompts(str(tmp_path / "harm.jsonl"), label="harmful")
    twins = load_prompts(str(tmp_path / "twins.jsonl"), label="benign")
    assert harm[0].id == "harm/h-7"  # the prefix the key has to see through
    _, hg = attacked_examples(harm, ["none"], seed=1)
    _, tg = attacked_examples(twins, ["none"], seed=1)
    assert hg == ["h-7", "1"] and tg == ["h-7"]


def test_document_requests_wrap_the_models_long_answers_in_ordinary_tasks(tiny_model):
    from safethink.data._schema import PromptRecord
    from safethink.probes import DOCUMENT_TASKS, document_requests

    recs = [PromptRecord(id=f"b{i}", prompt=t, label="benign", source="test") for i, t in enumerate(SAFE[:5])]
    docs = document_requests(tiny_model, recs, n=3, seed=0, max_new_tokens=256, min_chars=1)
    assert len(docs) == 3 and all(len(c) == 1 and c[0]["role"] == "user" for c in docs)
    answers = {o.text.strip() for o in tiny_model.generate([conv(r.prompt) for r in recs],
                                                          GenerationConfig(max_new_tokens=256, batch_size=16))}
    for i, c in enumerate(docs):
        task = DOCUMENT_TASKS[i]
        head, tail = task.split("{}")
        body = c[0]["content"][len(head):len(c[0]["content"]) - len(tail)]
        assert c[0]["content"].startswith(head) and c[0]["content"].endswith(tail) and body in answers
    assert document_requests(tiny_model, recs, n=3, seed=0, max_new_tokens=256, min_chars=10**6) == []
    assert docs == document_requests(tiny_model, recs, n=3, seed=0, max_new_tokens=256, min_chars=1)


def _realistic(n_groups: int = 6):
    """Realistic-looking benign records: pasted material, a persona, an earlier turn; two share a group."""
    from safethink.data._schema import PromptRecord

    recs = []
    for i in range(n_groups):
        history = ({"role": "system", "content": f"You are the help desk of shop {i}."},) if i % 2 else (
            {"role": "user", "content": f"Here is my draft letter number {i}."},
            {"role": "assistant", "content": "Thanks, what should I do with it?"})
        recs.append(PromptRecord(id=f"r{i}", prompt=f"Summarise this report {i}:\n\nThe council met on day {i} ...",
                                 label="benign", source="builtin:realistic-train", history=history,
                                 meta={"kind": "summarise" if i % 2 else "multi-turn", "group": f"g{i // 2}"}))
    return recs


def test_realistic_negatives_are_plain_negatives_with_their_history():
    from safethink.data._schema import PromptRecord
    from safethink.probes import probe_forms

    harm = [PromptRecord(id="h1", prompt="how to pick a lock", label="harmful", source="t")]
    twin = [PromptRecord(id="t1", prompt="how do locks work", label="benign", source="t", meta={"twin_of": "h1"})]
    real = _realistic()
    intent = probe_forms(harm, twin, ["none", "prefix-injection"], seed=1, negatives=real)
    assert intent["negative"][-len(real):] == [r.messages() for r in real]
    assert intent["negative"][-1][0]["role"] == "system" and len(intent["negative"][-2]) == 3  # history kept
    assert intent["groups"][-len(real):] == ["group:g0", "group:g0", "group:g1", "group:g1", "group:g2", "group:g2"]
    assert intent["kinds"] == [None] * 4 + [r.meta["kind"] for r in real]
    assert len(intent["positive"]) == 2 and intent["attacks"][-len(real):] == ["none"] * len(real)

    wrapper = probe_forms(harm, twin, ["none", "past-tense", "base64", "aim"], seed=1, per_record=1,
                          target="wrapper", plain_attacks=("none", "past-tense"), negatives=real)
    # every request (the realistic ones too) is a positive under one wrapping attack; the realistic requests
    # are negatives as sent only (no past-tense rewrite of a pasted document)
    assert len(wrapper["positive"]) == 2 + len(real) and len(wrapper["negative"]) == 2 * 2 + len(real)
    wrapped = [c for c, a in zip(wrapper["positive"], wrapper["attacks"]) if c[:len(real[1].history)] == real[1].messages()[:-1]]
    assert wrapped and wrapped[0][-1]["content"] != real[1].user_text()  # the persona goes first, then the template
    assert wrapper["negative"][-len(real):] == [r.messages() for r in real]
    assert [k for k in wrapper["kinds"] if k] == [r.meta["kind"] for r in real]
    assert len(wrapper["kinds"]) == len(wrapper["groups"]) == len(wrapper["positive"]) + len(wrapper["negative"])


def test_realistic_negatives_reach_the_fit_and_the_model_reads_their_history(tiny_model, tmp_path, monkeypatch):
    """``fit_probe(negatives=...)``: every realistic request reaches the hidden states as its full
    conversation, rendered with the chat template generation uses; the file records the sources."""
    import safethink.probes._cv as cv
    from safethink.data import load_prompts
    from safethink.probes import fit_probe

    seen: list = []
    real_states = cv.prompt_states

    def spy(model, conversations, **kw):
        seen.extend(conversations)
        return real_states(model, conversations, **kw)

    monkeypatch.setattr(cv, "prompt_states", spy)
    h, b = write_sources(tmp_path)
    probe = fit_probe(tiny_model, [str(h)], [str(b)], attacks=["none"], folds=3,
                      negatives=["builtin:realistic-train"], max_negatives_fpr=0.02)
    real = load_prompts("builtin:realistic-train")
    assert all(r.messages() in seen for r in real)
    with_history = [r for r in real if r.history]
    assert len(with_history) > 20
    conv_ = with_history[0].messages()
    rendered = tiny_model.render(conv_)
    assert all(m.content in rendered for m in with_history[0].history)  # the model reads the earlier turns
    assert probe.metrics["n_benign"] == 6 + len(real)
    fitted = probe.metrics["fitted_on"]
    assert fitted["negatives"] == ["builtin:realistic-train"] and fitted["negative_requests"] == len(real)
    neg = probe.metrics["negatives"]
    assert neg["n"] == len(real) and set(neg["by_kind"]) == {r.meta["kind"] for r in real}
    assert neg["held_out_flagged"] <= 0.02 and neg["max_fpr"] == 0.02
    assert probe.threshold >= neg["threshold_at_max_negatives_fpr"]
    # the guard refuses at the recorded threshold
    convs = [r.messages() for r in with_history[:4]] + [conv(HARM[0])]
    outs = GUARDS.create("probe", probe=probe).generate(tiny_model, convs, CFG)
    for o, s in zip(outs, probe.score(tiny_model, convs)):
        assert (o.action == "blocked") == (s >= probe.threshold) and o.info["probe_threshold"] == probe.threshold


def test_flag_rates_match_the_guard(tiny_model):
    """What ``flag_rates`` counts is what the probe guard refuses, a record's history included."""
    from safethink.data import load_prompts
    from safethink.probes import flag_rates

    recs = [r for r in load_prompts("builtin:realistic-test") if r.history][:6]
    probe = two_point_probe(tiny_model, recs[0].messages(), conv(SAFE[0]))
    scores = probe.score(tiny_model, [r.messages() for r in recs])
    probe.threshold = float(np.median(scores))
    other = two_point_probe(tiny_model, conv(SAFE[0]), recs[0].messages())
    other.layer, other.pool = 1, "mean"  # another layer and pooling: scored in its own pass
    other.threshold = 0.5
    rows = flag_rates(tiny_model, [probe, other], benign=["builtin:realistic-test"], limit=12, seed=3)
    sample = load_prompts("builtin:realistic-test", limit=12, seed=3)
    for p, got in zip((probe, other), rows[0]["probes"]):
        guard = GUARDS.create("probe", probe=p, threshold=p.threshold)
        blocked = [o.action == "blocked" for o in guard.generate(tiny_model, [r.messages() for r in sample], CFG)]
        assert got["flagged"] == sum(blocked) and sum(k["flagged"] for k in got["by_kind"].values()) == sum(blocked)
        assert got == flag_rates(tiny_model, [p], benign=["builtin:realistic-test"], limit=12, seed=3)[0]["probes"][0]
    assert rows[0]["n"] == 12 and [0 < c["flagged"] < 12 for c in rows[0]["probes"]] == [True, True]


def test_fit_probe_takes_conversations_too_and_says_which_options_need_sources(tiny_model, tmp_path):
    from safethink.probes import fit_linear_probe, fit_probe

    harm, safe = [conv(t) for t in HARM], [conv(t) for t in SAFE]
    probe = fit_probe(tiny_model, harm, safe, c=1.0, folds=3, pool="mean")
    same = fit_linear_probe(tiny_model, harm, safe, c=1.0, folds=3, pool="mean")
    assert probe.target == "intent" and probe.layer == same.layer and probe.threshold == same.threshold
    np.testing.assert_allclose(probe.weight, same.weight)
    wrapper = fit_probe(tiny_model, harm, safe, target="wrapper", c=1.0, folds=3, pool="mean", layers=[2])
    assert wrapper.target == "wrapper" and wrapper.layer == 2
    with pytest.raises(SpecError, match="attacks, limit build forms from prompt sources"):
        fit_probe(tiny_model, harm, safe, attacks=["aim"], limit=3)
    with pytest.raises(SpecError, match="harmful must be a list of prompt sources"):
        fit_probe(tiny_model, "builtin:harmful", ["builtin:benign"])
    with pytest.raises(SpecError, match="harmful and benign must be of one kind"):
        fit_probe(tiny_model, harm, [str(write_sources(tmp_path)[1])])  # conversations and a source mixed
    with pytest.raises(SpecError, match="probe target 'topic'"):
        fit_probe(tiny_model, harm, safe, target="topic")

