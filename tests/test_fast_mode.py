"""FAST end to end: apps/data fit-fast on a dataset's normalised chunks, a FAST-trained policy from apps/train, and
apps/eval acting with --mode fast."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_invoke import invoke
from data_app.cli import main as data_main
from eval_app.cli import main as eval_main
from tau_data import DatasetSpec, MixtureConfig, MixtureDataset, normalized_action_chunks
from tau_models import FastTokenizer
from tau_policy import load_policy
from train_app.cli import main as train_main

TASK = "tabletop/push_red_to_target"
CHUNK, ACTION_DIM = 5, 4


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fast")
    invoke(data_main, ["generate", "--output", str(root / "demos"), "--tasks", TASK, "--episodes-per-task", "2"])
    invoke(data_main, ["fit-fast", str(root / "demos"), "--output", str(root / "fast"), "--chunk-size", str(CHUNK),
                       "--max-action-dim", str(ACTION_DIM), "--vocab-size", "256", "--max-chunks", "200"])
    config = {
        "data": {"datasets": [{"path": str(root / "demos"), "cameras": ["observation.images.top",
                                                                         "observation.images.wrist"]}]},
        "model": {"preset": "tiny_pi05", "tokenizer": "local",
                  "overrides": {"chunk_size": CHUNK, "max_state_dim": 4, "max_action_dim": ACTION_DIM,
                                "num_inference_steps": 2, "tokenizer_max_length": 48,
                                "fast_tokenizer_path": str(root / "fast"), "fast_loss_weight": 1.0,
                                "fast_max_tokens": 24}},
        "train": {"output_dir": str(root / "train"), "steps": 2, "batch_size": 2, "schedule": {"warmup_steps": 0},
                  "checkpoint": {"every_steps": 0}, "logging": {"every_steps": 1, "plots": False}},
        "num_workers": 0,
    }
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    invoke(train_main, ["--config", str(root / "train.yaml")])
    return root


def test_fit_fast_saves_the_hub_format_fitted_on_normalised_chunks(run: Path) -> None:
    fast = run / "fast"
    assert json.loads((fast / "processor_config.json").read_text()).keys() >= {"scale", "min_token", "vocab_size",
                                                                                "time_horizon", "action_dim"}
    tokenizer = FastTokenizer.load(fast)
    assert (tokenizer.time_horizon, tokenizer.action_dim) == (CHUNK, ACTION_DIM)
    mixture = MixtureDataset(MixtureConfig(datasets=[DatasetSpec(path=str(run / "demos"))], num_cameras=0,
                                           image_size=(8, 8), chunk_size=CHUNK, max_action_dim=ACTION_DIM))
    chunks = normalized_action_chunks(mixture, 30, seed=1)
    assert chunks.shape == (30, CHUNK, ACTION_DIM) and np.abs(chunks).max() <= 1.5
    decoded = tokenizer.decode(tokenizer.encode(chunks))
    assert np.abs(decoded - chunks).max() < 0.1  # rounding to 1/scale in DCT space, nothing more


def test_eval_acts_in_fast_mode(run: Path) -> None:
    policy = run / "train" / "policy"
    flow, fast = load_policy(policy), load_policy(policy, mode="fast")
    observation = {c: np.zeros((1, 32, 32, 3), np.uint8) for c in flow.layout.cameras if c}
    observation[flow.layout.state_feature] = np.zeros((1, flow.layout.state_dim), np.float32)
    assert not np.allclose(flow.act(observation, ["push"]), fast.act(observation, ["push"]))
    out = run / "eval_fast"
    invoke(eval_main, ["--policy", str(policy), "--tasks", TASK, "--mode", "fast", "--episodes-per-task", "1",
                       "--videos-per-task", "0", "--num-envs", "1", "--output-dir", str(out)])
    assert json.loads((out / "summary.json").read_text())["overall"]["completed"] == 1
