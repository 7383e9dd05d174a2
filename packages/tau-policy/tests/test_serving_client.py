"""The policy server driven by the real openpi client (openpi-client 0.1.2 in its own numpy<2 venv).

One server (with an API key) and one run of openpi_client_driver.py in the openpi venv serve every test here; the
venv is built when missing, and these tests fail (never skip) when it cannot be.
"""

from __future__ import annotations

import functools
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from openpi_client_venv import clean_env, openpi_client_python
from served_policy import CHUNK, RecordingPolicy, reference_actions, sample_frames, served_policy

from tau_policy.serving import API_KEY_REJECTED, PolicyServer, ServerThread, resolve_keys

API_KEY = "test-key-123"
N = 4
DRIVER = Path(__file__).with_name("openpi_client_driver.py")


@functools.cache
def driven() -> tuple[dict[str, Any], dict[str, np.ndarray], RecordingPolicy]:
    """Serve the tiny policy, run the openpi driver against it; its results, actions and the server's calls."""
    python = openpi_client_python()
    frames = sample_frames(N)
    work = Path(tempfile.mkdtemp(prefix="tau-openpi-driver-"))
    np.savez(work / "requests.npz", **{k: frames[k] for k in ("image", "wrist_image", "state")})
    policy = RecordingPolicy(served_policy())
    server = PolicyServer(policy, resolve_keys("libero"), port=0, api_key=API_KEY)
    with ServerThread(server):
        spec = {"host": "127.0.0.1", "port": server.port, "api_key": API_KEY, "chunk": policy.layout.chunk_size,
                "requests": str(work / "requests.npz"), "prompts": frames["prompts"]}
        (work / "spec.json").write_text(json.dumps(spec))
        run = subprocess.run([str(python), str(DRIVER), str(work / "spec.json"), str(work)], env=clean_env(),
                             capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        raise RuntimeError(f"openpi client driver failed:\n{run.stdout}\n{run.stderr}")
    actions = dict(np.load(work / "actions.npz"))
    return json.loads((work / "results.json").read_text()), actions, policy


def test_openpi_venv_has_the_real_client() -> None:
    python = openpi_client_python()
    out = subprocess.run([str(python), "-c", "import numpy, openpi_client.websocket_client_policy as w; "
                          "print(numpy.__version__, w.__file__)"], env=clean_env(), capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("1.") and "site-packages/openpi_client" in out


def test_metadata_arrives_first_and_actions_equal_the_in_process_policy() -> None:
    results, actions, _ = driven()
    assert results["metadata"]["layout"]["cameras"] == ["observation.images.top", "observation.images.wrist"]
    assert results["metadata"]["server"]["observation_keys"]["cameras"] == ["observation/image",
                                                                             "observation/wrist_image"]
    assert results["reply_keys"] == ["actions", "server_timing"]
    assert {"infer_ms", "queue_ms", "decode_ms", "prev_total_ms"} <= set(results["timing_keys"])
    expected = reference_actions(served_policy(), sample_frames(N), range(N))
    assert actions["sequential"].shape == (N, CHUNK, 2) and actions["sequential"].dtype == np.float32
    np.testing.assert_array_equal(actions["sequential"], expected)


def test_action_chunk_broker_steps_through_each_chunk() -> None:
    _, actions, policy = driven()
    chunk = policy.layout.chunk_size
    served = [call[2][0] for call in policy.calls[N: N + 2]]  # the broker's two server calls, after the N sequential
    np.testing.assert_array_equal(actions["broker"], np.concatenate(served))
    assert len(actions["broker"]) == 2 * chunk


def test_api_key_is_enforced() -> None:
    results, _, _ = driven()
    for case in ("no_key", "wrong_key"):
        assert results[case] is not None and "1008" in results[case] and API_KEY_REJECTED in results[case], case


def test_malformed_request_errors_and_a_new_connection_is_served() -> None:
    results, actions, policy = driven()
    assert results["malformed"].startswith("RuntimeError: Error in inference server:")
    assert "'observation/image' must be uint8 (H, W, 3), got float32 (32, 40, 3)" in results["malformed"]
    assert results["same_connection_after_error"] is not None and "1011" in results["same_connection_after_error"]
    after = policy.calls[N + 2]
    np.testing.assert_array_equal(after[0]["observation.state"][0], sample_frames(N)["state"][0])
    np.testing.assert_array_equal(actions["after_error"], after[2][0])


def test_two_clients_at_once_are_both_served() -> None:
    results, actions, policy = driven()
    assert results["concurrent_overlap_s"] > 0  # the two clients' request sequences overlapped in time
    concurrent = policy.calls[N + 3:]
    assert len(concurrent) == N
    by_state = {call[0]["observation.state"][0].tobytes(): call[2][0] for call in concurrent}
    for name in ("a", "b"):
        states, got = actions[f"concurrent_{name}_state"], actions[f"concurrent_{name}"]
        assert got.shape == (N // 2, CHUNK, 2)
        for state, chunk in zip(states, got, strict=True):
            np.testing.assert_array_equal(chunk, by_state.get(state.tobytes(), np.nan))
    # Every call the server made, replayed in its order through a fresh policy of the same seed, matches.
    fresh = served_policy()
    for observation, prompts, served in policy.calls:
        np.testing.assert_array_equal(fresh.act(observation, prompts), served)
