"""Pipeline configs: the shipped presets equal the quickstart's settings, the eval specs (and with them the stored
attempts' keys) are the ones the quickstart always wrote, bad configs are clear errors, and ``safethink run`` on
the tiny model writes the quickstart's layout and resumes with nothing answered again."""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from pathlib import Path

import pytest

from safethink.errors import InputError
from safethink.pipeline import Plan, QuickstartConfig, load_pipeline, preset_names, quickstart_sets

# Frozen copy of the quickstart's settings before they became presets (QuickstartConfig.for_mode).
_ATTACKS8 = ("none", "prefix-injection", "refusal-suppression", "style-injection", "aim", "evil-confidant",
             "past-tense", "payload-splitting")
_ATTACKS4 = ("none", "prefix-injection", "refusal-suppression", "past-tense")
FULL = {"model": "smollm2-135m", "fast": False, "seed": 0, "eval_fraction": 0.25, "eval_harmful": 16,
        "eval_benign": 12, "eval_realistic": None, "train_harmful": 60, "extra_benign_ratio": 0.5,
        "attacks": _ATTACKS8, "max_new_tokens": 160, "retain_tokens": 64, "epochs": 1.0, "evolve": "all",
        "gen_batch_size": 32, "train_overrides": {}, "probe": False, "probe_all_pairs": True,
        "probe_attacks": _ATTACKS4, "probe_tune": False, "probe_wrapper": True, "wrapper_all_pairs": False,
        "wrapper_forms": 1, "wrapper_documents": 64, "wrapper_doc_tokens": 256,
        "negatives": ("builtin:realistic-train",), "negatives_limit": None, "max_negatives_fpr": 0.02}
FAST = {**FULL, "fast": True, "eval_harmful": 2, "eval_benign": 2, "eval_realistic": 6, "train_harmful": 4,
        "attacks": _ATTACKS4, "max_new_tokens": 48, "retain_tokens": 32, "probe_all_pairs": False,
        "wrapper_forms": 3, "wrapper_documents": 16, "wrapper_doc_tokens": 128, "negatives_limit": 8}


def _frozen_spec_dicts(s: dict, out: Path) -> list[dict]:
    """Frozen copy of how the quickstart built its eval specs (rows, datasets, spec dicts) from its settings ``s``:
    the dicts whose parsed form keys every stored attempt."""
    rows = [("base", None, "none", {}), ("base + self-reminder", None, "self-reminder", {}), ("SCoT", "scot", "scot", {}),
            ("R2D", "r2d", "r2d", {}), ("R2D + pivot guard", "r2d", "r2d-pivot", {})]
    wrapper_path, probe_path = str(out / "wrapper.json"), str(out / ("probe_tuned" if s["probe_tune"] else "probe.json"))
    wrapper = [("base + wrapper probe", None, "probe", {"path": wrapper_path})] if s["probe_wrapper"] else []
    if s["probe"]:
        kind = "tuned probe" if s["probe_tune"] else "probe"
        probe = {"path": probe_path, "then": "r2d", "states": "base"}
        router = {**probe, "route": "base"}
        if wrapper:
            chain = {"path": wrapper_path, "states": "base", "then": "probe", "then_args": router}
            wrapper.append((f"wrapper + {kind} router: base / R2D", "r2d", "probe", chain))
        rows += [(f"R2D + {kind} guard", "r2d", "probe", probe), (f"{kind} router: base / R2D", "r2d", "probe", router)]
    rows += wrapper
    split = out / "splits"
    datasets = [
        {"source": str(split / "harmful_eval.jsonl"), "label": "harmful", "limit": s["eval_harmful"], "name": "held-out harmful"},
        {"source": str(split / "twins_eval.jsonl"), "label": "benign", "limit": s["eval_benign"], "name": "benign twins"},
        {"source": str(split / "benign_eval.jsonl"), "label": "benign", "limit": s["eval_benign"], "name": "ordinary"},
        {"source": str(split / "borderline_eval.jsonl"), "label": "benign", "limit": s["eval_benign"],
         "name": "safe-but-scary"},
        {"source": "builtin:realistic-test", "label": "benign", "name": "realistic",
         **({"limit": s["eval_realistic"]} if s["eval_realistic"] is not None else {})},
    ]
    specs = []
    for name, adapter, guard, args in rows:
        model = {"spec": s["model"], "name": name.split(" + ")[0],
                 **({"adapter": str(out / "runs" / adapter)} if adapter else {})}
        specs.append({"name": "quickstart", "models": [model], "defences": [{"guard": guard, "args": args, "name": name}],
                      "attacks": [{"name": a} for a in s["attacks"]], "datasets": datasets,
                      "judges": [{"name": "default", "primary": True}],
                      "generation": {"max_new_tokens": s["max_new_tokens"], "batch_size": s["gen_batch_size"]},
                      "seed": s["seed"], "out": str(out / "eval")})
    return specs


