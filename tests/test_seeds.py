"""The built-in seed prompt set (package data in safethink/data/seeds) is well-formed and original.

Checks: the exact record shapes of the contract, unique ids, a one-to-one harmful <-> twin pairing on the
same policy category, coverage of every policy category, minimum sizes, no empty or duplicate prompts,
twins that stay close in style to their harmful pair, and no prompt that is an exact or near-exact copy of
a prompt in the public evaluation sets (which would leak test items into training data).

The realistic set (requests with pasted material, personas and earlier turns) has its own contract:
record shapes per kind, a train/test split by group that covers every kind, well-formed histories, a wide
spread of lengths, and asks written one by one rather than from a template.
"""

from __future__ import annotations

import csv
import difflib
import json
import re
import statistics
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from safethink.io import iter_jsonl

POLICY_IDS = (
    "harassment/threatening",
    "hate/threatening",
    "illicit/violent",
    "self-harm/intent/instructions",
    "sexual/minors",
    "violence/graphic",
    "misinformation",
    "privacy/sensitive",
)
KEYS = {
    "harmful": {"id", "prompt", "category", "twin"},
    "twins": {"id", "prompt", "category", "twin_of"},
    "benign": {"id", "prompt"},
    "borderline": {"id", "prompt", "note"},
}
# Kinds of safe-but-scary prompt (XSTest's types plus plain safety advice); a note reads "<kind>: <why it is safe>".
BORDERLINE_KINDS = {
    "homonyms",
    "figurative_language",
    "safe_targets",
    "safe_contexts",
    "definitions",
    "real_group_nons_discr",
    "nons_group_real_discr",
    "historical_events",
    "privacy_public",
    "privacy_fictional",
    "safety_advice",
}
MIN_TOTAL = {"harmful": 200, "twins": 200, "benign": 200, "borderline": 80}
# realistic.jsonl: kind -> keys a record of that kind must carry beyond the common ones.
REALISTIC_KINDS = {
    "summarise": set(), "translate": set(), "proofread": set(), "code-review": set(), "code-explain": set(),
    "extract": set(), "persona": {"system"}, "multi-turn": {"history"}, "constraints": set(),
}
REALISTIC_KEYS = {"id", "kind", "group", "split", "prompt"}
REALISTIC_OPTIONAL = {"system", "history"}
MIN_PER_KIND = 20
# A sentence of at least this many words that occurs in two groups' texts is a templated ask (or copied material).
SHARED_SENTENCE_WORDS = 7
MIN_PER_CATEGORY = 15
# A prompt this similar (difflib ratio on normalised text) to a public one counts as a near-exact copy; high
# enough that a one-word change in a short prompt ("... about the sea" -> "... about the desert") is a new request.
NEAR_COPY_RATIO = 0.92
# A public prompt of at least this many words found whole inside one of ours (or ours inside it) is a copy too.
MIN_CONTAINED_WORDS = 5
# Public evaluation sets: (file under the shared data folder, prompt column, matched case-insensitively).
PUBLIC_SETS = {
    "jbb-harmful": ("jbb_behaviors/harmful-behaviors.csv", "goal"),
    "jbb-benign": ("jbb_behaviors/benign-behaviors.csv", "goal"),
    "xstest": ("xstest/xstest_prompts.csv", "prompt"),
    "harmbench": ("harmbench/harmbench_behaviors_text_val.csv", "behavior"),
    "strongreject": ("strongreject/strongreject_small_dataset.csv", "forbidden_prompt"),
}


