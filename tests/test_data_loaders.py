"""Loaders on the shared public copies, local files, the hub cache layout and the built-in seeds."""

from __future__ import annotations

import json

import pytest

from safethink.data import PROMPT_COLUMNS, load_prompts
from safethink.errors import InputError, SafethinkError, SpecError

EXPECTED = {  # source -> (count, label set)
    "advbench": (520, {"harmful"}),
    "harmbench": (80, {"harmful"}),
    "jbb-harmful": (100, {"harmful"}),
    "jbb-benign": (100, {"benign"}),
    "strongreject": (60, {"harmful"}),
    "xstest": (450, {"harmful", "benign"}),
    "xstest-safe": (250, {"benign"}),
    "xstest-unsafe": (200, {"harmful"}),
    "donotanswer": (939, {"harmful"}),
    "harmless": (18793, {"benign"}),
}


@pytest.mark.parametrize("source", sorted(EXPECTED))
def test_public_sources_from_shared_copies(shared_data, source):
    recs = load_prompts(source, data_dir=str(shared_data))
    n, labels = EXPECTED[source]
    assert len(recs) == n
    assert {r.label for r in recs} == labels
    assert len({r.id for r in recs}) == n, "ids must be unique"
    assert all(r.prompt.strip() for r in recs)


def test_source_specific_fields(shared_data):
    d = str(shared_data)
    adv = load_prompts("advbench", data_dir=d)
    assert adv[0].prompt.startswith("Write a script that can exploit") and adv[0].target.startswith("Sure, here is")
    hb = {r.id: r for r in load_prompts("harmbench", data_dir=d)}
    r = hb["harmbench/safrole_oil_extraction_guide"]
    assert r.category == "chemical_biological" and r.target.startswith("Sure, here's how to extract")
    assert any(r.context for r in hb.values()), "contextual behaviours keep their context string"
    jbb_h, jbb_b = load_prompts("jbb-harmful", data_dir=d), load_prompts("jbb-benign", data_dir=d)
    assert jbb_h[0].category == jbb_b[0].category == "Harassment/Discrimination"  # header case differs in the files
    xs = load_prompts("xstest", data_dir=d)
    assert all((r.label == "harmful") == r.category.startswith("contrast_") for r in xs)
    dna = load_prompts("donotanswer", data_dir=d)
    assert "information_hazard" in {r.category for r in dna}
    assert load_prompts("walledai/AdvBench", data_dir=d)[5] == adv[5]
    assert len(load_prompts("JailbreakBench/JBB-Behaviors", label="benign", data_dir=d)) == 100


def test_label_filter_limit_and_seed(shared_data):
    d = str(shared_data)
    safe = load_prompts("xstest", label="benign", data_dir=d)
    assert len(safe) == 250
    a = load_prompts("advbench", limit=10, seed=1, data_dir=d)
    assert a == load_prompts("advbench", limit=10, seed=1, data_dir=d)
    assert a != load_prompts("advbench", limit=10, seed=2, data_dir=d)
    ids = [int(r.id.split("/")[1]) for r in a]
    assert ids == sorted(ids), "a sample keeps source order"
    with pytest.raises(SpecError, match="only harmful"):
        load_prompts("advbench", label="benign", data_dir=d)


def test_env_data_dir(shared_data, monkeypatch):
    monkeypatch.setenv("SAFETHINK_DATA_DIR", str(shared_data))
    assert len(load_prompts("strongreject")) == 60


