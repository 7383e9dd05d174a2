"""Two-robot mixture: standard sample layout, padding, masks, normalisation, weights and fps resampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tau_data import (AugmentConfig, DatasetSpec, LeRobotDataset, MixtureConfig, MixtureDataset, MixtureSampler,
                      NormMode, Normalizer, augment)
from tau_models import resize_with_pad


def _config(robot_a, robot_b, **kwargs) -> MixtureConfig:
    a = DatasetSpec(path=str(robot_a), cameras=["observation.images.front", "observation.images.wrist"],
                    extras={"reward": "reward"}, weight=kwargs.pop("wa", 0.7))
    b = DatasetSpec(path=str(robot_b), cameras=["observation.images.top"], weight=kwargs.pop("wb", 0.3))
    defaults = dict(num_cameras=3, image_size=(64, 64), max_state_dim=16, max_action_dim=16, chunk_size=10,
                    extras=["reward"])
    defaults.update(kwargs)
    return MixtureConfig(datasets=[a, b], **defaults)


def test_standard_sample_layout(robot_a, robot_b):
    mix = MixtureDataset(_config(robot_a, robot_b))
    assert mix.heads == ["arm_a/default", "bimanual_b/default"]
    a, b = mix[(0, 28, None)], mix[(1, 70, None)]
    for s in (a, b):
        assert s["images"].shape == (3, 3, 64, 64) and s["images"].dtype == torch.float32
        assert s["state"].shape == (16,) and s["actions"].shape == (10, 16) and s["action_is_pad"].shape == (10,)
        assert 0 <= s["images"].min() and s["images"].max() <= 1
    assert a["image_mask"].tolist() == [True, True, False] and b["image_mask"].tolist() == [True, False, False]
    assert a["images"][2].abs().sum() == 0 and b["images"][1:].abs().sum() == 0
    assert (a["state_dim"], a["action_dim"], b["state_dim"], b["action_dim"]) == (8, 7, 14, 14)
    assert a["state"][8:].abs().sum() == 0 and a["actions"][:, 7:].abs().sum() == 0
    assert b["state"][14:].abs().sum() == 0
    assert a["action_is_pad"].tolist() == [False, False] + [True] * 8
    assert a["prompt"] == "arm_a task 0" and b["prompt"] == "bimanual_b task 1"
    assert int(a["dataset_index"]) == 0 and int(b["dataset_index"]) == 1
    assert float(mix[(0, 29, None)]["reward"]) == 1.0 and float(a["reward"]) == 0.0
    # 48x80 PNG camera resized with padding into 64x64: rows 0-12 and 51-63 are black.
    assert b["images"][0, :, :13].abs().sum() == 0 and b["images"][0, :, 51:].abs().sum() == 0
    assert b["images"][0, :, 13:51].abs().sum() > 0


def test_state_and_actions_are_normalised_with_their_head(robot_a, robot_b):
    mix = MixtureDataset(_config(robot_a, robot_b))
    raw = LeRobotDataset(robot_a)
    state = raw.columns["observation.state"].astype(np.float64)
    q01, q99 = np.quantile(state, 0.01, axis=0), np.quantile(state, 0.99, axis=0)
    expected = 2 * (state[5] - q01) / (q99 - q01) - 1
    np.testing.assert_allclose(mix[(0, 5, None)]["state"][:8].numpy(), expected, rtol=1e-5, atol=1e-5)
    actions = mix[(0, 5, None)]["actions"][:, :7]
    back = mix.normalizer.unnormalize(actions, "arm_a/default", "actions").numpy()
    np.testing.assert_allclose(back, raw.columns["action"][5:15], rtol=1e-5, atol=1e-5)


def test_weights_are_respected(robot_a, robot_b):
    mix = MixtureDataset(_config(robot_a, robot_b))
    sampler = MixtureSampler(mix.lengths, mix.weights, samples_per_epoch=6000, seed=3)
    draws = np.array(list(iter(sampler)))
    share_a = (draws[:, 0] == 0).mean()
    assert abs(share_a - 0.7) < 0.025, share_a
    assert np.all(draws[:, 1] < mix.lengths[draws[:, 0]])
    rows_a = draws[draws[:, 0] == 0, 1]
    assert len(np.unique(rows_a)) == mix.lengths[0]  # uniform within a member: every row drawn
    proportional = MixtureDataset(_config(robot_a, robot_b, wa=None, wb=None))
    np.testing.assert_allclose(proportional.weights, [115 / 270, 155 / 270])


def test_stats_per_dataset_and_serialisation(robot_a, robot_b, tmp_path):
    mix = MixtureDataset(_config(robot_a, robot_b, stats_per="dataset",
                                 norm_modes={"state": NormMode.MEAN_STD, "actions": NormMode.MIN_MAX}))
    assert mix.heads == ["robot_a", "robot_b"]
    x = torch.randn(4, 14)
    for suffix in (".json", ".safetensors"):
        path = mix.normalizer.save(tmp_path / f"norm{suffix}")
        loaded = Normalizer.load(path)
        assert loaded.modes == mix.normalizer.modes and loaded.dataset_heads == ["robot_a", "robot_b"]
        for feat in ("state", "actions"):
            np.testing.assert_allclose(loaded.normalize(x, "robot_b", feat), mix.normalizer.normalize(x, "robot_b", feat))
            np.testing.assert_allclose(loaded.unnormalize(loaded.normalize(x, "robot_b", feat), "robot_b", feat), x,
                                       atol=1e-5)
    restored = MixtureDataset(_config(robot_a, robot_b, stats_per="dataset"), normalizer=loaded)
    assert restored.normalizer is loaded
    actions = LeRobotDataset(robot_b).columns["action"]
    norm = mix.normalizer.normalize(actions, "robot_b", "actions")
    np.testing.assert_allclose(norm.min(0), -1, atol=1e-6)
    np.testing.assert_allclose(norm.max(0), 1, atol=1e-6)


def test_identity_mode_keeps_values(robot_a, robot_b):
    mix = MixtureDataset(_config(robot_a, robot_b, norm_modes={"state": NormMode.IDENTITY,
                                                              "actions": NormMode.IDENTITY}))
    raw = LeRobotDataset(robot_b)
    np.testing.assert_array_equal(mix[(1, 3, None)]["state"][:14].numpy(), raw.columns["observation.state"][3])


def test_action_fps_resampling(robot_a, robot_b):
    mix = MixtureDataset(_config(robot_a, robot_b, action_fps=25.0,
                                 norm_modes={"state": NormMode.IDENTITY, "actions": NormMode.IDENTITY}))
    b_actions = LeRobotDataset(robot_b).columns["action"]
    got = mix[(1, 40, None)]  # 50 fps -> every 2nd frame; episode 0 has 60 frames
    np.testing.assert_array_equal(got["actions"][:, :14].numpy(), b_actions[40:60:2])
    np.testing.assert_array_equal(got["action_is_pad"].numpy(), np.zeros(10, bool))
    got = mix[(1, 52, None)]
    assert got["action_is_pad"].tolist() == [False] * 4 + [True] * 6
    np.testing.assert_array_equal(got["actions"][4:, :14].numpy(), np.repeat(b_actions[59:60], 6, 0))
    a_actions = LeRobotDataset(robot_a).columns["action"].astype(np.float64)
    got = mix[(0, 2, None)]  # 30 fps -> 25 fps: positions 2, 3.2, 4.4, ... interpolated linearly
    pos = 2 + np.arange(10) * 1.2
    lo = np.floor(pos).astype(int)
    expected = a_actions[lo] * (1 - (pos - lo))[:, None] + a_actions[lo + 1] * (pos - lo)[:, None]
    np.testing.assert_allclose(got["actions"][:, :7].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert got["action_is_pad"].sum() == 0
    assert mix[(0, 25, None)]["action_is_pad"].tolist() == [False] * 4 + [True] * 6


def test_episode_selection(robot_a, robot_b):
    cfg = _config(robot_a, robot_b)
    cfg.datasets[0].episodes = [2]
    mix = MixtureDataset(cfg)
    assert mix.lengths.tolist() == [40, 155]
    assert mix[(0, 0, None)]["prompt"] == "arm_a task 0"
    assert int(mix.members[0].columns["episode_index"][0]) == 2


def test_resize_with_pad_and_augment_are_deterministic():
    img = torch.rand(2, 3, 30, 60)
    out = resize_with_pad(img, (40, 40))
    assert out.shape == (2, 3, 40, 40) and out[:, :, :10].abs().sum() == 0 and out[:, :, 30:].abs().sum() == 0
    cfg = AugmentConfig()
    a = augment(out, torch.Generator().manual_seed(7), cfg)
    b = augment(out, torch.Generator().manual_seed(7), cfg)
    c = augment(out, torch.Generator().manual_seed(8), cfg)
    torch.testing.assert_close(a, b)
    assert (a - c).abs().mean() > 1e-3 and (a - out).abs().mean() > 1e-3
    assert a.min() >= 0 and a.max() <= 1
    none = augment(out, torch.Generator().manual_seed(7), AugmentConfig(0, 0, 0, 0, 1.0, 0, 0))
    torch.testing.assert_close(none, out, atol=1e-5, rtol=0)


def test_unmapped_extra_rejected(robot_a):
    spec = DatasetSpec(path=str(robot_a), cameras=[], extras={"advantage": "reward"})
    with pytest.raises(Exception, match="not listed in MixtureConfig.extras"):
        MixtureDataset(MixtureConfig(datasets=[spec]))


def test_config_from_dict(robot_a, robot_b):
    cfg = MixtureConfig.from_dict({
        "datasets": [{"path": str(robot_a), "cameras": ["observation.images.front"], "weight": 2.0},
                     {"path": str(robot_b), "cameras": [None, "observation.images.top"], "weight": 1.0,
                      "episodes": [0, 2]}],
        "image_size": [32, 48], "chunk_size": 5, "norm_modes": {"state": "MEAN_STD", "actions": "IDENTITY"},
        "augment": {"hue": 0.0}})
    mix = MixtureDataset(cfg)
    np.testing.assert_allclose(mix.weights, [2 / 3, 1 / 3])
    sample = mix[(1, 0, 123)]
    assert sample["images"].shape == (2, 3, 32, 48) and sample["image_mask"].tolist() == [False, True]
    assert mix.lengths.tolist() == [115, 110]
    with pytest.raises(Exception, match="unknown mixture config keys"):
        MixtureConfig.from_dict({"datasets": [], "max_dims": 3})


def test_loader_batches_are_padded_masked_and_weighted(robot_a, robot_b):
    from tau_data import make_loader

    mix = MixtureDataset(_config(robot_a, robot_b, image_size=(16, 16), chunk_size=4))
    loader = make_loader(mix, batch_size=50, num_workers=0, seed=1, samples_per_epoch=1500)
    seen = []
    for batch in loader:
        d = batch["dataset_index"]
        seen.append(d)
        assert batch["images"].shape == (50, 3, 3, 16, 16) and batch["actions"].shape == (50, 4, 16)
        a, b = d == 0, d == 1
        assert batch["image_mask"][a].tolist() == [[True, True, False]] * int(a.sum())
        assert batch["image_mask"][b].tolist() == [[True, False, False]] * int(b.sum())
        assert (batch["state_dim"][a] == 8).all() and (batch["state_dim"][b] == 14).all()
        assert batch["state"][a][:, 8:].abs().sum() == 0 and batch["actions"][a][:, :, 7:].abs().sum() == 0
        assert batch["state"][b][:, 14:].abs().sum() == 0
        assert batch["images"][~batch["image_mask"]].abs().sum() == 0
        assert all(p.startswith("arm_a") for p, x in zip(batch["prompt"], a) if x)
    share_a = torch.cat(seen).eq(0).float().mean().item()
    assert abs(share_a - 0.7) < 0.035, share_a  # 1500 draws: 3 standard deviations is 0.035
