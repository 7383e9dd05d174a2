"""Resumable loading: save the loader state mid-epoch, restore it in a fresh loader, get the same batches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import subprocess_env

from tau_data import AugmentConfig, DatasetWriter, DatasetSpec, MixtureConfig, MixtureDataset, MixtureSampler, make_loader


def _mixture(robot_a, robot_b) -> MixtureDataset:
    cfg = MixtureConfig(
        datasets=[DatasetSpec(path=str(robot_a), cameras=["observation.images.front", "observation.images.wrist"],
                              weight=0.6),
                  DatasetSpec(path=str(robot_b), cameras=["observation.images.top"], weight=0.4)],
        num_cameras=2, image_size=(32, 32), max_state_dim=16, max_action_dim=16, chunk_size=8,
        augment=AugmentConfig())
    return MixtureDataset(cfg)


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
        else:
            assert a[key] == b[key], key


def test_resume_mid_epoch_with_two_workers(robot_a, robot_b):
    mix = _mixture(robot_a, robot_b)
    loader = make_loader(mix, batch_size=4, num_workers=2, seed=11, samples_per_epoch=48)
    it = iter(loader)
    for _ in range(5):
        next(it)
    state = loader.state_dict()
    expected = [next(it) for _ in range(4)]
    del it
    assert not mix.members[0]._videos._files, "the parent process must not open decoders"

    restored = make_loader(_mixture(robot_a, robot_b), batch_size=4, num_workers=2, seed=11, samples_per_epoch=48)
    restored.load_state_dict(state)
    it = iter(restored)
    got = [next(it) for _ in range(4)]
    for a, b in zip(expected, got):
        _assert_same(a, b)
    assert expected[0]["images"].shape == (4, 2, 3, 32, 32) and len(expected[0]["prompt"]) == 4
    assert len(list(it)) == 12 - 9  # 48 samples / 4 = 12 batches per epoch, 9 already taken
    assert len([b["dataset_index"] for b in restored]) == 12

    fresh = make_loader(_mixture(robot_a, robot_b), batch_size=4, num_workers=2, seed=11, samples_per_epoch=48)
    first = next(iter(fresh))
    assert not torch.equal(first["state"], expected[0]["state"]), "a fresh loader must not start where we resumed"


def test_sampler_epochs_differ_and_state_round_trips():
    sampler = MixtureSampler([10, 20], [0.5, 0.5], samples_per_epoch=30, seed=0)
    first, second = list(iter(sampler)), list(iter(sampler))
    assert first != second
    again = MixtureSampler([10, 20], [0.5, 0.5], samples_per_epoch=30, seed=0)
    assert list(iter(again)) == first
    ranks = [list(iter(MixtureSampler([10, 20], [0.5, 0.5], 30, seed=0, rank=r, world_size=2))) for r in (0, 1)]
    assert ranks[0] == first[0::2] and ranks[1] == first[1::2]


def _write_224(root: Path) -> Path:
    """2 episodes x 30 frames, 2 cameras 224x224 AV1 of moving sine patterns plus noise (like the benchmark)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:224, 0:224]
    cams = ("observation.images.front", "observation.images.wrist")
    features = {k: {"dtype": "video", "shape": (224, 224, 3)} for k in cams}
    features["observation.state"] = {"dtype": "float32", "shape": (3,)}
    features["action"] = {"dtype": "float32", "shape": (2,)}
    writer = DatasetWriter(root, fps=30, features=features)
    for ep in range(2):
        for t in range(30):
            frame = {"observation.state": np.full(3, t), "action": np.full(2, ep)}
            for c, key in enumerate(cams):
                base = 127 + 100 * np.sin((xx + 3 * t + 40 * c) / 17.0) * np.cos((yy - 2 * t) / 23.0)
                img = base[..., None] + np.array([0, 30, -30]) + rng.integers(-8, 9, (224, 224, 3))
                frame[key] = np.clip(img, 0, 255).astype(np.uint8)
            writer.add_frame(frame)
        writer.save_episode(task="t")
    return writer.finalize()


_FORK_SCRIPT = """
import sys
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, sys.argv[2])
from test_loader import _write_224
from tau_data import DatasetSpec, MixtureConfig, MixtureDataset, make_loader
torch.set_num_threads(1)
root = _write_224(Path(sys.argv[1]))
cams = ["observation.images.front", "observation.images.wrist"]
mix = MixtureDataset(MixtureConfig(datasets=[DatasetSpec(path=str(root), cameras=cams)], num_cameras=2,
                                   image_size=(224, 224), chunk_size=50))
for row in np.random.default_rng(0).integers(0, len(mix), 200):
    mix[(0, int(row), None)]
loader = make_loader(mix, batch_size=16, num_workers=2, seed=0, samples_per_epoch=64, timeout=20)
batches = list(loader)
assert len(batches) == 4 and batches[0]["images"].shape == (16, 2, 3, 224, 224)
print("workers ok")
"""


def test_workers_after_parent_decoded(tmp_path):
    """Decoding in the parent before the workers fork must neither break nor hang them (the LeRobot fork pitfall).

    Freeing the inherited AV1 decoders in a worker hung it on this data (in a fresh interpreter, hence the
    subprocess); the loader timeout turns a hang into a failure.
    """
    proc = subprocess.run([sys.executable, "-c", _FORK_SCRIPT, str(tmp_path / "cam224"), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert proc.returncode == 0 and "workers ok" in proc.stdout, proc.stderr[-3000:]


def test_mixture_pickles_without_decoders(robot_a, robot_b):
    """Spawned workers receive the dataset pickled: decoders are not pickled and reopen lazily on the other side."""
    import pickle

    mix = _mixture(robot_a, robot_b)
    before = mix[(0, 7, 3)]
    clone = pickle.loads(pickle.dumps(mix))
    assert not clone.members[0]._videos._files
    after = clone[(0, 7, 3)]
    _assert_same(before, after)


@pytest.mark.parametrize("cut", [4, 6])
def test_resume_across_epoch_boundaries(robot_a, robot_b, cut):
    """State saved at the end of an epoch (cut=4) or inside the next one (cut=6) resumes the same stream."""
    def loader():
        return make_loader(_mixture(robot_a, robot_b), batch_size=4, num_workers=2, seed=3, samples_per_epoch=16)

    first, seq, state = loader(), [], None
    for _ in range(3):
        for batch in first:
            seq.append(batch["state"])
            if len(seq) == cut:
                state = first.state_dict()
    second, rest = loader(), []
    second.load_state_dict(state)
    while len(rest) < len(seq) - cut:
        rest.extend(batch["state"] for batch in second)
    assert len(rest) == len(seq) - cut
    for a, b in zip(seq[cut:], rest):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
