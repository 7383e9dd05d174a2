"""A LeRobot 0.6.1 pi0.5 policy folder with its processor files (shared/interop/lerobot_pi05_processors_a) through
load_policy: raw uint8 frames, raw state and the task strings in, LeRobot's robot-unit actions out (fp32)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tau_policy import load_policy

from conftest import shared_dir

TOL = 1e-4  # max abs, normalised units


@pytest.fixture(scope="module")
def lerobot():
    root = shared_dir() / "interop" / "lerobot_pi05_processors_a"
    policy = load_policy(root / "checkpoint", vision_num_heads=4, tokenizer_name=str(root / "tokenizer"))
    inputs, outputs = load_file(str(root / "inputs.safetensors")), load_file(str(root / "outputs.safetensors"))
    tasks = json.loads((root / "prompts.json").read_text())["tasks"]
    observation = {key: inputs[f"raw.{key}"].numpy() for key in ("observation.images.front", "observation.images.wrist")}
    observation["observation.state"] = inputs["observation.state"].numpy()
    return root, policy, inputs, outputs, tasks, observation


def test_processor_files_give_the_layout_modes_and_statistics(lerobot):
    root, policy, *_ = lerobot
    layout = policy.layout
    assert layout.cameras == ("observation.images.front", "observation.images.wrist")
    assert (layout.image_size, layout.state_dim, layout.action_dim, layout.chunk_size) == ((42, 42), 9, 7, 10)
    norm = policy.normalizer
    assert (norm.convention, norm.eps) == ("lerobot", 1e-8)
    assert {k: v.value for k, v in norm.modes.items()} == {"state": "QUANTILES", "actions": "QUANTILES"}
    post = load_file(str(root / "checkpoint" / "policy_postprocessor_step_0_unnormalizer_processor.safetensors"))
    np.testing.assert_array_equal(norm.stats["default"]["actions"]["q99"], post["action.q99"].double().numpy())
    assert policy.model.config.tokenizer_max_length == 72


def test_state_and_prompt_ids_match_the_preprocessor(lerobot):
    _, policy, _, outputs, tasks, observation = lerobot
    batch = policy.batch(observation, tasks)
    state = batch["state"][:, :9]
    assert float((state - outputs["pre.observation.state"]).abs().max()) <= TOL
    tokens, mask = outputs["pre.observation.language.tokens"], outputs["pre.observation.language.attention_mask"]
    assert torch.equal(batch["tokens"][:, :72][mask], tokens[mask]) and torch.equal(batch["token_pad"][:, :72], mask)
    for i in range(2):  # images letterboxed (centred) to 42 x 42, then [-1, 1] in the model
        assert float((batch["images"][:, i] * 2 - 1 - outputs[f"model_images.{i}"]).abs().max()) <= 1e-5


def test_act_matches_lerobot_in_normalised_and_robot_units(lerobot):
    _, policy, inputs, outputs, tasks, observation = lerobot
    actions = policy.act(observation, tasks, noise=inputs["sample_noise"])
    assert actions.shape == (2, 10, 7) and actions.dtype == np.float32
    normalised = policy.normalizer.normalize(actions, "default", "actions")
    assert np.abs(normalised - outputs["actions_chunk_normalized"].numpy()).max() <= TOL
    robot = np.abs(actions - outputs["actions_chunk_robot"].numpy()).max()
    span = (policy.normalizer.stats["default"]["actions"]["q99"] - policy.normalizer.stats["default"]["actions"]["q01"])
    assert robot <= TOL * span.max() / 2


def test_noise_makes_acting_deterministic_and_its_absence_draws(lerobot):
    _, policy, inputs, _, tasks, observation = lerobot
    first = policy.act(observation, tasks, noise=inputs["sample_noise"])
    np.testing.assert_array_equal(first, policy.act(observation, tasks, noise=inputs["sample_noise"]))
    assert not np.allclose(first, policy.act(observation, tasks))


def _copy(root, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(root / "checkpoint", folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


def test_missing_statistics_fail_in_one_line_unless_given(lerobot, tmp_path):
    root, policy, *_ = lerobot
    folder = _copy(root, tmp_path)
    for path in folder.glob("policy_*processor*"):
        path.unlink()
    with pytest.raises(ValueError, match="no statistics .*pass statistics=") as error:
        load_policy(folder, vision_num_heads=4, tokenizer_name=str(root / "tokenizer"))
    assert "\n" not in str(error.value)
    own = load_policy(folder, vision_num_heads=4, tokenizer_name=str(root / "tokenizer"),
                      statistics=policy.normalizer)
    assert own.layout.head == "default" and own.normalizer is policy.normalizer


def test_processor_naming_a_feature_the_model_lacks(lerobot, tmp_path):
    root, *_ = lerobot
    folder = _copy(root, tmp_path)
    path = folder / "policy_preprocessor.json"
    doc = json.loads(path.read_text())
    doc["steps"][3]["config"]["features"]["observation.images.top"] = {"type": "VISUAL", "shape": [3, 8, 8]}
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="policy_preprocessor.json: step 'normalizer_processor' names feature "
                                         "'observation.images.top', which the model lacks"):
        load_policy(folder, vision_num_heads=4, tokenizer_name=str(root / "tokenizer"))


@pytest.mark.parametrize("bad", ["nan", "zero_std"])
def test_nan_or_zero_std_statistics_name_the_file_and_key(lerobot, tmp_path, bad):
    root, *_ = lerobot
    folder = _copy(root, tmp_path)
    from safetensors.torch import save_file

    path = folder / "policy_preprocessor_step_3_normalizer_processor.safetensors"
    stats = load_file(str(path))
    if bad == "nan":
        stats["observation.state.q01"][2] = float("nan")
        match = r"NaN or infinite value in stats .*normalizer_processor.safetensors.*field='state.q01'"
    else:
        stats["observation.state.std"][1] = 0.0
        doc = json.loads((folder / "policy_preprocessor.json").read_text())
        doc["steps"][3]["config"]["norm_map"]["STATE"] = "MEAN_STD"
        (folder / "policy_preprocessor.json").write_text(json.dumps(doc))
        match = r"zero std in dims \[1\].*normalizer_processor.safetensors.*field='state.std'"
    save_file(stats, str(path))
    with pytest.raises(ValueError, match=match):
        load_policy(folder, vision_num_heads=4, tokenizer_name=str(root / "tokenizer"))


def test_modes_recorded_in_the_processor_take_effect(lerobot, tmp_path):
    """MEAN_STD for the state (as recorded in norm_map) normalises with mean/std, not quantiles."""
    root, policy, _, _, tasks, observation = lerobot
    folder = _copy(root, tmp_path)
    doc = json.loads((folder / "policy_preprocessor.json").read_text())
    doc["steps"][3]["config"]["norm_map"]["STATE"] = "MEAN_STD"
    (folder / "policy_preprocessor.json").write_text(json.dumps(doc))
    other = load_policy(folder, vision_num_heads=4, tokenizer_name=str(root / "tokenizer"))
    stats = other.normalizer.stats["default"]["state"]
    state = other.batch(observation, tasks)["state"][:, :9].numpy()
    expected = (observation["observation.state"] - stats["mean"]) / (stats["std"] + 1e-8)
    assert np.abs(state - expected).max() <= 1e-5


def _edit_pre(folder, edit):
    path = folder / "policy_preprocessor.json"
    doc = json.loads(path.read_text())
    edit(doc["steps"])
    path.write_text(json.dumps(doc))


def test_renamed_observations_and_empty_cameras_shape_the_layout(lerobot, tmp_path):
    root, policy, inputs, outputs, tasks, observation = lerobot
    folder = _copy(root, tmp_path)
    _edit_pre(folder, lambda steps: steps[0]["config"].update(rename_map={"observation.images.top":
                                                                          "observation.images.front"}))
    renamed = load_policy(folder, vision_num_heads=4, tokenizer_name=str(root / "tokenizer"))
    assert renamed.layout.cameras == ("observation.images.top", "observation.images.wrist")
    robot = {("observation.images.top" if k == "observation.images.front" else k): v for k, v in observation.items()}
    np.testing.assert_array_equal(renamed.act(robot, tasks, noise=inputs["sample_noise"]),
                                  policy.act(observation, tasks, noise=inputs["sample_noise"]))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "empty_cameras": 1}))
    padded = load_policy(folder, vision_num_heads=4, tokenizer_name=str(root / "tokenizer"))
    assert padded.layout.cameras == ("observation.images.top", "observation.images.wrist", None)


@pytest.mark.parametrize("edit, match", [
    (lambda steps: steps[2]["config"].update(enabled=True), "step 2 'relative_actions_processor' is enabled"),
    (lambda steps: steps.insert(1, {"registry_name": "crop_processor", "config": {}}),
     "step 1 'crop_processor' is not a step tau reproduces"),
    (lambda steps: steps[3]["config"]["norm_map"].update(VISUAL="MEAN_STD"), "norm_map VISUAL='MEAN_STD'"),
    (lambda steps: steps[3]["config"]["norm_map"].update(STATE="QUANTILE10"), "norm_map STATE='QUANTILE10'"),
])
def test_processor_steps_tau_cannot_reproduce_are_refused(lerobot, tmp_path, edit, match):
    root, *_ = lerobot
    folder = _copy(root, tmp_path)
    _edit_pre(folder, edit)
    with pytest.raises(ValueError, match=match):
        load_policy(folder, vision_num_heads=4, tokenizer_name=str(root / "tokenizer"))


def test_own_statistics_from_a_normaliser_file(lerobot, tmp_path):
    root, policy, inputs, _, tasks, observation = lerobot
    path = policy.normalizer.save(tmp_path / "stats.json")
    own = load_policy(root / "checkpoint", vision_num_heads=4, tokenizer_name=str(root / "tokenizer"),
                      statistics=path)
    assert own.bundle.provenance.note.endswith("with the caller's statistics")
    np.testing.assert_array_equal(own.act(observation, tasks, noise=inputs["sample_noise"]),
                                  policy.act(observation, tasks, noise=inputs["sample_noise"]))
