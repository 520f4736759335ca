"""The quickstart's held-out split: deterministic, twin pairs on one side, no train/eval overlap."""

from __future__ import annotations

import dataclasses
import json

import pytest

from safethink.pipeline import QuickstartConfig, _retain_ratio, split_seed_set, split_sources


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_split_keeps_pairs_together_and_never_overlaps(tmp_path):
    cfg = QuickstartConfig(out=tmp_path / "a", train_harmful=40)
    splits = split_seed_set(cfg)
    h_tr, t_tr = _rows(splits["harmful_train"]), _rows(splits["twins_train"])
    h_ev, t_ev = _rows(splits["harmful_eval"]), _rows(splits["twins_eval"])
    assert len(h_tr) == len(t_tr) == 40
    # every held-out harmful prompt's twin is held out too, and nothing held out is trained on
    assert [int(h["id"].split("-")[1]) for h in h_ev] == [int(t["id"].split("-")[1]) for t in t_ev]
    assert [t["twin_of"] for t in t_tr + t_ev] == [h["id"] for h in h_tr + h_ev]  # pairs are named
    for kind in ("harmful", "twins", "benign", "borderline"):
        train = {r["prompt"] for r in _rows(splits[f"{kind}_train"])}
        held = {r["prompt"] for r in _rows(splits[f"{kind}_eval"])}
        assert train and held and not train & held, kind
    assert {r["label"] for r in h_tr + h_ev} == {"harmful"}
    assert {r["label"] for r in t_tr + t_ev} == {"benign"}
    # every policy category is represented among the held-out harmful prompts
    assert len({r["category"] for r in h_ev}) == 8
    # the retain ratio keeps every benign training prompt
    harmful, benign = split_sources(splits)
    n_benign = sum(len(_rows(splits[k])) for k in ("twins_train", "borderline_train", "benign_train"))
    assert _retain_ratio(splits) * len(h_tr) == n_benign and len(benign) == 3 and len(harmful) == 1


def test_split_is_deterministic_and_seeded(tmp_path):
    a = split_seed_set(QuickstartConfig(out=tmp_path / "a"))
    b = split_seed_set(QuickstartConfig(out=tmp_path / "b"))
    c = split_seed_set(QuickstartConfig(out=tmp_path / "c", seed=1))
    assert a["harmful_eval"].read_text() == b["harmful_eval"].read_text()
    assert a["harmful_eval"].read_text() != c["harmful_eval"].read_text()


def test_eval_specs_name_registered_plugins(tmp_path):
    import safethink.attacks  # noqa: F401 - registers the attacks
    import safethink.guard  # noqa: F401 - registers the guards
    from safethink.attacks import ATTACKS
    from safethink.guard import GUARDS
    from safethink.pipeline import DEFAULT_ATTACKS, VARIANTS, eval_specs, split_eval_datasets

    cfg = QuickstartConfig.for_mode(tmp_path, fast=True)
    splits = split_seed_set(cfg)
    runs = {"scot": tmp_path / "runs" / "scot", "r2d": tmp_path / "runs" / "r2d"}
    specs = eval_specs(cfg, split_eval_datasets(cfg, splits), runs)
    assert [s.defences[0].guard for s in specs] == [v.guard for v in VARIANTS]
    assert all(a in ATTACKS for a in DEFAULT_ATTACKS) and len(DEFAULT_ATTACKS) >= 8
    assert QuickstartConfig.for_mode(tmp_path, fast=False).attacks == DEFAULT_ATTACKS
    assert set(cfg.attacks) < set(DEFAULT_ATTACKS)  # --fast: a subset, for time
    assert all(v.guard in GUARDS for v in VARIANTS)
    assert {s.out for s in specs} == {str(tmp_path / "eval")}
    assert [s.models[0].adapter for s in specs] == [None, None, str(runs["scot"]), str(runs["r2d"]), str(runs["r2d"])]
    assert [d.name for d in specs[0].datasets][-1] == "realistic"


