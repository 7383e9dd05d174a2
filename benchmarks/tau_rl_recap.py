"""tau-rl benchmark: RECAP on a deliberately weak pi0.5 on the built-in tabletop target tasks (CPU, ~30 minutes).

Usage: python benchmarks/tau_rl_recap.py [--run-dir runs/bench_recap] [--iterations 2] [--demos 20] ...

1. Scripted demonstrations, some of them failed (with --mistake-rate the expert pushes a wrong block).
   Both cameras are given to the policy; its state (--state privileged, the default) holds the end-effector and
   object positions, which lets a tiny pi0.5 learn something in CPU minutes (with --state state it only gets the
   end-effector and has to find the blocks in the images, which it does not learn in this budget).
2. The initial policy: a tiny pi0.5 (tau-models) fine-tuned on them with "Advantage: positive" on every prompt.
   The value model starts from this policy's VLM and also reads its state (--value-state).
3. RECAP iterations (tau_rl.run_recap): roll out the policy (an expert takes over half of the episodes), fit the
   201-bin value model, compute N-step advantages with the automatic 30% threshold, fine-tune the previous
   iteration's advantage-conditioned policy (30% conditioning dropout; positive frames drawn for 80% of the samples,
   --positive-sample-fraction), evaluate it (classifier-free guidance weight --guidance) on fixed seeds.
4. A control arm (--control): the initial policy trained on, on the demonstrations alone, for as many steps as the
   RECAP fine-tuning, and a guidance sweep of the last policy, all on the same evaluation seeds.
Prints success before and after each iteration with 95% Wilson intervals over the seeded evaluation episodes, as
markdown tables. The run folder keeps every iteration's data, models, figures and summaries; rerunning resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from tau_policy import Policy, PolicyBundle, Provenance, SimPolicy, record_episodes  # noqa: E402
from tau_sim import ExpertConfig, TabletopExpertPolicy, evaluate  # noqa: E402

from tau_rl import (  # noqa: E402
    AdvantageStageConfig,
    CollectConfig,
    EvalSettings,
    PolicyStageConfig,
    RecapConfig,
    ReturnConfig,
    TrainingSettings,
    ValueStageConfig,
    RunLayout,
    collect_rollouts,
    recap_columns,
    run_recap,
)
from tau_rl import seeds  # noqa: E402
from tau_rl.confidence import wilson_interval  # noqa: E402
from tau_rl.recap import markdown_table  # noqa: E402
from tau_rl.rollouts import ROBOT_TYPE  # noqa: E402
from tau_rl.stages import behaviour_clone, eval_config  # noqa: E402


def shared_dir() -> Path:
    """$TAU_SHARED_DIR, else the shared/ folder next to the repository root (the dir holding pants.toml)."""
    if os.environ.get("TAU_SHARED_DIR"):
        return Path(os.environ["TAU_SHARED_DIR"])
    for parent in Path(__file__).resolve().parents:
        if (parent / "pants.toml").is_file():
            return parent.parent / "shared"
    raise RuntimeError("shared/ not found: set TAU_SHARED_DIR")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", default="runs/bench_recap")
    p.add_argument("--tasks", nargs="+", default=[f"tabletop_target/push_{c}_to_target" for c in ("red", "blue", "yellow")])
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--demos", type=int, default=20, help="demonstrations per task")
    p.add_argument("--mistake-rate", type=float, default=0.5, help="fraction of demos pushing a wrong block")
    p.add_argument("--demo-noise", type=float, default=0.1, help="expert action noise in the demos")
    p.add_argument("--max-steps", type=int, default=80, help="episode step limit")
    p.add_argument("--image-size", type=int, default=64, help="rendered camera size")
    p.add_argument("--sft-steps", type=int, default=1000)
    p.add_argument("--finetune-steps", type=int, default=1000)
    p.add_argument("--value-steps", type=int, default=300)
    p.add_argument("--value-lr", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--finetune-lr", type=float, default=None, help="learning rate of the RECAP fine-tuning (--lr)")
    p.add_argument("--rollouts", type=int, default=40, help="rollout episodes per task and iteration")
    p.add_argument("--intervention-rate", type=float, default=0.5, help="share of rollouts an expert takes over")
    p.add_argument("--restart-from", default="previous", choices=["previous", "initial"],
                   help="each iteration fine-tunes the previous iteration's policy or the initial one again")
    p.add_argument("--eval-episodes", type=int, default=100, help="evaluation episodes per task (fixed seeds)")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance weight (1: the positive-conditioned policy alone)")
    p.add_argument("--guidance-sweep", type=float, nargs="*", default=[1.5, 2.5],
                   help="extra guidance weights the last policy is evaluated with (same seeds)")
    p.add_argument("--lookahead", type=int, default=80, help="N of the N-step advantage")
    p.add_argument("--mode", default="conditioned", choices=["conditioned", "positive"])
    p.add_argument("--state", default="privileged", choices=["privileged", "state"],
                   help="policy state: 'privileged' = end-effector and object positions, 'state' = end-effector only")
    p.add_argument("--value-state", action=argparse.BooleanOptionalAction, default=True,
                   help="feed the policy's state to the value model as well as the images and the task")
    p.add_argument("--demo-fraction", type=float, default=None,
                   help="share of fine-tuning samples drawn from the demonstrations (default: by frames)")
    p.add_argument("--positive-sample-fraction", type=float, default=0.8,
                   help="share of fine-tuning samples drawn from frames labelled positive (0: as labelled, ~30%%)")
    p.add_argument("--control", action=argparse.BooleanOptionalAction, default=True,
                   help="also train the initial policy on the demonstrations alone (plain behaviour cloning) for as "
                        "many steps as the RECAP fine-tuning and evaluate it on the same seeds")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    run_dir = Path(args.run_dir)
    env = {"image_size": args.image_size, "max_episode_steps": args.max_steps, "privileged_obs": True}
    demos = run_dir.parent / f"{run_dir.name}_demos"
    if not demos.exists():
        expert = TabletopExpertPolicy(ExpertConfig(action_noise=args.demo_noise, mistake_rate=args.mistake_rate))
        demo_config = CollectConfig(episodes_per_task=args.demos, seed=0, num_envs=10, state_key=args.state)
        episodes = collect_rollouts(expert, args.tasks, demo_config, env)
        columns = functools.partial(recap_columns, failure_penalty=float(args.max_steps))
        record = record_episodes(episodes, demos, robot_type=ROBOT_TYPE, extras=columns)
        print(f"demos: {record['episodes']} episodes, {record['success_rate']:.0%} successful, {record['frames']} frames")
    tokenizer = str(shared_dir() / "parity" / "pi05_tiny_a" / "tokenizer")
    model_overrides = {"tokenizer_name": tokenizer, "tokenizer_max_length": 64, "max_state_dim": 12,
                       "state_mode": "continuous",
                       "max_action_dim": 4, "chunk_size": 10, "num_inference_steps": 5, "dropout": 0.0}

    def settings(steps: int, lr: float) -> TrainingSettings:
        return TrainingSettings(steps=steps, batch_size=args.batch_size, lr=lr, warmup_steps=min(50, steps),
                                checkpoint_every=max(steps // 2, 1))

    config = RecapConfig(
        run_dir=str(run_dir), iterations=args.iterations, tasks=list(args.tasks), demos=[str(demos)], env_kwargs=env,
        returns=ReturnConfig(max_episode_steps=args.max_steps, failure_penalty=float(args.max_steps)),
        collect=CollectConfig(episodes_per_task=args.rollouts, num_envs=10, action_steps=5,
                              intervention_rate=args.intervention_rate, state_key=args.state),
        value=ValueStageConfig(preset="tiny", overrides={"tokenizer_name": tokenizer, "tokenizer_max_length": 64,
                                                         "dropout": 0.0},
                               init_from_policy=True, use_state=args.value_state,
                               train=settings(args.value_steps, args.value_lr),
                               predict_batch_size=64),
        advantages=AdvantageStageConfig(lookahead=args.lookahead),
        policy=PolicyStageConfig(preset="tiny", overrides=model_overrides, sft=settings(args.sft_steps, args.lr),
                                 finetune=settings(args.finetune_steps, args.finetune_lr or args.lr), mode=args.mode,
                                 demo_fraction=args.demo_fraction, restart_from=args.restart_from,
                                 positive_sample_fraction=args.positive_sample_fraction or None,
                                 guidance_weight=args.guidance if args.mode == "conditioned" else 1.0),
        eval=EvalSettings(episodes_per_task=args.eval_episodes, num_envs=10, action_steps=5, videos_per_task=4),
    )
    summary = run_recap(config)
    minutes = (time.perf_counter() - started) / 60
    print(f"\nRECAP on {', '.join(args.tasks)}: tiny pi0.5, {args.demos} demos/task "
          f"({args.mistake_rate:.0%} with a wrong block), {args.iterations} iterations x {args.rollouts} rollouts/task, "
          f"{args.eval_episodes} seeded eval episodes/task, guidance w={config.policy.guidance_weight}; "
          f"{minutes:.1f} min on {torch.get_num_threads()} CPU threads\n")
    print(markdown_table(summary["iterations"]))
    for row in summary["iterations"][1:]:
        print(f"iteration {row['iteration']}: rollouts {row['rollout_success_rate']:.0%} successful, "
              f"advantage threshold {row['threshold']:.4g}")
    if args.control:
        bc_control(config)
    if args.mode == "conditioned" and args.guidance_sweep:
        guidance_sweep(config, args.guidance_sweep)


def _evaluate(config: RecapConfig, folder: Path, weight: float) -> str:
    """One markdown row tail: success, 95% CI and episodes of the policy in `folder` on the RECAP eval seeds."""
    settings = dataclasses.replace(eval_config(config), use_async=False, videos_per_task=0)
    policy = SimPolicy(Policy(PolicyBundle.load(folder)), guidance_weight=weight, seed=seeds.evaluation(config))
    overall = evaluate(policy, config.tasks, settings)["overall"]
    lo, hi = wilson_interval(overall["successes"], overall["completed"])
    return f"{overall['success_rate']:.1%} | [{lo:.1%}, {hi:.1%}] | {overall['completed']} |"


def bc_control(config: RecapConfig) -> None:
    """The control arm: the initial policy trained on, on the demonstrations alone (every prompt positive), with
    the steps and learning rate of the RECAP fine-tuning: one row per iteration when RECAP restarts from the
    previous policy (so the steps add up as RECAP's do), one row when it restarts from the initial policy. It tells
    RECAP's gain apart from extra training."""
    layout = RunLayout(Path(config.run_dir))
    rounds = config.iterations if config.policy.restart_from == "previous" else 1
    print("\ncontrol: the initial policy trained on the demonstrations alone, the same steps as RECAP:\n")
    print("| policy | success | 95% CI | episodes |\n|---|---|---|---|")
    previous = layout.init.policy
    for k in range(1, rounds + 1):
        folder = layout.root / "control_bc" / f"round_{k:03d}"
        if not (folder / "policy" / "bundle.json").is_file():
            bundle = PolicyBundle.load(previous)
            model, _, _ = behaviour_clone(config, layout, bundle.model, config.policy.finetune, folder / "train",
                                          seeds.policy_training(config, k), bundle.normalizer)
            provenance = Provenance(source=str(previous), step=config.policy.finetune.steps)
            dataclasses.replace(bundle, model=model, provenance=provenance).save(folder / "policy")
        steps = k * config.policy.finetune.steps
        print(f"| behaviour cloning, +{steps} steps | {_evaluate(config, folder / 'policy', 1.0)}")
        previous = folder / "policy"


def guidance_sweep(config: RecapConfig, weights: list[float]) -> None:
    """Success of the last iteration's policy at other classifier-free guidance weights, on the same eval seeds."""
    folder = RunLayout(Path(config.run_dir)).iteration(config.iterations).policy
    print(f"\nguidance sweep, RECAP iteration {config.iterations} policy:\n")
    print("| guidance w | success | 95% CI | episodes |\n|---|---|---|---|")
    for weight in weights:
        print(f"| {weight:g} | {_evaluate(config, folder, weight)}")


if __name__ == "__main__":
    main()