def _settings(cfg: QuickstartConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d.pop("out")
    d.pop("workers")  # how many processes run the stages, not what they compute
    return d


def test_shipped_presets_resolve_to_the_quickstart_settings_field_by_field(tmp_path):
    assert {"quickstart", "quickstart-fast"} <= set(preset_names())
    for name, frozen in (("quickstart", FULL), ("quickstart-fast", FAST)):
        got = _settings(load_pipeline(name).settings(tmp_path))
        assert list(got) == list(frozen)
        for key in frozen:
            assert got[key] == frozen[key], (name, key)
    # the quickstart's options are --set assignments; --probe-tune implies --probe
    for fast, probe, tune, wrapper, negatives in itertools.product((False, True), (False, True), (False, True),
                                                                   (False, True), ((), ("builtin:benign", "x"))):
        sets = quickstart_sets(model="hf:/m dir", seed=7, probe=probe, probe_tune=tune, probe_wrapper=wrapper,
                               negatives=negatives)
        got = _settings(load_pipeline("quickstart-fast" if fast else "quickstart", sets).settings(tmp_path))
        assert got == {**(FAST if fast else FULL), "model": "hf:/m dir", "seed": 7, "probe": probe or tune,
                       "probe_tune": tune, "probe_wrapper": wrapper, "negatives": negatives}
        assert QuickstartConfig.for_mode(tmp_path, fast=fast, model="hf:/m dir", seed=7, probe=probe, probe_tune=tune,
                                         probe_wrapper=wrapper, negatives=negatives) == load_pipeline(
            "quickstart-fast" if fast else "quickstart", sets).settings(tmp_path)


def test_eval_specs_equal_the_ones_the_quickstart_wrote(tmp_path):
    """Same spec dicts, so the same attempt keys: an output directory of the quickstart resumes as is."""
    from safethink.eval import parse_spec

    for fast, probe, tune, wrapper in itertools.product((False, True), repeat=4):
        pc = load_pipeline("quickstart-fast" if fast else "quickstart",
                           quickstart_sets(probe=probe, probe_tune=tune, probe_wrapper=wrapper))
        frozen = _frozen_spec_dicts({**(FAST if fast else FULL), "probe": probe or tune, "probe_tune": tune,
                                     "probe_wrapper": wrapper}, tmp_path)
        plan = Plan.from_config(pc, tmp_path)
        assert plan.spec_dicts() == frozen
        assert Plan.from_settings(pc.settings(tmp_path)).spec_dicts() == frozen
        assert [parse_spec(d) for d in plan.spec_dicts()] == [parse_spec(d) for d in frozen]
    assert len(frozen) == 9 and frozen[-1]["defences"][0]["name"] == "wrapper + tuned probe router: base / R2D"


def test_bad_configs_are_errors_naming_the_file_and_key(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("extends: quickstart\nname: mine\ntrain:\n  arms:\n    - {name: a, method: scot, presett: x}\n")
    with pytest.raises(InputError, match=rf"{f}: train\.arms\[0\]\.presett: unknown key"):
        load_pipeline(str(f))
    f.write_text("extends: quickstart\nname: mine\neval:\n  variants: [{name: x, adapter: nope, guard: scot}]\n")
    with pytest.raises(InputError, match=r"eval\.variants\[0\]\.adapter: no arm named 'nope'"):
        load_pipeline(str(f))
    with pytest.raises(InputError, match=r"--set probes\.wraper\.forms=2: probes\.wraper: unknown key"):
        load_pipeline("quickstart", ["probes.wraper.forms=2"])
    with pytest.raises(InputError, match="is a list of 5"):
        load_pipeline("quickstart", ["eval.datasets.5.limit=2"])
    with pytest.raises(InputError, match="unknown pipeline preset 'quikstart'.*quickstart-fast"):
        load_pipeline("quikstart")
    with pytest.raises(InputError, match=r"split:harmful_evl"):
        load_pipeline("quickstart", ["eval.datasets.0.source=split:harmful_evl"])
    with pytest.raises(InputError, match="no pipeline config file"):
        load_pipeline(str(tmp_path / "missing.yaml"))
    # a user file extends a preset: mappings merge, lists replace, --set values are read as YAML
    f.write_text("extends: quickstart-fast\nname: mine\nsplit: {train_harmful: 3}\neval: {attacks: [none]}\n")
    cfg = load_pipeline(str(f), ["eval.datasets.0.limit=5", "probes.negatives=[]"]).settings(tmp_path)
    assert (cfg.train_harmful, cfg.attacks, cfg.eval_harmful, cfg.negatives) == (3, ("none",), 5, ())
    assert (cfg.fast, cfg.eval_fraction, cfg.wrapper_forms) == (True, 0.25, 3)


def test_presets_list_describes_the_pipeline_presets_as_they_resolve(capsys, monkeypatch):
    from safethink.cli import main

    monkeypatch.setattr(sys, "argv", ["safethink", "presets", "list"])
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    for name in preset_names():
        pc = load_pipeline(name)
        cfg = pc.settings(Path("x"))
        assert f"safethink run {name}" in out and pc.description in out
        assert f"{len(cfg.attacks)} attacks" in pc.description and f"up to {cfg.max_new_tokens} tokens" in pc.description
        assert f"{cfg.train_harmful} harmful training prompts" in pc.description
        if cfg.eval_harmful:  # presets on public data (defence) hold out no seed prompts
            assert f"{cfg.eval_harmful} held-out harmful and {cfg.eval_benign} benign per set" in pc.description


@pytest.mark.timeout(900)
def test_run_a_yaml_file_on_the_tiny_model_writes_the_quickstart_layout_and_resumes(tmp_path, tiny_dir, capsys,
                                                                                     monkeypatch):
    from safethink.cli import main
    from safethink.eval import open_store

    config, out = tmp_path / "tiny.yaml", tmp_path / "out"
    config.write_text(f"""extends: quickstart
name: tiny
model: "hf:{tiny_dir}"
workers: 2
split: {{train_harmful: 2}}
data: {{evolve: none, retain_tokens: 4}}
train: {{overrides: {{max_steps: 1, batch_size: 2}}}}
probes: {{wrapper: {{enabled: false}}}}
eval:
  attacks: [none, prefix-injection]
  generation: {{max_new_tokens: 6}}
""")
    sets = ["eval.datasets.0.limit=2", "eval.datasets.1.limit=1", "eval.datasets.2.limit=1", "eval.datasets.3.limit=1",
            "eval.datasets.4.limit=2"]

    def run() -> str:
        monkeypatch.setattr(sys, "argv", ["safethink", "run", str(config), "--out", str(out),
                                          *(a for s in sets for a in ("--set", s))])
        monkeypatch.setenv("COLUMNS", "250")
        with pytest.raises(SystemExit) as e:
            main()
        assert e.value.code in (0, None)
        return capsys.readouterr().out

    first = run()
    assert "R2D + pivot guard" in first and "  prefix-injection " in first and "harmful: not refused" in first
    for path in ("splits/harmful_eval.jsonl", "data/scot", "data/r2d", "runs/scot/safethink_run.json",
                 "runs/r2d/safethink_run.json", "eval/results.sqlite", "quickstart.json", "pipeline.json"):
        assert (out / path).exists(), path
    pc = load_pipeline(str(config), sets)
    assert json.loads((out / "pipeline.json").read_text()) == pc.model_dump(mode="json")
    frozen = _frozen_spec_dicts({**FULL, "model": f"hf:{tiny_dir}", "attacks": ("none", "prefix-injection"),
                                 "max_new_tokens": 6, "eval_harmful": 2, "eval_benign": 1, "eval_realistic": 2,
                                 "probe_wrapper": False}, out)
    assert Plan.from_config(pc, out).spec_dicts() == frozen
    timings = json.loads((out / "timings.json").read_text())
    stages = list(timings["stages"])  # in the order they finished: two worker processes ran them side by side
    assert sorted(stages) == sorted(["split", "data", "train scot", "train r2d",
                                     *[f"eval {s['defences'][0]['name']}" for s in frozen], "report"])
    assert stages[:2] == ["split", "data"] and stages[-1] == "report"
    assert stages.index("eval R2D + pivot guard") > stages.index("eval R2D") > stages.index("train r2d")
    assert stages.index("eval SCoT") > stages.index("train scot")
    assert timings["machine"]["workers"] == 2
    with open_store(out / "eval") as st:
        n = st.count()
    assert n == 5 * (2 * 2 + 3 + 2)
    stamp = (out / "runs" / "r2d" / "safethink_run.json").stat().st_mtime_ns
    assert run().split("report:")[0] == first.split("report:")[0]  # the same table
    with open_store(out / "eval") as st:
        assert st.count() == n and len(st.runs()) == 10 and all(r["added"] == 0 for r in st.runs()[5:])
    assert (out / "runs" / "r2d" / "safethink_run.json").stat().st_mtime_ns == stamp


def test_a_mix_takes_per_source_limits_to_the_data_stage(tmp_path, tiny_dir, monkeypatch):
    """``limit`` / ``benign_limit`` of a mix reach the data builder: the set has exactly that many prompts."""
    from safethink.data._training import read_manifest
    from safethink.pipeline import Plan, run_plan
    from safethink.pipeline import _run as run_module

    config = tmp_path / "mix.yaml"
    config.write_text(f"""extends: quickstart
model: "hf:{tiny_dir}"
workers: 1
data:
  evolve: none
  retain_tokens: 4
  mixes:
    default:
      harmful: ["split:harmful_train"]
      benign: ["split:twins_train", "split:benign_train"]
      retain_ratio: 1.0
      limit: 3
      benign_limit: 2
train:
  arms: [{{name: scot, method: scot, preset: cpu-small, mix: default}}]
  overrides: {{max_steps: 1, batch_size: 2}}
probes: {{wrapper: {{enabled: false}}}}
eval:
  variants: [{{name: base, guard: none}}]
""")
    pc = load_pipeline(str(config))
    plan = Plan.from_config(pc, tmp_path / "out")
    class Stop(Exception):
        pass

    def stop(spec, progress=None):
        raise Stop  # only the data and training stages: stop before evaluation

    monkeypatch.setattr(run_module, "run_evaluation", stop)
    with pytest.raises(Stop):
        run_plan(plan)
    counts = read_manifest(tmp_path / "out" / "data" / "scot").counts
    assert counts["by_kind"]["refusal"] == 3
    assert sum(v for k, v in counts["by_kind"].items() if k != "refusal") == 3  # 1:1 retain, from 2 + 2 benign
