"""Typed configs: YAML + dotted overrides through OmegaConf, and rejection of configs that cannot work."""

import pytest

from tau_train import ConfigError, TrainConfig, config_to_yaml, load_config, validate_config


def test_yaml_and_dotted_overrides(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(
        "steps: 50\noptimizer:\n  lr: 0.001\nparam_groups:\n  - patterns: ['head.*']\n    lr: 0.01\n"
    )
    config = load_config(path, ["optimizer.lr=3e-4", "ema.enabled=true", "freeze=[backbone.*]"])
    assert isinstance(config, TrainConfig)
    assert config.steps == 50 and config.optimizer.lr == 3e-4 and config.ema.enabled
    assert config.param_groups[0].patterns == ["head.*"] and config.param_groups[0].lr == 0.01
    assert config.freeze == ["backbone.*"]


def test_yaml_round_trip(tmp_path):
    config = load_config(None, ["steps=7", "lora.enabled=true", "logging.wandb.project=x"])
    path = tmp_path / "saved.yaml"
    path.write_text(config_to_yaml(config))
    assert load_config(path) == config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optimzer.lr=1"], "optimzer"),
        (["steps=many"], "steps"),
        (["ema.decay=[1]"], "decay"),
    ],
)
def test_bad_keys_and_types_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "overrides, world_size, message",
    [
        (
            ["batch_size=10", "gradient_accumulation_steps=4"],
            1,
            "batch_size \\(10\\) must be a positive multiple",
        ),
        (["batch_size=8", "gradient_accumulation_steps=2"], 3, "processes \\(3\\)"),
        (["mixed_precision=fp8"], 1, "mixed_precision"),
        (["schedule.warmup_steps=20", "steps=10"], 1, "decay_steps"),
        (["ema.enabled=true", "ema.decay=1.5"], 1, "ema.decay"),
        (["optimizer.lr=0"], 1, "optimizer.lr"),
        (["param_groups=[{patterns: []}]"], 1, "param_groups\\[0\\].patterns"),
    ],
)
def test_unworkable_configs_are_rejected(overrides, world_size, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(load_config(None, overrides), world_size)


def test_yaml_no_is_not_taken_for_a_precision(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("mixed_precision: no\n")
    with pytest.raises(ConfigError, match="mixed_precision must be one of .*fp32"):
        validate_config(load_config(path))


def test_defaults_are_valid():
    validate_config(TrainConfig(), world_size=8)
