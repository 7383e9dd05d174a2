"""The configuration of `apps/train`: a tau-data mixture, a tau-models policy and a tau-train run, in one YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from tau_train import TrainConfig

PRESETS = ("default", "libero", "libero-tiny", "mixture")


@dataclass
class ModelSection:
    """Which policy to train: a preset size, optionally started from a checkpoint (folder or hub id)."""

    preset: str = "tiny_pi05"  # tiny_pi05 | tiny_pi0 | pi05 | pi0
    pretrained: str | None = None  # tau / LeRobot / OpenTau checkpoint to fine-tune (weights and config)
    # Prompt tokenizer: a hub id or folder; "local" trains a small one on the dataset's tasks, beside the run.
    tokenizer: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # PiConfig fields, e.g. {chunk_size: 10}


@dataclass
class DemoSection:
    """Scripted tau-sim demonstrations written to the first dataset's path when it does not exist yet."""

    suite: str = "tabletop"
    episodes_per_task: int = 20
    seed: int = 0
    action_noise: float = 0.0
    mistake_rate: float = 0.0


@dataclass
class ValidationSection:
    """Hold out whole episodes of every dataset for validation (tau_data.split_episodes); the schedule, batch
    limit and keep-best metric are `train.validation`."""

    fraction: float = 0.1
    seed: int = 0


@dataclass
class TrainAppConfig:
    """One `apps/train` run. The mixture's image size, chunk and padded dims follow the model's config."""

    data: dict[str, Any] = field(default_factory=dict)  # a tau-data MixtureConfig (datasets, cameras, ...)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    num_workers: int = 2
    demos: DemoSection | None = None
    validation: ValidationSection | None = None
    # The simulator observation entry the state comes from, in demos and when acting: "state" (end-effector), or
    # on the tabletop tasks "privileged" (end-effector plus object and target positions).
    state_key: str = "state"
    # The weights of the exported policy: "auto" (EMA when train.ema.enabled, else the raw weights), "raw" or
    # "ema"; LoRA adapters are merged into the base weights either way (tau_train.export).
    export_weights: str = "auto"
    export_from: str = "final"  # "final": the trained model; "best": train.validation.keep_best's weights


def preset_path(name: str) -> Path:
    """The YAML file of a bundled preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return Path(str(files(__package__) / "presets" / f"{name}.yaml"))