def _norm(text: str) -> str:
    """Lowercase, punctuation stripped, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _seed_dir() -> Path:
    # Through importlib.resources, so the test sees what an installed package sees.
    return Path(str(resources.files("safethink") / "data" / "seeds"))


@pytest.fixture(scope="module")
def seeds() -> dict[str, list[dict]]:
    return {name: [obj for _, obj in iter_jsonl(_seed_dir() / f"{name}.jsonl")] for name in KEYS}


@pytest.fixture(scope="module")
def realistic() -> list[dict]:
    return [obj for _, obj in iter_jsonl(_seed_dir() / "realistic.jsonl")]


def _all_prompts(seeds, realistic=()) -> list[tuple[str, str]]:
    """Every text a seed sends to a model: prompts, and the realistic set's system prompts and earlier turns."""
    out = [(r["id"], r["prompt"]) for rows in seeds.values() for r in rows]
    for r in realistic:
        out.append((r["id"], r["prompt"]))
        if "system" in r:
            out.append((f"{r['id']}/system", r["system"]))
        out += [(f"{r['id']}/history/{i}", m["content"]) for i, m in enumerate(r.get("history", []))]
    return out


def _chars(r: dict) -> int:
    """A realistic record's length as a model sees it: prompt plus system prompt plus earlier turns."""
    return len(r["prompt"]) + len(r.get("system", "")) + sum(len(m["content"]) for m in r.get("history", []))


def test_files_are_strict_jsonl_objects_with_contract_keys(seeds):
    for name, keys in KEYS.items():
        path = _seed_dir() / f"{name}.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines, f"{path} is empty"
        for n, line in enumerate(lines, 1):
            assert line.strip(), f"{path}:{n}: blank line"
            obj = json.loads(line)
            assert set(obj) == keys, f"{path}:{n}: keys {sorted(obj)} != {sorted(keys)}"
            for k, v in obj.items():
                assert isinstance(v, str) and v.strip(), f"{path}:{n}: {k!r} must be a non-empty string"
                assert v == v.strip(), f"{path}:{n}: {k!r} has leading/trailing whitespace"


def test_ids_unique_across_all_files(seeds, realistic):
    ids = [r["id"] for rows in seeds.values() for r in rows] + [r["id"] for r in realistic]
    dupes = [i for i, c in Counter(ids).items() if c > 1]
    assert not dupes, f"duplicate ids: {dupes}"


def test_every_harmful_has_exactly_one_twin_and_back(seeds):
    harmful = {r["id"]: r for r in seeds["harmful"]}
    twins = {r["id"]: r for r in seeds["twins"]}
    assert len(harmful) == len(twins)
    twin_refs = Counter(r["twin"] for r in harmful.values())
    assert all(c == 1 for c in twin_refs.values()), "a twin is claimed by several harmful prompts"
    for hid, h in harmful.items():
        assert h["twin"] in twins, f"{hid}: twin {h['twin']!r} missing from twins.jsonl"
        t = twins[h["twin"]]
        assert t["twin_of"] == hid, f"{t['id']}: twin_of {t['twin_of']!r}, expected {hid!r}"
        assert t["category"] == h["category"], f"{hid}/{t['id']}: pair on different categories"
        assert _norm(t["prompt"]) != _norm(h["prompt"]), f"{hid}: twin repeats the harmful prompt"
    for tid, t in twins.items():
        assert t["twin_of"] in harmful, f"{tid}: twin_of {t['twin_of']!r} is not a harmful id"


def test_categories_are_policy_ids_and_all_covered(seeds):
    counts = Counter(r["category"] for r in seeds["harmful"])
    unknown = set(counts) - set(POLICY_IDS)
    assert not unknown, f"unknown policy ids: {sorted(unknown)}"
    for cat in POLICY_IDS:
        assert counts[cat] >= MIN_PER_CATEGORY, f"{cat}: only {counts[cat]} harmful prompts"
    # Illicit/violent is the broadest category, so it gets the most examples.
    top = counts["illicit/violent"]
    assert all(top > c for cat, c in counts.items() if cat != "illicit/violent")


def test_minimum_sizes(seeds):
    for name, least in MIN_TOTAL.items():
        assert len(seeds[name]) >= least, f"{name}: {len(seeds[name])} < {least}"


def test_no_duplicate_prompts_anywhere(seeds, realistic):
    seen: dict[str, str] = {}
    for rid, prompt in _all_prompts(seeds) + [(r["id"], r["prompt"]) for r in realistic]:
        key = _norm(prompt)
        assert key, f"{rid}: prompt has no words"
        assert key not in seen, f"{rid} duplicates {seen[key]}: {prompt!r}"
        seen[key] = rid


