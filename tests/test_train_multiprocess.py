"""Multi-process training for real on the CPU: `accelerate launch` with 2 processes (DDP over gloo)
against one process with the same global batch, on the tiny model, SCoT and R2D with CPO.

Launch form: `accelerate launch --multi_gpu --num_processes 2` (torchrun). On a machine without
CUDA, safethink asks accelerate for a CPU process group (gloo). `accelerate launch --cpu
--num_processes 2` is not used: in accelerate 1.15 it starts a single process unless an MPI
hostfile is given (see docs/training.md).

Tolerance: the 2-process run computes the same sums as one process with 2 micro-batches of
gradient accumulation (token-normalised CE over the whole global batch; CPO a per-micro-batch mean
in both), so only the order of fp32 additions differs (all-reduce vs accumulation, batches padded to
different lengths). Over 4 AdamW steps that moves losses by about 1e-6 relative; 1e-4 leaves room
for other BLAS builds while still catching any real difference (a wrong batch or normalisation moves
the loss by 1e-2 or more). Both ranks must hold bit-identical token rows: DDP gives every rank the
same averaged gradient and the optimizer step is deterministic.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from test_train_run import write_set  # noqa: E402

WORKER = Path(__file__).with_name("ddp_train_worker.py")
ACCELERATE_DIR = Path(__file__).resolve().parents[1] / "src" / "safethink" / "train" / "accelerate"
STEPS, PER_DEVICE, PROCS = 4, 2, 2

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")]


def _config(method: str, grad_accum: int) -> dict:
    return dict(method=method, batch_size=PER_DEVICE, grad_accum=grad_accum, max_length=128, lora_r=4, lora_alpha=8,
                lora_dropout=0.0, logging_steps=1, save_steps=2, lr=5e-3, lr_scheduler="constant", seed=0,
                max_steps=STEPS, new_token_lr_scale=1.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(root: Path, name: str, method: str, *, procs: int, model: str, crash_after_save: bool = False,
           config_file: Path | None = None) -> subprocess.CompletedProcess:
    """Train ``root/name`` on ``procs`` processes with a global batch of PER_DEVICE x PROCS."""
    spec = root / f"{name}.json"
    spec.write_text(json.dumps({"config": _config(method, grad_accum=PROCS // procs), "model": model,
                                "data": str(root / f"data-{method}"), "out": str(root / name),
                                "crash_after_save": crash_after_save}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    if procs == 1:
        cmd = [sys.executable, str(WORKER), str(spec)]
    else:
        where = ["--config_file", str(config_file)] if config_file else ["--multi_gpu"]
        cmd = ["accelerate", "launch", *where, "--num_processes", str(procs), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               str(WORKER), str(spec)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=200)
    if proc.returncode != (0 if not crash_after_save else proc.returncode):
        pytest.fail(f"{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def losses(run: Path) -> list[float]:
    return [h["loss"] for h in json.loads((run / "loss_curve.json").read_text()) if "loss" in h]


def ranks(root: Path, name: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob(f"{name}.rank*.json"))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dir):
    """Each method trained on 1 process (grad_accum 2) and on 2 processes (grad_accum 1)."""
    root = tmp_path_factory.mktemp("multiprocess")
    model = f"hf:{tiny_dir}"
    for method in ("scot", "r2d"):
        write_set(root / f"data-{method}", method, n=16)
        launch(root, f"{method}-one", method, procs=1, model=model)
        launch(root, f"{method}-ddp", method, procs=PROCS, model=model)
    return root, model


@pytest.mark.parametrize("method", ["scot", "r2d"])
def test_two_processes_train_like_one_with_the_same_global_batch(runs, method):
    root, _ = runs
    one, ddp = losses(root / f"{method}-one"), losses(root / f"{method}-ddp")
    assert len(one) == len(ddp) == STEPS
    assert ddp == pytest.approx(one, rel=1e-4)
    assert ddp[-1] < ddp[0]
    (single,), pair = ranks(root, f"{method}-one"), ranks(root, f"{method}-ddp")
    assert single["world_size"] == 1
    assert [r["world_size"] for r in pair] == [PROCS, PROCS] and [r["rank"] for r in pair] == [0, 1]
    assert {r["distributed_type"] for r in pair} == {"DistributedType.MULTI_CPU"}
    assert pair[0]["sha256"] == pair[1]["sha256"]  # every rank holds the same trained weights
    info = json.loads((root / f"{method}-ddp" / "safethink_run.json").read_text())
    assert info["steps"] == STEPS


def test_pivot_rows_are_trained_identically_on_both_ranks(runs):
    root, _ = runs
    (single,), pair = ranks(root, "r2d-one"), ranks(root, "r2d-ddp")
    rows = [torch.tensor(r["token_rows"][0]) for r in (*pair, single)]
    assert rows[0].shape[0] == 5  # [SAFE] [UNSAFE] [RETHINK] <think> </think>
    assert rows[0].abs().sum() > 0
    assert torch.equal(rows[0], rows[1])
    assert torch.allclose(rows[0], rows[2], atol=1e-5)  # and as one process trains them


@pytest.mark.parametrize("method, first, then", [("r2d", PROCS, 1), ("scot", 1, PROCS)])
def test_a_checkpoint_resumes_on_the_other_setup(runs, method, first, then):
    """Stop after the step-2 checkpoint on one setup, finish on the other: the same run as uninterrupted."""
    root, model = runs
    name = f"{method}-{first}to{then}"
    stopped = launch(root, name, method, procs=first, model=model, crash_after_save=True)
    assert stopped.returncode != 0 and (root / name / "checkpoints" / "checkpoint-2").is_dir()
    assert not (root / name / "safethink_run.json").exists()
    launch(root, name, method, procs=then, model=model)
    info = json.loads((root / name / "safethink_run.json").read_text())
    assert info["resumed_from"].endswith("checkpoint-2") and info["steps"] == STEPS
    assert losses(root / name) == pytest.approx(losses(root / f"{method}-one"), rel=1e-4)
    done = ranks(root, name)
    assert len(done) == then and len({r["sha256"] for r in done}) == 1
    if method == "r2d":
        reference = torch.tensor(ranks(root, "r2d-one")[0]["token_rows"][0])
        assert torch.allclose(torch.tensor(done[0]["token_rows"][0]), reference, atol=1e-5)


def test_fsdp_config_on_cpu_trains_as_data_parallel(runs):
    """fsdp.yaml on a machine without GPUs: accelerate 1.15 makes a CPU (gloo) process group and does
    not shard, so the run is plain DDP, with the same losses; safethink logs a warning saying so."""
    root, model = runs
    proc = launch(root, "r2d-fsdp", "r2d", procs=PROCS, model=model, config_file=ACCELERATE_DIR / "fsdp.yaml")
    assert "FSDP / DeepSpeed need GPUs" in proc.stderr
    assert losses(root / "r2d-fsdp") == pytest.approx(losses(root / "r2d-one"), rel=1e-4)
    pair = ranks(root, "r2d-fsdp")
    assert [r["sharded"] for r in pair] == [False, False] and pair[0]["sha256"] == pair[1]["sha256"]


@pytest.mark.parametrize("path", sorted(ACCELERATE_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_accelerate_configs_parse(path):
    """Each file is read by accelerate's own loader (an unknown key fails there)."""
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType

    cfg = load_config_from_file(str(path))
    assert isinstance(cfg, ClusterConfig) and cfg.num_machines == 1 and cfg.mixed_precision == "bf16"
    expected = {"ddp": DistributedType.MULTI_GPU, "fsdp": DistributedType.FSDP,
                "deepspeed-zero2": DistributedType.DEEPSPEED, "deepspeed-zero3": DistributedType.DEEPSPEED}
    assert cfg.distributed_type == expected[path.stem]
    if path.stem == "fsdp":
        assert cfg.fsdp_config["fsdp_version"] == 2
    if path.stem.startswith("deepspeed"):
        assert cfg.deepspeed_config["zero_stage"] == int(path.stem[-1])


def test_every_shipped_accelerate_config_is_tested():
    assert {p.stem for p in ACCELERATE_DIR.glob("*.yaml")} == {"ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"}
