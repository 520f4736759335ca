"""Training entry point for the multi-process tests (run by `accelerate launch` or plainly).

    python ddp_train_worker.py SPEC.json

SPEC: {"config": {...TrainConfig overrides}, "model": "hf:DIR", "data": DIR, "out": DIR,
       "crash_after_save": bool}. Every rank writes ``OUT.rank<N>.json`` with the SHA-256 of the
trained pivot/think token rows as that rank holds them after training (and the rows themselves).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from transformers import TrainerCallback

from safethink.train import load_train_config, train


class Crash(Exception):
    pass


class RowsAtEnd(TrainerCallback):
    """Records this rank's copy of the added-token rows (PEFT ``trainable_tokens_delta``)."""

    def __init__(self, path: Path, crash_after_save: bool):
        self.path, self.crash_after_save = path, crash_after_save

    def on_save(self, args, state, control, **kw):
        if self.crash_after_save:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # every rank has written its part of the checkpoint
            raise Crash(f"stopped after the checkpoint at step {state.global_step}")

    def on_train_end(self, args, state, control, model=None, **kw):
        import torch.distributed as dist
        from accelerate.state import AcceleratorState
        from torch.distributed.tensor import DTensor

        def local(p):  # FSDP2 holds each parameter as a DTensor shard: hash this rank's shard
            return (p.to_local() if isinstance(p, DTensor) else p).detach().float().cpu()

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        rows = {n: local(p) for n, p in model.named_parameters() if "trainable_tokens_delta" in n}
        if not rows:  # no PEFT token rows (SCoT): hash every trainable parameter instead
            rows = {n: local(p) for n, p in model.named_parameters() if p.requires_grad}
        sharded = any(isinstance(p, DTensor) for p in model.parameters())
        digest = hashlib.sha256()
        for n in sorted(rows):
            digest.update(n.encode() + rows[n].contiguous().numpy().tobytes())
        delta = [v.tolist() for n, v in sorted(rows.items()) if "trainable_tokens_delta" in n]
        self.path.with_name(f"{self.path.name}.rank{rank}.json").write_text(json.dumps(
            {"rank": rank, "world_size": dist.get_world_size() if dist.is_initialized() else 1,
             "distributed_type": str(AcceleratorState().distributed_type), "sharded": sharded,
             "sha256": digest.hexdigest(), "token_rows": delta}))


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    cfg = load_train_config(overrides=spec["config"])
    out = Path(spec["out"])
    try:
        train(cfg, model=spec["model"], data=spec["data"], out=out, keep_checkpoints=True,
              callbacks=[RowsAtEnd(out, spec.get("crash_after_save", False))])
    except Crash:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
