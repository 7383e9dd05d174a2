"""The stages of RECAP, each a function of the run config and the iteration folder that writes only its own outputs.

init:       policy (fine-tune on the demonstrations, every frame "Advantage: positive") -> evaluate
iteration:  collect -> value -> advantages -> policy -> evaluate -> summary
Stages read what earlier stages wrote (never rewrite it) and return a small record for their completion marker.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tau_data.mixture import DatasetSpec, MixtureConfig, MixtureDataset
from tau_data.normalize import Normalizer
from tau_models import PiConfig, PiModel, ValueModel
from tau_policy import Policy, PolicyBundle, Provenance, SimPolicy, read_layouts, read_model_config, record_episodes
from tau_sim import EvalConfig, evaluate

from tau_rl import seeds
from tau_rl.advantage_table import AdvantageTable
from tau_rl.advantages import n_step_advantages
from tau_rl.conditioning import ConditioningMode, advantage_labels
from tau_rl.confidence import wilson_interval
from tau_rl.config import RecapConfig, TrainingSettings
from tau_rl.layout import IterationFolder, RunLayout, discard, write_json_atomic
from tau_rl.models import load_policy, new_policy, new_value_model, with_conditioning
from tau_rl.plots import plot_advantage_histogram, plot_value_calibration
from tau_rl.returns import frame_returns, frame_rewards, recap_columns
from tau_rl.rollouts import ROBOT_TYPE, collect_rollouts
from tau_rl.sampling_weights import group_weights
from tau_rl.threshold import choose_threshold
from tau_rl.training import train
from tau_rl.training_data import FrameGroups, LabelledMixture, frame_labels
from tau_rl.value_inference import predict_values


@dataclass(frozen=True)
class Source:
    """One training dataset: the demonstrations or an iteration's rollouts."""

    name: str
    path: Path
    assume_success: bool | None = None
    demo: bool = False  # a demonstration dataset (not an iteration's rollouts)


def sources(config: RecapConfig, layout: RunLayout, iteration: int) -> list[Source]:
    """Demonstrations plus the rollouts of iterations 1..iteration."""
    demos = [Source(f"demos_{i}", Path(p), config.demos_assume_success, demo=True) for i, p in enumerate(config.demos)]
    rollouts = [Source(layout.iteration(k).root.name, layout.iteration(k).rollouts) for k in range(1, iteration + 1)]
    return demos + rollouts


def build_mixture(config: RecapConfig, pc: PiConfig, items: list[Source],
                  normalizer: Normalizer | None = None) -> MixtureDataset:
    """The standard-sample mixture of `items` at the policy's image size, chunk and padded dimensions (sampled in
    proportion to frames)."""
    specs = [DatasetSpec(path=str(s.path), cameras=list(config.cameras), name=s.name) for s in items]
    mixture_config = MixtureConfig(datasets=specs, num_cameras=len(config.cameras),
                                   image_size=(pc.vision.image_size, pc.vision.image_size),
                                   max_state_dim=pc.max_state_dim, max_action_dim=pc.max_action_dim,
                                   chunk_size=pc.chunk_size)
    return MixtureDataset(mixture_config, normalizer)


def _labels(mixture: MixtureDataset, items: list[Source]) -> list[dict[str, np.ndarray]]:
    return [frame_labels(member, item.assume_success) for member, item in zip(mixture.members, items)]


def _policy_folder(layout: RunLayout, iteration: int) -> Path:
    """Where the policy acting in `iteration` (0: the initial one) was saved."""
    return layout.init.policy if iteration == 0 else layout.iteration(iteration).policy


def load_acting_policy(config: RecapConfig, folder: Path, seed: int, trained_conditioned: bool) -> SimPolicy:
    """The saved policy behind tau-sim's Policy protocol, with guidance once it was trained advantage-conditioned."""
    policy = Policy(PolicyBundle.load(folder), num_inference_steps=config.policy.num_inference_steps)
    weight = config.policy.guidance_weight if trained_conditioned else 1.0
    return SimPolicy(policy, guidance_weight=weight, seed=seed)


