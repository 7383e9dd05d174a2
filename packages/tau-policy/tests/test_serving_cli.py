"""apps/serve's command line: options reach the server, SIGTERM / SIGINT shut it down cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from click.testing import CliRunner
from serve_app.cli import API_KEY_ENV, DEFAULT_POLICY, make_command
from tiny_served_policy import load_tiny, sample_frames
from websockets.exceptions import ConnectionClosed

from tau_policy.serving import RemotePolicy, RemotePolicyError

# Runs apps/serve's command with the tiny policy's loader in a child process, passing its arguments through.
LAUNCH = ("import sys; from serve_app.cli import make_command; from tiny_served_policy import load_tiny; "
          "make_command(load_tiny)(sys.argv[1:])")


def start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    process = subprocess.Popen([sys.executable, "-c", LAUNCH, "--port", "0", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=child_env)
    line = process.stdout.readline()
    if "serving" not in line:
        process.kill()
        raise RuntimeError(f"apps/serve did not start: {line}{process.stderr.read()}")
    return process, line.split(" on ", 1)[1].split(" ", 1)[0]


@pytest.mark.parametrize(("sig", "args", "expected"), [
    (signal.SIGTERM, ["--policy", "my/bundle", "--head", "robot_a", "--default-prompt", "push the red block",
                      "--max-message-mb", "0.5"],
     {"source": "my/bundle", "head": "robot_a", "default_prompt": "push the red block", "max_message_bytes": 2**19}),
    (signal.SIGINT, [], {"source": str(DEFAULT_POLICY), "head": None, "default_prompt": None,
                         "max_message_bytes": 16 * 2**20}),
])
def test_serves_until_a_signal_then_stops_cleanly(sig: signal.Signals, args: list[str], expected: dict) -> None:
    process, url = start("--keys", "tau-sim", *args, env={API_KEY_ENV: "secret"})
    try:
        assert url.startswith("ws://127.0.0.1:")
        health = urllib.request.urlopen(url.replace("ws://", "http://") + "/healthz", timeout=10)
        assert health.read() == b"OK\n"
        with pytest.raises(RemotePolicyError, match="invalid or missing API key"):
            RemotePolicy(url)
        remote = RemotePolicy(url, api_key="secret")
        server = remote.metadata["server"]
        got = {"source": remote.metadata["source"], "head": remote.metadata["head"],
               "default_prompt": server["observation_keys"]["default_prompt"],
               "max_message_bytes": server["max_message_bytes"]}
        assert got == expected and remote.keys.stacked_images == "images"
        frames = sample_frames(1)
        obs = {"images": np.stack([frames["image"], frames["image"]], axis=1), "state": frames["state"]}
        assert remote.act(obs, frames["prompts"]).shape == (1, 4, 2)
        process.send_signal(sig)
        assert process.wait(timeout=30) == 0
        with pytest.raises(ConnectionClosed) as closed:
            remote._connection.recv(timeout=10)
        assert closed.value.rcvd.code == 1001  # going away
        assert "policy server stopped" in process.stdout.read()
    finally:
        process.kill()


def test_bad_options_are_named() -> None:
    runner = CliRunner()
    result = runner.invoke(make_command(load_tiny), ["--keys", "robotX"])
    assert result.exit_code == 2 and "--keys" in result.output and "neither a preset" in result.output
    result = runner.invoke(make_command(load_tiny), ["--keys", "aloha"])
    assert result.exit_code == 1 and "name 4 camera keys" in result.output