def test_quickstart_evaluates_the_held_out_realistic_requests(tmp_path):
    """All 86 of builtin:realistic-test (a sample with --fast) are a benign set of every row, sent with their
    history; none of them is in the seed split or among the probes' negatives."""
    from safethink.attacks import ATTACKS
    from safethink.eval._plan import load_dataset
    from safethink.pipeline import REALISTIC_TEST, eval_specs, split_eval_datasets

    full, fast = QuickstartConfig.for_mode(tmp_path, fast=False), QuickstartConfig.for_mode(tmp_path, fast=True)
    splits = split_seed_set(full)
    runs = {"scot": tmp_path / "s", "r2d": tmp_path / "r"}
    loaded = {}
    for cfg, n in ((fast, 6), (full, 86)):
        specs = eval_specs(cfg, split_eval_datasets(cfg, splits), runs, cfg.variants())
        for spec in specs:
            entry = [d for d in spec.datasets if d.name == "realistic"]
            assert len(entry) == 1 and entry[0].source == REALISTIC_TEST and entry[0].label == "benign"
        loaded[n] = load_dataset(entry[0], "realistic", cfg.seed)
        assert len(loaded[n]) == n and {r.meta["split"] for r in loaded[n]} == {"test"}
    records = loaded[86]
    sent = ATTACKS.create("none").prepare(records, seed=0)
    assert sum(1 for r in records if r.history) > 10
    assert [a.messages for a in sent] == [r.messages() for r in records]  # the history goes with the request
    seeds = {row["prompt"] for p in splits.values() for row in _rows(p)}
    assert not seeds & {r.prompt for r in records}
    assert all(REALISTIC_TEST not in c.negatives for c in (full, fast)) and full.negatives == ("builtin:realistic-train",)


def test_data_variant_and_cached_training_on_the_tiny_model(tmp_path, tiny_dir):
    """A tagged data variant lands next to the default sets, evolution adds rewritten harmful prompts,
    and a finished run is reused instead of retrained."""
    from safethink.data._training import read_manifest
    from safethink.pipeline import build_training_sets, train_adapter

    cfg = QuickstartConfig(out=tmp_path, model=f"hf:{tiny_dir}", train_harmful=3, extra_benign_ratio=1.0,
                           retain_tokens=4, evolve="role_play", train_overrides={"max_steps": 1, "batch_size": 2})
    splits = split_seed_set(cfg)
    harmful, benign = split_sources(splits)
    data = build_training_sets(cfg, harmful, benign, retain_ratio=1.0, methods=("scot",), tag="-x")
    assert list(data) == ["scot"] and data["scot"] == tmp_path / "data" / "scot-x"
    assert not (tmp_path / "data" / "r2d-x").exists()
    counts = read_manifest(data["scot"]).counts
    assert counts["by_kind"]["refusal"] == 6  # 3 originals + 3 role-play rewrites
    assert counts["by_style"]["role_play"] == 3

    run = train_adapter(cfg, "scot", data["scot"], tmp_path / "runs" / "scot-x")
    card = run / "safethink_run.json"
    first = card.read_text()
    assert json.loads(first)["steps"] == 1
    assert train_adapter(cfg, "scot", data["scot"], run, {"lr": 1.0}) == run
    assert card.read_text() == first


def test_eval_specs_load_a_full_fine_tuning_run_as_the_model(tmp_path):
    from safethink.pipeline import Variant, eval_specs, split_eval_datasets

    cfg = QuickstartConfig.for_mode(tmp_path, fast=True)
    splits = split_seed_set(cfg)
    full, lora = tmp_path / "runs" / "full", tmp_path / "runs" / "lora"
    full.mkdir(parents=True)
    lora.mkdir(parents=True)
    (full / "config.json").write_text("{}")
    (lora / "adapter_config.json").write_text("{}")
    specs = eval_specs(cfg, split_eval_datasets(cfg, splits), {"full": full, "lora": lora},
                       (Variant("F", "full", "scot"), Variant("L", "lora", "scot")))
    assert (specs[0].models[0].spec, specs[0].models[0].adapter) == (f"hf:{full}", None)
    assert (specs[1].models[0].spec, specs[1].models[0].adapter) == (cfg.model, str(lora))


