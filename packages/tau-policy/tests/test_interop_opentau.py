"""An OpenTau 0.14 pi0.5 checkpoint with its FAST head and its statistics in the weights
(shared/interop/opentau_pi05_fast_a) through load_policy: every key loads, the normaliser is built from the
checkpoint's normalisation parameters with OpenTau's formulas, and act reproduces OpenTau's sample_actions (fp32)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tau_policy import load_policy

from conftest import shared_dir

TOL = 1e-4  # max abs, normalised units
EPS = 1e-6


@pytest.fixture(scope="module")
def opentau():
    root = shared_dir() / "interop" / "opentau_pi05_fast_a"
    policy = load_policy(root / "checkpoint", vision_num_heads=2, tokenizer_name=str(root / "tokenizer"))
    inputs, outputs = load_file(str(root / "inputs.safetensors")), load_file(str(root / "outputs.safetensors"))
    tasks = json.loads((root / "prompts.json").read_text())["tasks"]
    observation = {f"camera{i}": inputs[f"raw.camera{i}"].permute(0, 2, 3, 1).numpy() for i in range(2)}
    observation["state"] = inputs["state"].numpy()
    return root, policy, inputs, outputs, tasks, observation


def test_the_checkpoint_statistics_become_the_normaliser(opentau):
    root, policy, *_ = opentau
    layout, norm = policy.layout, policy.normalizer
    assert layout.head == "franka::joint_position" and layout.cameras == ("camera0", "camera1")
    assert (layout.state_feature, layout.state_dim, layout.action_dim, layout.chunk_size) == ("state", 32, 32, 8)
    assert (norm.convention, norm.eps) == ("opentau", EPS)
    assert {k: v.value for k, v in norm.modes.items()} == {"state": "MEAN_STD", "actions": "MEAN_STD",
                                                           "fast_actions": "MIN_MAX"}
    file = load_file(str(root / "checkpoint" / "model.safetensors"))
    head = norm.stats["franka::joint_position"]
    np.testing.assert_array_equal(head["state"]["std"], file["normalize_inputs.buffer_state.std"][0].double().numpy())
    np.testing.assert_array_equal(head["fast_actions"]["max"],
                                  file["normalize_discrete_actions.buffer_actions.max"][0].double().numpy())
    assert policy.model.config.fast_head == "separate"


def test_state_normalisation_and_prompt_match_opentau(opentau):
    _, policy, _, outputs, tasks, observation = opentau
    batch = policy.batch(observation, tasks)
    assert float((batch["state"] - outputs["train.state_normalized"]).abs().max()) <= TOL
    for i in range(2):
        n = int(outputs["train.lang_masks"][i].sum())
        assert torch.equal(batch["tokens"][i, :n], outputs["train.lang_tokens"][i, :n])
    minmax = policy.normalizer.normalize(torch.as_tensor(np.asarray(load_file(str(
        shared_dir() / "interop" / "opentau_pi05_fast_a" / "inputs.safetensors"))["actions"])),
        policy.layout.head, "fast_actions")
    assert float((minmax - outputs["train.discrete_actions_normalized"]).abs().max()) <= TOL


def test_act_matches_opentau_sample_actions(opentau):
    _, policy, inputs, outputs, tasks, observation = opentau
    actions = policy.act(observation, tasks, noise=inputs["sample_noise"])
    assert actions.shape == (2, 8, 32)
    normalised = policy.normalizer.normalize(actions, policy.layout.head, "actions")
    assert np.abs(normalised - outputs["sample_actions_normalized"].numpy()).max() <= TOL
    assert np.abs(actions[..., :7] - outputs["sample_actions_robot"][..., :7].numpy()).max() <= TOL


def test_fast_decoding_acts_in_robot_units_with_the_min_max_statistics(opentau):
    root, policy, inputs, _, tasks, observation = opentau
    fast = load_policy(root / "checkpoint", vision_num_heads=2, tokenizer_name=str(root / "tokenizer"),
                       mode="fast", fast_max_tokens=12)
    actions = fast.act(observation, tasks)
    assert actions.shape == (2, 8, 32) and np.isfinite(actions).all()
    chunk = fast.model.sample_actions(fast.batch(observation, tasks), mode="fast")[..., :32].numpy()
    file = load_file(str(root / "checkpoint" / "model.safetensors"))
    lo = file["normalize_discrete_actions.buffer_actions.min"][0].numpy()
    hi = file["normalize_discrete_actions.buffer_actions.max"][0].numpy()
    r = hi - lo
    d = np.where(np.abs(r) < EPS, 1.0, r)
    expected = (chunk + 1) / 2 * (d + EPS) + lo - 0.5 * (d - r)  # OpenTau's MIN_MAX inverse
    assert np.abs(actions - expected).max() <= 1e-5


def test_missing_statistics_fail_unless_given(opentau, tmp_path):
    import shutil

    from safetensors.torch import save_file

    root, policy, *_ = opentau
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    shutil.copy(root / "checkpoint" / "config.json", folder / "config.json")
    tensors = load_file(str(root / "checkpoint" / "model.safetensors"))
    save_file({k: v for k, v in tensors.items() if not k.startswith(("normalize_", "unnormalize_"))},
              str(folder / "model.safetensors"))
    (tmp_path / "fast_tokenizer").symlink_to(root / "fast_tokenizer")
    kwargs = dict(vision_num_heads=2, tokenizer_name=str(root / "tokenizer"))
    with pytest.raises(ValueError, match=r"model.safetensors: no normalisation statistics .*pass statistics="):
        load_policy(folder, **kwargs)
    assert load_policy(folder, statistics=policy.normalizer, **kwargs).layout.head == "franka::joint_position"
