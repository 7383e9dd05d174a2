"""OpenTau pi0.5 checkpoints as policy bundles: the statistics are stored beside the weights.

OpenTau saves one row per norm head (config.json "dataset_names", row order) of four modules' statistics,
(heads, 32) each: normalize_inputs.buffer_state (STATE mode), normalize_targets / unnormalize_outputs.buffer_actions
(ACTION mode) and normalize_discrete_actions.buffer_actions (MIN_MAX, the FAST tokenizer's input). tau-models hands
them over in LoadReport.normalization; here they become one Normalizer with OpenTau's config_version-1 formulas
(tau-data's "opentau" convention, eps 1e-6): "state", "actions" and "fast_actions" (FAST-decoded chunks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from tau_data import Normalizer
from tau_data.normalize import NormMode

EPS = 1e-6  # OpenTau's normalisation epsilon (config_version 1)
# (module, feature) in the checkpoint -> tau feature, and where the mode comes from
MODULES = {("normalize_inputs", "state"): ("state", "STATE"),
           ("unnormalize_outputs", "actions"): ("actions", "ACTION"),
           ("normalize_targets", "actions"): ("actions", "ACTION"),
           ("normalize_discrete_actions", "actions"): ("fast_actions", None)}
NEEDED = {NormMode.MEAN_STD: ("mean", "std"), NormMode.MIN_MAX: ("min", "max"), NormMode.QUANTILES: ("q01", "q99")}


def is_opentau_config(config: Mapping[str, Any]) -> bool:
    """Whether a config.json was written by OpenTau (it stamps its version)."""
    return "opentau_version" in config


def opentau_mode(config: Mapping[str, Any], kind: str, source: str) -> NormMode:
    """The mode config.json's normalization_mapping gives a feature type (OpenTau spells QUANTILES "QUANTILE")."""
    value = config.get("normalization_mapping", {}).get(kind, "IDENTITY")
    try:
        return NormMode("QUANTILES" if value == "QUANTILE" else value)
    except ValueError as error:
        raise ValueError(f"{source}: normalization_mapping {kind}={value!r} is not a mode tau knows") from error


def opentau_normalizer(config: Mapping[str, Any], buffers: Mapping[str, torch.Tensor], *, config_file: str,
                       weights_file: str) -> Normalizer:
    """The Normalizer of every head row in the checkpoint's statistics; every statistics key is used or checked."""
    if int(config.get("config_version", 0)) != 1:
        raise ValueError(f"{config_file}: config_version {config.get('config_version')!r}; only OpenTau's current "
                         "normalisation convention (config_version 1) is supported")
    heads = list(config.get("dataset_names") or [])
    modes = {"state": opentau_mode(config, "STATE", config_file), "actions": opentau_mode(config, "ACTION", config_file),
             "fast_actions": NormMode.MIN_MAX}
    tables: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for key, value in buffers.items():
        module, _, rest = key.partition(".buffer_")
        feature, _, stat = rest.rpartition(".")
        if (module, feature) not in MODULES:
            raise ValueError(f"{weights_file}: unknown normalisation key {key!r} (known modules: "
                             f"{sorted({m for m, _ in MODULES})})")
        tables.setdefault((module, feature), {})[stat] = value.detach().float().cpu().numpy()
    for (module, feature), (tau_feature, _) in MODULES.items():
        mode = modes[tau_feature]
        for stat in NEEDED.get(mode, ()):
            got = tables.get((module, feature), {}).get(stat)
            if got is None:
                raise ValueError(f"{weights_file}: missing statistic {module}.buffer_{feature}.{stat} ({mode.value})")
            if got.ndim != 2 or got.shape[0] != len(heads):
                raise ValueError(f"{weights_file}: {module}.buffer_{feature}.{stat} has shape {got.shape}, expected "
                                 f"(heads={len(heads)} from config.json dataset_names, D)")
    targets, outputs = tables[("normalize_targets", "actions")], tables[("unnormalize_outputs", "actions")]
    for stat, value in targets.items():
        if stat in outputs and not np.array_equal(value, outputs[stat]):
            raise ValueError(f"{weights_file}: normalize_targets.buffer_actions.{stat} differs from "
                             f"unnormalize_outputs.buffer_actions.{stat}; tau keeps one set of action statistics")
    stats = {head: {"state": {s: v[row] for s, v in tables[("normalize_inputs", "state")].items()},
                    "actions": {s: v[row] for s, v in outputs.items()},
                    "fast_actions": {s: v[row] for s, v in tables[("normalize_discrete_actions", "actions")].items()}}
             for row, head in enumerate(heads)}
    return Normalizer(stats=stats, modes=modes, convention="opentau", eps=EPS, source=weights_file)
