"""Serving a policy to robots over openpi's websocket protocol, and acting through such a server.

    policy = load_policy("runs/x/policy")            # tau_policy.load_policy: any saved bundle
    server = PolicyServer(policy, resolve_keys("libero"), port=8000, api_key=None)
    serve_until_signal(server)                       # until SIGTERM / SIGINT (apps/serve does this)
    with ServerThread(server) as running: ...        # or in a background thread (tests, notebooks)
    remote = RemotePolicy("ws://127.0.0.1:8000")     # tau-sim's Policy protocol, acting through the server
    summary = tau_sim.evaluate(remote, tasks, config)  # what `apps/eval --server ws://HOST:PORT` does

Robots call it with openpi_client's WebsocketClientPolicy (see server.py for the exact protocol).
"""

from tau_policy.serving.client import RemotePolicy, RemotePolicyError
from tau_policy.serving.keys import PRESETS, ObservationKeys, resolve_keys
from tau_policy.serving.policy import ServablePolicy
from tau_policy.serving.request import RequestError, policy_observation
from tau_policy.serving.server import (
    API_KEY_ENV,
    API_KEY_REJECTED,
    DEFAULT_MAX_MESSAGE_BYTES,
    HEALTH_PATH,
    PolicyServer,
    ServerThread,
    serve_until_signal,
)
from tau_policy.serving.wire import FrameError, pack, unpack

__all__ = [
    "API_KEY_ENV",
    "API_KEY_REJECTED",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "HEALTH_PATH",
    "PRESETS",
    "FrameError",
    "ObservationKeys",
    "PolicyServer",
    "RemotePolicy",
    "RemotePolicyError",
    "RequestError",
    "ServablePolicy",
    "ServerThread",
    "pack",
    "policy_observation",
    "resolve_keys",
    "serve_until_signal",
    "unpack",
]
