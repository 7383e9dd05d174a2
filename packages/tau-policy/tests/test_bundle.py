"""PolicyBundle: every norm head with its layout, provenance, one save/load, old tau-rl folders, hub ids."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import ROBOT_A, ROBOT_B, mixture, tiny_model
from tau_data import Normalizer
from tau_models import SampleTokenizer, resize_with_pad, save_pretrained
from tau_policy import (BUNDLE_FORMAT, PolicyBundle, Provenance, load_policy, read_layouts, read_model_config)


def _observation(layout, b: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = {c: rng.integers(0, 256, (b, 20, 30, 3), dtype=np.uint8) for c in layout.cameras if c is not None}
    obs[layout.state_feature] = rng.normal(size=(b, layout.state_dim)).astype(np.float32)
    return obs


@pytest.fixture(scope="module")
def two_head_bundle(two_robots, tmp_path_factory):
    mix = mixture(*two_robots)
    bundle = PolicyBundle.from_mixture(tiny_model(), mix, provenance=Provenance(source="runs/x", step=7),
                                       sim_state_key="privileged")
    return bundle.save(tmp_path_factory.mktemp("bundle") / "policy"), mix


def test_every_head_is_saved_with_its_layout(two_head_bundle):
    folder, mix = two_head_bundle
    layouts, provenance = read_layouts(folder)
    a, b = layouts
    assert (a.head, b.head) == (f"{ROBOT_A}/default", f"{ROBOT_B}/default")
    assert a.cameras == ("observation.images.top", "observation.images.wrist")
    assert b.cameras == ("observation.images.front", None)
    assert (a.state_dim, a.action_dim, b.state_dim, b.action_dim) == (3, 2, 2, 3)
    assert a.image_size == (16, 16) and a.chunk_size == 3 and a.max_action_dim == 4
    assert a.robot_type == ROBOT_A and a.datasets == ("robot_a",) and a.sim_state_key == "privileged"
    assert a.action_low is None
    assert provenance.source == "runs/x" and provenance.step == 7 and provenance.weights == "raw"
    assert provenance.versions["tau_policy"] == "0.1.0"
    saved = json.loads((folder / "bundle.json").read_text())
    assert saved["format"] == BUNDLE_FORMAT and len(saved["heads"]) == 2
    assert Normalizer.load(folder / "normalizer.json").heads == sorted(mix.normalizer.heads)
    assert read_model_config(folder).chunk_size == 3


def test_a_mixture_policy_acts_for_each_of_its_robots(two_head_bundle):
    folder, mix = two_head_bundle
    for name, action_dim in ((ROBOT_A, 2), ("robot_b", 3), (f"{ROBOT_B}/default", 3)):
        policy = load_policy(folder, head=name)
        actions = policy.act(_observation(policy.layout), ["push block 0", "push block 1"])
        assert actions.shape == (2, 3, action_dim) and actions.dtype == np.float32
    with pytest.raises(ValueError, match=r"has 2 heads, choose one with head=: arm_a/default \(names: arm_a/default, "
                                         r"arm_a, robot_a\); arm_b/default"):
        load_policy(folder)
    with pytest.raises(ValueError, match="'arm_c' is no head, robot type or dataset"):
        load_policy(folder, head="arm_c")


def test_saving_a_loaded_bundle_keeps_weights_layouts_and_provenance(two_head_bundle, tmp_path):
    folder, _ = two_head_bundle
    bundle = PolicyBundle.load(folder)
    again = PolicyBundle.load(bundle.save(tmp_path / "copy"))
    assert again.layouts == bundle.layouts and again.provenance == bundle.provenance
    for key, value in bundle.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value), key


def test_action_bounds_clip_the_actions(two_robots, tmp_path):
    mix = mixture(two_robots[0])
    head = mix.heads[0]
    free = PolicyBundle.from_mixture(tiny_model(), mix, provenance=Provenance())
    clipped = PolicyBundle.from_mixture(tiny_model(), mix, provenance=Provenance(),
                                        action_bounds={head: ([-0.01, -0.02], [0.01, 0.02])})
    obs, noise = _observation(free.layout()), torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))
    raw = load_policy(free.save(tmp_path / "free")).act(obs, ["a", "b"], noise)
    out = load_policy(clipped.save(tmp_path / "clipped")).act(obs, ["a", "b"], noise)
    np.testing.assert_array_equal(out, np.clip(raw, [-0.01, -0.02], [0.01, 0.02]).astype(np.float32))
    assert np.abs(raw).max() > 0.02
    with pytest.raises(ValueError, match="action_bounds names heads"):
        PolicyBundle.from_mixture(tiny_model(), mix, provenance=Provenance(), action_bounds={"arm_z": ([0], [1])})


def test_provenance_and_incomplete_folders_are_checked(two_head_bundle, tmp_path):
    with pytest.raises(ValueError, match="weights must be one of"):
        Provenance(weights="averaged")
    assert Provenance(weights="ema").weights == "ema" and Provenance(weights="lora_merged").weights == "lora_merged"
    folder, _ = two_head_bundle
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    (partial / "bundle.json").unlink()
    with pytest.raises(FileNotFoundError, match="bundle.json missing"):
        load_policy(partial)
    with pytest.raises(FileNotFoundError, match="policy bundle folder not found"):
        load_policy(tmp_path / "nowhere")
    shutil.copytree(folder, tmp_path / "future")
    (tmp_path / "future" / "bundle.json").write_text(json.dumps({"format": "tau_policy.bundle/9", "heads": []}))
    with pytest.raises(ValueError, match="is not 'tau_policy.bundle/1'"):
        load_policy(tmp_path / "future")
    document = json.loads((folder / "bundle.json").read_text())
    document["heads"][0]["camera"] = document["heads"][0].pop("cameras")
    (tmp_path / "future" / "bundle.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"heads\[0\]: unknown policy layout keys \['camera'\]"):
        load_policy(tmp_path / "future", head=ROBOT_A)


def test_old_tau_rl_bundle_folders_still_load(two_robots, tmp_path):
    """The folder apps/train and apps/rl wrote before tau-policy: model/, normalizer.json, one-head bundle.json."""
    mix = mixture(two_robots[0], image_size=28)
    model = tiny_model()
    folder = tmp_path / "old"
    save_pretrained(model, folder / "model")
    mix.normalizer.save(folder / "normalizer.json")
    old = {"norm_head": mix.heads[0], "state_dim": 3, "action_dim": 2, "image_size": 28, "num_cameras": 2,
           "state_key": "privileged"}
    (folder / "bundle.json").write_text(json.dumps(old))
    policy = load_policy(folder)
    layout = policy.layout
    assert layout.cameras == ("observation.images.camera0", "observation.images.camera1")
    assert (layout.head, layout.state_dim, layout.action_dim, layout.image_size) == (mix.heads[0], 3, 2, (28, 28))
    assert layout.sim_state_key == "privileged" and layout.action_low == (-1.0, -1.0)
    assert policy.bundle.provenance.weights is None and "converted" in policy.bundle.provenance.note
    obs, noise = _observation(layout), torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(2))
    actions = policy.act(obs, ["a", "b"], noise)
    assert np.abs(actions).max() <= 1.0
    # the same computation by hand: the old adapter's batch (float, tau-models resize), unnormalise, clip to [-1, 1]
    pixels = torch.stack([torch.from_numpy(obs[c]).permute(0, 3, 1, 2).float() / 255 for c in layout.cameras], 1)
    state = np.zeros((2, 4), np.float32)
    state[:, :3] = mix.normalizer.normalize(obs["observation.state"], mix.heads[0], "state")
    batch = {"images": resize_with_pad(pixels, 28), "image_mask": torch.ones(2, 2, dtype=torch.bool),
             "state": torch.from_numpy(state), "state_dim": torch.tensor([3, 3]), "prompt": ["a", "b"]}
    batch = SampleTokenizer(model.config).tokenize_batch(batch, advantage=None)
    expected = model.sample_actions(batch, noise=noise)[:, :, :2].numpy()
    expected = np.clip(mix.normalizer.unnormalize(expected, mix.heads[0], "actions"), -1, 1)
    np.testing.assert_allclose(actions, expected, atol=1e-5)
    converted = policy.bundle.save(tmp_path / "converted")
    assert json.loads((converted / "bundle.json").read_text())["format"] == BUNDLE_FORMAT
    np.testing.assert_array_equal(load_policy(converted).act(obs, ["a", "b"], noise), actions)
    (folder / "bundle.json").write_text(json.dumps({**old, "cameras": 2}))
    with pytest.raises(ValueError, match=r"old-format bundle.json with missing keys \[\] / unknown keys \['cameras'\]"):
        load_policy(folder)


def test_a_hub_repo_id_loads_from_the_hub_cache(two_head_bundle, tmp_path, monkeypatch):
    """A repo id goes through huggingface_hub.snapshot_download (here offline, from a cache laid out as the hub's)."""
    import huggingface_hub.constants

    folder, _ = two_head_bundle
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tau--tiny-policy"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    policy = load_policy("tau/tiny-policy", head=ROBOT_B)
    assert policy.layout.head == f"{ROBOT_B}/default"
    assert policy.act(_observation(policy.layout, b=1), ["push"]).shape == (1, 3, 3)