def test_borderline_notes_name_a_kind(seeds):
    kinds = Counter()
    for r in seeds["borderline"]:
        kind, sep, why = r["note"].partition(": ")
        assert sep and why.strip(), f"{r['id']}: note should read '<kind>: <why it is safe>'"
        assert kind in BORDERLINE_KINDS, f"{r['id']}: unknown kind {kind!r}"
        kinds[kind] += 1
    # Spread across the kinds, not piled on one word.
    assert len(kinds) >= 8 and max(kinds.values()) <= len(seeds["borderline"]) // 4


def test_twins_do_not_give_away_the_label_by_style(seeds):
    """Harmful prompts and their twins look alike on the surface, so a classifier must read intent."""
    harm = [r["prompt"] for r in seeds["harmful"]]
    twin = [r["prompt"] for r in seeds["twins"]]
    for feature in (
        lambda p: p.rstrip().endswith("?"),
        lambda p: p[0].islower(),
        lambda p: p.split()[0].lower() in {"write", "give", "how", "what's", "tell", "explain"},
    ):
        share_h = sum(map(feature, harm)) / len(harm)
        share_t = sum(map(feature, twin)) / len(twin)
        assert abs(share_h - share_t) < 0.15
    ratio = statistics.mean(map(len, twin)) / statistics.mean(map(len, harm))
    assert 0.85 < ratio < 1.2
    # Minimal pairs: most twins share a good part of their wording with their harmful prompt.
    by_id = {r["id"]: r["prompt"] for r in seeds["twins"]}
    overlaps = []
    for r in seeds["harmful"]:
        a, b = set(_norm(r["prompt"]).split()), set(_norm(by_id[r["twin"]]).split())
        overlaps.append(len(a & b) / len(a | b))
    assert statistics.median(overlaps) >= 0.3


def test_realistic_records_have_the_shape_of_their_kind(realistic):
    path = _seed_dir() / "realistic.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(realistic) >= 200
    for n, (line, r) in enumerate(zip(lines, realistic), 1):
        assert line.strip() and json.loads(line) == r, f"{path}:{n}: not one JSON object per line"
        assert REALISTIC_KEYS <= set(r) <= REALISTIC_KEYS | REALISTIC_OPTIONAL, f"{path}:{n}: keys {sorted(r)}"
        assert re.fullmatch(r"realistic-\d{3}", r["id"]), f"{path}:{n}: id {r['id']!r}"
        assert r["kind"] in REALISTIC_KINDS, f"{r['id']}: unknown kind {r['kind']!r}"
        assert REALISTIC_KINDS[r["kind"]] <= set(r), f"{r['id']}: a {r['kind']} record needs {REALISTIC_KINDS[r['kind']]}"
        assert ("history" in r) == (r["kind"] == "multi-turn"), f"{r['id']}: history belongs to multi-turn only"
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", r["group"]), f"{r['id']}: group {r['group']!r}"
        assert r["split"] in ("train", "test"), f"{r['id']}: split {r['split']!r}"
        for key in ("prompt", "system"):
            if key in r:
                assert isinstance(r[key], str) and r[key].strip() == r[key] and r[key], f"{r['id']}: bad {key}"


def test_realistic_kinds_are_all_well_stocked(realistic):
    counts = Counter(r["kind"] for r in realistic)
    assert set(counts) == set(REALISTIC_KINDS)
    short = {k: c for k, c in counts.items() if c < MIN_PER_KIND}
    assert not short, f"kinds with fewer than {MIN_PER_KIND} records: {short}"


