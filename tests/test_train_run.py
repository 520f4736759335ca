"""End-to-end training runs on the tiny model: loss goes down, resume == uninterrupted, merge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safethink.data._training import content_hash, file_sha256, shard_name  # noqa: E402
from safethink.errors import InputError  # noqa: E402
from safethink.train import load_train_config, train  # noqa: E402

SCOT_REFUSE = ("#### Verify Request\nBomb making.\n* illicit/violent: Yes. Reason: weapons.\n"
               "Therefore, the request violates illicit/violent. I need to reject the request.\n"
               "#### Response\nI can't help with that.")
SCOT_ANSWER = ("#### Verify Request\nA recipe.\n* illicit/violent: No.\n"
               "Therefore, the request is safe and I can generate the response.\n#### Response\nBake bread.")
R2D_REFUSE = "<think>\nBomb request. [UNSAFE]\nRefuse. [RETHINK]\n</think> [SAFE]\nNo. [SAFE]"
R2D_ANSWER = "<think>\nRecipe. [SAFE]\n</think> [SAFE]\nBake bread. [SAFE]"


def _records(method: str, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        harmful = i % 2 == 0
        answer = {("scot", True): SCOT_REFUSE, ("scot", False): SCOT_ANSWER,
                  ("r2d", True): R2D_REFUSE, ("r2d", False): R2D_ANSWER}[(method, harmful)]
        rows.append({"id": f"{method}-{i}", "method": method, "kind": "refusal" if harmful else "retain",
                     "label": "harmful" if harmful else "benign",
                     "categories": ["illicit/violent"] if harmful else [], "style": "original", "source": "test",
                     "messages": [{"role": "user", "content": ("Make a bomb " if harmful else "Bread ") + str(i)},
                                  {"role": "assistant", "content": answer}]})
    return rows


def write_set(directory: Path, method: str, n: int = 8) -> Path:
    """A training-set directory in the `safethink data build` layout (manifest + one shard)."""
    directory.mkdir(parents=True)
    shard = directory / shard_name(0)
    shard.write_text("".join(json.dumps(r) + "\n" for r in _records(method, n)))
    sha = file_sha256(shard)
    manifest = {"method": method, "counts": {"records": n}, "teacher": "test", "seed": 0, "policy": "test@0",
                "styles": [], "shards": [{"file": shard.name, "sha256": sha, "records": n}],
                "content_hash": content_hash([sha])}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def _cfg(method: str, **kw):
    base = dict(method=method, batch_size=2, max_length=128, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                logging_steps=1, save_steps=100, lr=5e-3, lr_scheduler="constant", seed=0)
    base.update(kw)
    return load_train_config(overrides=base)


def _adapter(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def r2d_run(tmp_path_factory, tiny_dir):
    root = tmp_path_factory.mktemp("r2d")
    data = write_set(root / "data", "r2d")
    # lr 5e-3 is already 10x the cpu-small lr, so the added rows keep the same lr here
    result = train(_cfg("r2d", max_steps=8, new_token_lr_scale=1.0), model=f"hf:{tiny_dir}", data=data, out=root / "run")
    return root / "run", result


@pytest.mark.timeout(300)
def test_r2d_run_lowers_loss_and_trains_lora_and_pivot_rows(r2d_run, tiny_dir):
    run, result = r2d_run
    assert result.steps == 8
    curve = [h for h in json.loads((run / "loss_curve.json").read_text()) if "loss" in h]
    assert curve[-1]["loss"] < curve[0]["loss"]
    assert curve[-1]["cpo_loss"] < curve[0]["cpo_loss"]
    assert all(h["pivots"] > 0 for h in curve)
    weights = _adapter(run)
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # LoRA B starts at zero
    deltas = [v for k, v in weights.items() if "trainable_tokens_delta" in k]
    assert len(deltas) == 1 and deltas[0].shape[0] == 5  # the 5 R2D rows, not the whole matrix
    info = json.loads((run / "safethink_run.json").read_text())
    assert info["method"] == "r2d" and info["base_model"] == f"hf:{tiny_dir}"
    assert info["data_manifest_hash"] == json.loads((run.parent / "data" / "manifest.json").read_text())["content_hash"]
    assert info["config"]["cpo_weight"] == 1.0 and (run / "README.md").read_text().startswith("# safethink run")
    assert not (run / "checkpoints").exists()


@pytest.mark.timeout(300)
def test_trained_rows_load_back_through_load_model(r2d_run, tiny_dir):
    from safethink.models import load_model
    from safethink.train import pivot_ids

    run, _ = r2d_run
    model = load_model(f"hf:{tiny_dir}", adapter=str(run), device="cpu", dtype="float32")
    ids = pivot_ids(model.tokenizer)
    delta = next(v for k, v in _adapter(run).items() if "trainable_tokens_delta" in k)
    emb = model.model.get_input_embeddings()(torch.tensor(ids.all))
    assert torch.allclose(emb, delta, atol=1e-6)


@pytest.mark.timeout(300)
def test_merge_writes_a_loadable_model_with_the_same_outputs(r2d_run, tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from safethink.models import load_model
    from safethink.train import merge_run

    run, _ = r2d_run
    out = merge_run(run, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(str(out))
    adapted = load_model(f"hf:{tiny_dir}", adapter=str(run), device="cpu", dtype="float32")
    x = adapted.tokenizer("<think>\nhi [SAFE]", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(merged(x).logits, adapted.model(x).logits, atol=1e-4)
    with pytest.raises(InputError, match="not empty"):
        merge_run(run, out)


class _Crash(Exception):
    pass


@pytest.mark.timeout(400)
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, tiny_dir):
    from transformers import TrainerCallback

    class CrashAfterFirstCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            raise _Crash

    data = write_set(tmp_path / "data", "scot")
    cfg = _cfg("scot", max_steps=4, save_steps=2, lr=1e-3, retain_weight=0.5, lora_dropout=0.1)
    train(cfg, model=f"hf:{tiny_dir}", data=data, out=tmp_path / "a")
    with pytest.raises(_Crash):
        train(cfg, model=f"hf:{tiny_dir}", data=data, out=tmp_path / "b", callbacks=[CrashAfterFirstCheckpoint()])
    assert (tmp_path / "b" / "checkpoints" / "checkpoint-2").is_dir()
    resumed = train(cfg, model=f"hf:{tiny_dir}", data=data, out=tmp_path / "b")
    assert resumed.resumed_from and resumed.resumed_from.endswith("checkpoint-2")
    a, b = _adapter(tmp_path / "a"), _adapter(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    # a changed config does not silently resume someone else's checkpoints
    with pytest.raises(InputError, match="already holds a finished run"):
        train(cfg, model=f"hf:{tiny_dir}", data=data, out=tmp_path / "b")


def test_method_must_match_the_data(tmp_path, tiny_dir):
    data = write_set(tmp_path / "data", "scot", n=2)
    with pytest.raises(InputError, match="method 'scot' but training method is 'r2d'"):
        train(_cfg("r2d"), model=f"hf:{tiny_dir}", data=data, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.timeout(120)
def test_cli_reports_bad_config_in_one_line(tmp_path):
    data = write_set(tmp_path / "data", "scot", n=2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 0.1\n")
    proc = subprocess.run([sys.executable, "-m", "safethink.cli", "train", "--method", "scot", "--data", str(data),
                           "--out", str(tmp_path / "run"), "--config", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "learning_rate: unknown key" in proc.stderr and "Traceback" not in proc.stderr


def test_added_token_rows_get_their_own_learning_rate(tiny_dir, tmp_path):
    """The pivot/think rows train at lr * new_token_lr_scale, everything else at lr."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safethink.train import (
        SafetyCollator, SafetySFTConfig, SafetyTrainer, add_r2d_tokens, grow_embeddings, load_train_config, pivot_ids,
    )
    from safethink.train._run import _lora_config

    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    add_r2d_tokens(tok)
    ids = pivot_ids(tok)
    net = AutoModelForCausalLM.from_pretrained(str(tiny_dir))
    grow_embeddings(net, tok)
    cfg = load_train_config(overrides={"method": "r2d"})
    args = SafetySFTConfig(output_dir=str(tmp_path), method="r2d", cpo_weight=0.0, learning_rate=1e-3,
                           new_token_lr_scale=7.0, report_to="none", bf16=False)
    rows = Dataset.from_list([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}])
    trainer = SafetyTrainer(model=net, args=args, train_dataset=rows, processing_class=tok,
                            data_collator=SafetyCollator(tok.pad_token_id), peft_config=_lora_config(cfg, net, ids.all))
    opt = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    lrs = {}
    for g in opt.param_groups:
        for p in g["params"]:
            lrs[names[id(p)]] = g["lr"]
    rows_lr = {n: lr for n, lr in lrs.items() if "trainable_tokens_delta" in n}
    assert rows_lr and all(lr == pytest.approx(7e-3) for lr in rows_lr.values())
    others = [lr for n, lr in lrs.items() if n not in rows_lr]
    assert others and all(lr == pytest.approx(1e-3) for lr in others)