def eval_config(config: RecapConfig) -> EvalConfig:
    """The tau-sim evaluation settings of every policy of the run (the same seeds for all, so rows compare)."""
    e = config.eval
    return EvalConfig(episodes_per_task=e.episodes_per_task, seed=e.seed, num_envs=e.num_envs, use_async=e.use_async,
                      action_steps=e.action_steps, videos_per_task=e.videos_per_task, env_kwargs=dict(config.env_kwargs))


def _clear(*paths: Path) -> None:
    for path in paths:
        discard(path)


# ---------------------------------------------------------------------------------------------------- init


def demo_mixture(config: RecapConfig, layout: RunLayout, pc: PiConfig,
                 normalizer: Normalizer | None = None) -> MixtureDataset:
    """The demonstrations as one mixture, which must fall into one normalisation head (RECAP acts in one env)."""
    mixture = build_mixture(config, pc, sources(config, layout, 0), normalizer)
    if len(set(mixture.heads)) != 1:
        raise ValueError(f"the demonstrations fall into several normalisation heads {sorted(set(mixture.heads))}; "
                         "RECAP acts in one environment, so give demos of one robot_type")
    return mixture


def checkpoint_normalizer(checkpoint: str | None) -> Normalizer | None:
    """The normaliser saved with a tau policy checkpoint (normalizer.json in the folder or beside its model/ folder),
    so a policy trained elsewhere keeps the statistics and modes it learnt with; None: compute it from the demos."""
    if not checkpoint:
        return None
    path = Path(checkpoint)
    for candidate in (path / "normalizer.json", path.parent / "normalizer.json"):
        if candidate.is_file():
            return Normalizer.load(candidate)
    return None


def behaviour_clone(config: RecapConfig, layout: RunLayout, model: PiModel, settings: TrainingSettings,
                    output_dir: Path, seed: int, normalizer: Normalizer | None = None,
                    mode: ConditioningMode = "positive") -> tuple[PiModel, MixtureDataset, dict]:
    """`model` trained on the demonstrations alone, every frame labelled "Advantage: positive" (mode "positive":
    plain behaviour cloning, the line on every prompt; "conditioned": `policy.conditioning_dropout` of the prompts
    drop it); returns the trained policy, the demonstration mixture and the last training metrics."""
    model = with_conditioning(model, mode, config.policy.conditioning_dropout)
    mixture = demo_mixture(config, layout, model.config, normalizer)
    positive = [np.ones(len(m), dtype=bool) for m in mixture.members]
    metrics = train(model, LabelledMixture(mixture, {"advantage_positive": positive}), settings, output_dir, seed)
    return model, mixture, metrics


def init_policy(config: RecapConfig, layout: RunLayout) -> dict[str, Any]:
    """The starting policy: the given checkpoint or a fresh model, fine-tuned on the demonstrations with every
    frame labelled "Advantage: positive" (`policy.sft_mode` says whether some prompts drop the line; with
    sft.steps=0, the checkpoint as it is, prompts and all); the normaliser (the checkpoint's own, else computed
    from the demos) is used by every later stage."""
    folder = layout.init.policy
    _clear(folder / "model", folder / "normalizer.json", folder / "bundle.json")
    pc = config.policy
    model = load_policy(pc.checkpoint, pc.overrides) if pc.checkpoint else new_policy(pc.preset, pc.overrides)
    normalizer = checkpoint_normalizer(pc.checkpoint)
    if pc.sft.steps > 0:
        model, mixture, metrics = behaviour_clone(config, layout, model, pc.sft, folder / "train",
                                                  seeds.initial_training(config), normalizer, pc.sft_mode)
    else:
        mixture, metrics = demo_mixture(config, layout, model.config, normalizer), {}
    provenance = Provenance(source=pc.checkpoint or f"new {pc.preset} policy", step=pc.sft.steps)
    bundle = PolicyBundle.from_mixture(model, mixture, provenance=provenance, sim_state_key=config.collect.state_key)
    bundle.save(folder)
    return {"frames": len(mixture), "train": metrics}


