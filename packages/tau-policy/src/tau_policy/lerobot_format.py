"""LeRobot pi0 / pi0.5 policy folders as policy bundles: config.json + model.safetensors + the processor pipelines.

LeRobot (>= 0.6) keeps the normalisation statistics out of the weights, in the state files of its processor steps:
policy_preprocessor.json's "normalizer_processor" step (state, via `state_file`) and policy_postprocessor.json's
"unnormalizer_processor" step (actions). Keys are "<feature>.<stat>", split on the last dot. Each feature's mode is
norm_map[its type] (MEAN_STD / MIN_MAX / QUANTILES / IDENTITY) with the step's eps, LeRobot's formulas (tau-data's
"lerobot" convention). The steps that change what the model sees are read too (renamed observation keys, the
tokenizer's length and name); steps tau cannot reproduce (relative actions) are refused by name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file
from tau_data import Normalizer
from tau_data.normalize import NormMode

PREPROCESSOR, POSTPROCESSOR = "policy_preprocessor.json", "policy_postprocessor.json"
HEAD = "default"  # a LeRobot policy has one set of statistics
TAU_FEATURE = {"STATE": "state", "ACTION": "actions"}
# steps whose effect tau reproduces (normalising, prompt, tokenizer) or that change nothing numerically
KNOWN_STEPS = {"rename_observations_processor", "to_batch_processor", "normalizer_processor",
               "pi05_prepare_state_tokenizer_processor_step", "pi0_new_line_processor", "tokenizer_processor",
               "device_processor", "unnormalizer_processor", "relative_actions_processor",
               "absolute_actions_processor"}


def is_lerobot_folder(folder: Path) -> bool:
    """Whether a folder holds LeRobot's processor pipelines beside its weights."""
    return (folder / PREPROCESSOR).is_file() or (folder / POSTPROCESSOR).is_file()


