"""Building, saving and loading the two models of a RECAP run: the pi0.5 policy (with the normaliser it acts
through) and the distributional value model, both from tau-models."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tau_data.normalize import Normalizer
from tau_models import PiConfig, PiModel, ValueConfig, ValueModel, from_pretrained, save_pretrained
from tau_models.config import pi05_config, tiny_pi05_config
from tau_models.value import tiny_value_config, value_config

from tau_rl.conditioning import ConditioningMode, model_conditioning
from tau_rl.layout import write_json_atomic


def new_policy(preset: str, overrides: dict[str, Any]) -> PiModel:
    """A freshly initialised pi0.5 ("full" or "tiny" sizes) with PiConfig overrides."""
    if preset not in ("full", "tiny"):
        raise ValueError(f"policy preset must be 'full' or 'tiny', got {preset!r}")
    build = tiny_pi05_config if preset == "tiny" else pi05_config
    return PiModel(build(**overrides))


def load_policy(checkpoint: str | Path, overrides: dict[str, Any] | None = None) -> PiModel:
    """A pi0.5 from a tau / LeRobot / OpenTau checkpoint folder or hub id, with optional PiConfig overrides."""
    model = from_pretrained(checkpoint)
    if overrides:
        model.config = dataclasses.replace(model.config, **overrides)
    return model


def with_conditioning(model: PiModel, mode: ConditioningMode, dropout: float) -> PiModel:
    """Switch the policy's advantage conditioning to `mode` (prompt indicator on, dropout per mode)."""
    model.config = dataclasses.replace(model.config, **model_conditioning(mode, dropout))
    return model


def new_value_model(preset: str, overrides: dict[str, Any], policy: PiModel | None = None) -> ValueModel:
    """A fresh value model ("full" or "tiny"); with `policy`, its backbone starts from the policy's VLM."""
    if preset not in ("full", "tiny"):
        raise ValueError(f"value preset must be 'full' or 'tiny', got {preset!r}")
    if policy is not None:
        pc = policy.config
        fields = dict(vision=pc.vision, vlm=pc.vlm, vocab_size=pc.vocab_size, tokenizer_name=pc.tokenizer_name,
                      tokenizer_max_length=pc.tokenizer_max_length)
        return ValueModel.from_policy(policy, ValueConfig(**{**fields, **overrides}))
    build = tiny_value_config if preset == "tiny" else value_config
    return ValueModel(build(**overrides))


@dataclass(frozen=True)
class PolicyBundle:
    """What acting needs besides the weights: the normaliser, its head, and the sample layout it was trained on."""

    norm_head: str
    state_dim: int
    action_dim: int
    image_size: int
    num_cameras: int
    state_key: str = "state"  # the observation entry holding the policy's state

    def save(self, folder: Path, model: PiModel, normalizer: Normalizer) -> None:
        """model/ (config.json + model.safetensors), normalizer.json and bundle.json; the bundle file last."""
        save_pretrained(model, folder / "model")
        normalizer.save(folder / "normalizer.json")
        write_json_atomic(folder / "bundle.json", dataclasses.asdict(self))

    @staticmethod
    def model_config(folder: Path) -> PiConfig:
        """The saved policy's PiConfig, without building the model."""
        path = folder / "model" / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"policy bundle {folder} has no {path}")
        return PiConfig.from_dict(json.loads(path.read_text()))

    @staticmethod
    def read(folder: Path) -> PolicyBundle:
        """The bundle.json of a saved policy, without loading the model."""
        path = folder / "bundle.json"
        if not path.is_file():
            raise FileNotFoundError(f"policy bundle {folder} is incomplete: {path} missing")
        return PolicyBundle(**json.loads(path.read_text()))

    @staticmethod
    def load(folder: Path) -> tuple[PiModel, Normalizer, PolicyBundle]:
        """The saved policy's model, normaliser and bundle."""
        bundle = PolicyBundle.read(folder)
        return from_pretrained(folder / "model"), Normalizer.load(folder / "normalizer.json"), bundle