def test_probe_stage_fits_once_and_adds_the_probe_variant(tmp_path, tiny_dir):
    from safethink.guard import GUARDS
    from safethink.probes import RequestProbe
    from safethink.pipeline import VARIANTS, eval_specs, fit_quickstart_probe, split_eval_datasets

    cfg = QuickstartConfig(out=tmp_path, model=f"hf:{tiny_dir}", train_harmful=4, extra_benign_ratio=0.5,
                           probe_attacks=("none", "prefix-injection"), probe=True, probe_all_pairs=False,
                           probe_wrapper=False, negatives_limit=6)
    splits = split_seed_set(cfg)
    seen = []
    path = fit_quickstart_probe(cfg, splits, lambda what, done, total: seen.append((what, done, total)))
    probe = RequestProbe.load(path)
    # 4 harmful + 4 twins + 2 ordinary + 2 safe-but-scary training prompts, each under both attacks, and 6
    # realistic requests as sent
    assert (probe.metrics["n_harmful"], probe.metrics["n_benign"]) == (8, 16 + 6)
    assert probe.metrics["fitted_on"]["attacks"] == ["none", "prefix-injection"]
    assert probe.metrics["fitted_on"]["negatives"] == ["builtin:realistic-train"]
    assert probe.metrics["negatives"]["n"] == 6 and probe.metrics["negatives"]["max_fpr"] == 0.02
    assert ("probe: hidden states", 30, 30) in seen
    first = path.read_text()
    assert fit_quickstart_probe(cfg, splits) == path and path.read_text() == first  # cached
    fit_quickstart_probe(dataclasses.replace(cfg, negatives=()), splits)
    assert "negatives" not in RequestProbe.load(path).metrics, "fitted with other negatives: refitted"
    other = dataclasses.replace(cfg, probe_attacks=("none",))
    seen.clear()
    fit_quickstart_probe(other, splits, lambda what, done, total: seen.append((what, done, total)))
    assert RequestProbe.load(path).metrics["fitted_on"]["attacks"] == ["none"], "fitted on other attacks: refitted"
    assert any("fitting it again" in what for what, _, _ in seen)
    fit_quickstart_probe(cfg, splits)
    assert RequestProbe.load(path).metrics["fitted_on"]["attacks"] == ["none", "prefix-injection"]

    variants = cfg.variants()
    assert variants[:-2] == VARIANTS and [v.guard for v in variants[-2:]] == ["probe", "probe"]
    specs = eval_specs(cfg, split_eval_datasets(cfg, splits), {"scot": tmp_path / "s", "r2d": tmp_path / "r"}, variants)
    gated, router = (GUARDS.create(s.defences[0].guard, **s.defences[0].args) for s in specs[-2:])
    assert gated.states == "base" and gated.then == "r2d" and gated.probe.layer == probe.layer
    assert gated.route == "none" and router.route == "base" and router.then == "r2d"
    assert router.probe.route_threshold is not None and router.probe.route_threshold <= router.probe.threshold
    assert QuickstartConfig(out=tmp_path, probe_wrapper=False).variants() == VARIANTS
    # by default: no intent probe, the wrapper probe in front of the base model
    assert [v.name for v in QuickstartConfig(out=tmp_path).variants()] == [*(v.name for v in VARIANTS),
                                                                           "base + wrapper probe"]


