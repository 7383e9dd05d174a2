"""LIBERO evaluation speed: env-steps per CPU-second of tau-sim's evaluation against openpi's plain loop.

Usage: python benchmarks/tau_sim_libero_speed.py [--task libero_object/0] [--episodes 4] [--max-steps N]
                                                 [--modes reference,tau_default,tau_fast] [--image-diff]
Every mode runs the same episodes (init states 0..N-1 of one task, both cameras at 256 px, 10 settle steps, the
suite's step limit, seeded uniform-random 5-step chunks, so every episode runs to the limit):
  reference    openpi's examples/libero/main.py loop (tau_sim.libero_reference) around one OffScreenRenderEnv with
               LIBERO's default settings (MSAA, reflections, hard_reset=True), one episode after the other;
  tau_default  tau_sim.evaluate, 2 async workers, soft resets, default rendering;
  tau_fast     the same with fast_render (no MSAA, no reflections): the settings of the CPU chain.
Each mode runs in its own process; its CPU time is that process tree's (workers and forkserver included, read from
the parent's RUSAGE_CHILDREN once the tree has exited). Prints a table and the ratios to the reference.
--image-diff instead prints how far fast_render's images are from the default rendering (same init states).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

MODES = ("reference", "tau_default", "tau_fast")
CHUNK = 5


class RandomChunks:
    """Seeded uniform actions in [-1, 1]^7, CHUNK at a time (tau-sim's Policy protocol)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Nothing to clear."""

    def act(self, observation: dict[str, np.ndarray], prompts: list[str]) -> np.ndarray:
        return self.rng.uniform(-1, 1, size=(len(prompts), CHUNK, 7)).astype(np.float32)


def run_reference(task_id: str, episodes: int, max_steps: int) -> int:
    from tau_sim.libero_reference import make_reference_task, run_reference_episode

    suite, index = task_id.split("/")
    task = make_reference_task(suite, int(index))
    policy = RandomChunks()
    try:
        steps = [run_reference_episode(task, i, lambda _: policy.act({}, [""])[0], max_steps)[1]
                 for i in range(episodes)]  # fmt: skip
    finally:
        task.close()
    return int(sum(steps))


def run_tau(task_id: str, episodes: int, max_steps: int, fast_render: bool) -> int:
    import multiprocessing.forkserver

    from tau_sim import EvalConfig, evaluate

    config = EvalConfig(
        episodes_per_task=episodes,
        seed=0,
        num_envs=2,
        action_steps=CHUNK,
        videos_per_task=0,
        env_kwargs={"image_size": 256, "fast_render": fast_render, "max_episode_steps": max_steps},
    )
    summary = evaluate(RandomChunks(), [task_id], config)
    # The workers are the forkserver's children: stop it so their CPU time reaches this process's parent.
    multiprocessing.forkserver._forkserver._stop()
    return int(round(summary["overall"]["mean_length"] * summary["overall"]["completed"]))


def image_diff(task_id: str, episodes: int, sizes: tuple[int, ...] = (128, 256)) -> None:
    """Mean absolute pixel difference (of 255) and share of pixels off by more than 8, fast vs default rendering,
    per camera, over the first `episodes` init states after the settle steps."""
    from tau_sim import make_env

    for size in sizes:
        default = make_env(task_id, image_size=size)
        fast = make_env(task_id, image_size=size, fast_render=True)
        try:
            diffs = np.stack([np.abs(default.reset(seed=i)[0]["images"].astype(np.int16)
                                     - fast.reset(seed=i)[0]["images"]) for i in range(episodes)])  # fmt: skip
        finally:
            default.close()
            fast.close()
        for slot, camera in enumerate(default.camera_names):
            d = diffs[:, slot]
            print(
                f"{size} px {camera:18s} mean |diff| {d.mean():.2f}/255, pixels off by > 8: {(d > 8).mean():.1%}, "
                f"max {d.max()}"
            )


def child(mode: str, task_id: str, episodes: int, max_steps: int) -> None:
    start = time.perf_counter()
    steps = (
        run_reference(task_id, episodes, max_steps)
        if mode == "reference"
        else run_tau(task_id, episodes, max_steps, fast_render=mode == "tau_fast")
    )
    print(json.dumps({"steps": steps, "wall_s": time.perf_counter() - start}))


def measure(mode: str, task_id: str, episodes: int, max_steps: int) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--task", task_id, "--episodes", str(episodes),
                          "--max-steps", str(max_steps)], check=True, capture_output=True, text=True)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"steps": result["steps"], "wall_s": result["wall_s"], "cpu_s": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="libero_object/0")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument(
        "--max-steps", type=int, default=None, help="policy steps per episode (default: the suite's)"
    )
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument(
        "--image-diff", action="store_true", help="fast vs default rendering, pixel differences"
    )
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    from tau_sim.libero_env import MAX_EPISODE_STEPS

    max_steps = args.max_steps or MAX_EPISODE_STEPS[args.task.split("/")[0]]
    if args.child:
        child(args.child, args.task, args.episodes, max_steps)
        return
    if args.image_diff:
        image_diff(args.task, args.episodes)
        return
    import mujoco

    print(
        f"{args.task}, {args.episodes} episodes x {max_steps} policy steps (+10 settle), 2 cameras at 256 px, "
        f"mujoco {mujoco.__version__}, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows = {}
    for mode in args.modes.split(","):
        rows[mode] = row = measure(mode, args.task, args.episodes, max_steps)
        row["per_cpu_s"] = row["steps"] / row["cpu_s"]
        print(
            f"{mode:12s} {row['steps']:5d} steps  {row['cpu_s']:7.1f} CPU-s  {row['wall_s']:7.1f} wall-s  "
            f"{row['per_cpu_s']:5.2f} steps/CPU-s  {row['steps'] / row['wall_s']:5.2f} steps/s",
            flush=True,
        )
    if "reference" in rows:
        for mode, row in rows.items():
            if mode != "reference":
                print(
                    f"{mode} / reference: {row['per_cpu_s'] / rows['reference']['per_cpu_s']:.2f}x steps per "
                    f"CPU-second, {rows['reference']['wall_s'] / row['wall_s']:.2f}x wall"
                )


if __name__ == "__main__":
    main()
