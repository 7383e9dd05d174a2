"""The apps end to end on tiny settings: generate demonstrations -> train -> evaluate -> one RECAP iteration."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import serve_app.cli
import yaml
from tau_data import LeRobotDataset
from click.testing import CliRunner
from cli_invoke import invoke
from data_app.cli import main as data_main
from eval_app.cli import main as eval_main
from rl_app.cli import main as rl_main
from train_app.cli import main as train_main

TASK = "tabletop/push_red_to_target"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny policy trained for a few steps on freshly generated demonstrations."""
    root = tmp_path_factory.mktemp("e2e")
    demos = root / "demos"
    invoke(data_main, ["generate", "--output", str(demos), "--tasks", TASK, "--episodes-per-task", "4",
                       "--mistake-rate", "0.5"])
    config = {
        "data": {"datasets": [{"path": str(demos), "cameras": ["observation.images.top",
                                                                "observation.images.wrist"]}]},
        "model": {"preset": "tiny_pi05", "tokenizer": "local",
                  "overrides": {"chunk_size": 5, "max_state_dim": 4, "max_action_dim": 4, "num_inference_steps": 2,
                                "tokenizer_max_length": 48}},
        "train": {"output_dir": str(root / "train"), "steps": 4, "batch_size": 4, "schedule": {"warmup_steps": 1},
                  "checkpoint": {"every_steps": 2}, "logging": {"every_steps": 1}},
        "num_workers": 0,
    }
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    result = invoke(train_main, ["--config", str(path)])
    assert "trained policy written to" in result.output
    return root


def test_train_writes_checkpoints_logs_plots_and_policy(trained: Path) -> None:
    train = trained / "train"
    assert sorted(p.name for p in (train / "checkpoints").iterdir()) == ["step_000000002", "step_000000004"]
    assert len((train / "metrics.jsonl").read_text().splitlines()) >= 4
    assert (train / "plots" / "loss.png").stat().st_size > 1000
    assert {p.name for p in (train / "policy").iterdir()} >= {"model", "normalizer.json", "bundle.json"}


