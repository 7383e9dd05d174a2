"""tau-sim benchmarks: built-in tabletop steps/s with rendering on one core, and scripted-expert success vs noise.

Usage: python benchmarks/tau_sim_bench.py [--steps 5000] [--episodes 40] [--libero] [--learnability]
Prints steps/s (target: hundreds per core with both cameras rendered) and a success-rate table for the expert's
action noise x mistake rate (expected: about (1 - mistake_rate) x the success at that noise). --libero adds LIBERO
steps/s (default vs fast rendering, 2 cameras) with the MuJoCo version. --learnability trains a tiny behaviour-cloning
CNN (torch, one thread, from scratch) on scripted demos for a few CPU minutes and evaluates it: a floor for what a
small pi0.5-style policy should reach on the task.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from tau_sim import TABLETOP_TASKS, ExpertConfig, TabletopEnv, generate_demos, suite_tasks  # noqa: E402
from tau_sim.eval_report import package_versions  # noqa: E402


def tabletop_steps_per_second(image_size: int, steps: int) -> tuple[float, float]:
    """(wall steps/s, CPU ms/step) of TabletopEnv.step with both cameras rendered, random actions, auto-resets."""
    env = TabletopEnv("push_red_to_target", image_size=image_size)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(steps, 2)).astype(np.float32)
    start, cpu = time.perf_counter(), time.process_time()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return steps / wall, 1000 * cpu / steps


def expert_success(config: ExpertConfig, episodes_per_task: int) -> tuple[float, float]:
    """(success rate, mean episode length) of the scripted expert over every tabletop task."""
    episodes = list(generate_demos(suite_tasks("tabletop"), episodes_per_task, expert=config, env_kwargs={"image_size": 16}))
    return float(np.mean([e.success for e in episodes])), float(np.mean([len(e) for e in episodes]))


def libero_steps_per_second(steps: int) -> None:
    from tau_sim import make_env

    for fast in (False, True):
        env = make_env("libero_spatial/0", image_size=224, fast_render=fast)
        start = time.perf_counter()
        env.reset(seed=0)
        first_reset = time.perf_counter() - start
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        start = time.perf_counter()
        env.reset(seed=1)
        reset = time.perf_counter() - start
        env.close()
        print(
            f"libero_spatial 224px 2 cams fast_render={fast}: {steps / wall:.1f} steps/s, "
            f"{1000 * cpu / steps:.0f} ms CPU/step; create+first reset {first_reset:.1f} s, reset {reset:.2f} s"
        )


def learnability(suite: str, demos: int, iterations: int) -> None:
    """Behaviour cloning of the scripted expert with a ~100k-parameter CNN + task embedding, single-step actions."""
    import torch
    from torch import nn

    from tau_sim import EvalConfig, evaluate

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tasks = suite_tasks(suite)
    task_index = {t.instruction: i for i, t in enumerate(TABLETOP_TASKS.values())}
    episodes = list(
        generate_demos(tasks, demos // len(tasks), seed=1000, expert=ExpertConfig(action_noise=0.2))
    )

    def images(batch: torch.Tensor) -> torch.Tensor:  # (B, 2, H, W, 3) uint8 -> (B, 6, H, W) float
        x = batch.permute(0, 1, 4, 2, 3)
        return x.reshape(x.shape[0], -1, *x.shape[3:]).float() / 255

    frames = torch.from_numpy(np.concatenate([e.images for e in episodes]))
    state = torch.from_numpy(np.concatenate([e.state for e in episodes]))
    actions = torch.from_numpy(np.concatenate([e.actions for e in episodes]))
    ids = torch.tensor(np.concatenate([[task_index[e.instruction]] * len(e) for e in episodes]))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Sequential(
                nn.Conv2d(6, 32, 4, 4), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU(), nn.Flatten(),
            )
            self.task = nn.Embedding(len(task_index), 64)
            self.head = nn.Sequential(nn.Linear(64 * 16 + 64 + 2, 256), nn.ReLU(), nn.Linear(256, 2))

        def forward(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.head(torch.cat([self.conv(x), self.task(t), s], 1))

    net = Net()
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    cpu = time.process_time()
    for _ in range(iterations):
        idx = torch.randint(0, len(frames), (128,))
        loss = ((net(images(frames[idx]), state[idx], ids[idx]) - actions[idx]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train_cpu = time.process_time() - cpu

    class BCPolicy:
        def reset(self) -> None:
            pass

        @torch.no_grad()
        def act(self, observation: dict[str, np.ndarray], prompts: list[str]) -> np.ndarray:
            t = torch.tensor([task_index[p] for p in prompts])
            out = net(
                images(torch.from_numpy(observation["images"])), torch.from_numpy(observation["state"]), t
            )
            return out.clamp(-1, 1).numpy()[:, None, :]

    summary = evaluate(BCPolicy(), tasks, EvalConfig(episodes_per_task=20, num_envs=10, videos_per_task=0))
    print(
        f"learnability {suite}: {len(episodes)} demos ({len(frames)} frames), {iterations} iterations "
        f"({train_cpu:.0f} s CPU, final loss {loss.item():.4f}): success {summary['overall']['success_rate']:.2f} "
        f"(expert 1.00) over {summary['overall']['completed']} episodes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--episodes", type=int, default=40, help="episodes per task for the success table")
    parser.add_argument("--libero", action="store_true")
    parser.add_argument("--learnability", action="store_true")
    parser.add_argument("--demos", type=int, default=150)
    parser.add_argument("--iterations", type=int, default=3000)
    args = parser.parse_args()
    print("versions:", package_versions())
    for size in (64, 96, 128):
        rate, cpu_ms = tabletop_steps_per_second(size, args.steps)
        print(
            f"tabletop {size}x{size} x 2 cameras: {rate:.0f} steps/s, {cpu_ms:.2f} ms CPU/step "
            f"({rate / 100:.1f}x the 100 steps/s target)"
        )
    print(f"\nexpert success over {len(TABLETOP_TASKS)} tasks x {args.episodes} episodes")
    mistakes = (0.0, 0.25, 0.5)
    print("action_noise | " + " | ".join(f"mistake {m:.2f} (expected ~{1 - m:.2f}x)" for m in mistakes))
    for noise in (0.0, 0.3, 0.6, 1.0):
        cells = []
        for mistake in mistakes:
            rate, length = expert_success(
                ExpertConfig(action_noise=noise, mistake_rate=mistake), args.episodes
            )
            cells.append(f"{rate:.3f} (len {length:.0f})")
        print(f"{noise:12.1f} | " + " | ".join(cells))
    if args.libero:
        libero_steps_per_second(30)
    if args.learnability:
        learnability("tabletop_target", args.demos, args.iterations)


if __name__ == "__main__":
    main()