def evaluate_policy(config: RecapConfig, layout: RunLayout, folder: IterationFolder) -> dict[str, Any]:
    """Success of the folder's policy on the fixed evaluation seeds (tau-sim), with a 95% Wilson interval."""
    _clear(folder.eval)
    policy = load_acting_policy(config, folder.policy, seed=seeds.evaluation(config), trained_conditioned=folder.index > 0
                                and config.policy.mode == "conditioned")
    summary = evaluate(policy, config.tasks, eval_config(config), output_dir=folder.eval)
    overall = summary["overall"]
    if overall["completed"] == 0:
        raise RuntimeError(f"evaluation of {folder.policy} completed no episode: {summary['missing_episodes'][:3]}")
    lo, hi = wilson_interval(overall["successes"], overall["completed"])
    return {"successes": overall["successes"], "episodes": overall["completed"], "missing": overall["missing"],
            "success_rate": overall["success_rate"], "ci95": [lo, hi], "mean_length": overall["mean_length"],
            "failure_modes": overall["failure_modes"]}


# ---------------------------------------------------------------------------------------------------- iteration


def collect(config: RecapConfig, layout: RunLayout, folder: IterationFolder) -> dict[str, Any]:
    """Roll out the previous iteration's policy (the initial one in iteration 1) on fresh seeds."""
    _clear(folder.rollouts)
    previous = folder.index - 1
    policy = load_acting_policy(config, _policy_folder(layout, previous), seed=seeds.collection_policy(config, folder.index),
                                trained_conditioned=previous > 0 and config.policy.mode == "conditioned")
    collect_config = dataclasses.replace(config.collect, seed=seeds.collection_episodes(config, folder.index))
    episodes = collect_rollouts(policy, config.tasks, collect_config, config.env_kwargs)
    columns = functools.partial(recap_columns, failure_penalty=config.returns.failure_penalty)
    record = record_episodes(episodes, folder.rollouts, robot_type=ROBOT_TYPE, extras=columns)
    lo, hi = wilson_interval(round(record["success_rate"] * record["episodes"]), record["episodes"])
    return {**record, "success_ci95": [lo, hi], "seed": collect_config.seed}


def _returns(config: RecapConfig, labels: dict[str, np.ndarray]) -> np.ndarray:
    return frame_returns(labels["episode_index"], labels["success"], config.returns)


def fit_value(config: RecapConfig, layout: RunLayout, folder: IterationFolder) -> dict[str, Any]:
    """Train the distributional value model with cross-entropy on the returns of every source so far."""
    _clear(folder.value / "model")
    vc = config.value
    if vc.restart_from == "previous" and folder.index > 1:
        model = ValueModel.from_pretrained(layout.iteration(folder.index - 1).value / "model")
    elif vc.checkpoint:
        model = ValueModel.from_pretrained(vc.checkpoint)
    else:
        policy = PolicyBundle.load(layout.init.policy).model if vc.init_from_policy else None
        overrides = dict(vc.overrides)
        if vc.use_state:
            overrides["state_dim"] = read_layouts(layout.init.policy)[0][0].state_dim
        model = new_value_model(vc.preset, overrides, policy)
    items = sources(config, layout, folder.index)
    normalizer = Normalizer.load(layout.init.policy / "normalizer.json")
    mixture = build_mixture(config, read_model_config(layout.init.policy), items, normalizer)
    returns = [_returns(config, labels).astype(np.float32) for labels in _labels(mixture, items)]
    metrics = train(model, LabelledMixture(mixture, {"return": returns}), vc.train, folder.value / "train",
                    seeds.value_training(config, folder.index))
    model.save_pretrained(folder.value / "model")
    return {"frames": len(mixture), "train": metrics}


