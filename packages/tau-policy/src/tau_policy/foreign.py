"""Policy bundles from other libraries' checkpoint folders: LeRobot (with its processor files), OpenTau (statistics
in the weights) and openpi's PyTorch conversion (assets/<asset_id>/norm_stats.json).

The model loads through tau-models (strict by default: any missing or unexpected key is named), the normaliser is
built from the statistics the folder carries with that library's own formulas, and the layout from the features
its config names, so a raw observation keyed by the checkpoint's feature names gives actions in robot units.
Statistics that are missing are an error unless the caller passes a Normalizer of their own.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from tau_data import Normalizer
from tau_models import PiModel, load_pi_checkpoint
from tau_models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_config_json
from tau_models.config import is_openpi_config

from tau_policy import lerobot_format, openpi_format, opentau_format
from tau_policy.layout import PolicyLayout


ADAPTER_CONFIG = "adapter_config.json"  # a PEFT LoRA adapter folder


def check_no_lora(folder: Path) -> None:
    """A LoRA adapter without its base (a PEFT adapter folder, or weights holding only lora_* tensors) or an
    unmerged one is an error naming the file and the key: tau loads merged weights."""
    adapter = folder / ADAPTER_CONFIG
    if adapter.is_file():
        try:
            base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        except json.JSONDecodeError:
            base = None
        raise ValueError(f"{adapter}: a LoRA adapter without its base weights (base_model_name_or_path={base!r}); "
                         "load a checkpoint with the adapter merged into its base")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        return
    try:
        with safe_open(str(weights), framework="pt") as f:
            keys = list(f.keys())
    except SafetensorError as error:  # truncated or not a safetensors file
        raise ValueError(f"{weights} is not a readable safetensors file ({error}); re-export or re-download it") \
            from error
    lora = [k for k in keys if ".lora_A." in k or ".lora_B." in k]
    if lora:
        what = ("an unmerged LoRA adapter" if any(".base_layer." in k for k in keys)
                else "LoRA adapter weights without their base")
        raise ValueError(f"{weights}: {what} (key {lora[0]!r}); load a checkpoint with the adapter merged")


def detect_format(folder: Path) -> str:
    """"lerobot", "opentau" or "openpi" for a foreign checkpoint folder; an unknown layout is an error naming it."""
    check_no_lora(folder)
    if not (folder / WEIGHTS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        listing = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise ValueError(f"{folder}: unknown checkpoint layout (no bundle.json, no {CONFIG_FILE} + {WEIGHTS_FILE}); "
                         f"it holds {listing}")
    config = read_config_json(folder)
    if opentau_format.is_opentau_config(config):
        return "opentau"
    if is_openpi_config(config):
        return "openpi"
    if config.get("type") in ("pi05", "pi0"):
        return "lerobot"
    raise ValueError(f"{folder / CONFIG_FILE}: unknown checkpoint layout: neither LeRobot/OpenTau ('type': "
                     "'pi05'/'pi0', 'opentau_version') nor openpi ('action_horizon', 'paligemma_variant')")


def _features(config: Mapping[str, Any], kind: str) -> list[tuple[str, list[int]]]:
    return [(name, list(spec.get("shape", []))) for name, spec in lerobot_format.model_features(config).items()
            if spec.get("type") == kind]


def _layout(model: PiModel, head: str, cameras: list[str | None], state: tuple[str, int], action_dim: int,
            **extra: Any) -> PolicyLayout:
    cfg = model.config
    size = cfg.vision.image_size
    return PolicyLayout(head=head, cameras=tuple(cameras), image_size=(size, size), state_dim=state[1],
                        action_dim=action_dim, chunk_size=cfg.chunk_size, max_state_dim=cfg.max_state_dim,
                        max_action_dim=cfg.max_action_dim, state_feature=state[0], **extra)


def _config_layouts(model: PiModel, config: Mapping[str, Any], heads: list[str], source: str,
                    rename: Mapping[str, str] | None = None) -> tuple[PolicyLayout, ...]:
    """One layout per head from a LeRobot/OpenTau config.json's input/output features."""
    rename = rename or {}
    cameras = [rename.get(name, name) for name, _ in _features(config, "VISUAL")]
    cameras += [None] * int(config.get("empty_cameras", 0))
    states, actions = _features(config, "STATE"), _features(config, "ACTION")
    if len(states) != 1 or len(actions) != 1:
        raise ValueError(f"{source}: expected one STATE and one ACTION feature, got {states} / {actions}")
    state = (rename.get(states[0][0], states[0][0]), int(states[0][1][0]))
    return tuple(_layout(model, head, cameras, state, int(actions[0][1][0])) for head in heads)


