"""Training config: YAML validation, presets, layering."""

from __future__ import annotations

import pytest

from safethink.errors import InputError
from safethink.train import PRESETS, TrainConfig, load_train_config, preset_values


def test_unknown_key_in_yaml_is_an_error_naming_file_and_key(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("lr: 0.001\nlora_rank: 8\n")
    with pytest.raises(InputError, match=r"cfg\.yaml.*lora_rank: unknown key"):
        load_train_config(config_file=f)


def test_bad_value_and_bad_yaml(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("rethink_loss: sometimes\n")
    with pytest.raises(InputError, match="rethink_loss"):
        load_train_config(config_file=f)
    f.write_text("lr: [unclosed\n")
    with pytest.raises(InputError, match="bad YAML"):
        load_train_config(config_file=f)


def test_layering_preset_then_file_then_overrides(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("lr: 0.001\nepochs: 5\n")
    cfg = load_train_config(preset="r2d-paper", config_file=f, overrides={"epochs": 1.5, "lora_r": None})
    assert cfg.lora_r == 64 and cfg.lora_alpha == 64  # preset
    assert cfg.lr == 0.001  # file over preset
    assert cfg.epochs == 1.5  # override over file; None overrides are ignored
    assert cfg.lora_targets == ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_are_valid(name):
    TrainConfig.model_validate(preset_values(name))


def test_paper_presets_match_the_papers():
    scot, r2d = preset_values("scot-paper"), preset_values("r2d-paper")
    assert (scot["lora_r"], scot["lora_dropout"], scot["lr"], scot["epochs"]) == (64, 0.1, 2e-5, 3)
    assert scot["lora_targets"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (r2d["lora_r"], r2d["lora_alpha"], r2d["lora_dropout"], r2d["lr"], r2d["warmup_ratio"]) == (64, 64, 0.05, 2e-4, 0.02)
    assert r2d["batch_size"] * r2d["grad_accum"] == 32 and r2d["max_length"] == 4096


def test_unknown_preset():
    with pytest.raises(InputError, match="unknown preset"):
        load_train_config(preset="gpu-huge")