@pytest.mark.timeout(300)
def test_probe_tune_fits_a_tuned_probe_and_names_its_rows(tmp_path, tiny_dir):
    from safethink.guard import GUARDS
    from safethink.probes import TunedProbe
    from safethink.pipeline import VARIANTS, eval_specs, fit_quickstart_probe, split_eval_datasets

    cfg = QuickstartConfig(out=tmp_path, model=f"hf:{tiny_dir}", train_harmful=4, extra_benign_ratio=0.5,
                           probe_attacks=("none",), probe=True, probe_tune=True, probe_all_pairs=False,
                           probe_wrapper=False, negatives=())
    splits = split_seed_set(cfg)
    seen = []
    path = fit_quickstart_probe(cfg, splits, lambda what, done, total: seen.append((what, done, total)))
    assert path == tmp_path / "probe_tuned" and not (tmp_path / "probe.json").exists()
    probe = TunedProbe.load(path)
    assert (probe.metrics["n_harmful"], probe.metrics["n_benign"]) == (4, 8)
    steps = [d for w, d, _ in seen if w == "probe: tuning steps"]
    assert steps[-1] == probe.metrics["steps"] > 0
    stamp = (path / "probe.json").stat().st_mtime_ns
    assert fit_quickstart_probe(cfg, splits) == path and (path / "probe.json").stat().st_mtime_ns == stamp  # cached

    variants = cfg.variants()
    assert variants[:-2] == VARIANTS
    assert [v.name for v in variants[-2:]] == ["R2D + tuned probe guard", "tuned probe router: base / R2D"]
    specs = eval_specs(cfg, split_eval_datasets(cfg, splits), {"scot": tmp_path / "s", "r2d": tmp_path / "r"}, variants)
    router = GUARDS.create(specs[-1].defences[0].guard, **specs[-1].defences[0].args)
    assert isinstance(router.probe, TunedProbe) and router.route == "base"
    fast = QuickstartConfig.for_mode(tmp_path, fast=True, probe_tune=True)
    assert fast.probe and fast.probe_tune and fast.probe_path == tmp_path / "probe_tuned"


def test_spare_pairs_are_the_unused_training_pairs(tmp_path):
    from safethink.pipeline import _spare_pairs

    cfg = QuickstartConfig(out=tmp_path, train_harmful=4)
    splits = split_seed_set(cfg)
    h, t = (_rows(p) for p in _spare_pairs(cfg, splits))
    taken = {r["prompt"] for p in splits.values() for r in _rows(p)}
    held = len(_rows(splits["harmful_eval"]))
    assert len(h) == len(t) == 212 - held - 4  # every pair that is neither held out nor trained on
    assert not taken & {r["prompt"] for r in h + t}
    assert [r["twin_of"] for r in t] == [r["id"] for r in h]
    assert QuickstartConfig.for_mode(tmp_path, fast=True).probe_all_pairs is False