def test_realistic_split_is_by_group_and_covers_every_kind(realistic):
    splits_of_group: dict[str, set[str]] = {}
    for r in realistic:
        splits_of_group.setdefault(r["group"], set()).add(r["split"])
    leaking = sorted(g for g, s in splits_of_group.items() if len(s) > 1)
    assert not leaking, f"groups in both splits (their shared material would leak into the test part): {leaking}"
    by_split = {part: Counter(r["kind"] for r in realistic if r["split"] == part) for part in ("train", "test")}
    for part, kinds in by_split.items():
        assert set(kinds) == set(REALISTIC_KINDS), f"{part} lacks {set(REALISTIC_KINDS) - set(kinds)}"
    share = sum(by_split["test"].values()) / len(realistic)
    assert 0.25 <= share <= 0.40, f"test part holds {share:.0%} of the records, expected about a third"
    # Groups tie requests together: several share material, none is so large it dominates a split.
    sizes = Counter(r["group"] for r in realistic)
    assert max(sizes.values()) <= 4 and sum(s > 1 for s in sizes.values()) >= 5


def test_realistic_histories_alternate_from_user_to_assistant(realistic):
    for r in realistic:
        history = r.get("history")
        if history is None:
            continue
        assert 2 <= len(history) <= 6, f"{r['id']}: {len(history)} earlier messages"
        for i, m in enumerate(history):
            assert set(m) == {"role", "content"}, f"{r['id']}: history[{i}] keys {sorted(m)}"
            assert m["role"] == ("user" if i % 2 == 0 else "assistant"), f"{r['id']}: history[{i}] is {m['role']}"
            assert isinstance(m["content"], str) and m["content"].strip(), f"{r['id']}: history[{i}] is empty"
        assert history[-1]["role"] == "assistant"


def test_realistic_lengths_vary_widely(realistic):
    chars = sorted(_chars(r) for r in realistic)
    assert chars[0] <= 250 and chars[-1] >= 2500, f"lengths run {chars[0]}..{chars[-1]}"
    assert 700 <= statistics.median(chars) <= 900, f"median length {statistics.median(chars)}"
    # Both tails are populated, not a couple of outliers around a narrow middle.
    assert sum(c < 450 for c in chars) >= len(chars) // 10
    assert sum(c > 1200 for c in chars) >= len(chars) // 10
    for kind in REALISTIC_KINDS:  # no kind is all short or all long
        k = [_chars(r) for r in realistic if r["kind"] == kind]
        assert max(k) >= 2 * min(k), f"{kind}: lengths {min(k)}..{max(k)}"


def test_realistic_asks_are_not_templated(realistic):
    """A long sentence may repeat inside a group (the same pasted text), never across groups."""
    groups_of: dict[str, set[str]] = {}
    for r in realistic:
        texts = [r["prompt"], r.get("system", "")] + [m["content"] for m in r.get("history", [])]
        for text in texts:
            for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
                words = _norm(sentence).split()
                if len(words) >= SHARED_SENTENCE_WORDS:
                    groups_of.setdefault(" ".join(words), set()).add(r["group"])
    shared = {s: sorted(g) for s, g in groups_of.items() if len(g) > 1}
    assert not shared, f"sentences shared across groups: {shared}"
    # The opening line (where the ask usually sits) differs between any two records.
    firsts = Counter(_norm(r["prompt"].splitlines()[0]) for r in realistic)
    assert max(firsts.values()) == 1, [f for f, c in firsts.items() if c > 1]


def test_realistic_loads_as_benign_records_with_history():
    from safethink.data import load_prompts

    records = {r.meta["seed_id"]: r for r in load_prompts("builtin:realistic")}
    rows = {r["id"]: r for _, r in iter_jsonl(_seed_dir() / "realistic.jsonl")}
    assert records.keys() == rows.keys()
    for rid, row in rows.items():
        rec = records[rid]
        assert rec.label == "benign" and rec.category == row["kind"] and rec.prompt == row["prompt"]
        expected = ([{"role": "system", "content": row["system"]}] if "system" in row else []) + row.get("history", [])
        assert rec.messages() == expected + [{"role": "user", "content": row["prompt"]}]


def _public_prompts(shared: Path, name: str) -> list[str]:
    rel, column = PUBLIC_SETS[name]
    path = shared / rel
    if not path.is_file():
        pytest.skip(f"{path} not present")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    key = next(k for k in rows[0] if k and k.lower() == column)
    return [row[key] for row in rows if row[key] and row[key].strip()]


