"""Episode-level validation split: disjoint, covering, seeded, and the same in every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tau_data import DatasetError, MixtureDataset, make_loader, split_episodes
from test_mixture import _config


def test_split_is_episode_level_disjoint_and_seeded(robot_a, robot_b):
    cfg = _config(robot_a, robot_b)
    train, val = split_episodes(cfg, 0.3, seed=1)
    for full, t, v in zip([range(4), range(3)], train.datasets, val.datasets):
        assert set(t.episodes).isdisjoint(v.episodes) and sorted(t.episodes + v.episodes) == list(full)
        assert len(v.episodes) == 1
    assert split_episodes(cfg, 0.3, seed=1) == (train, val)  # deterministic
    held_out = {tuple(split_episodes(cfg, 0.5, seed=s)[1].datasets[0].episodes) for s in range(6)}
    assert len(held_out) > 1  # the seed chooses the episodes
    mix = MixtureDataset(val)
    frames = {int(e) for e in mix.members[0].columns["episode_index"]}
    assert frames == set(val.datasets[0].episodes)  # no validation frame comes from a training episode


def test_split_is_identical_in_another_process(robot_a, robot_b):
    cfg = _config(robot_a, robot_b)
    code = ("import json, sys; from test_mixture import _config; from tau_data import split_episodes; "
            f"t, v = split_episodes(_config({str(robot_a)!r}, {str(robot_b)!r}), 0.5, seed=3); "
            "print(json.dumps([d.episodes for d in v.datasets]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout
    assert json.loads(out) == [d.episodes for d in split_episodes(cfg, 0.5, seed=3)[1].datasets]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_bad_fraction_is_named(robot_a, robot_b, fraction):
    with pytest.raises(DatasetError, match="validation.fraction"):
        split_episodes(_config(robot_a, robot_b), fraction)


def test_single_episode_cannot_be_split(robot_a, robot_b):
    cfg = _config(robot_a, robot_b)
    cfg.datasets[0].episodes = [2]
    with pytest.raises(DatasetError, match="at least 2 episodes"):
        split_episodes(cfg, 0.5)


def test_repeat_loader_draws_the_same_batches_every_pass(robot_a, robot_b):
    mix = MixtureDataset(_config(robot_a, robot_b))

    def indices(loader):
        return [batch["actions"].sum().item() for batch in loader]

    fixed = make_loader(mix, 4, num_workers=0, samples_per_epoch=12, repeat=True)
    assert indices(fixed) == indices(fixed)
    moving = make_loader(mix, 4, num_workers=0, samples_per_epoch=12)
    assert indices(moving) != indices(moving)
