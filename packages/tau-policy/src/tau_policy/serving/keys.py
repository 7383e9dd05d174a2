"""Which request keys hold a policy's camera images, state and prompt: presets for openpi's robot clients and tau-sim.

A request is one observation (no batch dimension), as openpi's clients send it. A key names an entry of the request
map; "a/b" is also found nested (`request["a"]["b"]`), the way openpi flattens nested observations. Presets:

  libero   "observation/image", "observation/wrist_image" (H, W, 3); "observation/state"; "prompt"
  aloha    "images/cam_high", "images/cam_low", "images/cam_left_wrist", "images/cam_right_wrist" (3, H, W);
           "state"; "prompt"
  droid    "observation/exterior_image_1_left", "observation/wrist_image_left" (H, W, 3);
           "observation/joint_position" + "observation/gripper_position" (concatenated); "prompt"
  tau-sim  "images" (N_cam, H, W, 3), all cameras in slot order; "state"; "prompt"

Any other mapping is a JSON file with the fields of ObservationKeys, e.g.
`{"cameras": ["front", "wrist"], "state": ["qpos", "gripper"], "prompt": "task", "channels_first": false}`.
Camera keys fill the camera features the policy reads, in slot order (a slot its head lacks takes no key); the
state keys are concatenated in order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ObservationKeys:
    """Where a request holds each policy input: one key per camera slot (or one stacked key), state keys, prompt."""

    cameras: tuple[str, ...] = ()  # request key of each camera slot, in the policy's slot order
    stacked_images: str | None = None  # or one key holding every camera: (N_cam, H, W, 3)
    state: tuple[str, ...] = ("observation/state",)  # concatenated, in order, into the state vector
    prompt: str = "prompt"
    default_prompt: str | None = None  # used when a request has no prompt key; None makes the prompt required
    channels_first: bool = False  # images arrive (3, H, W), as openpi's ALOHA clients send them

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))
        object.__setattr__(self, "state", tuple(self.state))
        if bool(self.cameras) == (self.stacked_images is not None):
            raise ValueError("observation keys need exactly one of `cameras` (a key per camera slot) and "
                             "`stacked_images` (one key holding every camera)")
        if not self.state:
            raise ValueError("observation keys need at least one `state` key")
        keys = [*self.cameras, *([self.stacked_images] if self.stacked_images else []), *self.state, self.prompt]
        if len(set(keys)) != len(keys):
            raise ValueError(f"observation keys must be distinct, got {keys}")

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (sent in the server metadata; `from_description` reads it back)."""
        return asdict(self)

    @classmethod
    def from_description(cls, description: dict[str, Any], source: str = "observation keys") -> ObservationKeys:
        """Build from a dict with ObservationKeys' fields; unknown or ill-typed fields are named in the error."""
        if not isinstance(description, dict):
            raise ValueError(f"{source}: expected a JSON object of observation keys, got {type(description).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(description) - known)
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {unknown}; known: {sorted(known)}")
        for name in ("cameras", "state"):
            value = description.get(name, [])
            if isinstance(value, str) or not all(isinstance(k, str) for k in value):
                raise ValueError(f"{source}: `{name}` must be a list of key names, got {value!r}")
        for name in ("stacked_images", "prompt", "default_prompt"):
            value = description.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{source}: `{name}` must be a string, got {value!r}")
        if not isinstance(description.get("channels_first", False), bool):
            raise ValueError(f"{source}: `channels_first` must be true or false")
        try:
            return cls(**description)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from error


PRESETS: dict[str, ObservationKeys] = {
    "libero": ObservationKeys(cameras=("observation/image", "observation/wrist_image"),
                              state=("observation/state",)),
    "aloha": ObservationKeys(cameras=("images/cam_high", "images/cam_low", "images/cam_left_wrist",
                                      "images/cam_right_wrist"), state=("state",), channels_first=True),
    "droid": ObservationKeys(cameras=("observation/exterior_image_1_left", "observation/wrist_image_left"),
                             state=("observation/joint_position", "observation/gripper_position")),
    "tau-sim": ObservationKeys(stacked_images="images", state=("state",)),
}


def resolve_keys(name_or_file: str | Path) -> ObservationKeys:
    """A preset by name (libero, aloha, droid, tau-sim) or a JSON file of ObservationKeys fields."""
    if str(name_or_file) in PRESETS:
        return PRESETS[str(name_or_file)]
    path = Path(name_or_file)
    if not path.is_file():
        raise ValueError(f"observation keys {str(name_or_file)!r} are neither a preset ({', '.join(PRESETS)}) "
                         "nor a JSON file")
    try:
        description = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON: {error}") from error
    return ObservationKeys.from_description(description, source=str(path))