def _dims(stats: Mapping[str, Any]) -> int:
    return len(next(iter(stats.values())))


def _own_statistics(statistics: Normalizer, layouts: tuple[PolicyLayout, ...]) -> tuple[PolicyLayout, ...]:
    """The layouts renamed onto the heads of a caller's Normalizer (one head: every layout uses it)."""
    missing = [layout.head for layout in layouts if layout.head not in statistics.stats]
    if not missing:
        return layouts
    if len(statistics.heads) == 1 and len(layouts) == 1:
        return (dataclasses.replace(layouts[0], head=statistics.heads[0]),)
    raise ValueError(f"the statistics passed have heads {statistics.heads}, the checkpoint's are {missing}")


def load_foreign(folder: Path, *, device: Any = "cpu", statistics: Normalizer | None = None, strict: bool = True,
                 vision_num_heads: int | None = None, **overrides: Any,
                 ) -> tuple[PiModel, Normalizer, tuple[PolicyLayout, ...], str]:
    """(model, normaliser, layouts, format) of a LeRobot / OpenTau / openpi checkpoint folder."""
    kind = detect_format(folder)
    config = read_config_json(folder)
    config_file, weights_file = str(folder / CONFIG_FILE), str(folder / WEIGHTS_FILE)
    normalizer: Normalizer | None = None
    if kind == "lerobot":
        has_processors = lerobot_format.is_lerobot_folder(folder)
        if has_processors:
            overrides = {**lerobot_format.tokenizer_overrides(folder), **overrides}
        model, report = load_pi_checkpoint(folder, strict=strict, vision_num_heads=vision_num_heads, **overrides)
        rename = lerobot_format.renamed_observations(folder) if has_processors else {}
        layouts = _config_layouts(model, config, [lerobot_format.HEAD], config_file, rename)
        if has_processors and statistics is None:
            normalizer, _ = lerobot_format.lerobot_normalizer(folder, config)
        missing = f"{folder}: no statistics ({lerobot_format.PREPROCESSOR} / {lerobot_format.POSTPROCESSOR} missing)"
    elif kind == "opentau":
        model, report = load_pi_checkpoint(folder, strict=strict, vision_num_heads=vision_num_heads, **overrides)
        heads = list(config.get("dataset_names") or [])
        if not heads:
            raise ValueError(f"{config_file}: 'dataset_names' (the norm heads, in row order) is missing or empty")
        layouts = _config_layouts(model, config, heads, config_file)
        if report.normalization and statistics is None:
            normalizer = opentau_format.opentau_normalizer(config, report.normalization, config_file=config_file,
                                                           weights_file=weights_file)
        missing = f"{weights_file}: no normalisation statistics (normalize_inputs.buffer_state.*, ...) in the weights"
    else:
        model, report = load_pi_checkpoint(folder, strict=strict, vision_num_heads=vision_num_heads, **overrides)
        if statistics is None:
            normalizer = openpi_format.openpi_normalizer(folder, model.config.variant)
        source = normalizer or statistics
        heads = [] if source is None else list(source.heads)
        layouts = tuple(_layout(model, head, list(openpi_format.IMAGE_KEYS),
                                (openpi_format.STATE_KEY, _dims(source.stats[head]["state"])),
                                _dims(source.stats[head]["actions"])) for head in heads)
        missing = f"{folder}: no statistics ({openpi_format.ASSETS}/<asset_id>/{openpi_format.NORM_STATS} missing)"
    if statistics is not None:
        return model.to(device), statistics, _own_statistics(statistics, layouts), kind
    if normalizer is None:
        raise ValueError(f"{missing}; pass statistics= (a tau Normalizer or normalizer file) to load it")
    return model.to(device), normalizer, layouts, kind
