"""The policy server in process: errors close one connection only, size limit, health and heartbeat during
inference, one inference at a time, shutdown, start-up checks, and the RemotePolicy client."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator

import msgpack
import numpy as np
import pytest
from conftest import mixture, tiny_model
from served_policy import CHUNK, RecordingPolicy, libero_request, reference_actions, sample_frames, served_policy
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tau_policy import PolicyBundle, Provenance, SimPolicy, load_policy
from tau_policy.serving import (
    PRESETS,
    ObservationKeys,
    PolicyServer,
    RemotePolicy,
    RemotePolicyError,
    ServerThread,
    pack,
    unpack,
)


class SlowPolicy:
    """The tiny policy, held `delay_s` inside each act, counting how many acts ever ran at once."""

    def __init__(self, delay_s: float, fail_on: str | None = None) -> None:
        self.policy, self.delay_s, self.fail_on = served_policy(), delay_s, fail_on
        self.layout, self.metadata = self.policy.layout, self.policy.metadata
        self.active = self.most_active = 0
        self.lock = threading.Lock()

    def act(self, observation, prompts, noise=None):  # noqa: ANN001, ANN201 (the ServablePolicy signature)
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            time.sleep(self.delay_s)
            if prompts[0] == self.fail_on:
                raise ZeroDivisionError("the policy broke")
            return self.policy.act(observation, prompts, noise)
        finally:
            with self.lock:
                self.active -= 1


@pytest.fixture()
def slow() -> Iterator[tuple[SlowPolicy, ServerThread]]:
    policy = SlowPolicy(0.02, fail_on="explode")
    with ServerThread(PolicyServer(policy, PRESETS["libero"], port=0, max_message_bytes=200_000)) as running:
        yield policy, running


def open_client(url: str) -> tuple[ClientConnection, dict]:
    connection = connect(url, compression=None, max_size=None).__enter__()  # the server's shutdown closes it
    return connection, unpack(connection.recv(timeout=10))


def error_and_close(connection: ClientConnection) -> tuple[str, int]:
    """The text frame the server sends on an error, then the close code it sends."""
    text = connection.recv(timeout=10)
    with pytest.raises(ConnectionClosed) as closed:
        connection.recv(timeout=10)
    return text, closed.value.rcvd.code


FRAMES = sample_frames(2)


@pytest.mark.parametrize(("frame", "message"), [
    (b"\xc1", "bad request: request is not openpi msgpack: frame is not msgpack"),
    ("a text frame", "bad request: requests must be binary msgpack frames, got a text frame"),
    (pack([1, 2]), "bad request: a request must be a msgpack map of observation keys, got list"),
    (pack({**libero_request(FRAMES, 0), "observation/state": np.array([np.nan, 1.0])}),
     "bad request: request key 'observation/state' holds NaN or infinite values"),
    (pack({k: v for k, v in libero_request(FRAMES, 0).items() if k != "observation/wrist_image"}),
     "bad request: request has no key 'observation/wrist_image' (expected a uint8 (H, W, 3) image"),
    (pack({**libero_request(FRAMES, 0), "prompt": "explode"}), "policy server error: ZeroDivisionError: the policy "
                                                                "broke"),
])
def test_an_error_closes_that_connection_only(slow, frame: bytes | str, message: str) -> None:
    _, running = slow
    bystander, _ = open_client(running.url)
    connection, _ = open_client(running.url)
    connection.send(frame)
    text, code = error_and_close(connection)
    assert text.startswith(message) and code == 1011
    bystander.send(pack(libero_request(FRAMES, 1)))
    assert unpack(bystander.recv(timeout=10))["actions"].shape == (CHUNK, 2)
    fresh, _ = open_client(running.url)
    fresh.send(pack(libero_request(FRAMES, 0)))
    assert unpack(fresh.recv(timeout=10))["actions"].shape == (CHUNK, 2)


def test_a_message_over_the_size_limit_is_refused(slow) -> None:
    _, running = slow
    connection, metadata = open_client(running.url)
    assert metadata["server"]["max_message_bytes"] == 200_000
    big = {**libero_request(FRAMES, 0), "observation/image": np.zeros((300, 300, 3), np.uint8)}
    connection.send(pack(big))
    with pytest.raises(ConnectionClosed) as closed:
        connection.recv(timeout=10)
    assert closed.value.sent.code == 1009  # message too big
    fresh, _ = open_client(running.url)
    fresh.send(pack(libero_request(FRAMES, 0)))
    assert "actions" in unpack(fresh.recv(timeout=10))


def test_health_and_heartbeat_answer_during_inference_and_requests_queue() -> None:
    policy = SlowPolicy(0.4)
    with ServerThread(PolicyServer(policy, PRESETS["libero"], port=0)) as running:
        check_heartbeat_and_queue(policy, running)


def check_heartbeat_and_queue(policy: SlowPolicy, running: ServerThread) -> None:
    http = running.url.replace("ws://", "http://")
    assert urllib.request.urlopen(f"{http}/healthz", timeout=5).read() == b"OK\n"
    clients = [open_client(running.url)[0] for _ in range(3)]
    start = time.perf_counter()
    for client in clients:
        client.send(pack(libero_request(FRAMES, 0)))
    time.sleep(0.2)  # all three queued: the first is inside act for 0.4 s
    assert policy.active == 1
    t0 = time.perf_counter()
    assert urllib.request.urlopen(f"{http}/healthz", timeout=5).status == 200
    clients[2].ping().wait(timeout=5)
    assert time.perf_counter() - t0 < 0.3  # the event loop is free while the worker runs the model
    queued = [unpack(client.recv(timeout=10))["server_timing"]["queue_ms"] for client in clients]
    assert policy.most_active == 1 and time.perf_counter() - start >= 3 * 0.4
    assert sorted(queued)[-1] > 600  # the last request waited for the two before it


def test_shutdown_closes_open_connections_as_going_away() -> None:
    running = ServerThread(PolicyServer(served_policy(), PRESETS["libero"], port=0))
    with running:
        connection, _ = open_client(running.url)
    with pytest.raises(ConnectionClosed) as closed:
        connection.recv(timeout=10)
    assert closed.value.rcvd.code == 1001


def test_start_up_checks() -> None:
    policy = served_policy()
    with pytest.raises(ValueError, match=r"name 4 camera keys .* but the policy has 2 cameras"):
        PolicyServer(policy, PRESETS["aloha"])
    with pytest.raises(ValueError, match="api_key must not be empty"):
        PolicyServer(policy, api_key=" ")
    with ServerThread(PolicyServer(policy, port=0)) as running, pytest.raises(RuntimeError, match="failed to start"):
        ServerThread(PolicyServer(policy, port=running.server.port)).__enter__()


def test_remote_policy_acts_like_the_policy_under_any_single_state_keys() -> None:
    frames = sample_frames(3)
    tau_sim = {"images": np.stack([np.stack([frames["image"][i], frames["image"][i][:, :, ::-1]])
                                   for i in range(3)]), "state": frames["state"]}
    prompts = frames["prompts"]
    for keys in (PRESETS["tau-sim"], PRESETS["libero"], ObservationKeys(cameras=("x", "y"), state=("s",),
                                                                      channels_first=True)):
        with ServerThread(PolicyServer(served_policy(), keys, port=0, api_key="k")) as running, \
                RemotePolicy(running.url, api_key="k") as remote:
            got = remote.act(tau_sim, prompts)
        local = served_policy()
        top, wrist = local.layout.cameras
        expected = np.concatenate([local.act({top: tau_sim["images"][i: i + 1, 0], wrist: tau_sim["images"][i: i + 1, 1],
                                              "observation.state": frames["state"][i: i + 1]}, [prompts[i]])
                                   for i in range(3)])
        np.testing.assert_array_equal(got, expected)


def test_remote_policy_errors_are_clear() -> None:
    policy = served_policy()
    with ServerThread(PolicyServer(policy, PRESETS["tau-sim"], port=0, api_key="k")) as running:
        with pytest.raises(RemotePolicyError, match="closed the connection: .*1008.*invalid or missing API key"):
            RemotePolicy(running.url, api_key="nope")
        with RemotePolicy(running.url, api_key="k") as remote, \
                pytest.raises(RemotePolicyError, match="failed: bad request: request key 'state' holds NaN"):
            remote.act({"images": np.zeros((1, 2, 8, 8, 3), np.uint8), "state": np.full((1, 2), np.nan)}, ["p"])
    with ServerThread(PolicyServer(policy, PRESETS["droid"], port=0)) as running, \
            pytest.raises(RemotePolicyError, match="reads the state from 2 keys"):
        RemotePolicy(running.url)
    with pytest.raises(RemotePolicyError, match="cannot connect to the policy server at ws://127.0.0.1:9"):
        RemotePolicy("ws://127.0.0.1:9", timeout_s=5)


def test_reply_is_plain_msgpack_with_float32_actions() -> None:
    policy = served_policy()
    with ServerThread(PolicyServer(policy, port=0)) as running:
        connection, _ = open_client(running.url)
        connection.send(pack(libero_request(FRAMES, 0)))
        reply = connection.recv(timeout=10)
    raw = msgpack.unpackb(reply)
    assert raw["actions"][b"dtype"] == "<f4" and raw["actions"][b"shape"] == [CHUNK, 2]
    np.testing.assert_array_equal(unpack(reply)["actions"], reference_actions(served_policy(), FRAMES, [0])[0])


def test_a_head_without_some_camera_is_served_only_the_cameras_it_reads(two_robots, tmp_path) -> None:
    bundle = PolicyBundle.from_mixture(tiny_model(), mixture(two_robots[1]), provenance=Provenance())
    folder = bundle.save(tmp_path / "policy")  # robot B: camera slots (front, None), state 2, action 3
    rng = np.random.default_rng(0)
    observations = [{"images": rng.integers(0, 256, (1, 2, 24, 24, 3), dtype=np.uint8),  # one env, 2 env cameras
                     "state": rng.normal(size=(1, 2)).astype(np.float32)} for _ in range(2)]
    local = SimPolicy(load_policy(folder), seed=0)
    expected = [local.act(observation, ["push block 0"]) for observation in observations]
    recording = RecordingPolicy(load_policy(folder))
    with ServerThread(PolicyServer(recording, PRESETS["tau-sim"], port=0)) as running, \
            RemotePolicy(running.url) as remote:
        assert remote.camera_slots == ["observation.images.front", None]
        got = [remote.act(observation, ["push block 0"]) for observation in observations]
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(expected))
    assert got[0].shape == (1, CHUNK, 3)
    assert sorted(recording.calls[0][0]) == ["observation.images.front", "observation.state"]