def compute_advantages(config: RecapConfig, layout: RunLayout, folder: IterationFolder) -> dict[str, Any]:
    """N-step advantages of every frame of every source from this iteration's value model, the threshold leaving
    the target fraction positive (of the rollouts' frames when `advantages.demos_positive` labels every
    demonstration frame positive), per-source tables, and the calibration / histogram figures."""
    _clear(folder.advantages, folder.calibration_png, folder.histogram_png)
    model = ValueModel.from_pretrained(folder.value / "model")
    items = sources(config, layout, folder.index)
    normalizer = Normalizer.load(layout.init.policy / "normalizer.json")
    mixture = build_mixture(config, read_model_config(layout.init.policy), items, normalizer)
    per_source = []
    for d, labels in enumerate(_labels(mixture, items)):
        rewards = frame_rewards(labels["episode_index"], labels["success"], config.returns)
        values = predict_values(model, mixture, d, config.value.predict_batch_size)
        advantages = n_step_advantages(values, rewards, labels["episode_index"], config.advantages.lookahead)
        per_source.append({**labels, "row": np.arange(len(values)), "reward": rewards,
                           "return": _returns(config, labels), "value": values, "advantage": advantages})
    everything = {k: np.concatenate([s[k] for s in per_source]) for k in ("advantage", "value", "return", "success")}
    ranked = [columns["advantage"] for columns, item in zip(per_source, items)
              if not (item.demo and config.advantages.demos_positive)]
    chosen = choose_threshold(np.concatenate(ranked), config.advantages.positive_fraction)
    for item, columns in zip(items, per_source):
        columns["positive"] = advantage_labels(columns["advantage"], chosen.threshold, columns["intervention"],
                                               config.policy.mode, config.advantages.interventions_positive)
        if item.demo and config.advantages.demos_positive:
            columns["positive"][:] = True
        AdvantageTable(source=str(item.path), columns=columns, threshold=chosen.threshold).save(
            folder.advantages / f"{item.name}.parquet")
    calibration = plot_value_calibration(everything["value"], everything["return"], everything["success"],
                                         folder.calibration_png, title=f"value calibration, {folder.root.name}")
    plot_advantage_histogram(everything["advantage"], chosen.threshold, everything["success"], folder.histogram_png,
                             title=f"{config.advantages.lookahead}-step advantages, {folder.root.name}")
    mae = float(np.mean(np.abs(everything["value"] - everything["return"])))
    success_adv = everything["advantage"][everything["success"]]
    failure_adv = everything["advantage"][~everything["success"]]
    record = {**chosen.to_dict(), "lookahead": config.advantages.lookahead, "value_mae": mae,
              "mean_advantage_success": float(success_adv.mean()) if len(success_adv) else None,
              "mean_advantage_failure": float(failure_adv.mean()) if len(failure_adv) else None,
              "calibration": calibration, "sources": [s.name for s in items]}
    write_json_atomic(folder.threshold, record)
    return {k: v for k, v in record.items() if k != "calibration"}


def fit_policy(config: RecapConfig, layout: RunLayout, folder: IterationFolder) -> dict[str, Any]:
    """Fine-tune the advantage-conditioned policy on every source with this iteration's labels, sampling the
    positive and negative frames of each source as `policy.demo_fraction` and `positive_sample_fraction` say."""
    out = folder.policy
    _clear(out / "model", out / "normalizer.json", out / "bundle.json")
    pc = config.policy
    start = layout.init.policy if pc.restart_from == "initial" else _policy_folder(layout, folder.index - 1)
    bundle = PolicyBundle.load(start)
    model, normalizer = with_conditioning(bundle.model, pc.mode, pc.conditioning_dropout), bundle.normalizer
    items = sources(config, layout, folder.index)
    tables = [AdvantageTable.load(folder.advantages / f"{item.name}.parquet") for item in items]
    mixture = build_mixture(config, model.config, items, normalizer)
    positive, groups, group_positive = [], [], []
    for d, (member, item, table) in enumerate(zip(mixture.members, items, tables)):
        if len(table) != len(member):
            raise ValueError(f"advantage table of {item.name} has {len(table)} frames, the dataset {len(member)}")
        positive.append(table.columns["positive"].astype(bool))
        for label in (True, False):
            groups.append((d, np.flatnonzero(positive[-1] == label)))
            group_positive.append(label)
    weights = group_weights([len(rows) for _, rows in groups], [items[d].demo for d, _ in groups], group_positive,
                            pc.demo_fraction, pc.positive_sample_fraction)
    dataset = FrameGroups(LabelledMixture(mixture, {"advantage_positive": positive}), groups, weights)
    metrics = train(model, dataset, pc.finetune, out / "train", seeds.policy_training(config, folder.index))
    dataclasses.replace(bundle, model=model, provenance=Provenance(source=str(start), step=pc.finetune.steps)).save(out)
    sampled = sum(w for w, label in zip(weights, group_positive) if label) / sum(weights)
    return {"frames": len(mixture), "positive_fraction": float(np.concatenate(positive).mean()),
            "positive_sample_share": sampled, "started_from": str(start), "train": metrics}


