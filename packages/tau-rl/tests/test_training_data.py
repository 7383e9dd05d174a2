import numpy as np
import pytest
from conftest import shared_dir
from tau_data import LeRobotDataset
from tau_data.mixture import DatasetSpec, MixtureConfig, MixtureDataset

from tau_rl.training_data import LabelledMixture, frame_labels


@pytest.fixture(scope="module")
def synthetic():
    root = shared_dir() / "datasets" / "lerobot-written" / "synth_2cam_96_av1"
    if not root.is_dir():
        raise RuntimeError(f"shared LeRobot fixture missing at {root}")
    return root


def test_frame_labels_need_success_or_an_assumption(synthetic):
    ds = LeRobotDataset(synthetic)
    with pytest.raises(ValueError, match="assume_success"):
        frame_labels(ds)
    labels = frame_labels(ds, assume_success=True)
    assert labels["success"].all() and not labels["intervention"].any()
    assert len(labels["episode_index"]) == len(ds) == 250
    assert labels["frame_index"][0] == 0


def _mixture_and_marks(synthetic):
    """The fixture twice as a mixture, with a label marking each row (+row in member 0, -row in member 1)."""
    spec = DatasetSpec(path=str(synthetic), cameras=["observation.images.front"])
    mixture = MixtureDataset(MixtureConfig(datasets=[spec, spec], num_cameras=1, image_size=(32, 32),
                                           max_state_dim=8, max_action_dim=8, chunk_size=4))
    return mixture, [np.arange(250, dtype=np.float32), -np.arange(250, dtype=np.float32)]


def test_labelled_mixture_attaches_labels_by_member_and_row(synthetic):
    mixture, marks = _mixture_and_marks(synthetic)
    labelled = LabelledMixture(mixture, {"advantage": marks})
    assert labelled[(1, 7, 3)]["advantage"].item() == -7.0
    assert labelled[250 + 9]["advantage"].item() == -9.0
    assert labelled[4]["advantage"].item() == 4.0
    with pytest.raises(ValueError, match="249 entries"):
        LabelledMixture(mixture, {"advantage": [marks[0], marks[1][:249]]})
    with pytest.raises(ValueError, match="arrays for 1 datasets"):
        LabelledMixture(mixture, {"advantage": [marks[0]]})


def test_group_weights_give_the_demonstrations_and_the_positive_frames_their_shares():
    from tau_rl.sampling_weights import group_weights

    # groups: demo positive, demo negative, rollout positive, rollout negative
    frames, demo, positive = [100, 300, 200, 800], [True, True, False, False], [True, False, True, False]
    np.testing.assert_allclose(group_weights(frames, demo, positive, None, None), np.array(frames) / 1400)
    weights = np.array(group_weights(frames, demo, positive, 0.5, None))
    np.testing.assert_allclose(weights, [0.125, 0.375, 0.1, 0.4])  # by frames within demos and within rollouts
    weights = np.array(group_weights(frames, demo, positive, 0.5, 0.8))
    np.testing.assert_allclose(weights, [0.4, 0.1, 0.4, 0.1])
    assert weights[[0, 2]].sum() == pytest.approx(0.8) and weights[:2].sum() == pytest.approx(0.5)
    weights = np.array(group_weights(frames, demo, positive, None, 0.6))
    np.testing.assert_allclose(weights[:2] / weights[:2].sum(), [0.6, 0.4])  # each side keeps its frame share
    np.testing.assert_allclose(weights[:2].sum(), 400 / 1400)
    np.testing.assert_allclose(group_weights(frames, demo, positive, 1.0, None)[2:], [0.0, 0.0])
    # a side with no positive frames is left by frames
    np.testing.assert_allclose(group_weights([100, 0], [True, True], [True, False], None, 0.8), [1.0, 0.0])


def test_frame_groups_sample_their_rows_with_their_weights(synthetic):
    from tau_data.loader import MixtureSampler
    from tau_rl.training_data import FrameGroups

    mixture, marks = _mixture_and_marks(synthetic)
    labelled = LabelledMixture(mixture, {"advantage": marks})
    positive_rows = np.arange(0, 250, 5)
    groups = [(0, positive_rows), (0, np.setdiff1d(np.arange(250), positive_rows)), (1, np.array([], dtype=int))]
    dataset = FrameGroups(labelled, groups, [0.8, 0.2, 0.5])
    assert len(dataset.groups) == 2 and len(dataset) == 250  # the empty group is left out
    np.testing.assert_allclose(dataset.weights, [0.8, 0.2])
    assert dataset[(0, 3, 0)]["advantage"].item() == marks[0][15]
    sampler = MixtureSampler(dataset.lengths, dataset.weights, 2000, seed=0)
    picked = np.array([dataset.groups[int(g)][1][int(r)] for g, r, *_ in sampler])
    assert abs(np.isin(picked, positive_rows).mean() - 0.8) < 0.04
    with pytest.raises(ValueError, match="2 weights"):
        FrameGroups(labelled, groups, [0.8, 0.2])
    with pytest.raises(TypeError, match="group, row"):
        dataset[3]


def test_positive_sample_fraction_is_validated():
    from tau_rl import RecapConfig

    config = RecapConfig(run_dir="x", tasks=["tabletop/push_red_left"], demos=["d"])
    config.policy.positive_sample_fraction = 1.0
    with pytest.raises(ValueError, match="positive_sample_fraction must be in"):
        config.validate()
    config.policy.positive_sample_fraction, config.policy.mode = 0.7, "positive"
    with pytest.raises(ValueError, match="positive_sample_fraction needs"):
        config.validate()


def test_demo_fraction_is_validated():
    from tau_rl import RecapConfig

    config = RecapConfig(run_dir="x", tasks=["tabletop/push_red_left"], demos=["d"])
    config.policy.demo_fraction = 1.5
    with pytest.raises(ValueError, match="demo_fraction"):
        config.validate()
