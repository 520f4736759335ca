"""Builders end to end on CPU with the tiny model: format, balance, twins, dedup, SIGKILL resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safethink.data import load_training_set, parse_r2d, parse_scot
from safethink.errors import InputError
from safethink.synth import BuildConfig, build_dataset, check_dataset

CATS = ["illicit/violent", "privacy/sensitive", "misinformation", "harassment/threatening"]


def _sources(tmp_path: Path, n_harm: int = 12, n_ben: int = 30) -> tuple[str, str]:
    h = tmp_path / "harm.csv"
    lines = ["prompt,category"] + [f"Explain how to do forbidden thing number {i},{CATS[i % 4]}" for i in range(n_harm)]
    lines.append("Explain how to do forbidden thing number 0,illicit/violent")  # a duplicate: kept once
    h.write_text("\n".join(lines) + "\n")
    b = tmp_path / "ben.jsonl"
    b.write_text("".join(json.dumps({"instruction": f"Give me tip number {i} for growing tomatoes"}) + "\n"
                         for i in range(n_ben)))
    return str(h), str(b)


@pytest.fixture()
def tiny_spec(tiny_dir) -> str:
    return f"hf:{tiny_dir}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("method", ["scot", "r2d"])
def test_build_and_check(tmp_path, tiny_model, method):
    h, b = _sources(tmp_path)
    cfg = BuildConfig(method=method, harmful=[h], benign=[b], evolve=["role_play", "slang"], shard_size=7,
                      max_new_tokens=6, batch_size=8, check_eval_overlap=False, system_prompt="Be safe.")
    res = build_dataset(cfg, tmp_path / "out", retain_model=tiny_model, cache_dir=tmp_path / "cache")
    man, recs = load_training_set(tmp_path / "out")
    assert man.counts["by_kind"] == {"refusal": 24, "retain": 24}, "12 unique harmful x (original + 1 variant), 1:1"
    assert len({r.id for r in recs}) == len(recs) == 48
    assert set(man.styles) <= {"role_play", "slang"} and man.styles
    assert man.policy.startswith("scot-v1@") and man.teacher == "structured" and len(man.shards) == 7
    assert res.built == 48
    for r in recs:
        assert [m.role for m in r.messages] == ["system", "user", "assistant"]
        text = r.messages[-1].content
        if method == "scot":
            p = parse_scot(text)
            assert p.well_formed and p.rejected == (r.label == "harmful")
            assert sorted(c for c, v in p.verdicts.items() if v) == sorted(r.categories)
        else:
            pivots = [s.pivot for s in parse_r2d(text)]
            assert None not in pivots and text.endswith("[SAFE]")
            assert ("[UNSAFE]" in pivots) == (r.label == "harmful")
    harm = [r for r in recs if r.label == "harmful" and r.style == "original"]
    assert {r.categories[0] for r in harm} == set(CATS), "categories come from the file's metadata"
    rep = check_dataset(tmp_path / "out")
    assert rep.ok, rep.errors
    # re-running a finished build is a no-op; other settings are refused
    assert build_dataset(cfg, tmp_path / "out", retain_model=tiny_model).built == 0
    with pytest.raises(InputError, match="other settings"):
        build_dataset(cfg.model_copy(update={"seed": 9}), tmp_path / "out", retain_model=tiny_model)


def test_check_catches_tampering(tmp_path, tiny_model):
    h, b = _sources(tmp_path, 4, 4)
    cfg = BuildConfig(method="r2d", harmful=[h], benign=[b], max_new_tokens=4, check_eval_overlap=False)
    build_dataset(cfg, tmp_path / "o", retain_model=tiny_model, cache_dir=tmp_path / "c")
    shard = tmp_path / "o" / "shard-00000.jsonl"
    lines = shard.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if json.loads(line)["label"] == "harmful")
    rec = json.loads(lines[i])
    rec["messages"][-1]["content"] = rec["messages"][-1]["content"].removesuffix(" [SAFE]")
    lines[i] = json.dumps(rec)
    shard.write_text("\n".join(lines) + "\n")
    rep = check_dataset(tmp_path / "o")
    assert not rep.ok
    assert any("sha256" in e for e in rep.errors) and any("pivot" in e for e in rep.errors)


@pytest.mark.timeout(300)
def test_builtin_twins_on_retain_side(tmp_path, tiny_model):
    cfg = BuildConfig(method="scot", harmful=["builtin:harmful"], benign=["builtin:benign"], limit=5,
                      max_new_tokens=4, check_eval_overlap=False)
    build_dataset(cfg, tmp_path / "t", retain_model=tiny_model, cache_dir=tmp_path / "c")
    _, recs = load_training_set(tmp_path / "t")
    harm = {r.messages[-2].content for r in recs if r.label == "harmful"}
    by_src = {}
    for r in recs:
        by_src.setdefault(r.source, []).append(r)
    assert len(harm) == 5 and len(by_src["builtin:twins"]) == 5 and len(by_src["builtin:borderline"]) == 5
    cfg2 = cfg.model_copy(update={"twins": False})
    build_dataset(cfg2, tmp_path / "n", retain_model=tiny_model, cache_dir=tmp_path / "c")
    _, recs2 = load_training_set(tmp_path / "n")
    assert {r.source for r in recs2} == {"builtin:harmful", "builtin:benign"}


def _run(cfg: BuildConfig, out: Path, cache: Path, kill_after: float | None = None) -> float:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    t = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "test_synth_build_script.py"), cfg.model_dump_json(),
                             str(out), str(cache)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return time.monotonic() - t
    _, err = proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    return time.monotonic() - t


@pytest.mark.timeout(600)
def test_sigkill_resume_gives_identical_records(tmp_path, tiny_spec):
    h, b = _sources(tmp_path, 20, 40)
    cfg = BuildConfig(method="r2d", harmful=[h], benign=[b], evolve=["logical_appeal", "expert_endorsement"],
                      model=tiny_spec, shard_size=5, max_new_tokens=12, batch_size=4, check_eval_overlap=False)
    total = _run(cfg, tmp_path / "ref", tmp_path / "cache-ref")
    rng = random.Random(1234)
    out, cache = tmp_path / "resumed", tmp_path / "cache-resumed"
    kills = 0
    for _ in range(4):
        _run(cfg, out, cache, kill_after=rng.uniform(0.2, 1.0) * total)
        kills += 1
        if (out / "manifest.json").is_file():
            break
    _run(cfg, out, cache)
    ref_man, ref = load_training_set(tmp_path / "ref")
    man, got = load_training_set(out)
    assert [r.model_dump() for r in got] == [r.model_dump() for r in ref]
    assert man.content_hash == ref_man.content_hash
    assert not (out / ".work").exists() and check_dataset(out).ok


def test_retain_progress_is_a_running_total(tmp_path, tiny_model):
    from safethink.synth._retain import RetainAnswerer

    prompts = [f"Give me tip number {i} for growing tomatoes" for i in range(5)]
    seen: list[int] = []
    ans = RetainAnswerer(max_new_tokens=3, batch_size=2, cache_dir=tmp_path, model_obj=tiny_model)
    first = ans.answer(prompts, progress=seen.append)
    assert seen == [0, 2, 4, 5] and len(first) == 5
    seen.clear()  # all cached now: the same counts, and the same answers
    assert ans.answer(prompts, progress=seen.append) == first and seen == [0, 2, 4, 5]


def _eval_dir(tmp_path: Path) -> Path:
    """A data folder holding one evaluation set (JBB harmful) with near copies of two source prompts."""
    d = tmp_path / "evaldata"
    (d / "jbb_behaviors").mkdir(parents=True)
    (d / "jbb_behaviors" / "harmful-behaviors.csv").write_text(
        ",Goal,Target,Behavior,Category,Source\n"
        "0,Explain how to do forbidden thing number 3!,Sure,b0,Harassment,Original\n"
        "1,explain how to do the forbidden thing number 5,Sure,b1,Harassment,Original\n"
        "2,Write a sonnet about the sea,Sure,b2,Harassment,Original\n")
    return d


@pytest.mark.timeout(300)
def test_drop_eval_overlap_leaves_near_copies_out_before_the_limit(tmp_path, tiny_model):
    _, b = _sources(tmp_path)
    h = tmp_path / "harm12.csv"
    h.write_text("prompt,category\n" + "".join(f"Explain how to do forbidden thing number {i},{CATS[i % 4]}\n"
                                               for i in range(12)))
    d = _eval_dir(tmp_path)
    base = dict(method="scot", harmful=[str(h)], benign=[b], limit=8, shard_size=64, max_new_tokens=4, batch_size=8,
                data_dir=str(d))
    kept = build_dataset(BuildConfig(**base), tmp_path / "kept", retain_model=tiny_model, cache_dir=tmp_path / "c")
    assert kept.dropped == [] and kept.near_duplicates, "without the option, overlaps are only warned about"
    res = build_dataset(BuildConfig(**base, drop_eval_overlap=True), tmp_path / "drop", retain_model=tiny_model,
                        cache_dir=tmp_path / "c")
    assert sorted(n.train_id.rsplit("/", 1)[-1] for n in res.dropped) == ["3", "5"]
    assert res.near_duplicates == []
    man, recs = load_training_set(tmp_path / "drop")
    originals = [r for r in recs if r.kind == "refusal" and r.style == "original"]
    assert len(originals) == 8, "the limit samples among the prompts that are left"
    texts = " | ".join(r.messages[0].content for r in originals)
    assert "number 3" not in texts and "number 5" not in texts
    assert man.eval_overlap["dropped"] == 2 and man.eval_overlap["count"] == 0
    assert BuildConfig(**base).plan_hash() != BuildConfig(**base, drop_eval_overlap=True).plan_hash()


def test_overlap_threshold_decides_what_counts_as_a_near_copy(tmp_path):
    from safethink.synth._plan import load_sources

    _, b = _sources(tmp_path)
    h = tmp_path / "harm12.csv"
    h.write_text("prompt,category\n" + "".join(f"Explain how to do forbidden thing number {i},{CATS[i % 4]}\n"
                                               for i in range(12)))
    base = dict(method="scot", harmful=[str(h)], benign=[b], data_dir=str(_eval_dir(tmp_path)), drop_eval_overlap=True)

    def dropped(threshold: float) -> list[str]:
        out: list = []
        harmful, _, _ = load_sources(BuildConfig(**base, overlap_threshold=threshold), out)
        assert len(harmful) == 12 - len(out)
        return sorted(n.train_id.rsplit("/", 1)[-1] for n in out)

    assert dropped(0.8) == ["3", "5"]
    assert dropped(1.0) == ["3"], "only the same word set (case and punctuation aside)"
    # "... number 7" shares 7 of 9 words with "... number 3": a near copy at 0.75, not at 0.8
    assert len(dropped(0.75)) == 12
    hashes = {t: BuildConfig(**base, overlap_threshold=t).plan_hash() for t in (0.6, 0.8)}
    assert hashes[0.6] != hashes[0.8]
    off = {k: v for k, v in base.items() if k != "drop_eval_overlap"}
    assert BuildConfig(**off, overlap_threshold=0.6).plan_hash() == BuildConfig(**off).plan_hash(), \
        "without dropping, the threshold only changes warnings, not the records"
    with pytest.raises(ValueError, match="overlap_threshold"):
        BuildConfig(**base, overlap_threshold=0.0)
