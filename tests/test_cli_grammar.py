"""One option grammar across the whole CLI: ``--out`` where a command writes, ``--arg KEY=VALUE`` for plugin
options, ``--dtype``, repeatable lists that also take comma lists, old spellings kept as hidden deprecated
aliases, and a ``list`` subcommand for every registry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer

from safethink.cli import app
from safethink.cli._common import either, parse_pairs, split_ints, split_list
from safethink.errors import SpecError

pytestmark = pytest.mark.timeout(300)

WRITING_COMMANDS = ("data build", "train", "merge", "generate", "judge", "eval", "report", "probe fit", "probe eval",
                    "quickstart")
"""Every command that writes files: each takes the output path as --out (short: -o)."""

DEPRECATED = {"--output", "--precision", "--guard-arg", "--judge-arg", "--param", "-p"}
"""Old spellings: still accepted, never shown in --help."""


def commands(group=None, prefix: str = "") -> dict:
    """Every leaf command of the CLI by its full name ("probe fit"), as typer builds it."""
    group = group or typer.main.get_command(app)
    found = {}
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        if getattr(cmd, "commands", None):
            found.update(commands(cmd, full + " "))
        else:
            found[full] = cmd
    return found


def option(cmd, decl: str):
    """The option of ``cmd`` that ``decl`` (``--out``, ``-o``) names, or None."""
    return next((p for p in cmd.params if p.param_type_name == "option" and decl in [*p.opts, *p.secondary_opts]),
                None)





def answers(tmp_path: Path) -> Path:
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps({"prompt": "p", "response": "I can’t do that."}) + "\n", encoding="utf-8")
    return path


# -- the grammar, command by command ---------------------------------------------------------------

def test_every_writing_command_takes_out_and_o():
    cmds = commands()
    for name in WRITING_COMMANDS:
        opt = option(cmds[name], "--out")
        assert opt is not None and not opt.hidden, f"{name}: no --out"
        assert "-o" in opt.opts, f"{name}: --out has no -o"


def test_old_spellings_are_hidden_everywhere_and_no_visible_option_uses_them():
    for name, cmd in commands().items():
        for p in cmd.params:
            if p.param_type_name == "option" and set(p.opts) & DEPRECATED:
                assert p.hidden, f"{name}: {p.opts} shows in --help"
        if name == "probe eval":
            assert option(cmd, "--json").hidden  # its old spelling of --out
    visible_dtype = [n for n, c in commands().items() if (o := option(c, "--dtype")) is not None and not o.hidden]
    assert sorted(visible_dtype) == ["generate", "merge", "serve", "train"]


def test_plugin_commands_take_arg():
    cmds = commands()
    for name in ("attacks apply", "serve", "judge"):
        opt = option(cmds[name], "--arg")
        assert opt is not None and opt.multiple and not opt.hidden, name


# -- what the options do ---------------------------------------------------------------------------

def test_judge_writes_out_and_arg_reaches_the_judge(tmp_path, cli):
    out = tmp_path / "sub" / "judged.jsonl"
    code, _, err = cli("judge", "--judge", "keyword-xstest", "--arg", "fold_apostrophes=true",
                       "--input", str(answers(tmp_path)), "-o", str(out))
    assert code == 0, err
    row = json.loads(out.read_text(encoding="utf-8"))
    # The curly apostrophe only matches the XSTest phrase "I can't" when the argument reached the judge.
    assert row["refused"] is True and row["judge"] == "keyword-xstest?fold_apostrophes=true"
    assert "deprecated" not in err


def test_attack_arg_reaches_the_attack(cli):
    code, out, err = cli("attacks", "apply", "--attack", "base64", "--prompt", "Bake bread", "--arg", "mode=both",
                         "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["params"] == {"mode": "both"}
    import base64

    assert base64.b64encode(b"Bake bread").decode() in got["messages"][0]["content"]


def test_guard_arg_reaches_the_guard_before_any_model_loads(cli):
    code, _, err = cli("serve", "--guard", "r2d-pivot", "--arg", "on_unsafe=explode")
    assert code == 2 and "on_unsafe" in err and "r2d-pivot" in err


def test_generate_writes_out(tmp_path, cli):
    script = tmp_path / "script.jsonl"
    script.write_text(json.dumps({"text": "Hello there."}) + "\n", encoding="utf-8")
    out = tmp_path / "one.jsonl"
    code, _, err = cli("generate", "--model", f"mock:{script}", "--prompt", "hi", "--out", str(out))
    assert code == 0, err
    row = json.loads(out.read_text(encoding="utf-8"))
    assert row["response"] == "Hello there." and row["messages"] == [{"role": "user", "content": "hi"}]


def test_arg_errors_name_the_option(tmp_path, cli):
    code, _, err = cli("attacks", "apply", "--attack", "base64", "--prompt", "x", "--arg", "mode")
    assert code == 2 and "--arg 'mode': expected key=value" in err
    code, _, err = cli("judge", "--judge", "keyword-gcg", "--arg", "phrases_file=a", "--arg", "phrases_file=b",
                       "--input", str(answers(tmp_path)), "--out", str(tmp_path / "o.jsonl"))
    assert code == 2 and "--arg 'phrases_file' given twice" in err


def test_lists_take_repeats_and_comma_lists(tmp_path, cli):
    assert split_list(["a", "b,c", " d , ,e"]) == ["a", "b", "c", "d", "e"]
    assert split_list(None) == [] and split_ints(["1", "3,5"], "--layer") == [1, 3, 5]
    with pytest.raises(SpecError, match=r"--layer '1,x'"):
        split_ints(["1", "x"], "--layer")
    # Both forms reach the command as one list: the unknown format is found wherever it was given.
    for args in (["--export", "jsonl,xml"], ["--export", "jsonl", "--export", "xml"]):
        code, _, err = cli("report", str(tmp_path), *args)
        assert code == 2 and "--export 'xml'" in err, err


def test_dtype_takes_one_vocabulary(cli, tmp_path):
    from safethink.cli._train import train_precision

    assert [train_precision(d) for d in ("bfloat16", "bf16", "float16", "float32", "auto", None)] == [
        "bf16", "bf16", "fp16", "fp32", "auto", None]
    code, _, err = cli("train", "--method", "sft", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                       "--dtype", "float8")
    assert code == 2 and "--dtype 'float8'" in err


# -- deprecated spellings --------------------------------------------------------------------------

def test_deprecated_spellings_work_and_warn(tmp_path, cli):
    out = tmp_path / "judged.jsonl"
    code, _, err = cli("judge", "--judge", "keyword-xstest", "--judge-arg", "fold_apostrophes=true",
                       "--input", str(answers(tmp_path)), "--output", str(out))
    assert code == 0, err
    assert json.loads(out.read_text(encoding="utf-8"))["judge"] == "keyword-xstest?fold_apostrophes=true"
    warnings = [line for line in err.splitlines() if "deprecated" in line]
    assert sorted(warnings) == ["warning: --judge-arg is deprecated; use --arg",
                                "warning: --output is deprecated; use --out"]

    code, out_text, err = cli("attacks", "apply", "--attack", "base64", "--prompt", "x", "-p", "mode=both", "--json")
    assert code == 0 and json.loads(out_text)["params"] == {"mode": "both"}
    assert err.strip() == "warning: --param is deprecated; use --arg"

    code, _, err = cli("train", "--method", "sft", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                       "--precision", "float8")
    assert code == 2 and "--precision is deprecated; use --dtype" in err and "--dtype 'float8'" in err


def test_old_and_new_spelling_together_or_neither(tmp_path, cli):
    inp = str(answers(tmp_path))
    code, _, err = cli("judge", "--judge", "keyword-gcg", "--input", inp, "--out", str(tmp_path / "a.jsonl"),
                       "--output", str(tmp_path / "b.jsonl"))
    assert code == 2 and "--out given twice" in err
    code, _, err = cli("judge", "--judge", "keyword-gcg", "--input", inp)
    assert code == 2 and "missing option --out" in err
    with pytest.raises(SpecError, match="missing option --out"):
        either(None, None, "--out", required=True)
    assert either(["a"], ["b"], "--arg") == ["a", "b"] and parse_pairs(["k=[1, 2]"]) == {"k": [1, 2]}


def test_top_level_guards_still_lists_with_a_warning(cli):
    from safethink.guard import GUARDS

    code, out, err = cli("guards")
    assert code == 0 and err.strip() == "warning: `safethink guards` is deprecated; use `safethink guards list`"
    assert all(name in out for name in GUARDS.names())
    assert "guards" not in commands()  # a group now, with `list` under it
    assert "guards list" in commands()


# -- one `list` per registry -----------------------------------------------------------------------

def _names_in_first_column(out: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^│ (\S+)", out, re.M)}


def test_list_subcommands_print_the_registry_names(cli):
    from safethink.attacks import ATTACKS
    from safethink.guard import GUARDS
    from safethink.judges import JUDGES

    for group, names in (("attacks", ATTACKS.names()), ("guards", GUARDS.names()), ("judges", JUDGES.names())):
        code, out, err = cli(group, "list")
        assert code == 0, err
        assert set(names) <= _names_in_first_column(out), group
    code, out, _ = cli("models", "list")
    assert code == 0 and {"smollm2-135m", "hf:<hub", "openai:<model>@<url>"} <= _names_in_first_column(out)


def test_judges_list_says_what_each_measures_and_its_validated_agreement(cli):
    from safethink.judges import JUDGES, judge_measures, judge_validation

    code, out, _ = cli("judges", "list")
    assert code == 0
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^│ (\S+) .*$", out, re.M)}
    validated = 0
    for name in JUDGES.names():
        assert f"│ {judge_measures(name)} " in rows[name], name
        found = judge_validation(name)
        if found and found.get("held_out_agreement") is not None:
            validated += 1
            assert f"{100 * found['held_out_agreement']:.1f}%" in rows[name], name
        else:
            assert "unvalidated" in rows[name], name
    assert validated >= 1 and "harm" in out and "refusal" in out


def test_presets_list_shows_train_presets_and_quickstart_modes(cli):
    from safethink.pipeline import QuickstartConfig
    from safethink.train import PRESETS

    code, out, _ = cli("presets", "list")
    assert code == 0
    for name in PRESETS:
        assert f"safethink train --preset {name}" in out
    assert "safethink quickstart --fast" in out
    fast = QuickstartConfig.for_mode(Path("x"), fast=True)
    full = QuickstartConfig.for_mode(Path("x"), fast=False)
    assert f"{len(fast.attacks)} attacks" in out and f"{len(full.attacks)} attacks" in out
    assert f"up to {full.max_new_tokens} tokens" in out
