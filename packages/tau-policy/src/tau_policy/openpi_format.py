"""openpi PyTorch checkpoints as policy bundles, and writing a tau model in that layout.

The layout openpi's examples/convert_jax_model_to_pytorch.py writes (read by tau-models as layout "openpi"):
    <folder>/model.safetensors    PI0Pytorch's state dict, LeRobot's names without "model.":
                                  paligemma_with_expert.paligemma.model.{vision_tower.vision_model,
                                  multi_modal_projector.linear, language_model}.*, paligemma_with_expert.gemma_expert
                                  .model.*, action_in_proj, action_out_proj, time_mlp_in/out (pi0.5) or state_proj,
                                  action_time_mlp_in/out (pi0)
    <folder>/config.json          {"action_dim", "action_horizon", "paligemma_variant", "action_expert_variant",
                                  "precision"}
    <folder>/assets/<asset_id>/norm_stats.json   {"norm_stats": {"state": {"mean", "std", "q01", "q99"},
                                  "actions": {...}}}, one norm head per asset id
Normalisation is openpi's: quantiles (x - q01) / (q99 - q01 + 1e-6) * 2 - 1 for pi0.5, z-score
(x - mean) / (std + 1e-6) for pi0 (openpi's use_quantile_norm = model_type != PI0). openpi's models have no camera
names in the checkpoint; the policy reads its three image slots under openpi's own keys (IMAGE_KEYS).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import save_file
from tau_data import Normalizer
from tau_data.normalize import NormMode
from tau_models import PiModel, respect_umask

EPS = 1e-6  # openpi's normalisation epsilon
ASSETS = "assets"
NORM_STATS = "norm_stats.json"
IMAGE_KEYS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
STATE_KEY = "state"
OPENPI_FEATURES = {"state": "state", "actions": "actions"}  # openpi key -> tau feature
# tau module prefix -> openpi's name (the inverse of tau-models' PREFIX_RULES for transformers >= 4.52 names)
_PG = "paligemma_with_expert.paligemma.model."
TO_OPENPI = (("backbone.vision_tower.", _PG + "vision_tower.vision_model."),
             ("backbone.projector.", _PG + "multi_modal_projector.linear."),
             ("backbone.language_model.", _PG + "language_model."),
             ("expert.", "paligemma_with_expert.gemma_expert.model."))


def norm_stats_files(folder: Path) -> dict[str, Path]:
    """{asset id: its norm_stats.json} under assets/."""
    return {path.parent.name: path for path in sorted((folder / ASSETS).glob(f"*/{NORM_STATS}"))}


def read_norm_stats(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{tau feature: {stat: array}} of one norm_stats.json (openpi's NormStats: mean, std, q01, q99; q01/q99 may
    be null)."""
    try:
        entries = json.loads(path.read_text())["norm_stats"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not openpi's norm_stats.json ({{'norm_stats': {{...}}}}): {error}") from error
    unknown = sorted(set(entries) - set(OPENPI_FEATURES))
    if unknown:
        raise ValueError(f"{path}: unknown norm_stats keys {unknown}; openpi's policies have {sorted(OPENPI_FEATURES)}")
    stats: dict[str, dict[str, np.ndarray]] = {}
    for key, entry in entries.items():
        values = {stat: np.asarray(v, dtype=np.float64) for stat, v in entry.items() if v is not None}
        bad = [stat for stat, v in values.items() if v.ndim != 1]
        if bad:
            raise ValueError(f"{path}: norm_stats.{key}.{bad[0]} must be a list of numbers")
        stats[OPENPI_FEATURES[key]] = values
    return stats


def openpi_normalizer(folder: Path, variant: str) -> Normalizer | None:
    """One head per assets/<asset_id>/norm_stats.json (None when there is none)."""
    files = norm_stats_files(folder)
    if not files:
        return None
    mode = NormMode.QUANTILES if variant == "pi05" else NormMode.MEAN_STD
    stats = {asset: read_norm_stats(path) for asset, path in files.items()}
    for asset, path in files.items():
        missing = sorted({"state", "actions"} - set(stats[asset]))
        if missing:
            raise ValueError(f"{path}: norm_stats lacks {missing}")
    return Normalizer(stats=stats, modes={"state": mode, "actions": mode}, convention="openpi", eps=EPS,
                      source=" / ".join(str(p) for p in files.values()))


def openpi_name(key: str) -> str:
    """A tau parameter name in openpi's PI0Pytorch naming."""
    for tau, openpi in TO_OPENPI:
        if key.startswith(tau):
            return openpi + key[len(tau):]
    if key.startswith("fast_head."):
        raise ValueError(f"openpi's PI0Pytorch has no separate FAST head ({key})")
    return key  # action_in_proj, time_mlp_in, state_proj, ... keep their names


def save_openpi(model: PiModel, normalizer: Normalizer, folder: str | Path, *, head: str | None = None,
                asset_id: str = "tau") -> Path:
    """Write `model` and the statistics of `head` in openpi's PyTorch checkpoint layout (for openpi's own tools or
    to check the reader); the normaliser's mode and convention must be openpi's for the stats to mean the same."""
    folder = Path(folder)
    head = head or (normalizer.heads[0] if len(normalizer.heads) == 1 else None)
    if head not in normalizer.stats:
        raise ValueError(f"choose one of the normaliser's heads {normalizer.heads} with head=")
    cfg = model.config
    tensors = {openpi_name(k): v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    (folder / ASSETS / asset_id).mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    respect_umask(folder / "model.safetensors")  # safetensors writes 0600
    config: dict[str, Any] = {"action_dim": cfg.max_action_dim, "action_horizon": cfg.chunk_size,
                              "paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m",
                              "precision": cfg.dtype}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    entries = {feature: {stat: normalizer.stats[head][feature][stat].tolist() for stat in ("mean", "std", "q01", "q99")
                         if stat in normalizer.stats[head][feature]} for feature in ("state", "actions")}
    (folder / ASSETS / asset_id / NORM_STATS).write_text(json.dumps({"norm_stats": entries}, indent=2))
    return folder
