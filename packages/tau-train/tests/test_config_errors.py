"""Malformed YAML files and dotted overrides give one ConfigError line naming the file or the override."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tau_train import ConfigError, TrainConfig, load_config


@dataclass
class AppLike:
    """A config with a free-form data section holding a list, like apps/train's."""

    data: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)


YAML_CASES = {
    "syntax error": ("steps: [1, 2\n", r"not valid YAML at line 2"),
    "tab indent": ("optimizer:\n\tlr: 0.1\n", r"not valid YAML at line 2, column 1: .*(indent with spaces, not tabs)"),
    "top-level list": ("- steps: 3\n- seed: 1\n", r"must hold a mapping .* got a list"),
    "top-level scalar": ("just text\n", r"Key 'just text' not in 'TrainConfig'"),
    "unknown key": ("stepz: 3\n", r"stepz"),
    "wrong type": ("steps: many\n", r"steps: .*many"),
}


@pytest.mark.parametrize("name", sorted(YAML_CASES))
def test_malformed_yaml_is_one_line_naming_the_file(tmp_path: Path, name: str) -> None:
    text, message = YAML_CASES[name]
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert "\n" not in str(caught.value)
    assert str(path) in str(caught.value)


def test_list_items_are_overridden_by_index(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text("data:\n  datasets:\n    - {path: a, weight: 1}\n    - {path: b, weight: 2}\n")
    config = load_config(path, ["data.datasets[0].path=/data/x", "data.datasets.1.weight=0.5", "train.steps=9"],
                         schema=AppLike)
    assert config.data["datasets"] == [{"path": "/data/x", "weight": 1}, {"path": "b", "weight": 0.5}]
    assert config.train.steps == 9


@pytest.mark.parametrize(("override", "message"), [
    ("data.datasets[3].path=x", r"override 'data.datasets\[3\].path=x': .*index out of range"),
    ("train.stepz=3", r"override 'train.stepz=3': .*stepz"),
    ("train.steps", r"override 'train.steps' is not of the form key=value"),
    ("train.steps=abc", r"train.steps: .*abc"),
])
def test_bad_overrides_are_one_line(tmp_path: Path, override: str, message: str) -> None:
    path = tmp_path / "app.yaml"
    path.write_text("data:\n  datasets:\n    - {path: a}\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path, [override], schema=AppLike)
    assert "\n" not in str(caught.value)


def test_keep_best_needs_a_validation_schedule():
    from tau_train import ConfigError, TrainConfig, ValidationConfig, validate_config

    with pytest.raises(ConfigError, match="validation.keep_best='val/loss' needs validation.every_steps > 0"):
        validate_config(TrainConfig(validation=ValidationConfig(keep_best="val/loss")))
