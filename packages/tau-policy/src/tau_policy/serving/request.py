"""One openpi request (a single observation map) -> the policy's batched observation, checked key by key.

The camera keys (or the stacked images) fill the camera features the policy reads, in slot order: slots its head
lacks (None in the layout) take no image.

Every problem is a RequestError naming the request key and what was expected there, so a robot-side developer can
fix the client from the message alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tau_policy.layout import PolicyLayout
from tau_policy.serving.keys import ObservationKeys
from tau_policy.serving.policy import camera_features


class RequestError(ValueError):
    """A request the policy cannot act on (missing key, wrong shape or dtype, NaN state, not a map)."""


_MISSING = object()


def lookup(request: Mapping[str, Any], key: str) -> Any:
    """request[key], else the nested entry that "a/b/c" names (request["a"]["b/c"], request["a"]["b"]["c"], ...)."""
    if key in request:
        return request[key]
    head, sep, rest = key.partition("/")
    while sep:
        inner = request.get(head)
        if isinstance(inner, Mapping):
            found = lookup(inner, rest)
            if found is not _MISSING:
                return found
        part, sep, rest = rest.partition("/")
        head = f"{head}/{part}"
    return _MISSING


def _require(request: Mapping[str, Any], key: str, expected: str) -> Any:
    value = lookup(request, key)
    if value is _MISSING:
        raise RequestError(f"request has no key {key!r} (expected {expected}); it has {sorted(request)}")
    return value


def _image(value: Any, key: str, channels_first: bool, stacked: int | None = None) -> np.ndarray:
    """A uint8 (H, W, 3) image, or (N, H, W, 3) with `stacked` = N, from a request value."""
    lead = () if stacked is None else (stacked,)
    layout = "3, H, W" if channels_first else "H, W, 3"
    expected = f"uint8 ({', '.join([*map(str, lead), layout])})"
    if not isinstance(value, np.ndarray):
        raise RequestError(f"request key {key!r} must be a numpy array {expected}, got {type(value).__name__}")
    channel_axis = len(lead) if channels_first else -1
    if (value.dtype != np.uint8 or value.ndim != len(lead) + 3 or value.shape[channel_axis] != 3
            or value.shape[: len(lead)] != lead):
        raise RequestError(f"request key {key!r} must be {expected}, got {value.dtype} {value.shape}")
    if channels_first:
        value = np.moveaxis(value, len(lead), -1)
    if min(value.shape[-3:-1]) == 0:
        raise RequestError(f"request key {key!r} is an empty image {value.shape}")
    return np.array(value)  # a writable, C-contiguous copy: frames decode as read-only views of the message


def _state_part(value: Any, key: str) -> np.ndarray:
    if not isinstance(value, np.ndarray | np.generic | int | float | list):
        raise RequestError(f"request key {key!r} must be a number or a 1-D numeric array, got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except ValueError as error:  # a ragged list
        raise RequestError(f"request key {key!r} must be a number or a 1-D numeric array: {error}") from error
    if array.ndim > 1 or array.dtype.kind not in "biuf":
        raise RequestError(f"request key {key!r} must be a number or a 1-D numeric array, got {array.dtype} "
                           f"{array.shape}")
    array = array.astype(np.float32).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise RequestError(f"request key {key!r} holds NaN or infinite values: {array.tolist()}")
    return array


def policy_observation(request: Any, keys: ObservationKeys, layout: PolicyLayout) -> tuple[dict[str, np.ndarray], str]:
    """The batch-of-one observation keyed by the policy's feature names, and the prompt, of one request."""
    if not isinstance(request, Mapping):
        raise RequestError(f"a request must be a msgpack map of observation keys, got {type(request).__name__}")
    cameras = camera_features(layout)
    observation: dict[str, np.ndarray] = {}
    if keys.stacked_images is not None:
        key = keys.stacked_images
        stack = _image(_require(request, key, f"uint8 ({len(cameras)}, H, W, 3) images"), key, keys.channels_first,
                       stacked=len(cameras))
        for slot, feature in enumerate(cameras):
            observation[feature] = stack[slot][None]
    else:
        for key, feature in zip(keys.cameras, cameras, strict=True):
            hint = f"a uint8 {'(3, H, W)' if keys.channels_first else '(H, W, 3)'} image for {feature}"
            observation[feature] = _image(_require(request, key, hint), key, keys.channels_first)[None]
    parts = [_state_part(_require(request, key, "state values"), key) for key in keys.state]
    state = np.concatenate(parts)
    if state.shape[0] != layout.state_dim:
        sizes = " + ".join(f"{key!r} ({len(part)})" for key, part in zip(keys.state, parts, strict=True))
        raise RequestError(f"state {sizes} has {state.shape[0]} values, the policy expects {layout.state_dim}")
    observation[layout.state_feature] = state[None]
    prompt = lookup(request, keys.prompt)
    if prompt is _MISSING:
        if keys.default_prompt is None:
            raise RequestError(f"request has no key {keys.prompt!r} (the instruction text) and the server has no "
                               "default prompt")
        prompt = keys.default_prompt
    if isinstance(prompt, np.ndarray) and prompt.dtype.kind in "SU" and prompt.ndim == 0:
        prompt = prompt.item()
    if isinstance(prompt, bytes):
        prompt = prompt.decode("utf-8", errors="replace")
    if not isinstance(prompt, str):
        raise RequestError(f"request key {keys.prompt!r} must be a string, got {type(prompt).__name__}")
    return observation, prompt


def check_camera_count(keys: ObservationKeys, layout: PolicyLayout, source: str) -> None:
    """Raise when camera keys and the policy's camera slots differ in number (checked once, at server start)."""
    cameras = camera_features(layout)
    if keys.stacked_images is None and len(keys.cameras) != len(cameras):
        raise ValueError(f"{source} name {len(keys.cameras)} camera keys {list(keys.cameras)} but the policy has "
                         f"{len(cameras)} cameras {cameras}; pass keys with one per camera the policy reads")