def read_pipeline(path: Path) -> list[dict[str, Any]]:
    """The steps of a processor JSON; unknown steps and enabled relative/absolute actions are refused by name."""
    if not path.is_file():
        raise FileNotFoundError(f"LeRobot processor file missing: {path}")
    try:
        steps = json.loads(path.read_text())["steps"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a LeRobot processor pipeline (JSON with 'steps'): {error}") from error
    for i, step in enumerate(steps):
        name = step.get("registry_name")
        if name not in KNOWN_STEPS:
            raise ValueError(f"{path}: step {i} {name!r} is not a step tau reproduces (known: {sorted(KNOWN_STEPS)})")
        if name in ("relative_actions_processor", "absolute_actions_processor") and step.get("config", {}).get(
                "enabled"):
            raise ValueError(f"{path}: step {i} {name!r} is enabled; relative actions are not supported")
    return steps


def find_step(steps: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((step for step in steps if step.get("registry_name") == name), None)


def read_step_stats(folder: Path, pipeline: str, step: dict[str, Any]) -> tuple[dict[str, dict[str, np.ndarray]], Path]:
    """{feature: {stat: array}} from a step's state file (keys split on the last dot)."""
    if "state_file" not in step:
        raise ValueError(f"{folder / pipeline}: step {step['registry_name']!r} has no state_file (no statistics)")
    path = folder / step["state_file"]
    if not path.is_file():
        raise FileNotFoundError(f"{folder / pipeline}: state file of step {step['registry_name']!r} missing: {path}")
    stats: dict[str, dict[str, np.ndarray]] = {}
    for key, value in load_file(str(path)).items():
        feature, _, stat = key.rpartition(".")
        if not feature:
            raise ValueError(f"{path}: key {key!r} is not '<feature>.<stat>'")
        stats.setdefault(feature, {})[stat] = value
    return stats, path


def model_features(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The policy's input and output features (name -> {"type", "shape"}) from its config.json, in order."""
    return {**config.get("input_features", {}), **config.get("output_features", {})}


def lerobot_normalizer(folder: Path, config: Mapping[str, Any]) -> tuple[Normalizer, dict[str, str]]:
    """The normaliser of a LeRobot policy folder and {tau feature ("state"/"actions"): LeRobot feature name}."""
    features = model_features(config)
    modes: dict[str, NormMode] = {}
    names: dict[str, str] = {}
    stats: dict[str, dict[str, np.ndarray]] = {}
    sources: list[str] = []
    epsilons: dict[str, float] = {}
    for pipeline, step_name, wanted in ((PREPROCESSOR, "normalizer_processor", "STATE"),
                                        (POSTPROCESSOR, "unnormalizer_processor", "ACTION")):
        path = folder / pipeline
        step = find_step(read_pipeline(path), step_name)
        if step is None:
            raise ValueError(f"{path}: no {step_name!r} step, so no statistics for the {wanted} feature")
        step_config = step.get("config", {})
        norm_map, epsilons[pipeline] = step_config.get("norm_map", {}), float(step_config.get("eps", 1e-8))
        for feature, spec in step_config.get("features", {}).items():
            if feature not in features:
                raise ValueError(f"{path}: step {step_name!r} names feature {feature!r}, which the model lacks "
                                 f"(config.json features: {sorted(features)})")
            kind = spec.get("type")
            mode = norm_map.get(kind, "IDENTITY")
            if kind == "VISUAL" and mode != "IDENTITY":
                raise ValueError(f"{path}: norm_map VISUAL={mode!r}: tau feeds images unnormalised (IDENTITY) only")
            if kind != wanted:
                continue
            try:
                modes[TAU_FEATURE[kind]] = NormMode(mode)
            except ValueError as error:
                raise ValueError(f"{path}: norm_map {kind}={mode!r} is not one of "
                                 f"{[m.value for m in NormMode]}") from error
            if TAU_FEATURE[kind] in names:
                raise ValueError(f"{path}: several {kind} features ({names[TAU_FEATURE[kind]]!r}, {feature!r}); "
                                 "tau's policies have one")
            names[TAU_FEATURE[kind]] = feature
            file_stats, state_path = read_step_stats(folder, pipeline, step)
            if feature not in file_stats and modes[TAU_FEATURE[kind]] != NormMode.IDENTITY:
                raise ValueError(f"{state_path}: no statistics for feature {feature!r} (keys '{feature}.<stat>')")
            stats[TAU_FEATURE[kind]] = file_stats.get(feature, {})
            sources.append(str(state_path))
        if TAU_FEATURE[wanted] not in names:
            raise ValueError(f"{path}: step {step_name!r} lists no {wanted} feature")
    if len(set(epsilons.values())) > 1:
        raise ValueError(f"{folder}: the normaliser and unnormaliser steps use different eps {epsilons}")
    normalizer = Normalizer(stats={HEAD: stats}, modes=modes, convention="lerobot", eps=epsilons[PREPROCESSOR],
                            source=" / ".join(sources))
    return normalizer, names


def tokenizer_overrides(folder: Path) -> dict[str, Any]:
    """PiConfig fields the preprocessor's tokenizer step fixes (prompt length, tokenizer name)."""
    step = find_step(read_pipeline(folder / PREPROCESSOR), "tokenizer_processor")
    if step is None:
        return {}
    config = step.get("config", {})
    if config.get("padding_side", "right") != "right":
        raise ValueError(f"{folder / PREPROCESSOR}: tokenizer padding_side {config['padding_side']!r}; tau pads "
                         "prompts on the right")
    out: dict[str, Any] = {}
    if "max_length" in config:
        out["tokenizer_max_length"] = int(config["max_length"])
    if config.get("tokenizer_name"):
        out["tokenizer_name"] = str(config["tokenizer_name"])
    return out


def renamed_observations(folder: Path) -> dict[str, str]:
    """{policy feature: the observation key a robot sends} from the rename step (LeRobot maps robot -> policy)."""
    step = find_step(read_pipeline(folder / PREPROCESSOR), "rename_observations_processor")
    rename = (step or {}).get("config", {}).get("rename_map", {}) or {}
    return {policy: robot for robot, policy in rename.items()}