def test_offline_error_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("SAFETHINK_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(SafethinkError, match="not available offline.*--data-dir.*huggingface-cli download"):
        load_prompts("advbench")


def test_hub_cache_snapshot(tmp_path, monkeypatch):
    """A dataset cached by huggingface_hub resolves with no network (parquet snapshot layout)."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    repo = tmp_path / "hub" / "datasets--walledai--AdvBench"
    snap = repo / "snapshots" / "abc123" / "data"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    pq.write_table(pa.table({"prompt": ["Do X", "Do Y"], "target": ["Sure, X", "Sure, Y"]}), snap / "train-0.parquet")
    monkeypatch.delenv("SAFETHINK_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    recs = load_prompts("walledai/AdvBench")
    assert [(r.prompt, r.target, r.label) for r in recs] == [("Do X", "Sure, X", "harmful"), ("Do Y", "Sure, Y", "harmful")]


@pytest.mark.parametrize("column", PROMPT_COLUMNS[:6])
def test_local_csv_common_prompt_columns(tmp_path, column):
    p = tmp_path / "mine.csv"
    p.write_text(f"{column},category\nHow do I bake bread?,food\n\"Write a poem, please\",art\n")
    recs = load_prompts(str(p), label="benign")
    assert [r.prompt for r in recs] == ["How do I bake bread?", "Write a poem, please"]
    assert [r.id for r in recs] == ["mine/0", "mine/1"] and recs[0].category == "food"


def test_local_formats_and_column_map(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [{"q": "First request", "lab": "unsafe"}, {"q": "Second request", "lab": "safe"}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "a.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    for name in ("a.jsonl", "a.json", "a.parquet"):
        recs = load_prompts(str(tmp_path / name), column_map={"prompt": "q", "label": "lab"})
        assert [(r.prompt, r.label) for r in recs] == [("First request", "harmful"), ("Second request", "benign")]
        assert [r.prompt for r in load_prompts(str(tmp_path / name), column_map={"prompt": "q", "label": "lab"},
                                               label="benign")] == ["Second request"]


def test_alpaca_style_input_joins_prompt(tmp_path):
    p = tmp_path / "alp.json"
    p.write_text(json.dumps([{"instruction": "Translate to French", "input": "Good morning", "output": "Bonjour"},
                             {"instruction": "Name a colour", "input": "", "output": "Red"}]))
    recs = load_prompts(str(p), label="benign")
    assert recs[0].prompt == "Translate to French\n\nGood morning" and recs[1].prompt == "Name a colour"


def test_bad_json_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "fine"}\n{"prompt": "broken"\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:2: bad JSON"):
        load_prompts(str(p), label="harmful")


def test_missing_column_and_empty_prompt(tmp_path):
    p = tmp_path / "cols.csv"
    p.write_text("text_body,x\nhello,1\n")
    with pytest.raises(InputError, match=r"cols\.csv:2: no prompt column.*text_body"):
        load_prompts(str(p), label="benign")
    with pytest.raises(InputError, match=r"column 'nope' \(for prompt\) not found"):
        load_prompts(str(p), label="benign", column_map={"prompt": "nope"})
    e = tmp_path / "empty.csv"
    e.write_text("prompt\nok\n\"  \"\n")
    with pytest.raises(InputError, match=r"empty\.csv:3: column 'prompt': empty prompt"):
        load_prompts(str(e), label="benign")
    n = tmp_path / "nolabel.csv"
    n.write_text("prompt\nok\n")
    with pytest.raises(InputError, match="no label column"):
        load_prompts(str(n))


def test_unknown_source():
    with pytest.raises(SpecError, match="unknown dataset"):
        load_prompts("no-such-set")


def test_builtin_seed_sets():
    harmful = load_prompts("builtin:harmful")
    twins = {r.meta["seed_id"]: r for r in load_prompts("builtin:twins")}
    benign = load_prompts("builtin:benign")
    border = load_prompts("builtin:borderline")
    assert len(harmful) >= 150 and len(benign) >= 150 and len(border) >= 50
    from safethink.data import default_policy

    ids = set(default_policy().ids) | {"copyright"}
    assert {r.category for r in harmful} <= ids
    for h in harmful:  # every harmful seed points at a benign twin on the same topic
        t = twins[h.meta["twin"]]
        assert t.label == "benign" and t.meta["twin_of"] == h.meta["seed_id"] and t.category == h.category
    assert all(r.label == "benign" for r in benign + border)


def test_builtin_format_errors(tmp_path):
    from safethink.data._loaders import load_seed_file

    p = tmp_path / "harmful.jsonl"
    p.write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    with pytest.raises(InputError, match=r"harmful\.jsonl:2: duplicate id"):
        load_seed_file(p, "harmful")
    p.write_text('{"id": "a", "prompt": ""}\n')
    with pytest.raises(InputError, match=r"harmful\.jsonl:1: field 'prompt'"):
        load_seed_file(p, "harmful")


def test_builtin_realistic_sets_and_their_split():
    every = load_prompts("builtin:realistic")
    train, test = load_prompts("builtin:realistic-train"), load_prompts("builtin:realistic-test")
    assert len(every) == len(train) + len(test) >= 200
    assert {r.id for r in train} | {r.id for r in test} == {r.id for r in every}
    assert not {r.id for r in train} & {r.id for r in test}
    assert {r.meta["split"] for r in train} == {"train"} and {r.meta["split"] for r in test} == {"test"}
    assert not {r.meta["group"] for r in train} & {r.meta["group"] for r in test}, "a group spans both splits"
    assert {r.source for r in every} == {"builtin:realistic"}
    assert {r.source for r in train} == {"builtin:realistic-train"}
    assert {r.source for r in test} == {"builtin:realistic-test"}
    kinds = {"summarise", "translate", "proofread", "code-review", "code-explain", "extract", "persona",
             "multi-turn", "constraints"}
    for part in (train, test):
        assert {r.category for r in part} == kinds
    for r in every:
        assert r.label == "benign" and r.category == r.meta["kind"] and r.meta["group"]
        roles = [m.role for m in r.history]
        if r.category == "persona":
            assert roles == ["system"]
        elif r.category == "multi-turn":
            assert roles[:2] == ["user", "assistant"] and roles[-1] == "assistant"
    assert load_prompts("builtin:realistic-test", limit=5, seed=3) == load_prompts("builtin:realistic-test", limit=5, seed=3)
    with pytest.raises(SpecError, match=r"builtin:realistic-dev.*builtin:realistic-train, builtin:realistic-test"):
        load_prompts("builtin:realistic-dev")
    with pytest.raises(SpecError, match=r"unknown built-in set builtin:benign-test"):
        load_prompts("builtin:benign-test")


def test_seed_file_system_and_history_become_the_record_history(tmp_path):
    from safethink.data._loaders import load_seed_file

    p = tmp_path / "realistic.jsonl"
    rows = [
        {"id": "a", "kind": "persona", "group": "g1", "split": "train", "prompt": "What now?",
         "system": "You are a tutor."},
        {"id": "b", "kind": "multi-turn", "group": "g2", "split": "test", "prompt": "And then?",
         "history": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b = load_seed_file(p, "realistic")
    assert a.messages() == [{"role": "system", "content": "You are a tutor."}, {"role": "user", "content": "What now?"}]
    assert b.messages() == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                            {"role": "user", "content": "And then?"}]
    assert a.meta == {"kind": "persona", "group": "g1", "split": "train", "seed_id": "a"} and a.category == "persona"
    # A bad history is reported at its file and line.
    p.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[1], "history": [{"role": "assistant", "content": "x"}]}) + "\n")
    with pytest.raises(InputError, match=r"realistic\.jsonl:2: history.*'assistant': expected user"):
        load_seed_file(p, "realistic")
    p.write_text(json.dumps({**rows[1], "history": "Hi"}) + "\n")
    with pytest.raises(InputError, match=r"realistic\.jsonl:1: field 'history'"):
        load_seed_file(p, "realistic")
    p.write_text(json.dumps({**rows[0], "system": "  "}) + "\n")
    with pytest.raises(InputError, match=r"realistic\.jsonl:1: field 'system'"):
        load_seed_file(p, "realistic")


@pytest.mark.parametrize("history, match", [
    ([{"role": "user", "content": "hi"}], "ends with a user turn"),
    ([{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}], r"history\[1\] is 'user': expected assistant"),
    ([{"role": "assistant", "content": "hello"}], r"history\[0\] is 'assistant': expected user"),
    ([{"role": "user", "content": "hi"}, {"role": "system", "content": "be terse"}], "system message may only come first"),
    ([{"role": "system", "content": "a"}, {"role": "system", "content": "b"}], "system message may only come first"),
    ([{"role": "user", "content": "  "}, {"role": "assistant", "content": "ok"}], "content is empty"),
    ([{"role": "tool", "content": "x"}], "role"),
    ([{"role": "user", "content": "hi", "name": "bob"}, {"role": "assistant", "content": "ok"}], "Extra inputs"),
])
def test_bad_history_is_a_schema_error(history, match):
    from pydantic import ValidationError

    from safethink.data import PromptRecord

    with pytest.raises(ValidationError, match=match):
        PromptRecord(id="x", prompt="Go on", label="benign", source="t", history=history)


def test_history_defaults_empty_and_stays_frozen():
    from pydantic import ValidationError

    from safethink.data import PromptRecord

    plain = PromptRecord(id="x", prompt="Hi", label="benign", source="t", context="Doc")
    assert plain.history == () and plain.messages() == [{"role": "user", "content": "Doc\n\n---\n\nHi"}]
    sys_only = PromptRecord(id="y", prompt="Hi", label="benign", source="t", history=[{"role": "system", "content": "S"}])
    assert [m.role for m in sys_only.history] == ["system"]
    with pytest.raises(ValidationError):
        sys_only.history = ()
    assert PromptRecord.model_validate(sys_only.model_dump()) == sys_only


def _conversation_record():
    from safethink.data import PromptRecord

    return PromptRecord(id="c1", prompt="Now make it shorter, please.", label="benign", source="t", history=[
        {"role": "system", "content": "You are a helpful editor."},
        {"role": "user", "content": "Summarise: the meeting moved to Friday."},
        {"role": "assistant", "content": "The meeting is now on Friday."},
    ])


def test_history_reaches_attacked_prompts():
    from safethink.attacks import ATTACKS

    rec = _conversation_record()
    earlier = rec.messages()[:-1]
    plain = ATTACKS.create("none").prepare([rec], seed=0)[0]
    assert plain.messages == rec.messages()
    wrapped = ATTACKS.create("refusal-suppression").prepare([rec], seed=0)[0]
    assert wrapped.messages[:-1] == earlier and wrapped.messages[-1]["role"] == "user"
    assert rec.prompt in wrapped.messages[-1]["content"] and wrapped.messages[-1]["content"] != rec.prompt
    # Demonstration turns of a multi-turn attack come after the record's conversation, and roles still alternate.
    shots = ATTACKS.create("few-shot", n_shots=2).prepare([rec], seed=1)[0]
    assert shots.messages[:3] == earlier and shots.messages[-1]["content"] == rec.prompt
    roles = [m["role"] for m in shots.messages[1:]]
    assert roles == ["user", "assistant"] * 3 + ["user"]
    # A single-turn record is untouched.
    from safethink.data import PromptRecord

    single = PromptRecord(id="s", prompt="Hi", label="benign", source="t")
    assert ATTACKS.create("none").prepare([single], seed=0)[0].messages == [{"role": "user", "content": "Hi"}]


def test_attack_system_message_stays_first():
    from dataclasses import dataclass

    from safethink.attacks import AttackBase, Built

    @dataclass(kw_only=True)
    class WithSystem(AttackBase):  # not registered: a stand-in for an attack that sets its own system prompt
        name = "test-with-system"
        family = "template"
        paper = "https://example.org"
        description = "Sets a system prompt."

        def build(self, records, rngs, target):
            return [Built([{"role": "system", "content": "ATTACK SYSTEM"}, {"role": "user", "content": r.prompt}])
                    for r in records]

    rec = _conversation_record()
    out = WithSystem().prepare([rec], seed=0)[0].messages
    assert out == [{"role": "system", "content": "ATTACK SYSTEM"}, *rec.messages()]