@pytest.mark.timeout(300)
def test_probe_wrapper_fits_a_wrapper_probe_on_the_split_and_adds_its_rows(tmp_path, tiny_dir):
    from safethink.guard import GUARDS
    from safethink.probes import RequestProbe
    from safethink.pipeline import (
        PLAIN_ATTACKS, VARIANTS, WRAPPER_ATTACKS, eval_specs, fit_quickstart_wrapper, split_eval_datasets,
    )

    cfg = QuickstartConfig(out=tmp_path, model=f"hf:{tiny_dir}", train_harmful=4, extra_benign_ratio=0.5,
                           probe_wrapper=True, wrapper_documents=6, wrapper_doc_tokens=200, negatives_limit=5)
    splits = split_seed_set(cfg)
    seen = []
    path = fit_quickstart_wrapper(cfg, splits, lambda what, done, total: seen.append((what, done, total)))
    probe = RequestProbe.load(path)
    fitted = probe.metrics["fitted_on"]
    requests = fitted["harmful_requests"] + fitted["benign_requests"]
    assert probe.target == "wrapper" and path == tmp_path / "wrapper.json"
    assert requests == 4 + 4 + 2 + 2  # the split's training requests only: no spare pairs by default
    forms = requests * (1 + len(PLAIN_ATTACKS)) + 5 * 2  # and 5 realistic requests, wrapped once and as sent
    docs = fitted["documents"]
    states = [(done, total) for what, done, total in seen if what == "wrapper probe: hidden states"]
    assert states[-1] == (forms + docs, forms + 6)  # the total counts the 6 documents asked for
    assert 0 < docs <= 6 and fitted["documents_asked"] == 6 and fitted["document_tokens"] == 200
    assert fitted["negatives"] == ["builtin:realistic-train"] and fitted["negative_requests"] == 5
    assert (probe.metrics["n_harmful"], probe.metrics["n_benign"]) == (
        requests + 5, len(PLAIN_ATTACKS) * requests + docs + 5)
    assert probe.metrics["negatives"]["n"] == 5
    assert set(fitted["attacks"]) == {*WRAPPER_ATTACKS, *PLAIN_ATTACKS} and fitted["forms_per_request"] == 1
    stamp = path.stat().st_mtime_ns
    assert fit_quickstart_wrapper(cfg, splits) == path and path.stat().st_mtime_ns == stamp  # cached
    # another setting is fitted again: two wrapper forms per request
    two = dataclasses.replace(cfg, wrapper_forms=2)
    fit_quickstart_wrapper(two, splits)
    assert RequestProbe.load(path).metrics["n_harmful"] == 2 * (requests + 5)

    assert cfg.variants() == (*VARIANTS, cfg.variants()[-1]) and cfg.variants()[-1].name == "base + wrapper probe"
    both = QuickstartConfig(out=tmp_path, probe=True, probe_wrapper=True).variants()
    assert [v.name for v in both[len(VARIANTS):]] == [
        "R2D + probe guard", "probe router: base / R2D", "base + wrapper probe", "wrapper + probe router: base / R2D"]
    # the wrapper probe guard in front, the probe router behind it: two probe guards chained, both reading the
    # base model's states
    chain = both[-1].guard_args
    assert chain["path"] == str(tmp_path / "wrapper.json") and chain["then"] == "probe" and chain["states"] == "base"
    assert chain["then_args"] == both[-3].guard_args and chain["then_args"]["route"] == "base"
    specs = eval_specs(cfg, split_eval_datasets(cfg, splits), {"scot": tmp_path / "s", "r2d": tmp_path / "r"},
                       cfg.variants())
    guard = GUARDS.create(specs[-1].defences[0].guard, **specs[-1].defences[0].args)
    assert guard.probe.target == "wrapper"
    assert QuickstartConfig.for_mode(tmp_path, fast=True).probe_wrapper
    assert not QuickstartConfig.for_mode(tmp_path, fast=False, probe_wrapper=False).probe_wrapper


@pytest.mark.timeout(900)
def test_the_whole_job_on_the_tiny_model_times_each_stage_and_resumes_from_its_cache(tmp_path, tiny_dir):
    """Every stage runs, its wall time lands in timings.json, and a second run answers nothing again."""
    from safethink.eval import open_store
    from safethink.pipeline import run_quickstart

    cfg = QuickstartConfig(out=tmp_path, model=f"hf:{tiny_dir}", train_harmful=2, extra_benign_ratio=0.5,
                           eval_harmful=2, eval_benign=1, eval_realistic=2, retain_tokens=4, max_new_tokens=6,
                           evolve="none", attacks=("none", "prefix-injection"), probe_wrapper=False,
                           train_overrides={"max_steps": 1, "batch_size": 2},
                           workers=1)  # stages one after another, so they add up to the total (test_pipeline: 2)
    (rows, attacks, sets), files = run_quickstart(cfg)
    assert [r.variant for r in rows] == ["base", "base + self-reminder", "SCoT", "R2D", "R2D + pivot guard"]
    assert attacks == ["none", "prefix-injection"] and "realistic" in sets and files.html.is_file()
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert list(timings["stages"]) == ["split", "data", "train scot", "train r2d", *[f"eval {r.variant}" for r in rows],
                                       "report"]
    # one after another, the stages add up to at most the total (each time is rounded to 0.1 s)
    assert timings["total_seconds"] >= sum(timings["stages"].values()) - 0.05 * len(timings["stages"])
    assert timings["machine"]["auto_dtype"] in ("float32", "bfloat16")
    with open_store(tmp_path / "eval") as st:
        n = st.count()
        shared = st.conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    # the pivot guard watches R2D's own answers: one generation serves both rows
    assert n == 5 * (2 * 2 + 3 + 2) and shared < n
    again, _ = run_quickstart(cfg)
    assert again[0] == rows
    with open_store(tmp_path / "eval") as st:
        assert st.count() == n and len(st.runs()) == 10  # five runs, each added nothing the second time
        assert all(r["added"] == 0 for r in st.runs()[5:])