def test_eval_reports_success_rate(trained: Path) -> None:
    out = trained / "eval"
    result = invoke(eval_main, ["--policy", str(trained / "train" / "policy"), "--tasks", TASK, "--head",
                                "tau_sim_tabletop", "--episodes-per-task", "2", "--videos-per-task", "1",
                                "--output-dir", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["completed"] == 2 and summary["overall"]["missing"] == 0
    assert 0.0 <= summary["overall"]["success_rate"] <= 1.0
    assert (out / "success.png").is_file() and any((out / "videos").glob("*.mp4"))
    assert "success rate" in result.output


def test_eval_rejects_a_folder_without_policy(tmp_path: Path) -> None:
    result = CliRunner().invoke(eval_main, ["--policy", str(tmp_path)])
    assert result.exit_code != 0 and "no trained policy" in result.output


def test_eval_names_the_heads_of_the_policy(trained: Path) -> None:
    result = CliRunner().invoke(eval_main, ["--policy", str(trained / "train" / "policy"), "--head", "aloha"])
    assert result.exit_code != 0 and "'aloha' is no head" in result.output and "tau_sim_tabletop/default" in result.output


def test_eval_through_the_policy_server_gives_the_local_episodes(trained: Path, tmp_path: Path) -> None:
    """apps/serve on a free loopback port + apps/eval --server: the per-episode results of apps/eval --policy."""
    policy = str(trained / "train" / "policy")
    common = ["--tasks", TASK, "--episodes-per-task", "2", "--num-envs", "1", "--action-steps", "2",
              "--videos-per-task", "0", "--seed", "7"]
    invoke(eval_main, ["--policy", policy, "--head", "tau_sim_tabletop", *common, "--output-dir",
                       str(tmp_path / "local")])
    serve = [serve_app.cli.__file__, "--policy", policy, "--head", "tau_sim_tabletop", "--keys", "tau-sim",
             "--port", "0", "--seed", "7"]
    path = os.pathsep.join(os.path.abspath(entry or os.curdir) for entry in sys.path)
    env = {**os.environ, "PYTHONPATH": path, "TAU_SERVE_API_KEY": "k"}
    server = subprocess.Popen([sys.executable, *serve], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = server.stdout.readline()
        assert " on ws://127.0.0.1:" in line, line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        refused = CliRunner().invoke(eval_main, ["--server", url, *common, "--output-dir", str(tmp_path / "x")])
        assert refused.exit_code == 1 and "invalid or missing API key" in refused.output
        invoke(eval_main, ["--server", url, "--api-key", "k", *common, "--output-dir", str(tmp_path / "remote")])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    local, remote = ([{k: v for k, v in e.items() if k != "seconds"} for e in  # all but the wall-clock time
                      json.loads((tmp_path / name / "summary.json").read_text())["episodes"]]
                     for name in ("local", "remote"))
    assert len(local) == 2 and remote == local  # same success, length and action jerk: the same actions
    mixed = CliRunner().invoke(eval_main, ["--server", url, "--head", "tau_sim_tabletop", "--inference-steps", "1"])
    assert mixed.exit_code == 1 and "--head, --inference-steps cannot be combined with it" in mixed.output


def test_one_recap_iteration(trained: Path) -> None:
    tokenizer = str(trained / "train" / "tokenizer")
    tiny = {"steps": 2, "batch_size": 4, "warmup_steps": 0, "checkpoint_every": 2}
    config = {
        "run_dir": str(trained / "recap"), "iterations": 1, "tasks": [TASK], "demos": [str(trained / "demos")],
        "env_kwargs": {"max_episode_steps": 20},
        "returns": {"max_episode_steps": 100, "failure_penalty": 100.0},
        "collect": {"episodes_per_task": 2, "num_envs": 2},
        "value": {"preset": "tiny", "overrides": {"tokenizer_name": tokenizer, "tokenizer_max_length": 48},
                  "train": tiny},
        "advantages": {"lookahead": 5},
        "policy": {"checkpoint": str(trained / "train" / "policy" / "model"), "sft": tiny, "finetune": tiny},
        "eval": {"episodes_per_task": 2, "num_envs": 2, "videos_per_task": 0},
    }
    path = trained / "recap.yaml"
    path.write_text(yaml.safe_dump(config))
    invoke(rl_main, ["--config", str(path)])
    summary = json.loads((trained / "recap" / "summary.json").read_text())
    assert [row["iteration"] for row in summary["iterations"]] == [0, 1]


def test_libero_demos_are_written_and_read_back(tmp_path: Path) -> None:
    out = tmp_path / "libero_demos"
    invoke(data_main, ["generate", "--output", str(out), "--tasks", "libero_object/0", "--episodes-per-task", "1",
                       "--image-size", "32", "--max-steps", "4"])
    dataset = LeRobotDataset(str(out))
    assert len(dataset) == 4 and dataset.meta.fps > 0
    assert dataset.meta.camera_keys == ["observation.images.agentview", "observation.images.robot0_eye_in_hand"]
    frame = dataset[3]
    assert tuple(frame["observation.state"].shape) == (8,) and tuple(frame["action"].shape) == (7,)
    assert dataset.meta.tasks[0].startswith("pick up the alphabet soup")
    summary = json.loads(invoke(data_main, ["info", str(out)]).output)
    assert summary["episodes"] == 1 and summary["frames"] == 4


def test_eval_expert_and_random_bounds(tmp_path: Path) -> None:
    common = ["--tasks", TASK, "--episodes-per-task", "2", "--videos-per-task", "0"]
    invoke(eval_main, ["--expert", *common, "--output-dir", str(tmp_path / "expert")])
    output = invoke(eval_main, ["--random", *common, "--output-dir", str(tmp_path / "random")]).output
    expert = json.loads((tmp_path / "expert" / "summary.json").read_text())["overall"]
    random = json.loads((tmp_path / "random" / "summary.json").read_text())["overall"]
    assert expert["success_rate"] == 1.0 and random["completed"] == 2
    assert expert["failure_modes"] == {}
    # every failed episode of the random policy is put down to one of tau-sim's failure modes, and printed
    assert sum(random["failure_modes"].values()) == random["completed"] - random["successes"]
    assert ("failed episodes by reason" in output) == (random["successes"] < 2)


def test_eval_and_generate_take_a_scene_layout(tmp_path: Path) -> None:
    common = ["--tasks", TASK, "--episodes-per-task", "2", "--videos-per-task", "0", "--layout", "slots"]
    invoke(eval_main, ["--expert", *common, "--output-dir", str(tmp_path / "expert")])
    assert json.loads((tmp_path / "expert" / "summary.json").read_text())["overall"]["success_rate"] == 1.0
    out = tmp_path / "demos"
    invoke(data_main, ["generate", "--output", str(out), "--tasks", TASK, "--episodes-per-task", "1",
                       "--layout", "uniform", "--image-size", "16"])
    assert json.loads(invoke(data_main, ["info", str(out)]).output)["episodes"] == 1
    bad = CliRunner().invoke(eval_main, ["--expert", "--layout", "grid"])
    assert bad.exit_code != 0 and "'grid' is not one of" in bad.output


def test_train_refuses_architecture_overrides_on_a_pretrained_policy(trained: Path) -> None:
    result = CliRunner().invoke(train_main, [
        "model.pretrained=" + str(trained / "train" / "policy" / "model"), "model.overrides.vision.image_size=64",
        "train.output_dir=" + str(trained / "refused"), "demos=null",
        "data.datasets=[{path: " + str(trained / "demos") + "}]",
    ])
    assert result.exit_code != 0 and "changes the architecture of the checkpoint" in result.output
    assert not (trained / "refused" / "checkpoints").exists()
