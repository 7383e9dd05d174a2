"""Drives a tau policy server with the real openpi client; runs in the openpi-client venv (numpy<2), never in tau's.

Usage: python openpi_client_driver.py SPEC.json OUT_DIR. SPEC: {"host", "port", "api_key", "chunk", "requests":
path of an .npz with image (N, H, W, 3), wrist_image (N, H, W, 3), state (N, D), and "prompts": N strings}.
Writes OUT_DIR/results.json (metadata, error texts, timing keys) and OUT_DIR/actions.npz:
  sequential   (N, chunk, A)   one WebsocketClientPolicy, requests 0..N-1 in order
  broker       (2 * chunk, A)  ActionChunkBroker over requests 0 and 1, one action per step
  after_error  (chunk, A)      request 0 on a new connection after a malformed request
  concurrent_a / concurrent_b / concurrent_*_state: two clients in two threads at once, even / odd requests
"""

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
from openpi_client.action_chunk_broker import ActionChunkBroker  # pants: no-infer-dep
from openpi_client.websocket_client_policy import WebsocketClientPolicy  # pants: no-infer-dep


def observation(data, prompts, i):
    return {"observation/image": data["image"][i], "observation/wrist_image": data["wrist_image"][i],
            "observation/state": data["state"][i], "prompt": prompts[i]}


def failure_text(fn):
    try:
        fn()
    except Exception as error:  # the client's own exception, recorded for the test to check
        return f"{type(error).__name__}: {error}"
    return None


def main():
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    data = dict(np.load(spec["requests"]))
    prompts, n = spec["prompts"], len(spec["prompts"])
    host, port, key = spec["host"], spec["port"], spec["api_key"]
    results, actions = {}, {}

    client = WebsocketClientPolicy(host, port, api_key=key)
    results["metadata"] = client.get_server_metadata()
    replies = [client.infer(observation(data, prompts, i)) for i in range(n)]
    actions["sequential"] = np.stack([r["actions"] for r in replies])
    results["reply_keys"] = sorted(replies[-1])
    results["timing_keys"] = sorted(replies[-1]["server_timing"])

    broker = ActionChunkBroker(client, action_horizon=spec["chunk"])
    actions["broker"] = np.stack([broker.infer(observation(data, prompts, i))["actions"]
                                  for i in (0, 1) for _ in range(spec["chunk"])])

    # The client reads the metadata in its constructor, so a rejected connection fails there.
    results["no_key"] = failure_text(lambda: WebsocketClientPolicy(host, port))
    results["wrong_key"] = failure_text(lambda: WebsocketClientPolicy(host, port, api_key="wrong"))

    bad = observation(data, prompts, 0)
    bad["observation/image"] = bad["observation/image"].astype(np.float32)
    results["malformed"] = failure_text(lambda: client.infer(bad))
    results["same_connection_after_error"] = failure_text(lambda: client.infer(observation(data, prompts, 0)))
    actions["after_error"] = WebsocketClientPolicy(host, port, api_key=key).infer(observation(data, prompts, 0))[
        "actions"]

    def run(name, order):
        own = WebsocketClientPolicy(host, port, api_key=key)
        start = time.perf_counter()
        got = [own.infer(observation(data, prompts, i))["actions"] for i in order]
        spans[name] = (start, time.perf_counter())
        actions[f"concurrent_{name}"] = np.stack(got)
        actions[f"concurrent_{name}_state"] = data["state"][list(order)]

    spans = {}
    threads = [threading.Thread(target=run, args=("a", range(0, n, 2))),  # distinct frames per client
               threading.Thread(target=run, args=("b", range(n - 1, 0, -2)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (a0, a1), (b0, b1) = spans["a"], spans["b"]
    results["concurrent_overlap_s"] = min(a1, b1) - max(a0, b0)

    (out / "results.json").write_text(json.dumps(results))
    np.savez(out / "actions.npz", **actions)


if __name__ == "__main__":
    main()