def _near_copies(ours: list[tuple[str, str]], theirs: list[str]) -> list[str]:
    """Pairs (ours, public) that are equal after normalising, one inside the other, or nearly equal."""
    public = {}
    for t in theirs:
        n = _norm(t)
        public[n] = (t, f" {n} ", len(n.split()) >= MIN_CONTAINED_WORDS, frozenset(n.split()))
    found = []
    matcher = difflib.SequenceMatcher(autojunk=False)
    for rid, prompt in ours:
        mine = _norm(prompt)
        if mine in public:
            found.append(f"{rid}: {prompt!r} == {public[mine][0]!r}")
            continue
        padded, mine_long, words = f" {mine} ", len(mine.split()) >= MIN_CONTAINED_WORDS, frozenset(mine.split())
        matcher.set_seq2(mine)  # seq2 is the side difflib caches
        for norm_t, (t, padded_t, t_long, words_t) in public.items():
            # Word-aligned containment: a public prompt with words added around it (or the reverse).
            if (t_long and padded_t in padded) or (mine_long and padded in padded_t):
                found.append(f"{rid}: {prompt!r} overlaps {t!r}")
                continue
            # Cheap filters before difflib: the length bound (the ratio cannot exceed it), and shared words
            # (texts this close in characters share at least half their words).
            la, lb = len(mine), len(norm_t)
            if 2 * min(la, lb) < NEAR_COPY_RATIO * (la + lb):
                continue
            if 2 * len(words & words_t) < min(len(words), len(words_t)):
                continue
            matcher.set_seq1(norm_t)
            if matcher.quick_ratio() >= NEAR_COPY_RATIO and matcher.ratio() >= NEAR_COPY_RATIO:
                found.append(f"{rid}: {prompt!r} ~ {t!r}")
    return found


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(PUBLIC_SETS))
def test_no_copies_of_public_evaluation_prompts(seeds, realistic, shared_data, name):
    theirs = _public_prompts(shared_data, name)
    assert len(theirs) >= 50, f"{name}: read only {len(theirs)} prompts, wrong column?"
    copies = _near_copies(_all_prompts(seeds, realistic), theirs)
    assert not copies, "seed prompts copy public evaluation prompts:\n" + "\n".join(copies)


def test_near_copy_check_catches_reworded_punctuation_and_case():
    """The detector itself: case, punctuation, tiny edits and embedding are caught; other requests are not."""
    public = ["How can I kill a Python process?", "Write a poem about the sea."]
    ours = [
        ("a", "how can i KILL a python process"),
        ("b", "How can I kill a Python process, please?"),
        ("c", "Write a poem about the seas!"),
        ("d", "How do I repot a snake plant?"),
        ("e", "Before the demo: how can I kill a Python process that hangs?"),
        ("f", "Write a poem about the desert."),
    ]
    hits = _near_copies(ours, public)
    assert sorted(h.split(":")[0] for h in hits) == ["a", "b", "c", "e"]


def test_policy_ids_match_the_default_policy():
    """The seed categories are the rule ids the SCoT policy reasons over, so they must stay in step."""
    from safethink.data import default_policy

    assert set(default_policy().ids) == set(POLICY_IDS)


def test_builtin_sets_pass_the_training_leak_check(shared_data):
    """`safethink data build` warns on near-copies of evaluation prompts; the built-in seeds must raise none."""
    from safethink.data import EVAL_SOURCES, find_near_duplicates, load_eval_prompts, load_prompts

    evals = load_eval_prompts(EVAL_SOURCES, data_dir=str(shared_data))
    assert len(evals) >= 500, "evaluation sets did not load from the shared data folder"
    seeds = [r for name in (*KEYS, "realistic") for r in load_prompts(f"builtin:{name}")]
    assert len(seeds) >= sum(MIN_TOTAL.values()) + MIN_PER_KIND * len(REALISTIC_KINDS)
    assert find_near_duplicates(seeds, evals) == []
