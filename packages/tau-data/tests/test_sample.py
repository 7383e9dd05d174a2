"""build_sample: the one frame -> standard sample path (fixed order of operations), and the mixture's transform."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from tau_data import DatasetSpec, MixtureConfig, MixtureDataset, NormMode, Normalizer, build_sample, make_loader
from tau_data.loader import draw_seed
from tau_models import resize_with_pad
from tau_models.sample import SAMPLE_KEYS

HEAD = "arm/default"


def _normalizer() -> Normalizer:
    stats = {HEAD: {"state": {"mean": [1.0, 2.0, 3.0], "std": [2.0, 2.0, 2.0]},
                    "actions": {"mean": [0.5, -0.5], "std": [0.5, 0.25]}}}
    return Normalizer(stats=stats, modes={"state": NormMode.MEAN_STD, "actions": NormMode.MEAN_STD})


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_frame_becomes_the_standard_sample():
    wide = _image(20, 40)
    sample = build_sample([wide, None], np.array([3.0, 2.0, 1.0]), "push", normalizer=_normalizer(), head=HEAD,
                          image_size=16, max_state_dim=5, actions=np.array([[1.0, 0.0], [0.5, -0.5]]),
                          action_is_pad=np.array([False, True]), max_action_dim=4)
    assert set(sample) <= SAMPLE_KEYS
    # the fixed order: uint8 -> float32 / 255 -> tau-models' resize_with_pad (16 x 32 -> 8 x 16 centred in 16 x 16)
    expected = resize_with_pad(torch.from_numpy(wide).permute(2, 0, 1)[None].float() / 255.0, 16)[0]
    assert torch.equal(sample["images"][0], expected)
    assert sample["images"][0, :, :4].abs().sum() == 0 and sample["images"][0, :, 12:].abs().sum() == 0
    assert sample["images"][1].abs().sum() == 0 and sample["image_mask"].tolist() == [True, False]
    assert sample["images"].dtype == torch.float32 and sample["images"].shape == (2, 3, 16, 16)
    torch.testing.assert_close(sample["state"], torch.tensor([1.0, 0.0, -1.0, 0.0, 0.0]))
    torch.testing.assert_close(sample["actions"], torch.tensor([[1.0, 2.0, 0, 0], [0.0, 0.0, 0, 0]]))
    assert int(sample["state_dim"]) == 3 and int(sample["action_dim"]) == 2 and sample["prompt"] == "push"
    assert sample["action_is_pad"].tolist() == [False, True]


def test_acting_sample_has_no_actions_and_same_size_images_are_kept():
    image = _image(16, 16, seed=1)
    sample = build_sample([image], np.zeros(3), "p", normalizer=_normalizer(), head=HEAD, image_size=(16, 16),
                          max_state_dim=3)
    assert "actions" not in sample and "action_is_pad" not in sample
    assert torch.equal(sample["images"][0], torch.from_numpy(image).permute(2, 0, 1).float() / 255.0)


@pytest.mark.parametrize("change, message", [
    ({"images": [np.zeros((8, 8, 3), np.float32)]}, r"camera slot 0 must be a uint8 \(H, W, 3\)"),
    ({"images": [np.zeros((8, 8), np.uint8)]}, "camera slot 0 must be a uint8"),
    ({"state": np.zeros(6)}, "value has 6 dims but the stats have 3"),
    ({"max_state_dim": 2}, "state has 3 dims, more than the model's max_state_dim=2"),
    ({"state": np.array([0.0, np.nan, 0.0])}, "state contains NaN"),
    ({"actions": np.zeros((2, 2))}, "actions but no max_action_dim"),
    ({"actions": np.zeros(2), "max_action_dim": 4}, r"\(chunk, action_dim\)"),
    ({"actions": np.zeros((2, 2)), "max_action_dim": 4, "action_is_pad": np.zeros(3)}, "action_is_pad must have"),
    ({"actions": np.zeros((2, 2)), "max_action_dim": 1}, "more than the model's max_action_dim=1"),
])
def test_bad_frames_are_named(change, message):
    args = {"images": [_image(8, 8)], "state": np.zeros(3), "actions": None, "max_action_dim": None,
            "action_is_pad": None, "max_state_dim": 5, **change}
    with pytest.raises(ValueError, match=message):
        build_sample(args["images"], args["state"], "p", normalizer=_normalizer(), head=HEAD, image_size=8,
                     max_state_dim=args["max_state_dim"], actions=args["actions"], action_is_pad=args["action_is_pad"],
                     max_action_dim=args["max_action_dim"])


class Tag:
    """A picklable transform: scales the state and records the draw seed it was given (so its effect is visible)."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, sample: dict, *, rng: int) -> dict:
        return {**sample, "state": sample["state"] * self.scale, "seed": torch.tensor(rng)}


def _mixture(root) -> MixtureDataset:
    spec = DatasetSpec(path=str(root), cameras=["observation.images.top"])
    return MixtureDataset(MixtureConfig(datasets=[spec], num_cameras=1, image_size=(16, 16), max_state_dim=16,
                                        max_action_dim=16, chunk_size=4))


def test_draw_seed_is_the_samplers_seed_or_made_from_the_index():
    assert draw_seed((0, 5, 123)) == 123 and draw_seed(7) == 7
    assert draw_seed((1, 5)) != draw_seed((0, 5))


def test_loader_workers_run_the_transform_with_each_draws_seed(robot_b):
    """Spawned workers get the transform pickled and run it on every sample with the sampler's per-draw seed, so a
    resumed loader hands the transform the same seeds again."""
    mixture = _mixture(robot_b)
    options = dict(batch_size=4, num_workers=1, seed=0, samples_per_epoch=8, multiprocessing_context="spawn",
                   timeout=120)
    loader = make_loader(mixture, transform=Tag(0.5), **options)
    plain = make_loader(mixture, **options)
    batches, expected, again = list(loader), list(plain), list(make_loader(mixture, transform=Tag(0.5), **options))
    assert len(batches) == 2
    torch.testing.assert_close(batches[0]["state"], 0.5 * expected[0]["state"])
    seeds = [int(s) for b in batches for s in b["seed"]]
    assert len(set(seeds)) == 8 and seeds == [int(s) for b in again for s in b["seed"]]
