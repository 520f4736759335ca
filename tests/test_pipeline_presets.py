"""The shipped ``defence`` and ``ablations`` pipeline presets: they load, resolve into eval specs the eval
parser accepts, are listed, and declare the arms and rows the benchmark scripts (benchmarks/defence.py,
benchmarks/ablations.py) expect; the scripts' options map onto valid ``--set`` assignments."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from safethink.cli import app
from safethink.eval import parse_spec
from safethink.pipeline import TRANSFORM_ATTACKS, Plan, load_pipeline, preset_names

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    sys.path.insert(0, str(BENCH))  # the scripts import _record from their folder
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def defence():
    return _script("defence")


@pytest.fixture(scope="module")
def ablations():
    return _script("ablations")


@pytest.mark.parametrize("name", ["defence", "ablations"])
def test_preset_resolves_into_specs_the_eval_parser_accepts(name, tmp_path):
    pc = load_pipeline(name)
    assert pc.name == name and pc.description
    plan = Plan.from_config(pc, tmp_path)
    dicts = plan.spec_dicts()
    assert [d["defences"][0]["name"] for d in dicts] == [v.name for v in plan.variants]
    for d in dicts:
        spec = parse_spec(d, source=name)  # attack, guard and judge names are checked here
        assert spec.out == str(tmp_path / "eval")
    for v in plan.variants:  # every row's adapter is an arm the run trains
        assert v.adapter is None or v.adapter in {a.name for a in plan.arms}


def test_presets_are_listed_and_shown():
    assert {"defence", "ablations"} <= set(preset_names())
    runner = CliRunner()
    listed = runner.invoke(app, ["presets", "list"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    for name in ("defence", "ablations"):  # each on one line of the table, whole
        assert f"safethink run {name}" in listed.output and load_pipeline(name).description in listed.output
    for name in ("defence", "ablations"):
        shown = runner.invoke(app, ["run", name, "--show", "--set", "eval.generation.max_new_tokens=8"])
        assert shown.exit_code == 0, shown.output
        cfg = yaml.safe_load(shown.output)
        assert cfg["name"] == name and cfg["eval"]["generation"]["max_new_tokens"] == 8
        assert cfg == load_pipeline(name, ["eval.generation.max_new_tokens=8"]).model_dump(mode="json")


def test_defence_preset_is_what_the_script_ran(defence, tmp_path):
    pc = load_pipeline("defence")
    assert tuple(pc.eval.attacks) == TRANSFORM_ATTACKS
    assert [(d.source, d.name) for d in pc.eval.datasets if d.label == "harmful"] == [("jbb-harmful", "JBB harmful")]
    assert {d.source: d.name for d in pc.eval.datasets if d.label == "benign"} == defence.BENIGN_SETS
    assert {j["name"] for j in pc.eval.judges} == {"default", "keyword-gcg"}
    assert [a.name for a in pc.train.arms] == ["scot", "r2d"]
    assert not pc.probes.intent.enabled and not pc.probes.wrapper.enabled
    assert [v.name for v in Plan.from_config(pc, tmp_path).variants] == [
        "base", "base + self-reminder", "SCoT", "R2D", "R2D + pivot guard"]
    # the declared retain ratio is the one the script's default sample sizes give
    mix = pc.data.mixes["default"]
    args = defence.parse_args([])
    assert mix.retain_ratio == defence.train_retain_ratio(len(mix.benign), args.benign_per_source, args.train_harmful)


def test_defence_options_map_onto_the_preset(defence, tmp_path):
    sets = defence.preset_sets(defence.parse_args(
        ["--probe", "--attacked", "jbb-harmful,strongreject", "--eval-limit", "3", "--benign-limit", "2",
         "--attacks", "none,base64", "--variants", "base,R2D + probe guard", "--out", str(tmp_path)]))
    pc = load_pipeline("defence", sets)
    plan = Plan.from_config(pc, tmp_path)
    assert [v.name for v in plan.variants] == ["base", "R2D + probe guard"]
    assert plan.variants[1].guard_args["path"] == str(tmp_path / "probe.json")
    assert [(d["name"], d.get("limit")) for d in plan.datasets] == [
        ("JBB harmful", 3), ("StrongREJECT", 3), ("JBB benign", 2), ("XSTest safe", 2), ("Alpaca (held out)", 2),
        ("realistic (held out)", None)]
    assert pc.eval.attacks == ["none", "base64"] == pc.probes.intent.attacks and pc.probes.intent.enabled
    with pytest.raises(SystemExit, match="unknown"):
        defence.preset_sets(defence.parse_args(["--variants", "R2D + probe guard"]))  # needs --probe


def test_ablations_preset_rows_are_the_scripts_arms(ablations, tmp_path):
    pc = load_pipeline("ablations")
    declared = [v.name for v in pc.eval.variants]
    assert declared == [n for n in ablations.ROWS.values() if n is not None]
    assert not {r["adapter"] for _, r in ablations.CODE_ARMS.values()} & {a.name for a in pc.train.arms}
    names = [v.name for v in Plan.from_config(pc, tmp_path).variants]
    assert "R2D + probe guard" in names and "base / R2D router (probe)" in names
    overrides = {a.name: a.overrides for a in pc.train.arms}
    assert overrides["r2d-nocpo"] == {"cpo_weight": 0.0} and overrides["scot-full"]["full_ft"] is True
    assert pc.data.mixes["ratio-1"].retain_ratio == 1.0 and pc.data.mixes["ratio-1"].tag == "-ratio-1"


def test_ablations_options_map_onto_the_preset(ablations, tmp_path):
    probe = tmp_path / "p.json"
    probe.write_text("{}")
    args = ablations.parse_args(["--arms", "base,scot,r2d-probe,scot-notwins", "--train-seed", "2", "--probe",
                                 str(probe), "--eval-harmful", "4", "--attacks", "none"])
    sets, rows, used = ablations.plan_rows(args)
    assert [k for k, _ in rows] == ["base", "scot", "scot-notwins", "r2d-probe"]  # table order
    pc = load_pipeline("ablations", [*sets, *ablations.preset_sets(rows, used)])
    assert [a.name for a in pc.train.arms] == ["scot-seed2", "r2d-seed2"]  # scot-notwins is trained by the script
    assert all(a.overrides["seed"] == 2 for a in pc.train.arms)
    variants = Plan.from_config(pc, tmp_path).variants
    assert [v.name for v in variants] == ["base", "SCoT (train seed 2)", "R2D + probe guard (train seed 2)"]
    assert variants[2].guard_args["path"] == str(probe) and not pc.probes.intent.enabled
    assert pc.eval.datasets[0].limit == 4 and pc.eval.attacks == ["none"]
    with pytest.raises(SystemExit, match="unknown arm"):
        ablations.plan_rows(ablations.parse_args(["--arms", "scot,nope"]))
