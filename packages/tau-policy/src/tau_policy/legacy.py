"""Bundle folders written by tau-rl's old PolicyBundle (apps/train and apps/rl before tau-policy): bundle.json held
one head's {norm_head, state_dim, action_dim, image_size, num_cameras, state_key} and no camera feature names.

They load as a one-head layout whose camera slots are named observation.images.camera<i> (tau_policy.SimPolicy
feeds tau-sim cameras by position) and whose actions are clipped to [-1, 1], as the old adapter did; saving the
loaded bundle writes the current format.
"""

from __future__ import annotations

from typing import Any

from tau_models import PiConfig

from tau_policy.layout import PolicyLayout

LEGACY_KEYS = frozenset({"norm_head", "state_dim", "action_dim", "image_size", "num_cameras", "state_key"})


def is_legacy(document: dict[str, Any]) -> bool:
    """Whether a parsed bundle.json is the old tau-rl format."""
    return "format" not in document and "norm_head" in document


def legacy_layout(document: dict[str, Any], config: PiConfig, source: str) -> PolicyLayout:
    """The layout of an old bundle.json, with the model's sizes."""
    missing = sorted(LEGACY_KEYS - {"state_key"} - set(document))
    unknown = sorted(set(document) - LEGACY_KEYS)
    if missing or unknown:
        raise ValueError(f"{source}: old-format bundle.json with missing keys {missing} / unknown keys {unknown}; "
                         f"expected {sorted(LEGACY_KEYS)}")
    size, action_dim = int(document["image_size"]), int(document["action_dim"])
    return PolicyLayout(
        head=str(document["norm_head"]),
        cameras=tuple(f"observation.images.camera{i}" for i in range(int(document["num_cameras"]))),
        image_size=(size, size), state_dim=int(document["state_dim"]), action_dim=action_dim,
        chunk_size=config.chunk_size, max_state_dim=config.max_state_dim, max_action_dim=config.max_action_dim,
        action_low=(-1.0,) * action_dim, action_high=(1.0,) * action_dim, sim_state_key=str(document.get("state_key", "state")))