def control_policy(config: RecapConfig, layout: RunLayout, iteration: int, start: Path, output: Path,
                   takeovers: bool = True) -> dict[str, Any]:
    """The behaviour-cloning control of `iteration`: the policy at `start` trained with RECAP's fine-tuning settings
    on the demonstrations plus (`takeovers`) the expert-takeover frames of the rollouts of iterations 1..iteration,
    every prompt "Advantage: positive" (plain BC): the extra data RECAP gets, minus its advantage labels and the
    policy's own actions. Saves the bundle in `output` and returns the frame counts and the last training metrics."""
    _clear(output / "model", output / "normalizer.json", output / "bundle.json")
    bundle = PolicyBundle.load(start)
    model = with_conditioning(bundle.model, "positive", config.policy.conditioning_dropout)
    items = sources(config, layout, iteration if takeovers else 0)
    mixture = build_mixture(config, model.config, items, bundle.normalizer)
    groups = [(d, np.arange(len(labels["intervention"])) if item.demo else np.flatnonzero(labels["intervention"]))
              for d, (item, labels) in enumerate(zip(items, _labels(mixture, items)))]
    positive = [np.ones(len(member), dtype=bool) for member in mixture.members]
    dataset = FrameGroups(LabelledMixture(mixture, {"advantage_positive": positive}), groups,
                          [len(rows) for _, rows in groups])  # every kept frame equally likely
    metrics = train(model, dataset, config.policy.finetune, output / "train", seeds.policy_training(config, iteration))
    provenance = Provenance(source=str(start), step=config.policy.finetune.steps)
    dataclasses.replace(bundle, model=model, provenance=provenance).save(output)
    taken = sum(len(rows) for (_, rows), item in zip(groups, items) if not item.demo)
    return {"frames": sum(len(rows) for _, rows in groups), "takeover_frames": taken, "train": metrics}


def summarize(config: RecapConfig, layout: RunLayout, folder: IterationFolder) -> dict[str, Any]:
    """summary.json of the iteration: baseline and new success rates, rollouts, value fit and advantages."""
    baseline = layout.init.record("evaluate")
    result = folder.record("evaluate")
    summary = {
        "iteration": folder.index,
        "baseline_success_rate": baseline["success_rate"], "baseline_ci95": baseline["ci95"],
        "success_rate": result["success_rate"], "ci95": result["ci95"], "eval_episodes": result["episodes"],
        "rollouts": {k: v for k, v in folder.record("collect").items() if k not in ("stage", "finished_at")},
        "value": folder.record("value")["train"],
        "advantages": {k: v for k, v in json.loads(folder.threshold.read_text()).items() if k != "calibration"},
        "failure_modes": result.get("failure_modes", {}),
        "policy": folder.record("policy")["train"],
        "figures": {"value_calibration": folder.calibration_png.name, "advantage_histogram": folder.histogram_png.name},
    }
    write_json_atomic(folder.summary, summary)
    return {"success_rate": result["success_rate"]}
