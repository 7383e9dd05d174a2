"""apps/train's `libero` preset against the feature layout of the published LeRobot-format LIBERO dataset it names
(HuggingFaceVLA/libero), rebuilt locally with tau-data's writer: the mapping, FAST's action range, the full-size
model config (meta device), and the preset's whole pipeline for a few steps on a tiny model."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tau_data import LeRobotDataset, MixtureDataset, NormMode
from tau_data.writer import DatasetWriter
from tau_models import FastTokenizer, PiModel
from tau_train import load_config
from train_app.cli import main as train_main
from train_app.config import TrainAppConfig, preset_path
from train_app.run import mixture_config, model_config

# LeRobot's LIBERO dataset, the one LeRobot's docs fine-tune pi0.5 on (LeRobot v3.0; tau-data reads it). Feature
# layout from LeRobot's LIBERO docs and its LiberoEnv features_map (agentview -> image, wrist -> image2); fps 10.
PUBLISHED_ID = "HuggingFaceVLA/libero"
FPS = 10
ROBOT_TYPE = "panda"
LAYOUT = {
    "observation.images.image": {"dtype": "video", "shape": (256, 256, 3)},
    "observation.images.image2": {"dtype": "video", "shape": (256, 256, 3)},
    "observation.state": {"dtype": "float32", "shape": (8,)},
    "action": {"dtype": "float32", "shape": (7,)},
}
TASKS = ("pick up the alphabet soup and place it in the basket", "open the middle drawer of the cabinet")
FRAMES = 14


def fake_frame(rng: np.random.Generator, t: int) -> dict:
    """A frame with LIBERO's value ranges: eef position (m), axis-angle near pi (gripper down), finger joints,
    OSC_POSE deltas in [-1, 1] with the gripper at -1 (open) or +1 (close)."""
    image = np.zeros((256, 256, 3), np.uint8)
    image[:, :, 0] = np.linspace(0, 255, 256, dtype=np.uint8)[:, None]  # top to bottom
    image[:, :, 1] = 40 + 10 * t
    state = np.r_[rng.uniform(-0.2, 0.2, 2), rng.uniform(0.0, 0.4), rng.normal([3.1, 0.0, 0.0], 0.05),
                  [0.039, -0.039] if t < FRAMES // 2 else [0.01, -0.01]]  # fmt: skip
    action = np.r_[rng.uniform(-0.9, 0.9, 6), -1.0 if t < FRAMES // 2 else 1.0]
    return {"observation.images.image": image, "observation.images.image2": image[::-1].copy(),
            "observation.state": state.astype(np.float32), "action": action.astype(np.float32)}  # fmt: skip


@pytest.fixture(scope="module")
def libero_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two episodes in HuggingFaceVLA/libero's feature layout."""
    root = tmp_path_factory.mktemp("published") / "libero"
    rng = np.random.default_rng(0)
    with DatasetWriter(root, fps=FPS, features=LAYOUT, robot_type=ROBOT_TYPE) as writer:
        for task in TASKS:
            for t in range(FRAMES):
                writer.add_frame(fake_frame(rng, t))
            writer.save_episode(task=task)
    return root


def preset(*overrides: str) -> TrainAppConfig:
    return load_config(preset_path("libero"), list(overrides), schema=TrainAppConfig)


def test_local_dataset_has_the_published_layout(libero_like: Path) -> None:
    meta = LeRobotDataset(str(libero_like)).meta
    assert meta.fps == FPS and meta.robot_type == ROBOT_TYPE and meta.version == "v3.0"
    for key, feature in LAYOUT.items():
        assert meta.features[key]["dtype"] == feature["dtype"]
        assert tuple(meta.features[key]["shape"]) == feature["shape"]


def test_preset_names_the_published_dataset_and_its_features() -> None:
    (spec,) = preset().data["datasets"]
    assert spec["path"] == PUBLISHED_ID
    assert spec["cameras"] == ["observation.images.image", "observation.images.image2"]  # agentview, wrist
    assert spec["state"] in LAYOUT and spec["actions"] in LAYOUT


