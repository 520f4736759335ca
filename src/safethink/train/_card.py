"""The run card (README.md) of a training run directory."""

from __future__ import annotations

import json
from typing import Any

_METHOD = {
    "scot": "SCoT (Safety Chain-of-Thought): assistant-only cross-entropy, retain examples weighted by lambda",
    "r2d": "R2D (Reasoning-to-Defend): cross-entropy + Contrastive Pivot Optimization on [SAFE]/[UNSAFE]",
    "sft": "plain supervised fine-tuning (assistant-only cross-entropy)",
}


def run_card(info: dict[str, Any]) -> str:
    """Markdown describing how the run was made and how to use it."""
    cfg = info["config"]
    stats = info.get("data_stats") or {}
    trained = "LoRA adapter" if info["adapter"] else "full fine-tune (all weights)"
    use = (f"safethink generate --model {info['base_model']} --adapter RUN_DIR --prompt \"...\""
           if info["adapter"] else "safethink generate --model hf:RUN_DIR --prompt \"...\"")
    lines = [
        f"# safethink run: {info['method']} on {info['base_model']}",
        "",
        f"- Method: {_METHOD[info['method']]}",
        f"- Base model: `{info['base_model']}` ({info['base_model_path']})",
        f"- Trained: {trained}; precision {info['precision']}",
        f"- Data: manifest hash `{info['data_manifest_hash']}`; {stats.get('examples')} examples "
        f"({stats.get('dropped_too_long')} dropped as too long, {stats.get('truncated')} truncated), "
        f"{stats.get('trained_tokens')} trained tokens per epoch",
        f"- Steps: {info['steps']}; loss {info['first_loss']} -> {info['final_loss']}; {info['seconds']} s",
        "",
        "## Use",
        "",
        "```",
        use,
        "safethink merge RUN_DIR --out MERGED_DIR" if info["adapter"] else "",
        "```",
        "",
        "## Resolved config",
        "",
        "```json",
        json.dumps(cfg, indent=2),
        "```",
        "",
        "Loss curve: `loss_curve.json` (the trainer's log history).",
        "",
    ]
    return "\n".join(lines)
