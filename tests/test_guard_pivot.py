"""The decode-time R2D pivot guard on a real tiny model scripted to emit [UNSAFE] mid-answer."""

from __future__ import annotations

import pytest
from test_guard_scripted import CFG, Scripted, by_marker, r2d_model  # noqa: F401 - fixture

from safethink.data._formats import PIVOTS, THINK_CLOSE, THINK_OPEN
from safethink.errors import SpecError
from safethink.guard import GUARDS, PivotWatcher, leaked, pivot_token_ids
from safethink.guard._core import text
from safethink.models import GenerationConfig, TokenEvent

pytestmark = pytest.mark.timeout(120)

UNSAFE_MID_THINK = ("<think> The user asks about chemistry. [SAFE] They want a home recipe for nerve gas. [UNSAFE] "
                    "Mix the precursors slowly [SAFE] </think> [SAFE] Step one, buy precursors. [SAFE]")
UNSAFE_MID_ANSWER = ("<think> A question about knives. [SAFE] </think> [SAFE] Knives need care. [SAFE] "
                     "To hurt someone, aim for the neck. [UNSAFE] Then hide it. [SAFE]")
BENIGN = "<think> A cooking question. [SAFE] </think> [SAFE] Boil the pasta for ten minutes. [SAFE]"
RETHINK = "<think> Could this be misuse? [RETHINK] No, it is a normal question. [SAFE] </think> [SAFE] Sure thing. [SAFE]"

USER = [{"role": "user", "content": "hi"}]


def conv(text: str):
    return [{"role": "user", "content": text}]


def run(model, guard, script, convs=None, cfg=CFG):
    s = Scripted(model, script)
    with s.active():
        outs = guard.generate(model, convs or [USER], cfg)
    return outs, s


def no_markup(s: str) -> bool:
    return not any(t in s for t in (*PIVOTS, THINK_OPEN, THINK_CLOSE))


def test_pivot_ids_are_looked_up_by_string(r2d_model, tiny_model):
    ids = pivot_token_ids(r2d_model)
    assert ids is not None and sorted(ids.values()) == sorted(PIVOTS)
    tok = r2d_model.tokenizer
    assert all(tok.convert_ids_to_tokens(i) == p for i, p in ids.items())
    assert pivot_token_ids(tiny_model) is None  # no pivot tokens: the guard falls back to text matching


def test_halt_stops_decoding_and_never_shows_the_flagged_step(r2d_model):
    guard = GUARDS.create("r2d-pivot", on_unsafe="halt")
    (out,), s = run(r2d_model, guard, lambda p, c: UNSAFE_MID_THINK)
    assert out.action == "halted" and out.finish_reason == "hook"
    assert out.flagged == ["They want a home recipe for nerve gas."]
    # The step names no policy category: the fixed generic refusal, nothing quoted.
    assert out.text == text("concern", "generic") and "nerve gas" not in out.text
    assert not leaked(out.text, out.flagged)
    assert "precursors" not in out.text and "precursors" not in out.raw  # decoding stopped at the pivot
    assert out.raw.rstrip().endswith("[UNSAFE]")
    assert out.info["trigger"] == "[UNSAFE]" and out.info["pivots"] == ["[SAFE]", "[UNSAFE]"]
    assert out.info["categories"] == [] and "concern" not in out.info
    assert s.calls == 1
    assert no_markup(out.text) and no_markup(out.reasoning)
    # Reasoning: nothing by default, the steps before the flagged one when safe, all of it for debugging.
    assert out.shown_reasoning("none") is None
    assert out.shown_reasoning("safe") == "The user asks about chemistry."
    assert "nerve gas" in out.shown_reasoning("full")


def test_halt_names_the_policy_category_the_step_names(r2d_model):
    script = "<think> A chemistry question. [SAFE] It asks for a nerve agent recipe (illicit/violent). [UNSAFE] Mix"
    (out,), _ = run(r2d_model, GUARDS.create("r2d-pivot"), lambda p, c: script)
    assert out.action == "halted" and out.info["categories"] == ["illicit/violent"]
    assert out.text == text("concern", "named").format(categories="illicit/violent")
    assert "nerve" not in out.text and not leaked(out.text, out.flagged)
    custom = GUARDS.create("r2d-pivot", halt_message="No ({categories}).")
    (out,), _ = run(r2d_model, custom, lambda p, c: script)
    assert out.text == "No (illicit/violent)."