def test_preset_mapping_reads_the_local_dataset(libero_like: Path) -> None:
    """The full-size model config (built on the meta device) sets the sample layout; every mapped feature lands."""
    config = preset(f"data.datasets[0].path={libero_like}")
    full = model_config(config, tokenizer=None)
    with torch.device("meta"):
        model = PiModel(full)
    assert model.config.variant == "pi05" and full.vision.image_size == 224 and full.chunk_size == 10
    assert full.knowledge_insulation and full.fast_loss_weight > 0 and full.fast_tokenizer_path
    dataset = MixtureDataset(mixture_config(config, full))
    assert dataset.state_dims == [8] and dataset.action_dims == [7]
    sample = dataset[FRAMES + 3]
    assert tuple(sample["images"].shape) == (2, 3, 224, 224) and bool(sample["image_mask"].all())
    agentview, wrist = sample["images"]
    # two cameras in the agentview-then-wrist order: the wrist fake is the agentview fake upside down (AV1 is lossy)
    assert (agentview[0] - wrist[0]).abs().mean() > 0.2 and (agentview[0].flip(0) - wrist[0]).abs().mean() < 0.03
    assert sample["prompt"] == TASKS[1] and tuple(sample["actions"].shape) == (10, 32)


def test_preset_feeds_fast_actions_in_its_fitted_range(libero_like: Path) -> None:
    """physical-intelligence/fast was fitted on actions normalised to [-1, 1]: the preset's action norm maps the
    data's q01..q99 (QUANTILES) onto it, where MEAN_STD would put 1-sigma at +-1."""
    config = preset(f"data.datasets[0].path={libero_like}")
    assert NormMode(config.data["norm_modes"]["actions"]) in (NormMode.QUANTILES, NormMode.MIN_MAX)
    dataset = MixtureDataset(mixture_config(config, model_config(config, tokenizer=None)))
    actions = torch.stack([dataset[i]["actions"][:, :7] for i in range(len(dataset))])
    pad = torch.stack([dataset[i]["action_is_pad"] for i in range(len(dataset))])
    real = actions[~pad]
    assert real.abs().max() <= 1.1 and (real.abs() <= 1.0).float().mean() >= 0.9
    assert real.min() < -0.8 and real.max() > 0.8  # the range is used, not squeezed


def test_preset_pipeline_runs_a_few_steps_on_a_tiny_model(libero_like: Path, tmp_path: Path) -> None:
    """`apps/train --preset libero` end to end (FAST + knowledge insulation + EMA + dropout) on the local dataset,
    with the model swapped for the tiny pi0.5 and the hub tokenizers for local ones."""
    fast_dir = tmp_path / "fast"
    chunks = np.random.default_rng(0).uniform(-1, 1, (64, 10, 7)).cumsum(1) / 4
    FastTokenizer.fit(chunks, vocab_size=400).save(fast_dir)
    out = tmp_path / "train"
    overrides = [
        f"data.datasets[0].path={libero_like}", "model.preset=tiny_pi05", "model.pretrained=null",
        "model.tokenizer=local", f"model.overrides.fast_tokenizer_path={fast_dir}", "model.overrides.dtype=float32",
        "model.overrides.tokenizer_max_length=48", f"train.output_dir={out}", "train.steps=3", "train.batch_size=2",
        "train.mixed_precision=fp32", "train.schedule.warmup_steps=1", "train.checkpoint.every_steps=3",
        "train.logging.every_steps=1", "num_workers=0",
    ]  # fmt: skip
    result = CliRunner().invoke(train_main, ["--preset", "libero", *overrides], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    bundle = out / "policy" / "bundle.json"
    assert json.loads(bundle.read_text())["provenance"]["weights"] == "ema"  # EMA reaches the export
    assert len((out / "metrics.jsonl").read_text().splitlines()) >= 3
