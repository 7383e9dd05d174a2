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

--from-default P [P ...]: RECAP from policies that `./pants run apps/train` trained (one per training seed, e.g.
outputs/default/train/policy after `train.seed=S`), with apps/rl's bundled preset (conditioning pass, two
iterations) and --eval-episodes per task; for each seed also the default policy itself and the behaviour-cloning
control (the same steps on the demonstrations plus the expert takeovers); then the table per seed, the mean and the
spread, the failure modes of every row and what the rollouts, takeovers and advantage labels did with each mode:
  python benchmarks/tau_rl_recap.py --from-default outputs/s0/train/policy outputs/s1/train/policy \
      outputs/s2/train/policy --run-dir outputs/recap_seeds
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tau_data.dataset import LeRobotDataset  # noqa: E402
from tau_policy import Policy, PolicyBundle, SimPolicy, record_episodes  # noqa: E402
from tau_sim import ExpertConfig, TabletopExpertPolicy, evaluate  # noqa: E402
from tau_sim.tabletop_tasks import FAILURE_MODES, failure_mode, task_from_instruction  # noqa: E402
from tau_train import load_config  # noqa: E402

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
from tau_rl.advantage_table import AdvantageTable  # noqa: E402
from tau_rl.confidence import wilson_interval  # noqa: E402
from tau_rl.layout import write_json_atomic  # noqa: E402
from tau_rl.recap import markdown_table  # noqa: E402
from tau_rl.rollouts import ROBOT_TYPE  # noqa: E402
from tau_rl.stages import control_policy, eval_config  # noqa: E402