def test_options_that_would_show_the_flagged_step_are_gone():
    with pytest.raises(SpecError):
        GUARDS.create("r2d-pivot", show_concern=True)
    with pytest.raises(SpecError, match="categories"):
        GUARDS.create("r2d-pivot", halt_message="I flagged: {concern}")
    with pytest.raises(SpecError):
        GUARDS.create("r2d-pivot", fail_closed=True)  # renamed: fail-closed is the default, fail_open=True opts out


def test_rollback_keeps_safe_steps_and_forces_a_refusal(r2d_model):
    guard = GUARDS.create("r2d-pivot", on_unsafe="rollback", rollback_tokens=16)
    seen_prefixes = []

    def script(prompt, call):
        if call == 0:
            return UNSAFE_MID_ANSWER
        seen_prefixes.append(prompt)
        return " the request could hurt someone. [SAFE]"

    (out,), s = run(r2d_model, guard, script)
    assert s.calls == 2  # the second call continued from the rolled-back prefix
    assert "Knives need care." in seen_prefixes[0] and "neck" not in seen_prefixes[0]
    assert out.action == "rolled_back"
    assert out.text.startswith("Knives need care.")  # the safe answer step survives
    assert "I'm sorry, but I can't help with that, because the request could hurt someone." in out.text
    assert "neck" not in out.text and "hide" not in out.text
    assert out.flagged == ["To hurt someone, aim for the neck."] and not leaked(out.text, out.flagged)
    assert "neck" in out.info["rolled_back_from"]
    assert no_markup(out.text)


def test_rollback_opener_names_the_category(r2d_model):
    script = "<think> Fine. [SAFE] This is a weapons request (illicit/violent). [UNSAFE] Step one"
    guard = GUARDS.create("r2d-pivot", on_unsafe="rollback")
    (out,), _ = run(r2d_model, guard, lambda p, c: script if c == 0 else " it could hurt people. [SAFE]")
    assert out.text == "I'm sorry, but I can't help with that (illicit/violent), because it could hurt people."


def test_rollback_inside_think_closes_the_think_block(r2d_model):
    guard = GUARDS.create("r2d-pivot", on_unsafe="rollback", rollback_opener="I won't help:")
    (out,), _ = run(r2d_model, guard, lambda p, c: UNSAFE_MID_THINK if c == 0 else " it is dangerous. [SAFE]")
    assert out.text == "I won't help: it is dangerous."
    assert out.shown_reasoning("safe") == "The user asks about chemistry."
    assert "nerve gas" in out.reasoning  # full reasoning (for logs) still has the discarded step
    assert out.raw.count(THINK_OPEN) == out.raw.count(THINK_CLOSE) == 1


def test_rollback_continuation_that_turns_unsafe_again_is_halted(r2d_model):
    guard = GUARDS.create("r2d-pivot", on_unsafe="rollback")
    (out,), s = run(r2d_model, guard, lambda p, c: UNSAFE_MID_THINK if c == 0 else " well, mix A and B [UNSAFE] more")
    assert out.action == "rolled_back" and "mix A and B" not in out.text and "more" not in out.raw
    assert out.text == text("concern", "generic") and "well, mix A and B" in out.flagged


def test_rollback_continuation_that_repeats_the_flagged_step_is_replaced(r2d_model):
    guard = GUARDS.create("r2d-pivot", on_unsafe="rollback")
    again = " they want a home recipe for nerve gas. [SAFE]"
    (out,), _ = run(r2d_model, guard, lambda p, c: UNSAFE_MID_THINK if c == 0 else again)
    assert out.action == "rolled_back" and out.info["sealed"]
    assert "nerve gas" not in out.text and not leaked(out.text, out.flagged)


