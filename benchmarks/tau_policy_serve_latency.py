"""Policy server latency over loopback vs the same policy called in process (tau-policy serving).

For each config the server runs in its own process (one inference worker, as apps/serve runs it); this process
sends openpi requests (two 224x224 uint8 cameras or three, state, prompt: what openpi's robot clients send) one at a
time and, interleaved, calls an identical policy in process on the same observation. Reported per request:
  remote     client send -> reply decoded (p50 / p99)
  local      policy.act in process (p50 / p99)
  overhead   remote - local at p50 and p99, and per request remote - the server's own infer_ms (p50 / p99)
  server     the server's own time per request (frame received -> reply sent, minus infer_ms; from the next
             reply's prev_total_ms), of which decode_ms (unpack + key checks) and queue_ms (worker hand-off)
  serialise  pack + unpack of the request and of the reply (what the wire adds, measured alone)
Target: p50 overhead <= max(2 ms, 5% of local p50), checked end to end (remote - infer_ms: includes the client's
own packing and its socket thread) and for the server's own time. On a busy machine the end-to-end figure also
holds the waits of the 4-5 process/thread wake-ups a request needs (client socket thread, event loop, worker).
Configs (random weights: latency does not depend on training):
  default  the embedded default (apps/train's preset): tiny pi0.5, 2 cameras at 56 px, chunk 10, state 10, action 2
  larger   wider and deeper towers (VLM 512x4, expert 256x4), 3 cameras at 112 px, chunk 50, state/action 14

Usage: python benchmarks/tau_policy_serve_latency.py [--config default|larger|all] [--requests N]
(PYTHONPATH: the packages' src/ folders and packages/tau-policy/tests, e.g. as /work/devpytest sets it).
TEMPORARY: the policy is tau-policy's test stand-in (tests/tiny_served_policy.py) until tau_policy.load_policy lands.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages" / "tau-policy" / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tau_models import GemmaConfig, VisionConfig  # noqa: E402
from tau_policy.serving import PRESETS, ObservationKeys, PolicyServer, pack, serve_until_signal, unpack  # noqa: E402
from tiny_served_policy import TinyLayout, TinyPolicy, build_tiny_policy  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

CAMERAS = ("observation.images.top", "observation.images.wrist", "observation.images.side")
KEYS = ObservationKeys(cameras=("observation/image", "observation/wrist_image", "observation/side_image"),
                       state=PRESETS["libero"].state)
DEFAULT = dict(chunk_size=10, state_mode="continuous", max_state_dim=12, max_action_dim=8, tokenizer_max_length=64,
               num_inference_steps=10)
CONFIGS = {
    "default": (TinyLayout(cameras=CAMERAS[:2], state_dim=10, action_dim=2, chunk_size=10, image_size=56), DEFAULT),
    "larger": (TinyLayout(cameras=CAMERAS, state_dim=14, action_dim=14, chunk_size=50, image_size=112),
               {**DEFAULT, "chunk_size": 50, "max_state_dim": 32, "max_action_dim": 32,
                "vision": VisionConfig(width=128, depth=2, mlp_dim=512, num_heads=4, patch_size=14, image_size=112),
                "vlm": GemmaConfig(width=512, depth=4, mlp_dim=2048, num_heads=8, num_kv_heads=1, head_dim=64),
                "expert": GemmaConfig(width=256, depth=4, mlp_dim=1024, num_heads=8, num_kv_heads=1, head_dim=64)}),
}


def build(config: str) -> TinyPolicy:
    layout, overrides = CONFIGS[config]
    return build_tiny_policy(seed=0, layout=layout, **overrides)


def keys_for(policy: TinyPolicy) -> ObservationKeys:
    return ObservationKeys(cameras=KEYS.cameras[: len(policy.layout.cameras)], state=KEYS.state)


def request(policy: TinyPolicy, rng: np.random.Generator) -> dict:
    """One openpi request: 224x224 cameras, the state, a prompt."""
    req = {key: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for key in keys_for(policy).cameras}
    req[KEYS.state[0]] = rng.uniform(0, 1, policy.layout.state_dim).astype(np.float32)
    req["prompt"] = "push the red block to the target"
    return req


def features(policy: TinyPolicy, req: dict) -> dict:
    obs = {name: req[key][None] for name, key in zip(policy.layout.cameras, keys_for(policy).cameras, strict=True)}
    obs[policy.layout.state_feature] = req[KEYS.state[0]][None]
    return obs


def serve(config: str) -> None:
    """--serve: the server process; prints its URL, serves until SIGTERM."""
    torch.set_num_threads(1)
    policy = build(config)
    server = PolicyServer(policy, keys_for(policy), port=0)
    serve_until_signal(server, on_ready=lambda url: print(url, flush=True))


def percentiles(ms: list[float]) -> str:
    return f"p50 {np.percentile(ms, 50):7.2f} ms  p99 {np.percentile(ms, 99):7.2f} ms"


def measure(config: str, n: int) -> None:
    torch.set_num_threads(1)
    server = subprocess.Popen([sys.executable, __file__, "--serve", config], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        policy = build(config)
        rng = np.random.default_rng(0)
        reqs = [request(policy, rng) for _ in range(8)]
        remote, local, overhead, serialise, decode, queue, own = [], [], [], [], [], [], []
        last_infer_ms = None
        with connect(url, compression=None, max_size=None) as ws:
            unpack(ws.recv())  # the metadata
            for i in range(n + 5):  # 5 warm-up rounds
                req = reqs[i % len(reqs)]
                t0 = time.perf_counter()
                ws.send(pack(req))
                reply = unpack(ws.recv())
                t1 = time.perf_counter()
                policy.act(features(policy, req), [req["prompt"]])
                t2 = time.perf_counter()
                s0 = time.perf_counter()
                unpack(pack({"actions": reply["actions"], "server_timing": reply["server_timing"]}))
                unpack(pack(req))
                s1 = time.perf_counter()
                timing = reply["server_timing"]
                if i > 5:  # prev_total_ms: the server's time for the previous request, received -> reply sent
                    own.append(timing["prev_total_ms"] - last_infer_ms)
                last_infer_ms = timing["infer_ms"]
                if i >= 5:
                    remote.append((t1 - t0) * 1e3)
                    local.append((t2 - t1) * 1e3)
                    overhead.append((t1 - t0) * 1e3 - reply["server_timing"]["infer_ms"])
                    serialise.append((s1 - s0) * 1e3)
                    decode.append(reply["server_timing"]["decode_ms"])
                    queue.append(reply["server_timing"]["queue_ms"])
    finally:
        server.terminate()
        server.wait(timeout=60)
    p50 = np.percentile(remote, 50) - np.percentile(local, 50)
    p99 = np.percentile(remote, 99) - np.percentile(local, 99)
    budget = max(2.0, 0.05 * np.percentile(local, 50))
    verdict = {name: "PASS" if np.percentile(values, 50) <= budget else "FAIL"
               for name, values in (("end to end", overhead), ("server's own", own))}
    layout = policy.layout
    print(f"[{config}: {len(layout.cameras)} cams 224 px -> {layout.image_size} px, chunk {layout.chunk_size}, "
          f"state {layout.state_dim}, action {layout.action_dim}; {n} requests, 1 thread]")
    print(f"  remote    {percentiles(remote)}")
    print(f"  local     {percentiles(local)}")
    print(f"  overhead  remote - local: p50 {p50:+.2f} ms  p99 {p99:+.2f} ms | remote - server infer_ms: "
          f"{percentiles(overhead)}")
    print(f"  server    own time (received -> reply sent, minus infer_ms) {percentiles(own)}")
    print(f"            of which decode + checks {percentiles(decode)} | worker hand-off {percentiles(queue)}")
    print(f"  serialise request + reply pack/unpack: {percentiles(serialise)} "
          f"(request {len(pack(reqs[0])) / 1e3:.0f} kB)")
    print(f"  target p50 overhead <= max(2 ms, 5% of local p50) = {budget:.2f} ms: "
          + ", ".join(f"{name} {result}" for name, result in verdict.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    parser.add_argument("--requests", type=int, default=None, help="per config (default: 200 default, 50 larger)")
    parser.add_argument("--serve", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    print(f"torch {torch.__version__}, fp32, CPU, loopback", flush=True)
    for config in CONFIGS if args.config == "all" else [args.config]:
        measure(config, args.requests or (200 if config == "default" else 50))


if __name__ == "__main__":
    main()
