"""Observation keys: presets, JSON files, and the checks that turn one request into the policy's observation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tau_policy import PolicyLayout
from tau_policy.serving import PRESETS, ObservationKeys, RequestError, policy_observation, resolve_keys
from tau_policy.serving.request import check_camera_count

TOP, WRIST = "observation.images.top", "observation.images.wrist"
LAYOUT = PolicyLayout(head="arm_a/default", cameras=(TOP, WRIST), image_size=(16, 16), state_dim=2, action_dim=2,
                      chunk_size=3, max_state_dim=4, max_action_dim=4)


def image(h: int = 6, w: int = 8, fill: int = 0) -> np.ndarray:
    return np.full((h, w, 3), fill, dtype=np.uint8)


def libero(**changes: object) -> dict:
    request = {"observation/image": image(fill=1), "observation/wrist_image": image(4, 4, fill=2),
               "observation/state": np.array([0.1, 0.2], np.float32), "prompt": "push"}
    request.update(changes)
    return {k: v for k, v in request.items() if v is not None}


def test_libero_request_becomes_a_batch_of_one() -> None:
    observation, prompt = policy_observation(libero(), PRESETS["libero"], LAYOUT)
    assert prompt == "push" and sorted(observation) == sorted([TOP, WRIST, LAYOUT.state_feature])
    assert observation[TOP].shape == (1, 6, 8, 3) and observation[WRIST][0, 0, 0, 0] == 2
    np.testing.assert_array_equal(observation["observation.state"], np.float32([[0.1, 0.2]]))
    assert observation[TOP].flags.writeable


def test_aloha_images_are_channels_first_and_nested() -> None:
    keys = ObservationKeys(cameras=("images/cam_high", "images/cam_low"), state=("state",), channels_first=True)
    chw = np.arange(3 * 2 * 5, dtype=np.uint8).reshape(3, 2, 5)
    request = {"images": {"cam_high": chw, "cam_low": chw}, "state": [0.0, 1.0], "prompt": "fold"}
    observation, _ = policy_observation(request, keys, LAYOUT)
    np.testing.assert_array_equal(observation[TOP][0], chw.transpose(1, 2, 0))
    with pytest.raises(RequestError, match=r"'images/cam_high' must be uint8 \(3, H, W\), got uint8 \(2, 5, 3\)"):
        policy_observation({**request, "images": {"cam_high": chw.transpose(1, 2, 0), "cam_low": chw}}, keys, LAYOUT)


def test_droid_state_is_concatenated_in_key_order() -> None:
    keys = ObservationKeys(cameras=("a", "b"), state=("joints", "gripper"))
    request = {"a": image(), "b": image(), "joints": np.array([0.5]), "gripper": 0.25, "prompt": "x"}
    observation, _ = policy_observation(request, keys, LAYOUT)
    np.testing.assert_array_equal(observation["observation.state"], [[0.5, 0.25]])
    with pytest.raises(RequestError, match=r"state 'joints' \(2\) \+ 'gripper' \(1\) has 3 values, the policy "
                                           "expects 2"):
        policy_observation({**request, "joints": np.array([0.5, 0.5])}, keys, LAYOUT)


def test_tau_sim_stacked_images_fill_the_slots_in_order() -> None:
    stack = np.stack([image(fill=1), image(fill=2)])
    observation, _ = policy_observation({"images": stack, "state": np.zeros(2), "prompt": "p"},
                                        PRESETS["tau-sim"], LAYOUT)
    assert observation[TOP][0, 0, 0, 0] == 1 and observation[WRIST][0, 0, 0, 0] == 2
    with pytest.raises(RequestError, match=r"'images' must be uint8 \(2, H, W, 3\), got uint8 \(3, 6, 8, 3\)"):
        policy_observation({"images": np.stack([image()] * 3), "state": np.zeros(2), "prompt": "p"},
                           PRESETS["tau-sim"], LAYOUT)


@pytest.mark.parametrize(("request_", "message"), [
    (libero(**{"observation/image": None}), r"no key 'observation/image' \(expected a uint8 \(H, W, 3\) image for "
                                            r"observation.images.top\)"),
    (libero(**{"observation/image": image().astype(np.float32)}),
     r"'observation/image' must be uint8 \(H, W, 3\), got float32 \(6, 8, 3\)"),
    (libero(**{"observation/image": np.zeros((6, 8), np.uint8)}), r"must be uint8 \(H, W, 3\), got uint8 \(6, 8\)"),
    (libero(**{"observation/image": [[1, 2, 3]]}), "must be a numpy array uint8 \\(H, W, 3\\), got list"),
    (libero(**{"observation/image": np.zeros((0, 8, 3), np.uint8)}), "empty image"),
    (libero(**{"observation/state": np.array([np.nan, 0.0])}), "'observation/state' holds NaN or infinite"),
    (libero(**{"observation/state": np.array([np.inf, 0.0])}), "'observation/state' holds NaN or infinite"),
    (libero(**{"observation/state": np.zeros(3)}), r"state 'observation/state' \(3\) has 3 values, the policy "
                                                   "expects 2"),
    (libero(**{"observation/state": np.zeros((1, 2))}), "must be a number or a 1-D numeric array, got float64 "
                                                        r"\(1, 2\)"),
    (libero(**{"observation/state": "0.1,0.2"}), "must be a number or a 1-D numeric array, got str"),
    (libero(**{"observation/state": [[1.0], [1.0, 2.0]]}), "must be a number or a 1-D numeric array: "),
    (libero(prompt=None), "no key 'prompt' \\(the instruction text\\)"),
    (libero(prompt=3), "'prompt' must be a string, got int"),
    ([1, 2], "a request must be a msgpack map of observation keys, got list"),
])
def test_bad_requests_name_the_key_and_what_was_expected(request_: object, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        policy_observation(request_, PRESETS["libero"], LAYOUT)


def test_default_prompt_fills_a_missing_prompt() -> None:
    keys = ObservationKeys(cameras=PRESETS["libero"].cameras, default_prompt="do the task")
    assert policy_observation(libero(prompt=None), keys, LAYOUT)[1] == "do the task"
    assert policy_observation(libero(), keys, LAYOUT)[1] == "push"


def test_keys_from_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"cameras": ["front", "hand"], "state": ["qpos"], "prompt": "task"}))
    keys = resolve_keys(path)
    assert keys == ObservationKeys(cameras=("front", "hand"), state=("qpos",), prompt="task")
    assert ObservationKeys.from_description(keys.describe()) == keys
    request = {"front": image(), "hand": image(), "qpos": np.zeros(2), "task": "t"}
    assert policy_observation(request, keys, LAYOUT)[1] == "t"


@pytest.mark.parametrize(("content", "message"), [
    ({"cameras": ["a"], "colour": 1}, r"unknown field\(s\) \['colour'\]"),
    ({"cameras": "a"}, "`cameras` must be a list of key names"),
    ({"cameras": ["a"], "stacked_images": "b"}, "exactly one of `cameras`"),
    ({"cameras": ["a"], "state": []}, "at least one `state` key"),
    ({"cameras": ["a", "a"]}, "must be distinct"),
    ({"cameras": ["a"], "channels_first": "yes"}, "`channels_first` must be true or false"),
    ([1], "expected a JSON object"),
])
def test_bad_key_files_are_named(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message) as error:
        resolve_keys(path)
    assert str(path) in str(error.value)


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(ValueError, match="neither a preset \\(libero, aloha, droid, tau-sim\\) nor a JSON file"):
        resolve_keys("lerobot")


def test_a_camera_slot_the_head_lacks_takes_no_image() -> None:
    one_camera = dataclasses.replace(LAYOUT, cameras=(TOP, None))
    observation, _ = policy_observation({"images": image(fill=3)[None], "state": np.zeros(2), "prompt": "p"},
                                        PRESETS["tau-sim"], one_camera)
    assert sorted(observation) == ["observation.images.top", "observation.state"] and observation[TOP][0, 0, 0, 0] == 3
    keys = ObservationKeys(cameras=("observation/image",))
    observation, _ = policy_observation(libero(), keys, one_camera)
    assert sorted(observation) == ["observation.images.top", "observation.state"]
    with pytest.raises(ValueError, match=r"name 2 camera keys .* but the policy has 1 cameras \['observation.images.top'\]"):
        check_camera_count(PRESETS["libero"], one_camera, "the observation keys")
