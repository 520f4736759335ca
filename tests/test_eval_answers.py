"""Greedy answers shared between defences: generated once, stored, replayed through decode-time hooks."""

from __future__ import annotations

import json
import pytest

from safethink.eval import ResultStore, open_store, parse_spec, run_eval
from safethink.eval._answers import SharedAnswers
from safethink.models import GenerationConfig, load_model
from test_eval_plugins import spec_dict

CONVS = [[{"role": "user", "content": t}] for t in
         ("Name three colours.", "Say hello to my friend Ana, please.", "What is two plus two?")]


class HaltAt:
    """Halts a row once it has seen ``n`` tokens; records what it was shown."""

    def __init__(self, n: int):
        self.n, self.seen = n, {}

    def __call__(self, ev) -> bool:
        self.seen.setdefault(ev.row, []).append((ev.token_id, ev.piece))
        return len(self.seen[ev.row]) >= self.n


@pytest.mark.timeout(300)
def test_a_stored_answer_replayed_through_a_hook_is_the_live_halted_answer(tiny_model, tmp_path):
    cfg = GenerationConfig(max_new_tokens=8, batch_size=3)
    with ResultStore(tmp_path / "r.sqlite") as store:
        shared = SharedAnswers(tiny_model, store, ["tiny"])
        first = shared.generate(CONVS, cfg)
        assert shared.hits == 0 and len(store.answers([shared.answer_key(c, "", cfg) for c in CONVS])) == 3
        assert first == tiny_model.generate(CONVS, cfg)

        live_hook, replay_hook = HaltAt(3), HaltAt(3)
        live = tiny_model.generate(CONVS, cfg, hook=live_hook)
        replayed = shared.generate(CONVS, cfg, hook=replay_hook)
        assert shared.hits == 3
        assert [(o.text, o.raw_text, o.token_ids, o.finish_reason) for o in replayed] == \
            [(o.text, o.raw_text, o.token_ids, o.finish_reason) for o in live]
        assert replay_hook.seen == live_hook.seen  # the same tokens, pieces and rows, in the same order
        assert {o.finish_reason for o in replayed} == {"hook"}


@pytest.mark.timeout(300)
def test_only_misses_are_generated_and_hook_rows_map_back(tiny_model, tmp_path):
    cfg = GenerationConfig(max_new_tokens=6, batch_size=4)
    with ResultStore(tmp_path / "r.sqlite") as store:
        shared = SharedAnswers(tiny_model, store, ["tiny"])
        shared.generate(CONVS[1:2], cfg)
        hook = HaltAt(2)
        outs = shared.generate(CONVS, cfg, hook=hook)
        assert shared.hits == 1 and sorted(hook.seen) == [0, 1, 2]  # rows as the caller numbered them
        # a row a hook halted live is not stored: it is not the whole answer
        assert len(store.answers([shared.answer_key(c, "", cfg) for c in CONVS])) == 1
        assert all(len(o.token_ids) <= 2 for o in outs)


@pytest.mark.timeout(300)
def test_what_decides_an_answer_is_in_its_key_and_sampling_is_never_shared(tiny_model, tmp_path):
    cfg = GenerationConfig(max_new_tokens=6, batch_size=4)
    with ResultStore(tmp_path / "r.sqlite") as store:
        a, b = SharedAnswers(tiny_model, store, ["tiny"]), SharedAnswers(tiny_model, store, ["tiny", "adapter"])
        a.generate(CONVS, cfg)
        b.generate(CONVS, cfg)
        assert b.hits == 0  # another model identity
        a.generate(CONVS, cfg, prefixes=["Sure", "", ""])
        assert a.hits == 2  # the prefilled row is another input
        a.generate(CONVS, GenerationConfig(max_new_tokens=7, batch_size=4))
        assert a.hits == 2
        a.generate(CONVS, GenerationConfig(max_new_tokens=6, batch_size=1))  # batch size decides nothing
        assert a.hits == 5
        a.generate(CONVS, GenerationConfig(max_new_tokens=6, temperature=0.7, seed=1))
        assert a.hits == 5


def test_a_scripted_mock_answering_in_order_is_never_shared(tmp_path):
    answers = tmp_path / "a.jsonl"
    answers.write_text("\n".join(json.dumps({"text": f"answer {i}"}) for i in range(3)) + "\n")
    mock = load_model(f"mock:{answers}")
    with ResultStore(tmp_path / "r.sqlite") as store:
        shared = SharedAnswers(mock, store, ["mock"])
        first = [o.text for o in shared.generate(CONVS[:1], GenerationConfig())]
        second = [o.text for o in shared.generate(CONVS[:1], GenerationConfig())]
    assert (first, second, shared.hits) == (["answer 0"], ["answer 1"], 0)


@pytest.mark.timeout(600)
def test_a_decode_time_guard_reuses_the_undefended_answers_of_the_run(tmp_path, tiny_dir):
    d = spec_dict(tmp_path, tiny_dir, defences=[{"guard": "none", "name": "plain"},
                                                {"guard": "r2d-pivot", "name": "pivot guard"}])
    res = run_eval(parse_spec(d))
    with open_store(res.out_dir) as st:
        rows = st.attempts()
        n_answers = st.conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    assert len(rows) == 22
    assert n_answers == 11  # one generation per input, shared by both defences
    plain = {(r.attack, r.record_id): r.raw_output for r in rows if r.defence_name == "plain"}
    guarded = {(r.attack, r.record_id): r.raw_output for r in rows if r.defence_name == "pivot guard"}
    assert plain == guarded  # the tiny model writes no pivots, so the guard lets every answer through