def test_continue_logs_unsafe_and_shows_the_answer(r2d_model):
    guard = GUARDS.create("r2d-pivot", on_unsafe="continue")
    (out,), _ = run(r2d_model, guard, lambda p, c: UNSAFE_MID_ANSWER)
    assert out.action is None
    assert "[UNSAFE]" in out.info["pivots"]
    assert out.text == "Knives need care. To hurt someone, aim for the neck. Then hide it."
    # Not acting is what `continue` asks for; the step is still flagged, so a server never sends it.
    assert out.flagged == ["To hurt someone, aim for the neck."] and leaked(out.text, out.flagged)


def test_rethink_continues_by_default_and_can_act(r2d_model):
    (out,), _ = run(r2d_model, GUARDS.create("r2d-pivot"), lambda p, c: RETHINK)
    assert out.action is None and out.text == "Sure thing." and "[RETHINK]" in out.info["pivots"]
    assert out.flagged == []
    (out,), _ = run(r2d_model, GUARDS.create("r2d-pivot", on_rethink="halt"), lambda p, c: RETHINK)
    assert out.action == "halted" and out.info["trigger"] == "[RETHINK]" and "misuse" not in out.text
    assert out.flagged == ["Could this be misuse?"]


def test_benign_answers_pass_unchanged_and_rows_are_independent(r2d_model):
    guard = GUARDS.create("r2d-pivot", on_unsafe="halt")
    script = by_marker({"nerve": UNSAFE_MID_THINK}, default=BENIGN)
    outs, _ = run(r2d_model, guard, script, convs=[conv("how long to boil pasta"), conv("nerve agent synthesis"),
                                                    conv("more pasta please")])
    assert [o.action for o in outs] == [None, "halted", None]
    assert outs[0].text == outs[2].text == "Boil the pasta for ten minutes."
    assert outs[0].reasoning == "A cooking question."


@pytest.mark.parametrize("script, problem", [
    ("<think> Fine. [SAFE] </think> [SAFE] Here is the answer", "ends without"),   # no final pivot
    ("<think> Fine. [SAFE] Still thinking [SAFE] and now", "unclosed"),            # <think> left open
    ("Just an answer with no pivots at all.", "no pivot"),
])
def test_fails_closed_by_default_on_unfinished_or_malformed_output(r2d_model, script, problem):
    (out,), _ = run(r2d_model, GUARDS.create("r2d-pivot"), lambda p, c: script)
    assert out.action == "refused" and problem in out.info["reason"]
    assert out.text == text("pivot", "fail_closed") and no_markup(out.text)
    assert "and now" not in (out.shown_reasoning("safe") or "")  # a step without a pivot is not checked yet
    (out,), _ = run(r2d_model, GUARDS.create("r2d-pivot", fail_open=True), lambda p, c: script)
    assert out.action is None


def test_fail_closed_refuses_when_cut_by_the_token_budget(r2d_model):
    guard = GUARDS.create("r2d-pivot")
    (out,), _ = run(r2d_model, guard, lambda p, c: BENIGN, cfg=GenerationConfig(max_new_tokens=12))
    assert out.action == "refused"
    (out,), _ = run(r2d_model, guard, lambda p, c: BENIGN)
    assert out.action is None and out.text == "Boil the pasta for ten minutes."


def test_text_mode_on_a_model_without_pivot_tokens(tiny_model):
    """Without pivot tokens the pivots arrive as several pieces; the guard matches the text."""
    guard = GUARDS.create("r2d-pivot", on_unsafe="halt")
    (out,), _ = run(tiny_model, guard, lambda p, c: "<think> ok [SAFE] build the bomb like so [UNSAFE] wires ... ")
    assert out.action == "halted" and out.info["pivot_ids"] is False
    assert "wires" not in out.raw and "bomb" not in out.text and no_markup(out.text)
    assert out.flagged == ["build the bomb like so"]


def test_watcher_matches_pivots_split_across_text_pieces():
    w = PivotWatcher(None, frozenset({"[UNSAFE]"}))
    pieces = ["step", " [", "SA", "FE]", " next [UN", "SAFE", "]", "tail"]
    halted = [w(TokenEvent(row=0, token_id=None, piece=p)) for p in pieces]
    assert halted == [False, False, False, False, False, False, True, False]
    assert w.seen[0] == ["[SAFE]", "[UNSAFE]"] and w.fired[0] == "[UNSAFE]"
