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
Policies: a saved bundle loaded with tau_policy.load_policy in both processes, either `--policy DIR` (a trained
one, e.g. outputs/default/train/policy) or a freshly initialised tiny bundle (random weights: latency does not depend
on training) built here and saved to a temporary folder:
  default  the embedded default's sizes (apps/train's preset): tiny pi0.5, 2 cameras at 56 px, chunk 10, state 10,
           action 2
  larger   wider and deeper towers (VLM 512x4, expert 256x4), 3 cameras at 112 px, chunk 50, state/action 14

Usage: python benchmarks/tau_policy_serve_latency.py [--config default|larger|all | --policy DIR [--head H]]
[--requests N] (PYTHONPATH: the packages' src/ folders, e.g. as /work/devpytest sets it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tau_data import Normalizer  # noqa: E402
from tau_models import GemmaConfig, PiModel, VisionConfig, tiny_pi05_config  # noqa: E402
from tau_models.local_tokenizer import build_local_tokenizer  # noqa: E402
from tau_policy import Policy, PolicyBundle, PolicyLayout, Provenance, load_policy  # noqa: E402
from tau_policy.serving import PRESETS, ObservationKeys, PolicyServer, pack, serve_until_signal, unpack  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

PROMPT = "push the red block to the target"
CAMERAS = ("observation.images.top", "observation.images.wrist", "observation.images.side")
CAMERA_KEYS = ("observation/image", "observation/wrist_image", "observation/side_image")
STATE_KEY = PRESETS["libero"].state[0]
DEFAULT = dict(chunk_size=10, state_mode="continuous", max_state_dim=12, max_action_dim=8, tokenizer_max_length=64,
               num_inference_steps=10)
CONFIGS = {  # (number of cameras, state dim, action dim, PiConfig overrides)
    "default": (2, 10, 2, DEFAULT),
    "larger": (3, 14, 14, {**DEFAULT, "chunk_size": 50, "max_state_dim": 32, "max_action_dim": 32,
                           "vision": VisionConfig(width=128, depth=2, mlp_dim=512, num_heads=4, patch_size=14,
                                                  image_size=112),
                           "vlm": GemmaConfig(width=512, depth=4, mlp_dim=2048, num_heads=8, num_kv_heads=1,
                                              head_dim=64),
                           "expert": GemmaConfig(width=256, depth=4, mlp_dim=1024, num_heads=8, num_kv_heads=1,
                                                 head_dim=64)}),
}


def build_bundle(config: str, root: Path) -> Path:
    """A freshly initialised tiny bundle of `config` (one head, unit statistics), saved in root/policy."""
    cameras, state_dim, action_dim, overrides = CONFIGS[config]
    tokenizer = build_local_tokenizer(root / "tokenizer", [PROMPT], vocab_size=1024)
    torch.manual_seed(0)
    model = PiModel(tiny_pi05_config(tokenizer_name=str(tokenizer), **overrides))
    cfg, head = model.config, "benchmark/default"
    stats = {head: {"state": {"mean": [0.5] * state_dim, "std": [0.25] * state_dim},
                    "actions": {"mean": [0.0] * action_dim, "std": [0.5] * action_dim}}}
    layout = PolicyLayout(head=head, cameras=CAMERAS[:cameras], image_size=(cfg.vision.image_size,) * 2,
                          state_dim=state_dim, action_dim=action_dim, chunk_size=cfg.chunk_size,
                          max_state_dim=cfg.max_state_dim, max_action_dim=cfg.max_action_dim)
    normalizer = Normalizer(stats=stats, modes={"state": "MEAN_STD", "actions": "MEAN_STD"})
    bundle = PolicyBundle(model, normalizer, (layout,), Provenance(note=f"random init: latency benchmark {config}"))
    return bundle.save(root / "policy")


def keys_for(policy: Policy) -> ObservationKeys:
    """LIBERO-style keys, one per camera the policy reads."""
    cameras = [c for c in policy.layout.cameras if c is not None]
    if len(cameras) > len(CAMERA_KEYS):
        raise ValueError(f"the benchmark sends at most {len(CAMERA_KEYS)} cameras, the policy reads {cameras}")
    return ObservationKeys(cameras=CAMERA_KEYS[: len(cameras)], state=(STATE_KEY,))


def request(policy: Policy, rng: np.random.Generator) -> dict:
    """One openpi request: 224x224 cameras, the state, a prompt."""
    req = {key: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for key in keys_for(policy).cameras}
    req[STATE_KEY] = rng.uniform(0, 1, policy.layout.state_dim).astype(np.float32)
    req["prompt"] = PROMPT
    return req


def features(policy: Policy, req: dict) -> dict:
    cameras = [c for c in policy.layout.cameras if c is not None]
    obs = {name: req[key][None] for name, key in zip(cameras, keys_for(policy).cameras, strict=True)}
    obs[policy.layout.state_feature] = req[STATE_KEY][None]
    return obs


def serve(folder: str, head: str | None) -> None:
    """--serve: the server process; prints its URL, serves until SIGTERM."""
    torch.set_num_threads(1)
    policy = load_policy(folder, head=head)
    server = PolicyServer(policy, keys_for(policy), port=0)
    serve_until_signal(server, on_ready=lambda url: print(url, flush=True))


def percentiles(ms: list[float]) -> str:
    return f"p50 {np.percentile(ms, 50):7.2f} ms  p99 {np.percentile(ms, 99):7.2f} ms"


def measure(name: str, folder: Path, head: str | None, n: int) -> None:
    torch.set_num_threads(1)
    command = [sys.executable, __file__, "--serve", str(folder), *(["--head", head] if head else [])]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        policy = load_policy(folder, head=head)
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
    print(f"[{name} ({folder}): {len(keys_for(policy).cameras)} cams 224 px -> {layout.image_size} px, "
          f"chunk {layout.chunk_size}, state {layout.state_dim}, action {layout.action_dim}; {n} requests, 1 thread]")
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
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="all", help="fresh tiny bundle(s) to serve")
    parser.add_argument("--policy", type=Path, default=None, help="serve this saved bundle instead of --config")
    parser.add_argument("--head", default=None, help="head of a multi-robot --policy")
    parser.add_argument("--requests", type=int, default=None, help="per config (default: 200 default, 50 larger)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.head)
        return
    print(f"torch {torch.__version__}, fp32, CPU, loopback", flush=True)
    if args.policy is not None:
        measure("policy", args.policy, args.head, args.requests or 200)
        return
    with tempfile.TemporaryDirectory(prefix="tau-serve-bench-") as tmp:
        for config in CONFIGS if args.config == "all" else [args.config]:
            folder = build_bundle(config, Path(tmp) / config)
            measure(config, folder, None, args.requests or (200 if config == "default" else 50))


if __name__ == "__main__":
    main()
