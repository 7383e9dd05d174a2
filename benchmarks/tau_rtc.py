"""Real-time chunking in tau-sim: success and chunk-boundary jerk under a simulated inference latency of k steps.

Usage: ./pants run benchmarks/tau_rtc.py -- [--policy outputs/default/train/policy] [--episodes 20]
Rows per k in --latencies: "naive" (the default policy ignores the executing actions), "inpaint" (the same policy,
training-free RTC guidance toward them), "RTC training" (the default policy fine-tuned with rtc_max_delay, sampled
with the executed actions as a clean prefix). Every row runs the same seeded episodes of the tabletop_target tasks.
boundary_jerk: mean squared change of the executed action at chunk switches (tau-sim's evaluation summary).
The fine-tuned policy is made once (apps/train from --policy, under nice) unless --rtc-policy exists.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import yaml  # noqa: E402
from tau_policy import SimPolicy, load_policy  # noqa: E402
from tau_sim import EvalConfig, evaluate, suite_tasks  # noqa: E402

METHODS = {"naive": ("naive", "naive"), "inpaint": ("inpaint", "inpaint"), "rtc": ("RTC training", "prefix")}


def finetune(base: Path, output_dir: Path, steps: int, max_delay: int, batch_size: int) -> Path:
    """The default policy fine-tuned with RTC training through apps/train: the default preset's demos and run
    settings, its weights and tokenizer, rtc_max_delay set (the only model override: the sizes come with the
    weights)."""
    config = yaml.safe_load((Path("apps/train/src/train_app/presets/default.yaml")).read_text())
    config["model"] = {"preset": "tiny_pi05", "pretrained": str(base / "model"),
                       "tokenizer": str(base.parent / "tokenizer"), "overrides": {"rtc_max_delay": max_delay}}
    config["train"].update(output_dir=str(output_dir), steps=steps, batch_size=batch_size,
                           optimizer={"lr": 3.0e-4, "weight_decay": 1.0e-4}, schedule={"warmup_steps": 10},
                           checkpoint={"every_steps": steps, "keep_last": 1}, logging={"every_steps": 25, "plots": False})
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "rtc_finetune.yaml"
    path.write_text(yaml.safe_dump(config))
    command = ["nice", "-n", "10", "./pants", "run", "apps/train", "--", "--config", str(path)]
    print("fine-tuning:", " ".join(command), file=sys.stderr)
    subprocess.run(command, check=True, stdout=sys.stderr)  # keep stdout for the table
    return output_dir / "policy"


def evaluate_row(folder: Path, rtc: str, latency: int, args: argparse.Namespace) -> dict:
    """Overall summary of one (policy, rtc mode, latency) row on the suite's seeded episodes."""
    policy = SimPolicy(load_policy(folder, rtc=rtc, seed=args.seed), seed=args.seed)
    config = EvalConfig(episodes_per_task=args.episodes, seed=args.seed, num_envs=args.num_envs,
                        action_steps=args.action_steps, latency_steps=latency, videos_per_task=0,
                        env_kwargs={"privileged_obs": policy.state_key == "privileged"})
    return evaluate(policy, suite_tasks(args.suite), config)["overall"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, default=Path("outputs/default/train/policy"))
    parser.add_argument("--rtc-policy", type=Path, default=Path("outputs/rtc/train/policy"))
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--finetune-batch-size", type=int, default=16)
    parser.add_argument("--max-delay", type=int, default=4)
    parser.add_argument("--suite", default="tabletop_target")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task per row")
    parser.add_argument("--latencies", default="0,2,4")
    parser.add_argument("--methods", default="naive,inpaint,rtc", help=f"a subset of {','.join(METHODS)}")
    parser.add_argument("--action-steps", type=int, default=5)
    parser.add_argument("--num-envs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    if not (args.policy / "bundle.json").is_file():
        sys.exit(f"{args.policy} is no policy bundle: train the default with `./pants run apps/train`")
    methods = [METHODS[m] for m in args.methods.split(",")]
    rtc_policy = args.rtc_policy
    if "rtc" in args.methods.split(",") and not (rtc_policy / "bundle.json").is_file():
        rtc_policy = finetune(args.policy.resolve(), rtc_policy.parent, args.finetune_steps, args.max_delay,
                              args.finetune_batch_size)
    latencies = [int(k) for k in args.latencies.split(",")]
    rows = []
    for latency in latencies:
        for name, rtc in methods:
            start = time.perf_counter()
            overall = evaluate_row(rtc_policy if rtc == "prefix" else args.policy, rtc, latency, args)
            rows.append((latency, name, overall))
            jerk = overall["boundary_jerk"]
            print(f"k={latency} {name}: success {overall['success_rate']:.3f} jerk "
                  f"{'n/a' if jerk is None else f'{jerk:.4f}'} ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr, flush=True)
    print(f"\n{args.suite}, {args.episodes} episodes per task per row (seeds {args.seed}+), chunk switches every "
          f"{args.action_steps} actions\n")
    print("| latency k | method | success | boundary jerk |\n|---|---|---|---|")
    for latency, name, overall in rows:
        jerk = overall["boundary_jerk"]
        print(f"| {latency} | {name} | {overall['success_rate']:.3f} ({overall['successes']}/{overall['completed']}) "
              f"| {'n/a' if jerk is None else f'{jerk:.4f}'} |")


if __name__ == "__main__":
    main()
