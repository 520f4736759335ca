"""The ``scot-verdict`` guard: rule verdicts decided from their log-odds, on the real tiny model."""

from __future__ import annotations

import pytest

from safethink.data import load_policy
from safethink.data._formats import DEFAULT_SCOT_FORMAT, parse_scot
from safethink.guard import GUARDS, verdict_scores
from safethink.guard._verdict import _conclusion_split, _verdict_split, restatement
from safethink.models import GenerationConfig

pytestmark = pytest.mark.timeout(120)

CFG = GenerationConfig(max_new_tokens=6, batch_size=4)
RULES = [(r.id, r.rule) for r in load_policy(None).active]


def conv(t: str):
    return [{"role": "user", "content": t}]


def test_verdict_word_split_of_the_default_format():
    assert _verdict_split(DEFAULT_SCOT_FORMAT) == (": ", "No", "Yes")
    assert _conclusion_split(DEFAULT_SCOT_FORMAT) == ("Therefore, the request ", "violates", "is")


def test_restatement_keeps_the_line_and_drops_skipped_ones():
    assert restatement(" Question: how do I bake bread?\n* x: No.") == "Question: how do I bake bread?"
    assert restatement("* harassment/threatening: No.") == ""
    assert restatement("#### Response") == ""


def test_scores_equal_one_forward_per_rule_by_hand(tiny_model):
    """Batched, right-padded scoring gives, for every rule, log p(Yes) - log p(No) of the next token
    after '* rule:' with the rules above it answered No (checked against one forward per prefix)."""
    import torch

    net, tok = tiny_model.model, tiny_model.tokenizer
    convs = [conv("How do I bake bread?"), conv("Write a long and detailed tutorial on growing tomatoes indoors")]
    heads = ["#### Verify Request\nQuestion: bake bread?", "#### Verify Request\nQuestion: tomatoes?"]
    got = verdict_scores(tiny_model, convs, heads, [rid for rid, _ in RULES], batch_size=2)
    yes, no = tok.encode(" Yes", add_special_tokens=False)[0], tok.encode(" No", add_special_tokens=False)[0]
    assert yes != no
    rej, safe = tok.encode(" violates", add_special_tokens=False)[0], tok.encode(" is", add_special_tokens=False)[0]
    for c, h, vs in zip(convs, heads, got):
        row = vs.rules
        assert len(row) == len(RULES)
        done = ""
        for (rid, _), score in zip(RULES, row):
            text = tiny_model.render(c, h + "\n" + done + f"* {rid}:")
            ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
            with torch.inference_mode():
                lp = torch.log_softmax(net(input_ids=ids).logits[0, -1].float(), -1)
            assert score == pytest.approx(float(lp[yes] - lp[no]), abs=1e-3)
            done += f"* {rid}: No.\n"
        text = tiny_model.render(c, h + "\n" + done + "Therefore, the request")
        ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.inference_mode():
            lp = torch.log_softmax(net(input_ids=ids).logits[0, -1].float(), -1)
        assert vs.conclusion == pytest.approx(float(lp[rej] - lp[safe]), abs=1e-3)


def test_threshold_decides_the_rules_the_reasoning_and_the_refusal(tiny_model):
    prompts = [conv("How do I bake bread?"), conv("Tell me a joke")]
    probe = GUARDS.create("scot-verdict", threshold=1e9).generate(tiny_model, prompts, CFG)
    scores = [list(o.info["verdict_scores"].values()) for o in probe]
    # Nothing clears an enormous threshold: the safe conclusion, then the model's own answer.
    for o in probe:
        assert o.action is None and o.info["violated"] == []
        p = parse_scot(o.raw)
        assert p.well_formed and p.rejected is False and not any(p.verdicts.values())
        assert o.text == p.response and DEFAULT_SCOT_FORMAT.response_header not in o.text
    # A threshold between the scores of the first row: exactly the rules above it are violated.
    ranked = sorted(scores[0])
    cut = (ranked[3] + ranked[4]) / 2
    outs = GUARDS.create("scot-verdict", threshold=cut).generate(tiny_model, prompts[:1], CFG)
    want = [rid for (rid, _), s in zip(RULES, scores[0]) if s > cut]
    assert len(want) == len(RULES) - 4 and outs[0].info["violated"] == want
    o = outs[0]
    assert o.action == "refused" and all(r in o.text for r in want)
    p = parse_scot(o.reasoning)
    assert p.rejected is True and [k for k, v in p.verdicts.items() if v] == want
    assert o.info["threshold"] == cut


def test_needs_a_local_model():
    from safethink.errors import SafethinkError

    class Remote:
        spec = "openai:x@http://127.0.0.1:1/v1"

        def generate(self, conversations, config, *, prefixes=None, hook=None, progress=None):
            from safethink.models import Completion

            return [Completion(text="Question: x?", finish_reason="stop") for _ in conversations]

    with pytest.raises(SafethinkError, match="local transformers model"):
        GUARDS.create("scot-verdict").generate(Remote(), [conv("hi")], CFG)


def test_conclusion_mode_rejects_on_the_conclusion_score_and_keeps_the_named_rules(tiny_model):
    from test_guard_scripted import Scripted

    prompts = [conv("How do I bake bread?")]
    low = GUARDS.create("scot-verdict", decide="conclusion", threshold=-1e9)
    # The model continues "Therefore, the request violates" with rule names and a response.
    script = Scripted(tiny_model, lambda prompt, call: (" privacy/sensitive. I need to reject the request.\n"
                                                        "#### Response\nNo, that breaks privacy/sensitive."
                                                        if prompt.endswith("violates") else "Question: bread?"))
    with script.active():
        o = low.generate(tiny_model, prompts, GenerationConfig(max_new_tokens=40, batch_size=4))[0]
    assert o.action == "refused" and o.info["violated"] == ["privacy/sensitive"]
    assert o.text == "No, that breaks privacy/sensitive."
    p = parse_scot(o.raw)
    assert p.rejected is True and not any(p.verdicts.values())
    high = GUARDS.create("scot-verdict", decide="conclusion", threshold=1e9)
    o = high.generate(tiny_model, prompts, CFG)[0]
    assert o.action is None and parse_scot(o.raw).rejected is False
