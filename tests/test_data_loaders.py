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
