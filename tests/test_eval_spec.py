"""Eval spec validation: unknown keys are errors and every error names the YAML path."""

from __future__ import annotations

from pathlib import Path

import pytest

from safethink.errors import SpecError
from safethink.eval import load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

GOOD = """
name: t
models:
  - spec: smollm2-135m
attacks:
  - name: none
  - name: base64
    args: {mode: both}
datasets:
  - source: jbb-harmful
    limit: 5
judges:
  - name: keyword-gcg
  - name: default
    primary: true
generation: {max_new_tokens: 32, batch_size: 4}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


def test_good_spec_defaults_and_overrides(tmp_path):
    s = load_spec(write(tmp_path, GOOD))
    assert s.primary_judge.name == "default"
    assert [d.guard for d in s.defences] == ["none"]
    assert s.store_path == Path("runs/eval/results.sqlite")
    assert s.attacks[1].key == '{"args":{"mode":"both"},"name":"base64"}'
    o = s.with_overrides(out=str(tmp_path / "o"), limit=2)
    assert o.datasets[0].limit == 2 and o.store_path == tmp_path / "o" / "results.sqlite"
    assert s.with_overrides(limit=50).datasets[0].limit == 5  # --limit only ever lowers a limit


@pytest.mark.parametrize("edit,expected", [
    (("    args: {mode: both}", "    args: {mode: both}\n    seeed: 3"), r"attacks\[1\]\.seeed: unknown key"),
    (("generation: {max_new_tokens: 32", "generation: {max_tokens: 32"), r"generation\.max_tokens: unknown key"),
    (("    limit: 5", "    limit: 0"), r"datasets\[0\]\.limit: Input should be greater than or equal to 1"),
    (("  - spec: smollm2-135m", "  - adapter: x"), r"models\[0\]\.spec: required field is missing"),
    (("  - spec: smollm2-135m", "  - spec: gpt-5"), r"models\[0\]\.spec: .*unknown model spec 'gpt-5'"),
    (("name: t", "name: t\nmodel: []"), r"model: unknown key"),
    (("    limit: 5", "    label: harmfull"), r"datasets\[0\]\.label: Input should be 'harmful' or 'benign'"),
    (("  - name: keyword-gcg", "  - name: keyword-gcg\n    primary: true"), r"only one judge may be primary"),
    (("  - name: none\n", "  - name: none\n  - name: none\n"), r"attacks: duplicate entries"),
])
def test_malformed_specs_name_the_bad_field(tmp_path, edit, expected):
    assert edit[0] in GOOD
    p = write(tmp_path, GOOD.replace(edit[0], edit[1], 1))
    with pytest.raises(SpecError, match=expected) as e:
        load_spec(p)
    assert str(p) in str(e.value)


def test_bad_yaml_names_the_line(tmp_path):
    p = write(tmp_path, "models:\n  - spec: [unclosed\nattacks: x\n")
    with pytest.raises(SpecError, match=r"spec\.yaml:\d+: not valid YAML"):
        load_spec(p)


def test_not_a_mapping_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(SpecError, match="no such eval spec file"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match=r"models: required field is missing"):
        parse_spec({"attacks": [{"name": "none"}], "datasets": [{"source": "x"}]})


def test_example_spec_is_valid():
    s = load_spec(EXAMPLES / "eval_jbb.yaml")
    assert len([a for a in s.attacks if a.name != "none"]) >= 10
    sources = {d.source for d in s.datasets}
    assert {"jbb-harmful", "jbb-benign"} <= sources and any(x.startswith("xstest") for x in sources)
