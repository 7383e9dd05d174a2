"""Building and loading the two models of a RECAP run: the pi0.5 policy and the distributional value model, both
from tau-models (the policy is saved with its normaliser and layout as a tau_policy.PolicyBundle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tau_models import PiModel, ValueConfig, ValueModel, from_pretrained
from tau_models.config import merge_overrides, pi05_config, tiny_pi05_config
from tau_models.value import tiny_value_config, value_config

from tau_rl.conditioning import ConditioningMode, model_conditioning


def new_policy(preset: str, overrides: dict[str, Any]) -> PiModel:
    """A freshly initialised pi0.5 ("full" or "tiny" sizes) with PiConfig overrides."""
    if preset not in ("full", "tiny"):
        raise ValueError(f"policy preset must be 'full' or 'tiny', got {preset!r}")
    build = tiny_pi05_config if preset == "tiny" else pi05_config
    return PiModel(build(**overrides))


def load_policy(checkpoint: str | Path, overrides: dict[str, Any] | None = None) -> PiModel:
    """A pi0.5 from a tau / LeRobot / OpenTau checkpoint folder or hub id, built with the PiConfig overrides merged
    into its saved config (architecture changes are refused by name)."""
    return from_pretrained(checkpoint, **(overrides or {}))


def with_conditioning(model: PiModel, mode: ConditioningMode, dropout: float) -> PiModel:
    """The policy rebuilt with the advantage conditioning of `mode` (prompt indicator on, dropout per mode) merged
    into its config before building, holding the same weights (configs are final once a model exists)."""
    config = merge_overrides(model.config, model_conditioning(mode, dropout), f"conditioning mode {mode!r}")
    rebuilt = PiModel(config)
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt


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
