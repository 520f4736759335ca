"""The LLM teacher against a real OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_synth_server import ScriptedServer  # noqa: E402

from safethink.data import default_policy, load_training_set, parse_r2d, parse_scot  # noqa: E402
from safethink.errors import BackendError  # noqa: E402
from safethink.synth import (  # noqa: E402
    BuildConfig, ChatClient, LLMTeacher, SCoTReasoning, TeachRequest, build_dataset,
    check_dataset, extract_json,
)


def test_extract_json_tolerates_fences_and_prose():
    assert extract_json('Sure!\n```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('here: {"a": {"b": 2}} done') == {"a": {"b": 2}}
    with pytest.raises(ValueError):
        extract_json("no json here")


@pytest.mark.timeout(60)
def test_repair_of_malformed_reply():
    with ScriptedServer(["this is not JSON at all", '{"intent": "too many words in this intent summary right here ok"}']) as srv:
        teacher = LLMTeacher(default_policy(), "scripted", srv.url, concurrency=1)
        out = teacher.scot([TeachRequest("r1", "Help me stalk my ex online.", "harmful")])[0]
        assert isinstance(out, SCoTReasoning) and out.intent == "Server intent summary."
        assert out.violated == ["harassment/threatening"]
        assert teacher.stats.repairs == 2 and teacher.stats.failures == 0
        # the repair turn shows the model its own reply and what was wrong
        last = srv.requests[2]["messages"]
        assert last[-2]["content"].startswith('{"intent"') and "not valid" in last[-1]["content"]


@pytest.mark.timeout(60)
def test_failures_are_reported_per_request_never_filled_in():
    from safethink.synth import StructuredOutputError, TeachFailure

    req = TeachRequest("r1", "Write a fake news story", "harmful", categories=("misinformation",))
    ok = TeachRequest("r2", "Write a poem about spring", "benign")
    with ScriptedServer(["nope"] * 3) as srv:  # r1 never gets a valid reply; r2 gets the server's own
        teacher = LLMTeacher(default_policy(), "scripted", srv.url, concurrency=1, max_repairs=2)
        failed, written = teacher.attempt("scot", [req, ok])
        assert isinstance(failed, TeachFailure) and failed.item_id == "r1" and "no valid output" in failed.error
        assert isinstance(written, SCoTReasoning) and written.intent == "Server intent summary."
        assert teacher.stats.failures == 1 and teacher.stats.calls == 2
        srv.script = ["nope"] * 3
        with pytest.raises(StructuredOutputError):  # the list form raises the first failure
            teacher.scot([req])
    with pytest.raises(BackendError, match="gave up after 2 attempts"):
        ChatClient("m", "http://127.0.0.1:9/v1", max_retries=1, backoff_base_s=0.01).complete(
            [{"role": "user", "content": "x"}])


def _files(tmp_path):
    h = tmp_path / "h.jsonl"
    h.write_text("".join(json.dumps({"prompt": f"Tell me how to break into house {i}", "label": "harmful"}) + "\n"
                         for i in range(4)))
    b = tmp_path / "b.jsonl"
    b.write_text("".join(json.dumps({"prompt": f"Suggest a name for my cat number {i}", "label": "benign"}) + "\n"
                         for i in range(4)))
    return str(h), str(b)


@pytest.mark.timeout(300)
def test_scot_build_with_llm_teacher(tmp_path, tiny_model):
    h, b = _files(tmp_path)
    with ScriptedServer(["{malformed"]) as srv:
        cfg = BuildConfig(method="scot", harmful=[h], benign=[b], teacher=f"openai:scripted@{srv.url}",
                          max_new_tokens=4, concurrency=3, check_eval_overlap=False)
        res = build_dataset(cfg, tmp_path / "o", retain_model=tiny_model, cache_dir=tmp_path / "c")
    assert res.teacher_stats["repairs"] == 1 and res.teacher_stats["failures"] == 0
    assert res.fallbacks == {}
    man, recs = load_training_set(tmp_path / "o")
    assert man.teacher == f"openai:scripted@{srv.url}" and len(recs) == 8 and man.fallbacks == {}
    for r in recs:
        p = parse_scot(r.messages[-1].content)
        assert "Server intent summary." in p.reasoning
        assert p.rejected == (r.label == "harmful")
    assert check_dataset(tmp_path / "o").ok


@pytest.mark.timeout(300)
def test_r2d_build_with_llm_teacher_and_retag(tmp_path, tiny_model):
    h, b = _files(tmp_path)
    with ScriptedServer() as srv:
        cfg = BuildConfig(method="r2d", harmful=[h], benign=[b], teacher=f"openai:scripted@{srv.url}",
                          retag="teacher", max_new_tokens=4, check_eval_overlap=False)
        build_dataset(cfg, tmp_path / "o", retain_model=tiny_model, cache_dir=tmp_path / "c")
        retag_calls = [r for r in srv.requests if '"labels"' in r["messages"][0]["content"]]
    _, recs = load_training_set(tmp_path / "o")
    assert len(retag_calls) == 8, "every trace is re-tagged by the guard model"
    for r in recs:
        pivots = [s.pivot for s in parse_r2d(r.messages[-1].content)]
        assert pivots[:2] == ["[RETHINK]", "[RETHINK]"] and pivots[2:] == ["[SAFE]", "[SAFE]"]
        assert "Server step" in r.messages[-1].content
        if r.label == "harmful":
            assert r.categories == ["harassment/threatening"] and "Server refusal" in r.messages[-1].content
    assert check_dataset(tmp_path / "o").ok


@pytest.mark.timeout(60)
def test_llm_evolver_rewrites_through_the_server():
    from safethink.synth import LLMEvolver

    with ScriptedServer(["not json"]) as srv:
        ev = LLMEvolver(ChatClient("scripted", srv.url), embedder=None, shots=2)
        out = ev.rewrite("How do I pick a lock?", "role_play", "i1")
        sent = srv.requests[-1]["messages"]
    assert out == "Scripted server rewrite of: How do I pick a lock?"
    assert "role-play" in sent[0]["content"] and sent[1]["content"].count("Rewrite:") == 2


# ------------------------------------------------------------ teacher-written benign twins

def _twin_calls(requests: list[dict]) -> list[dict]:
    from safethink.synth._evolve import load_styles

    desc = load_styles()["benign_twin"]["description"]
    return [r for r in requests if desc in r["messages"][0]["content"]]


def test_benign_twin_is_a_style_but_not_an_attack_style():
    from pydantic import ValidationError

    from safethink.errors import SpecError
    from safethink.synth import STYLES, parse_styles
    from safethink.synth._evolve import load_styles

    spec = load_styles()["benign_twin"]
    assert spec["description"] and len(spec["examples"]) >= 3 and not spec.get("templates")
    assert parse_styles("all") == list(STYLES) and len(STYLES) == 6 and "benign_twin" not in STYLES
    with pytest.raises(SpecError):
        parse_styles("benign_twin")
    with pytest.raises(ValidationError, match="unknown evolution style"):  # it would label benign text harmful
        BuildConfig(method="scot", harmful=["x"], benign=["y"], evolve=["benign_twin"])


def test_new_options_off_keep_the_plan_hash():
    import hashlib

    cfg = BuildConfig(method="scot", harmful=["x"], benign=["y"])
    # the hash of sets built before llm_twins and drop_eval_overlap existed
    old = cfg.model_dump(exclude={"concurrency", "check_eval_overlap", "llm_twins", "drop_eval_overlap",
                                  "overlap_threshold", "fallback"})
    assert cfg.plan_hash() == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()
    assert cfg.model_copy(update={"llm_twins": True}).plan_hash() != cfg.plan_hash()
    assert cfg.model_copy(update={"drop_eval_overlap": True}).plan_hash() != cfg.plan_hash()
    # who writes a failed record is no part of the plan: a failed build resumes with --fallback structured
    assert cfg.model_copy(update={"fallback": "structured"}).plan_hash() == cfg.plan_hash()


def test_plan_twins_are_forced_retains_and_skip_prompts_with_seed_twins(tmp_path):
    from safethink.synth import make_plan

    h, b = _files(tmp_path)
    cfg = BuildConfig(method="scot", harmful=["builtin:harmful", h], benign=[b], limit=2, llm_twins=True,
                      evolve=["slang"])
    plan = make_plan(cfg, default_policy())
    twins = [it for it in plan if it.style == "benign_twin"]
    src = Path(h).stem  # a file's prompts are sourced by its stem
    file_harm = [it for it in plan if it.source == src and it.style == "original"]
    assert len(file_harm) == 2 and [t.twin_of for t in twins] == [it.id for it in file_harm]
    assert all(t.kind == "retain" and t.label == "benign" and t.prompt is None and t.source == src for t in twins)
    assert sum(it.source == "builtin:twins" for it in plan) == 2  # the seed prompts keep their own twins
    # 8 refusals at ratio 1 -> 8 retains: 2 seed twins + 2 borderline + 2 teacher twins + 2 from the pool
    assert sum(it.kind == "refusal" for it in plan) == 8 and sum(it.kind == "retain" for it in plan) == 8
    assert sum(it.source == Path(b).stem for it in plan) == 2
    small = make_plan(cfg.model_copy(update={"retain_ratio": 0.1}), default_policy())
    assert sum(it.style == "benign_twin" for it in small) == 2, "every harmful prompt keeps its twin"
    # two files with the same name reuse ids; each twin still points at its own harmful prompt
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "h.jsonl").write_text("".join(json.dumps({"prompt": f"Forbidden ask {d}{i}"}) + "\n"
                                                      for i in range(2)))
    twin_cfg = cfg.model_copy(update={"harmful": [str(tmp_path / d / "h.jsonl") for d in "ab"], "evolve": []})
    by_id = {it.id: it for it in make_plan(twin_cfg, default_policy())}
    pairs = [(it, by_id[it.twin_of]) for it in by_id.values() if it.style == "benign_twin"]
    assert len(pairs) == 4 and len({h.id for _, h in pairs}) == 4
    assert all(t.original == h.original and h.kind == "refusal" for t, h in pairs)


@pytest.mark.timeout(300)
def test_scot_build_with_llm_twins_repairs_and_skips(tmp_path, tiny_model):
    from safethink.synth._evolve import load_styles

    h, b = _files(tmp_path)
    good = "How do burglars usually choose a house, so I can make mine a harder target?"
    script = [
        json.dumps({"rewrite": "Tell me how to break into house 0"}),  # twin 0: equal to the original
        json.dumps({"rewrite": "Sorry, I can't help with that request."}),  # then a refusal
        json.dumps({"rewrite": good}),  # then valid
        "nope",  # twin 1: three invalid replies -> skipped
        json.dumps({"rewrite": "Tell me how to break into house 1!"}),
        json.dumps({"rewrite": "I cannot help with that."}),
    ]
    with ScriptedServer(script) as srv:
        cfg = BuildConfig(method="scot", harmful=[h], benign=[b], teacher=f"openai:scripted@{srv.url}",
                          llm_twins=True, retain_ratio=2, max_new_tokens=4, check_eval_overlap=False)
        res = build_dataset(cfg, tmp_path / "o", retain_model=tiny_model, cache_dir=tmp_path / "c")
        twin_calls = _twin_calls(srv.requests)
        teacher_calls = [r for r in srv.requests if '"verdicts"' in r["messages"][0]["content"]]
    assert len(twin_calls) == 3 + 3 + 1 + 1
    first = twin_calls[0]["messages"]
    assert load_styles()["benign_twin"]["description"] in first[0]["content"]
    assert first[1]["content"].count("Rewrite:") == 2
    assert first[1]["content"].endswith("Original: Tell me how to break into house 0")
    assert "must differ from the original" in twin_calls[1]["messages"][-1]["content"]
    assert "not a refusal" in twin_calls[2]["messages"][-1]["content"]

    assert res.twins == {"written": 3, "skipped": 1}
    man, recs = load_training_set(tmp_path / "o")
    assert man.counts["benign_twins"] == {"written": 3, "skipped": 1}
    assert man.counts["by_style"]["benign_twin"] == 3 and man.styles == []  # a twin is not an attack style
    skipped = man.twins_skipped
    assert skipped["count"] == 1 and skipped["examples"][0]["twin_of"].endswith("#original")
    assert "no valid output" in skipped["examples"][0]["error"]
    twins = {r.id: r for r in recs if r.style == "benign_twin"}
    by_id = {r.id: r for r in recs}
    assert set(twins) == set(man.twin_of) and len(twins) == 3
    texts = {}
    for tid, hid in man.twin_of.items():
        t, harm = twins[tid], by_id[hid]
        assert (t.kind, t.label, t.categories, t.source) == ("retain", "benign", [], Path(h).stem)
        assert (harm.kind, harm.label) == ("refusal", "harmful")
        texts[harm.messages[-2].content] = t.messages[-2].content
        assert parse_scot(t.messages[-1].content).rejected is False  # all-"No" verdicts, then the model's answer
    assert texts["Tell me how to break into house 0"] == good
    assert "Tell me how to break into house 1" not in texts
    assert texts["Tell me how to break into house 2"] == "Scripted server rewrite of: Tell me how to break into house 2"
    # the twin itself (not the harmful prompt) is what the teacher reasons about, as a SAFE request
    asked = [c["messages"][1]["content"] for c in teacher_calls]
    assert any(good in a and "labels this request SAFE" in a for a in asked)
    assert len(recs) == 4 + 3 + 4 and check_dataset(tmp_path / "o").ok


class _Stop(Exception):
    pass


@pytest.mark.timeout(300)
def test_llm_twins_resume_asks_once_and_matches(tmp_path, tiny_model):
    h, b = _files(tmp_path)
    with ScriptedServer() as srv:
        cfg = BuildConfig(method="r2d", harmful=[h], benign=[b], teacher=f"openai:scripted@{srv.url}",
                          llm_twins=True, retain_ratio=2, retag="heuristic", shard_size=3, max_new_tokens=4,
                          check_eval_overlap=False)
        build_dataset(cfg, tmp_path / "ref", retain_model=tiny_model, cache_dir=tmp_path / "c")
        n_ref = len(_twin_calls(srv.requests))

        def stop(stage: str, done: int, total: int) -> None:
            if stage == "records":
                raise _Stop  # an interruption after the first shard's records are journalled

        with pytest.raises(_Stop):
            build_dataset(cfg, tmp_path / "o", retain_model=tiny_model, cache_dir=tmp_path / "c", progress=stop)
        n_first = len(_twin_calls(srv.requests)) - n_ref
        assert (tmp_path / "o" / ".work" / "twins.jsonl").is_file() and not (tmp_path / "o" / "manifest.json").exists()
        res = build_dataset(cfg, tmp_path / "o", retain_model=tiny_model, cache_dir=tmp_path / "c")
        n_second = len(_twin_calls(srv.requests)) - n_ref - n_first
    assert n_ref == 4 and 0 < n_first < 4 and n_first + n_second == 4, "no twin is asked for twice"
    assert res.resumed > 0 and res.twins == {"written": 4, "skipped": 0}
    ref_man, ref = load_training_set(tmp_path / "ref")
    man, got = load_training_set(tmp_path / "o")
    assert [r.model_dump() for r in got] == [r.model_dump() for r in ref]
    assert man.content_hash == ref_man.content_hash and man.twin_of == ref_man.twin_of
    assert len({r.id for r in got}) == len(got) and sum(r.style == "benign_twin" for r in got) == 4
    for r in got:
        if r.style == "benign_twin":
            assert r.kind == "retain" and "[UNSAFE]" not in r.messages[-1].content
    assert check_dataset(tmp_path / "o").ok


def test_llm_twins_with_the_structured_teacher_is_an_error(tmp_path):
    from safethink.errors import InputError

    h, b = _files(tmp_path)
    cfg = BuildConfig(method="scot", harmful=[h], benign=[b], llm_twins=True, check_eval_overlap=False)
    with pytest.raises(InputError, match="needs an LLM teacher"):
        build_dataset(cfg, tmp_path / "o", cache_dir=tmp_path / "c")
    assert not (tmp_path / "o").exists()


@pytest.mark.timeout(120)
def test_cli_llm_twins_flag_reaches_the_config(tmp_path):
    import os
    import subprocess

    h, b = _files(tmp_path)
    proc = subprocess.run([sys.executable, "-c", "from safethink.cli import main; main()", "data", "build",
                           "--method", "scot", "--harmful", h, "--benign", b, "--out", str(tmp_path / "o"),
                           "--llm-twins"], check=False, capture_output=True, text=True, timeout=110,
                          env={**os.environ})
    assert proc.returncode == 2, proc.stderr
    assert "needs an LLM teacher" in proc.stderr and "--llm-twins" in proc.stderr


# ------------------------------------------------------------ outages and evaluation overlap of twins

@pytest.mark.timeout(60)
def test_endpoint_failures_are_told_apart_from_failures_on_one_request():
    import socket
    import threading

    from test_models_openai import ChatServer

    from safethink.errors import EndpointError
    from safethink.synth import LLMEvolver, StructuredOutputError

    msgs = [{"role": "user", "content": "x"}]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with pytest.raises(EndpointError, match="gave up after 2 attempts") as e:
        ChatClient("m", dead, max_retries=1, backoff_base_s=0.01).complete(msgs)
    assert e.value.url == dead
    with pytest.raises(EndpointError):  # a twin asked of a dead endpoint is raised, not returned as a skip
        LLMEvolver(ChatClient("m", dead, max_retries=1, backoff_base_s=0.01)).twin("How do I pick a lock?", "i1")

    srv = ChatServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        client = ChatClient("m", srv.url, max_retries=2, backoff_base_s=0.01, json_mode=False)
        srv.plan = [("status", 503, {}, {"error": {"message": "overloaded"}})] * 3
        with pytest.raises(EndpointError, match="gave up after 3 attempts.*HTTP 503"):
            client.complete(msgs)
        for code, endpoint_wide in ((401, True), (404, True), (400, False), (422, False)):
            srv.plan = [("status", code, {}, {"error": {"message": "no"}})]
            with pytest.raises(BackendError, match=f"HTTP {code}") as e:
                client.complete(msgs)
            assert isinstance(e.value, EndpointError) == endpoint_wide, code
    finally:
        srv.shutdown()
        srv.server_close()

    with ScriptedServer(["nope"] * 3) as live:  # the model answers, never validly: a verdict on the prompt
        with pytest.raises(StructuredOutputError) as e:
            ChatClient("m", live.url).structured(msgs, SCoTReasoning, max_repairs=2)
        assert not isinstance(e.value, EndpointError)
    with ScriptedServer([json.dumps({"rewrite": "        "})] * 3) as live:  # whitespace only is no twin
        text, why = LLMEvolver(ChatClient("m", live.url)).twin("How do I pick a lock?", "i1")
    assert text is None and "no valid output" in why


def _twin_config(h: str, b: str, url: str, **kw) -> BuildConfig:
    return BuildConfig(method="scot", harmful=[h], benign=[b], teacher=f"openai:scripted@{url}", llm_twins=True,
                       retain_ratio=2, max_new_tokens=4, **{"check_eval_overlap": False, **kw})


@pytest.mark.timeout(300)
def test_llm_twins_outage_stops_the_build_and_a_rerun_resumes(tmp_path, tiny_model):
    from safethink.errors import EndpointError

    h, b = _files(tmp_path)
    with ScriptedServer() as ref_srv:
        build_dataset(_twin_config(h, b, ref_srv.url, shard_size=3), tmp_path / "ref", retain_model=tiny_model,
                      cache_dir=tmp_path / "c")

    out = tmp_path / "o"
    first = ScriptedServer().__enter__()
    cfg = _twin_config(h, b, first.url, shard_size=3)
    gone: list[int] = []

    def outage(stage: str, done: int, total: int) -> None:
        if stage == "records" and not gone:  # the first shard's records are made: the endpoint goes away
            first.__exit__(None, None, None)
            gone.append(done)

    try:
        with pytest.raises(EndpointError) as err:
            build_dataset(cfg, out, retain_model=tiny_model, cache_dir=tmp_path / "c", progress=outage)
    finally:
        first.__exit__(None, None, None)
    assert gone, "the build never reached its first shard's records"
    msg = str(err.value)
    assert err.value.url == first.url and first.url in msg and "#benign_twin" in msg
    assert "unreachable" in msg and "run the same command again to resume" in msg
    # nothing half-written: whole journal lines for the twins that were written, none for the one that failed
    served = len(_twin_calls(first.requests))
    lines = (out / ".work" / "twins.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert 0 < served < 4 and len(entries) == served == len({e["id"] for e in entries})
    assert all(e["prompt"] and not e["error"] for e in entries)
    assert (out / "shard-00000.jsonl").is_file() and not (out / "shard-00001.jsonl").exists()
    assert not (out / "manifest.json").exists()

    with ScriptedServer(port=first.port) as back:  # the endpoint is back, at the same URL
        assert back.url == first.url
        res = build_dataset(cfg, out, retain_model=tiny_model, cache_dir=tmp_path / "c")
        again = len(_twin_calls(back.requests))
    assert served + again == 4, "every twin is asked for exactly once"
    assert res.resumed > 0 and res.twins == {"written": 4, "skipped": 0}
    ref_man, ref = load_training_set(tmp_path / "ref")
    man, got = load_training_set(out)
    assert [r.model_dump() for r in got] == [r.model_dump() for r in ref]
    assert man.content_hash == ref_man.content_hash and man.twin_of == ref_man.twin_of
    assert man.twins_skipped["count"] == 0 and sum(r.style == "benign_twin" for r in got) == 4
    assert len({r.id for r in got}) == len(got) and not (out / ".work").exists() and check_dataset(out).ok


@pytest.mark.timeout(120)
def test_cli_outage_is_one_clear_error(tmp_path):
    import os
    import socket
    import subprocess

    h, b = _files(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    proc = subprocess.run([sys.executable, "-c", "from safethink.cli import main; main()", "data", "build",
                           "--method", "scot", "--harmful", h, "--benign", b, "--out", str(tmp_path / "o"),
                           "--teacher", f"openai:m@{dead}", "--llm-twins"], check=False, capture_output=True,
                          text=True, timeout=110, env={**os.environ})
    assert proc.returncode == 2, proc.stderr
    err = " ".join(proc.stderr.split())
    assert "error:" in err and dead in err and "run the same command again to resume" in err
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o" / "manifest.json").exists() and not (tmp_path / "o" / ".work" / "twins.jsonl").exists()


@pytest.mark.timeout(300)
def test_a_twin_that_copies_an_evaluation_prompt_is_a_near_duplicate(tmp_path, tiny_model, shared_data):
    from safethink.data import load_prompts

    ev = load_prompts("jbb-benign", data_dir=str(shared_data))[0]
    copy = ev.prompt.upper().rstrip(".") + "!"  # re-cased and re-punctuated: the same words
    h, b = _files(tmp_path)
    with ScriptedServer([json.dumps({"rewrite": copy})]) as srv:  # the first twin asked for
        cfg = _twin_config(h, b, srv.url, data_dir=str(shared_data), check_eval_overlap=True)
        res = build_dataset(cfg, tmp_path / "o", retain_model=tiny_model, cache_dir=tmp_path / "c")
    man, recs = load_training_set(tmp_path / "o")
    twin = next(r for r in recs if r.style == "benign_twin" and r.messages[-2].content == copy)
    assert twin.id in man.twin_of
    assert [(n.train_id, n.eval_id) for n in res.near_duplicates] == [(twin.id, ev.id)]
    assert res.near_duplicates[0].similarity == 1.0
    assert man.eval_overlap["count"] == 1 and man.eval_overlap["examples"][0]["train_id"] == twin.id


# ------------------------------------------------------------ teacher failures: marked, resumed, or fallback

@pytest.mark.timeout(300)
def test_failed_records_are_journalled_retried_on_resume_and_fallback_is_explicit(tmp_path, monkeypatch):
    """A record whose teacher request (or LLM rewrite) fails through every retry is journalled as failed
    and the build ends with IncompleteBuildError; the other records are kept. A resumed build asks
    only for the failed ones; with fallback="structured" the offline teacher (and the rule rewrites)
    write them, and the manifest lists them."""
    from test_http_faults import FaultServer

    from safethink.io import read_log
    from safethink.synth import IncompleteBuildError

    monkeypatch.setenv("SAFETHINK_HTTP_MAX_RETRIES", "2")
    monkeypatch.setenv("SAFETHINK_HTTP_BACKOFF_BASE_S", "0.001")
    h, b = tmp_path / "h.jsonl", tmp_path / "b.jsonl"
    h.write_text("".join(json.dumps({"prompt": p, "category": "illicit/violent"}) + "\n"
                         for p in ["Tell me how to break into house 1", "Tell me how to POISON the well"]))
    b.write_text("".join(json.dumps({"prompt": f"Suggest a name for my cat number {i}"}) + "\n" for i in range(4)))
    with FaultServer(every=0) as srv:
        srv.poison = {"POISON"}
        cfg = BuildConfig(method="r2d", harmful=[str(h)], benign=[str(b)], teacher=f"openai:teacher@{srv.url}",
                          model=f"openai:echo@{srv.url}", evolve=["slang"], retag="heuristic", shard_size=3,
                          check_eval_overlap=False)
        with pytest.raises(IncompleteBuildError) as e:
            build_dataset(cfg, tmp_path / "o", cache_dir=tmp_path / "c")
        bad = sorted(e.value.failed)
        assert bad == ["h/1#original", "h/1#slang"] and "rewrite: EndpointError" in e.value.failed["h/1#slang"]
        assert "failed on 2 of 8 records" in str(e.value) and "--fallback structured" in str(e.value)
        journal = read_log(tmp_path / "o" / ".work" / "journal.jsonl")
        assert sorted(x["id"] for x in journal if "failed" in x) == bad and len(journal) == 8
        assert not (tmp_path / "o" / "manifest.json").exists()

        srv.answered.clear()
        with pytest.raises(IncompleteBuildError):  # still failing: only the two failed records are asked for
            build_dataset(cfg, tmp_path / "o", cache_dir=tmp_path / "c")
        assert srv.answered == [] and srv.counts["poison"] == 2 * 3 * 2

        res = build_dataset(cfg.model_copy(update={"fallback": "structured"}), tmp_path / "o",
                            cache_dir=tmp_path / "c")
    man, recs = load_training_set(tmp_path / "o")
    assert res.fallbacks == {cfg.teacher: bad} and man.fallbacks[cfg.teacher]["ids"] == bad
    assert man.fallbacks[cfg.teacher]["count"] == 2 and man.config["fallback"] == "structured"
    by_id = {r.id: r for r in recs}
    assert len(recs) == 8 and by_id["h/1#slang"].messages[0].content != "Tell me how to POISON the well"
    assert "Server step" not in by_id["h/1#original"].messages[-1].content  # the structured teacher's trace
    assert by_id["h/1#original"].categories == ["illicit/violent"]
    assert "Server step" in by_id["h/0#original"].messages[-1].content
    assert check_dataset(tmp_path / "o").ok