def repo_root() -> Path:
    """The repository root: the folder above this script that holds pants.toml."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pants.toml").is_file():
            return parent
    raise RuntimeError(f"no pants.toml above {__file__}")


def shared_dir() -> Path:
    """$TAU_SHARED_DIR, else the shared/ folder next to the repository root."""
    if os.environ.get("TAU_SHARED_DIR"):
        return Path(os.environ["TAU_SHARED_DIR"])
    return repo_root().parent / "shared"


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
    p.add_argument("--control-data", default="demos+takeovers", choices=["demos", "demos+takeovers"],
                   help="what the control arm is trained on: the demonstrations, or also the expert-takeover frames "
                        "of RECAP's rollouts (the same extra data as RECAP, minus the advantage labels)")
    p.add_argument("--from-default", nargs="+", type=Path, default=None, metavar="POLICY",
                   help="RECAP with apps/rl's preset from these apps/train policy folders, one per training seed")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="the RECAP seed of each --from-default policy (default: 0, 1, ...)")
    p.add_argument("--override", nargs="+", default=[], metavar="KEY=VALUE",
                   help="--from-default: dotted settings on top of the apps/rl preset, as apps/rl takes them "
                        "(e.g. advantages.demos_positive=false)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    if args.from_default:
        from_default(args)
        return
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
        print("\ncontrol: the initial policy trained on by behaviour cloning, the same steps as RECAP:\n")
        print("| policy | success | 95% CI | episodes |\n|---|---|---|---|")
        for label, result in bc_control(config, args.control_data == "demos+takeovers"):
            print(f"| {label} | {_row(result)}")
    if args.mode == "conditioned" and args.guidance_sweep:
        guidance_sweep(config, args.guidance_sweep)


def _evaluate(config: RecapConfig, folder: Path, weight: float, cache: Path | None = None) -> dict:
    """The overall evaluation summary (success, failure modes) of the policy in `folder` on the RECAP eval seeds;
    kept in `cache` (JSON) so that a rerun does not evaluate again."""
    if cache is not None and cache.is_file():
        return json.loads(cache.read_text())
    settings = dataclasses.replace(eval_config(config), use_async=False, videos_per_task=0)
    policy = SimPolicy(Policy(PolicyBundle.load(folder)), guidance_weight=weight, seed=seeds.evaluation(config))
    overall = evaluate(policy, config.tasks, settings)["overall"]
    overall["ci95"] = list(wilson_interval(overall["successes"], overall["completed"]))
    if cache is not None:
        write_json_atomic(cache, overall)
    return overall


def _row(result: dict) -> str:
    """A markdown row tail: success, 95% CI and episodes."""
    lo, hi = result["ci95"]
    return f"{result['success_rate']:.1%} | [{lo:.1%}, {hi:.1%}] | {result['completed']} |"


def bc_control(config: RecapConfig, takeovers: bool) -> list[tuple[str, dict]]:
    """The control arm (tau_rl.stages.control_policy): the initial policy trained on by plain behaviour cloning on
    the demonstrations (plus, with `takeovers`, the expert-takeover frames of RECAP's rollouts so far), with the
    steps and learning rate of the RECAP fine-tuning: one round per iteration when RECAP restarts from the previous
    policy (so the steps add up as RECAP's do), one when it restarts from the initial policy. Returns a (label,
    evaluation) pair per round; it tells RECAP's gain apart from extra training and extra expert data."""
    layout = RunLayout(Path(config.run_dir))
    rounds = config.iterations if config.policy.restart_from == "previous" else 1
    folder_name = "control_bc_takeovers" if takeovers else "control_bc"
    data = "demos + takeovers" if takeovers else "demos"
    previous, results = layout.init.policy, []
    for k in range(1, rounds + 1):
        folder = layout.root / folder_name / f"round_{k:03d}"
        if not (folder / "policy" / "bundle.json").is_file():
            control_policy(config, layout, k, previous, folder / "policy", takeovers=takeovers)
        steps = k * config.policy.finetune.steps
        results.append((f"behaviour cloning ({data}), +{steps} steps",
                        _evaluate(config, folder / "policy", 1.0, folder / "eval.json")))
        previous = folder / "policy"
    return results


def guidance_sweep(config: RecapConfig, weights: list[float]) -> None:
    """Success of the last iteration's policy at other classifier-free guidance weights, on the same eval seeds."""
    folder = RunLayout(Path(config.run_dir)).iteration(config.iterations).policy
    print(f"\nguidance sweep, RECAP iteration {config.iterations} policy:\n")
    print("| guidance w | success | 95% CI | episodes |\n|---|---|---|---|")
    for weight in weights:
        print(f"| {weight:g} | {_row(_evaluate(config, folder, weight))}")


def _recorded(record: dict) -> dict:
    """A RECAP evaluate-stage record in the shape of an evaluation summary (success, CI, completed, failure modes)."""
    return {"successes": record["successes"], "completed": record["episodes"], "success_rate": record["success_rate"],
            "ci95": record["ci95"], "failure_modes": record.get("failure_modes", {})}


def rollout_study(config: RecapConfig, layout: RunLayout) -> dict[str, dict[str, int]]:
    """What RECAP's data does with each outcome: for the rollout episodes of every iteration, by outcome (success,
    a tau-sim failure mode, or taken over by the expert), the episodes, the frames the policy acted and how many of
    those the advantage labels call positive. The failure mode is read from the recorded privileged state
    ([ee, red, blue, yellow, target]) of an episode's first and last frames."""
    study: dict[str, dict[str, int]] = {}
    for k in range(1, config.iterations + 1):
        folder = layout.iteration(k)
        data = LeRobotDataset(folder.rollouts)
        table = AdvantageTable.load(folder.advantages / f"{folder.root.name}.parquet").columns
        state = np.asarray(data.columns["observation.state"], dtype=np.float64)
        for start, length in zip(data.episode_starts, data.episode_lengths):
            rows = np.arange(start, start + length)
            taken = bool(table["intervention"][rows].any())
            if taken:
                outcome = "taken over"
            elif table["success"][rows[-1]]:
                outcome = "success"
            else:
                task = task_from_instruction(data.meta.tasks[int(data.columns["task_index"][start])])
                first, last = state[rows[0]], state[rows[-1]]
                outcome = failure_mode(task, first[2:8].reshape(3, 2), last[2:8].reshape(3, 2), first[8:10])
            own = rows[~table["intervention"][rows].astype(bool)]
            entry = study.setdefault(outcome, {"episodes": 0, "policy_frames": 0, "positive": 0})
            entry["episodes"] += 1
            entry["policy_frames"] += len(own)
            entry["positive"] += int(table["positive"][own].sum())
    return study


def from_default(args: argparse.Namespace) -> None:
    """RECAP with apps/rl's preset from each given apps/train policy (one training seed each), its control arm and
    the default policy itself, every row on the same seeded episodes; per-seed and pooled tables."""
    preset = repo_root() / "apps" / "rl" / "src" / "rl_app" / "presets" / "default.yaml"
    run_seeds = args.seeds if args.seeds is not None else list(range(len(args.from_default)))
    if len(run_seeds) != len(args.from_default):
        raise SystemExit(f"--seeds gives {len(run_seeds)} seeds for {len(args.from_default)} --from-default policies")
    started, runs = time.perf_counter(), []
    for seed, policy in zip(run_seeds, args.from_default):
        if not (policy / "bundle.json").is_file():
            raise SystemExit(f"{policy}: no bundle.json; give the policy folder apps/train wrote "
                             "(outputs/default/train/policy)")
        root = Path(args.run_dir) / f"seed_{seed}"
        config = load_config(preset, [f"run_dir={root / 'recap'}", f"policy.checkpoint={policy / 'model'}",
                                      f"seed={seed}", f"eval.episodes_per_task={args.eval_episodes}",
                                      *args.override],
                             schema=RecapConfig)
        run_recap(config)
        layout = RunLayout(Path(config.run_dir))
        rows = [("default policy (apps/train)", _evaluate(config, policy, 1.0, root / "default_eval.json")),
                ("conditioning pass (RECAP's initial policy)", _recorded(layout.init.record("evaluate")))]
        rows += [(f"RECAP iteration {k}", _recorded(layout.iteration(k).record("evaluate")))
                 for k in range(1, config.iterations + 1)]
        rows += bc_control(config, args.control_data == "demos+takeovers")
        runs.append({"seed": seed, "policy": str(policy), "rows": rows, "study": rollout_study(config, layout)})
        print(f"\nseed {seed} (from {policy}):\n\n| policy | success | 95% CI | episodes |\n|---|---|---|---|")
        for label, result in rows:
            print(f"| {label} | {_row(result)}")
    minutes = (time.perf_counter() - started) / 60
    print(f"\nRECAP from the default policy, apps/rl preset, training seeds {run_seeds}, "
          f"{args.eval_episodes} seeded episodes per task and row; {minutes:.1f} min in this invocation "
          "(stages found finished in --run-dir are not rerun)\n")
    print_seed_table(runs)
    print_failure_table(runs)
    print_rollout_study(runs)
    write_json_atomic(Path(args.run_dir) / "from_default.json", runs)


def print_seed_table(runs: list[dict]) -> None:
    """Success per row and seed, the mean over seeds and the spread (max - min)."""
    print("| policy | " + " | ".join(f"seed {r['seed']}" for r in runs) + " | mean | spread |")
    print("|---|" + "---|" * (len(runs) + 2))
    for i, (label, _) in enumerate(runs[0]["rows"]):
        rates = [r["rows"][i][1]["success_rate"] for r in runs]
        print(f"| {label} | " + " | ".join(f"{x:.1%}" for x in rates)
              + f" | {np.mean(rates):.1%} | {max(rates) - min(rates):.1%} |")


def print_failure_table(runs: list[dict]) -> None:
    """Failed episodes of every row by failure mode, pooled over seeds, as shares of all its episodes."""
    print("\nfailure modes, pooled over seeds (share of all episodes):\n")
    print("| policy | failed | " + " | ".join(FAILURE_MODES) + " |\n|---|---|" + "---|" * len(FAILURE_MODES))
    for i, (label, _) in enumerate(runs[0]["rows"]):
        results = [r["rows"][i][1] for r in runs]
        total = sum(x["completed"] for x in results)
        modes = {m: sum(x["failure_modes"].get(m, 0) for x in results) for m in FAILURE_MODES}
        failed = total - sum(x["successes"] for x in results)
        print(f"| {label} | {failed / total:.1%} | " + " | ".join(f"{modes[m] / total:.1%}" for m in FAILURE_MODES)
              + " |")


def print_rollout_study(runs: list[dict]) -> None:
    """The rollouts by outcome, pooled over seeds and iterations: episodes and the policy's frames labelled positive."""
    print("\nRECAP's rollouts by outcome, pooled over seeds and iterations:\n")
    print("| outcome | episodes | policy frames | labelled positive |\n|---|---|---|---|")
    for outcome in ("success", *FAILURE_MODES, "taken over"):
        entries = [r["study"][outcome] for r in runs if outcome in r["study"]]
        episodes = sum(e["episodes"] for e in entries)
        frames = sum(e["policy_frames"] for e in entries)
        positive = sum(e["positive"] for e in entries)
        share = f"{positive / frames:.1%}" if frames else "-"
        print(f"| {outcome} | {episodes} | {frames} | {share} |")


if __name__ == "__main__":
    main()
