"""apps/serve's command line: options reach the server and the policy, SIGTERM / SIGINT shut it down cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from serve_app.cli import DEFAULT_POLICY, main
from served_policy import CHUNK, bundle_folder, sample_frames, served_policy
from websockets.exceptions import ConnectionClosed

from tau_policy.serving import API_KEY_ENV, RemotePolicy, RemotePolicyError

LAUNCH = "import sys; from serve_app.cli import main; main(sys.argv[1:])"  # apps/serve in a child process


def start(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """apps/serve on a free loopback port; the process and its URL (from its start-up line)."""
    path = os.pathsep.join(os.path.abspath(entry or os.curdir) for entry in sys.path)  # absolute: cwd may change
    child_env = {**os.environ, "PYTHONPATH": path, **(env or {})}
    process = subprocess.Popen([sys.executable, "-c", LAUNCH, "--port", "0", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=child_env, cwd=cwd)
    line = process.stdout.readline()
    if "serving" not in line:
        process.kill()
        raise RuntimeError(f"apps/serve did not start: {line}{process.stderr.read()}")
    return process, line.split(" on ", 1)[1].split(" ", 1)[0]


@pytest.mark.parametrize(("sig", "explicit"), [(signal.SIGTERM, True), (signal.SIGINT, False)])
def test_serves_until_a_signal_then_stops_cleanly(sig: signal.Signals, explicit: bool, tmp_path: Path) -> None:
    if explicit:
        args = ["--policy", str(bundle_folder()), "--head", "arm_a", "--default-prompt", "push the red block",
                "--max-message-mb", "0.5", "--seed", "5", "--inference-steps", "1"]
        expected = {"head": "arm_a/default", "default_prompt": "push the red block", "max_message_bytes": 2**19,
                    "num_inference_steps": 1}
    else:  # the defaults: the bundle apps/train writes, relative to the working directory
        (tmp_path / DEFAULT_POLICY).parent.mkdir(parents=True)
        (tmp_path / DEFAULT_POLICY).symlink_to(bundle_folder())
        args, expected = [], {"head": "arm_a/default", "default_prompt": None, "max_message_bytes": 16 * 2**20,
                              "num_inference_steps": 2}
    process, url = start("--keys", "tau-sim", *args, cwd=tmp_path, env={API_KEY_ENV: "secret"})
    try:
        assert url.startswith("ws://127.0.0.1:")
        health = urllib.request.urlopen(url.replace("ws://", "http://") + "/healthz", timeout=10)
        assert health.read() == b"OK\n"
        with pytest.raises(RemotePolicyError, match="invalid or missing API key"):
            RemotePolicy(url)
        remote = RemotePolicy(url, api_key="secret")
        server = remote.metadata["server"]
        got = {"head": remote.metadata["layout"]["head"],
               "default_prompt": server["observation_keys"]["default_prompt"],
               "max_message_bytes": server["max_message_bytes"],
               "num_inference_steps": remote.metadata["model"]["num_inference_steps"]}
        assert got == expected and remote.keys.stacked_images == "images"
        assert remote.metadata["provenance"]["source"] == str(bundle_folder().parent / "robot_a")
        frames = sample_frames(1)
        images = np.stack([frames["image"], frames["image"]], axis=1)
        actions = remote.act({"images": images, "state": frames["state"]}, frames["prompts"])
        local = served_policy(seed=5 if explicit else 0)
        local.num_inference_steps = expected["num_inference_steps"]
        top, wrist = local.layout.cameras
        reference = local.act({top: images[:, 0], wrist: images[:, 1], "observation.state": frames["state"]},
                              frames["prompts"])
        assert actions.shape == (1, CHUNK, 2)
        np.testing.assert_array_equal(actions, reference)  # --seed and --inference-steps reached the policy
        process.send_signal(sig)
        assert process.wait(timeout=30) == 0
        with pytest.raises(ConnectionClosed) as closed:
            remote._connection.recv(timeout=10)
        assert closed.value.rcvd.code == 1001  # going away
        assert "policy server stopped" in process.stdout.read()
    finally:
        process.kill()


def test_bad_options_are_named(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["--keys", "robotX"])
    assert result.exit_code == 2 and "--keys" in result.output and "neither a preset" in result.output
    result = runner.invoke(main, ["--keys", "aloha", "--policy", str(bundle_folder())])
    assert result.exit_code == 1 and "name 4 camera keys" in result.output
    result = runner.invoke(main, ["--policy", str(bundle_folder()), "--head", "arm_z"])
    assert result.exit_code == 1 and "'arm_z' is no head, robot type or dataset" in result.output
    result = runner.invoke(main, ["--policy", str(tmp_path)])
    assert result.exit_code == 1 and "unknown checkpoint layout (no bundle.json" in result.output
