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


def test_labelled_mixture_attaches_labels_by_member_and_row(synthetic):
    spec = DatasetSpec(path=str(synthetic), cameras=["observation.images.front"])
    mixture = MixtureDataset(MixtureConfig(datasets=[spec, spec], num_cameras=1, image_size=(32, 32),
                                           max_state_dim=8, max_action_dim=8, chunk_size=4))
    marks = [np.arange(250, dtype=np.float32), -np.arange(250, dtype=np.float32)]
    labelled = LabelledMixture(mixture, {"advantage": marks})
    assert labelled[(1, 7, 3)]["advantage"].item() == -7.0
    assert labelled[250 + 9]["advantage"].item() == -9.0
    assert labelled[4]["advantage"].item() == 4.0
    with pytest.raises(ValueError, match="249 entries"):
        LabelledMixture(mixture, {"advantage": [marks[0], marks[1][:249]]})
    with pytest.raises(ValueError, match="arrays for 1 datasets"):
        LabelledMixture(mixture, {"advantage": [marks[0]]})


def test_source_weights_give_the_demonstrations_their_share():
    from tau_rl.stages import source_weights

    frames, demo = [300, 100, 500, 100], [True, True, False, False]
    weights = source_weights(0.5, frames, demo)
    np.testing.assert_allclose(weights, [0.375, 0.125, 0.5 * 5 / 6, 0.5 / 6])
    assert source_weights(1.0, frames, demo)[2:] == [0.0, 0.0]
    assert source_weights(None, frames, demo) is None  # by frames, the mixture's default
    assert source_weights(0.5, [300], [True]) is None  # no rollouts yet


def test_demo_fraction_is_validated():
    from tau_rl import RecapConfig

    config = RecapConfig(run_dir="x", tasks=["tabletop/push_red_left"], demos=["d"])
    config.policy.demo_fraction = 1.5
    with pytest.raises(ValueError, match="demo_fraction"):
        config.validate()
