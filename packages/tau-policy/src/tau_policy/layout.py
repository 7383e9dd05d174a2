"""The sample layout of one norm head of a policy: which observation features feed which camera slot and the
state, the sizes the samples were built at, the robot's real state/action sizes and the action range to clip to."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PolicyLayout:
    """How observations of one robot (one norm head) map onto the model's samples, and its actions back."""

    head: str                              # norm head: the normaliser's stats key
    cameras: tuple[str | None, ...]        # observation feature of each camera slot; None: this robot lacks it
    image_size: tuple[int, int]            # (height, width) the samples' images are resized with padding to
    state_dim: int                         # the robot's real state size
    action_dim: int                        # the robot's real action size
    chunk_size: int                        # actions per model call
    max_state_dim: int                     # the model's padded state size
    max_action_dim: int                    # the model's padded action size
    state_feature: str = "observation.state"
    action_low: tuple[float, ...] | None = None   # actions are clipped to [action_low, action_high] (robot units)
    action_high: tuple[float, ...] | None = None
    robot_type: str | None = None
    datasets: tuple[str, ...] = ()         # training datasets of this head (names select it too)
    sim_state_key: str = "state"           # tau-sim observation entry the state feature was recorded from
    relative_actions: tuple[bool, ...] | None = None  # action dims predicted relative to the state (added back)

    def __post_init__(self) -> None:
        if not self.cameras or all(c is None for c in self.cameras):
            raise ValueError(f"policy layout of head {self.head!r} has no camera feature: {self.cameras}")
        if self.state_dim > self.max_state_dim or self.action_dim > self.max_action_dim:
            raise ValueError(f"head {self.head!r}: state/action dims ({self.state_dim}, {self.action_dim}) exceed "
                             f"the model's ({self.max_state_dim}, {self.max_action_dim})")
        if (self.action_low is None) != (self.action_high is None):
            raise ValueError(f"head {self.head!r}: give both action_low and action_high or neither")
        for name in ("action_low", "action_high"):
            bound = getattr(self, name)
            if bound is not None and len(bound) != self.action_dim:
                raise ValueError(f"head {self.head!r}: {name} has {len(bound)} values, action_dim is "
                                 f"{self.action_dim}")

        if self.relative_actions is not None and (len(self.relative_actions) != self.action_dim or any(
                flag and i >= self.state_dim for i, flag in enumerate(self.relative_actions))):
            raise ValueError(f"head {self.head!r}: relative_actions {self.relative_actions} needs one flag per "
                             f"action dim ({self.action_dim}), relative ones within the state's {self.state_dim}")

    @property
    def names(self) -> tuple[str, ...]:
        """Every name that selects this head: the head, its robot type and its datasets."""
        return (self.head, *([self.robot_type] if self.robot_type else []), *self.datasets)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "bundle.json") -> PolicyLayout:
        """Parse a layout; unknown or missing keys are an error naming them and `source`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown policy layout keys {unknown} (known: {sorted(known)})")
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"{source}: policy layout misses keys {missing}")
        tuples = {"cameras", "image_size", "action_low", "action_high", "datasets", "relative_actions"}
        return cls(**{k: tuple(v) if k in tuples and v is not None else v for k, v in data.items()})


def choose_layout(layouts: Sequence[PolicyLayout], head: str | None) -> PolicyLayout:
    """The layout selected by `head` (a norm head, robot type or dataset name); None: the only one."""
    listing = "; ".join(f"{layout.head} (names: {', '.join(layout.names)})" for layout in layouts)
    if head is None:
        if len(layouts) != 1:
            raise ValueError(f"the policy has {len(layouts)} heads, choose one with head=: {listing}")
        return layouts[0]
    exact = [layout for layout in layouts if layout.head == head]
    matches = exact or [layout for layout in layouts if head in layout.names]
    if len(matches) != 1:
        problem = "matches several heads" if matches else "is no head, robot type or dataset of the policy"
        raise ValueError(f"head={head!r} {problem}; heads: {listing}")
    return matches[0]
