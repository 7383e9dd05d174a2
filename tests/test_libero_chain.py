"""The LIBERO CPU chain, shortened for CI (the full run is the README's benchmark): apps/data writes the expert's
successful LIBERO-Object episodes, apps/train --preset libero-tiny trains on them for a few steps, apps/eval runs the
policy (and the expert) on LIBERO's init states through the path a full-size checkpoint takes."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from cli_invoke import invoke
from data_app.cli import main as data_main
from eval_app.cli import main as eval_main
from tau_data import LeRobotDataset
from train_app.cli import main as train_main

pytestmark = pytest.mark.libero
TASK = "libero_object/0"  # "pick up the alphabet soup and place it in the basket": the expert solves it
RENDER = ["--image-size", "32", "--fast-render"]
EXECUTION_NOISE = "0.2,0.2,0.2,0.015,0.015,0.015,0"  # the preset's demonstrations: jittered execution, clean labels


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("libero_chain") / "demos"
    result = invoke(data_main, ["generate", "--output", str(out), "--tasks", TASK, "--episodes-per-task", "2",
                                "--successes-only", "--execution-noise", EXECUTION_NOISE, *RENDER])  # fmt: skip
    summary = json.loads(result.output[result.output.index("{\n") : result.output.rindex("}") + 1])  # after LIBERO's [info] lines
    assert summary["generated"] == 2 and summary["episodes"] == 2 and summary["success_rate"] == 1.0
    return out


def test_demos_are_the_experts_successes_from_libero_init_states(demos: Path) -> None:
    dataset = LeRobotDataset(str(demos))
    assert dataset.meta.camera_keys == ["observation.images.agentview", "observation.images.robot0_eye_in_hand"]
    assert dataset.meta.fps == 20 and len(dataset.meta.episodes) == 2
    assert all(60 < e.length < 280 for e in dataset.meta.episodes)  # ended by LIBERO's success check
    frame = dataset[0]
    assert tuple(frame["observation.state"].shape) == (8,) and tuple(frame["action"].shape) == (7,)
    assert tuple(frame["observation.images.agentview"].shape)[-2:] == (32, 32)
    success = np.asarray(dataset.columns["success"]).reshape(-1)
    assert success.all()
    # The expert never rotates (its recorded rotation actions are exactly 0), yet the executed rotation noise turned
    # the gripper: its orientation spreads over several times the noiseless expert's ~0.004 rad.
    actions, state = (np.stack([np.asarray(v) for v in dataset.columns[k]]) for k in ("action", "observation.state"))
    assert np.all(actions[:, 3:6] == 0) and state[:, 3:6].std(axis=0).max() > 0.012


def test_tiny_policy_trains_on_the_demos_and_is_evaluated(demos: Path, tmp_path: Path) -> None:
    train = tmp_path / "train"
    invoke(train_main, ["--preset", "libero-tiny", f"data.datasets[0].path={demos}", f"train.output_dir={train}",
                        "train.steps=2", "train.batch_size=4", "train.schedule.warmup_steps=1",
                        "train.checkpoint.every_steps=2", "train.logging.every_steps=1", "num_workers=0"])  # fmt: skip
    policy = train / "policy"
    assert (policy / "bundle.json").is_file()
    out = tmp_path / "eval"
    invoke(eval_main, ["--policy", str(policy), "--tasks", TASK, "--episodes-per-task", "2", "--seed", "0",
                       "--videos-per-task", "1", "--output-dir", str(out), *RENDER])  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["completed"] == 2 and summary["overall"]["missing"] == 0
    assert summary["config"]["env_kwargs"] == {"image_size": 32, "fast_render": True}
    assert any((out / "videos").glob("*.mp4"))


def test_expert_bound_on_libero(tmp_path: Path) -> None:
    out = tmp_path / "expert"
    invoke(eval_main, ["--expert", "--tasks", TASK, "--episodes-per-task", "1", "--seed", "0", "--num-envs", "1",
                       "--videos-per-task", "0", "--output-dir", str(out), *RENDER])  # fmt: skip
    overall = json.loads((out / "summary.json").read_text())["overall"]
    assert overall["completed"] == 1 and overall["success_rate"] == 1.0


def test_fast_render_is_refused_off_libero(tmp_path: Path) -> None:
    result = CliRunner().invoke(eval_main, ["--expert", "--tasks", "tabletop/push_red_to_target", "--fast-render",
                                            "--output-dir", str(tmp_path)])  # fmt: skip
    assert result.exit_code != 0 and "LIBERO tasks only" in result.output
