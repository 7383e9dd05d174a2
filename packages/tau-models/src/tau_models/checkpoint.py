"""Checkpoint I/O: config.json + model.safetensors (never pickles), and loading LeRobot / OpenTau pi0(.5) layouts.

A foreign state dict is renamed onto tau's module names by prefix rules; the PaliGemma LM head is tied to the token
embedding (used when the embedding itself is missing, as in openpi conversions); keys that are known to be unused
(expert LM head) are dropped; anything else unmapped is reported as unexpected. A shape mismatch is an error.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tau_models.config import PiConfig, config_from_lerobot, is_openpi_config, merge_overrides
from tau_models.pi0 import EXPERT_SIDE, PiModel

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"  # a local prompt tokenizer travels inside the checkpoint folder under this name

_PG = "model.paligemma_with_expert.paligemma."
# (foreign prefix, tau prefix); first match wins. Both transformers >= 4.52 and older PaliGemma layouts.
PREFIX_RULES: list[tuple[str, str]] = [
    (_PG + "model.vision_tower.vision_model.", "backbone.vision_tower."),
    (_PG + "vision_tower.vision_model.", "backbone.vision_tower."),
    (_PG + "model.multi_modal_projector.linear.", "backbone.projector."),
    (_PG + "multi_modal_projector.linear.", "backbone.projector."),
    (_PG + "model.language_model.", "backbone.language_model."),
    (_PG + "language_model.model.", "backbone.language_model."),
    ("model.paligemma_with_expert.gemma_expert.model.", "expert."),
    ("model.paligemma_with_expert.discrete_action_embedding.", "fast_head.discrete_action_embedding."),  # OpenTau
    ("model.paligemma_with_expert.da_head.", "fast_head.da_head."),
]
# OpenTau keeps its normalisation statistics in the checkpoint (normalize_inputs.buffer_state.mean, ...)
NORMALIZATION_PREFIXES = ("normalize_", "unnormalize_")
LM_HEAD_KEYS = (_PG + "lm_head.weight", _PG + "language_model.lm_head.weight")
EMBED_KEY = "backbone.language_model.embed_tokens.weight"
IGNORED_KEYS = ("model.paligemma_with_expert.gemma_expert.lm_head.weight",)


@dataclass
class LoadReport:
    """What happened to each key when a checkpoint was loaded.

    normalization: statistics stored beside the weights (OpenTau: "normalize_inputs.buffer_state.mean", ...,
    each (norm heads, D)), under their file names, for the policy layer to build its normaliser from.
    """

    layout: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    normalization: dict[str, torch.Tensor] = field(default_factory=dict)

    def log(self) -> None:
        logger.info(
            "loaded %s checkpoint: %d missing, %d unexpected, %d ignored keys, %d normalisation tensors",
            self.layout,
            len(self.missing),
            len(self.unexpected),
            len(self.ignored),
            len(self.normalization),
        )
        if self.missing:
            logger.warning("missing keys (left at init): %s", self.missing)
        if self.unexpected:
            logger.warning("unexpected keys (not loaded): %s", self.unexpected)


def detect_layout(keys: list[str]) -> str:
    """ "tau" for our own names, "lerobot" / "opentau" / "openpi" for the paligemma_with_expert layouts."""
    if any(k.startswith("backbone.") for k in keys):
        return "tau"
    if any(
        ".discrete_action_embedding." in k or ".da_head." in k or k.startswith("normalize_") for k in keys
    ):
        return "opentau"
    if any(k.startswith("paligemma_with_expert.") for k in keys):
        return "openpi"  # openpi's JAX->PyTorch conversion: LeRobot's names without the "model." prefix
    if any("paligemma_with_expert" in k for k in keys):
        return "lerobot"
    raise ValueError("unrecognised checkpoint layout: no 'backbone.' or 'paligemma_with_expert' keys")


def map_foreign_state_dict(
    state: dict[str, torch.Tensor], variant: str
) -> tuple[dict[str, torch.Tensor], list[str], list[str], dict[str, torch.Tensor]]:
    """LeRobot / OpenTau names -> tau names. Returns (mapped, unexpected, ignored, normalization statistics)."""
    mapped: dict[str, torch.Tensor] = {}
    unexpected, ignored = [], []
    normalization: dict[str, torch.Tensor] = {}
    lm_head = None
    for key, value in state.items():
        if key.startswith(NORMALIZATION_PREFIXES):
            normalization[key] = value
            continue
        name = key if key.startswith("model.") else "model." + key  # openpi saves PI0Pytorch without "model."
        if name in IGNORED_KEYS:
            ignored.append(key)
            continue
        if name in LM_HEAD_KEYS:
            lm_head = value
            ignored.append(key)
            continue
        target = next((tau + name[len(src) :] for src, tau in PREFIX_RULES if name.startswith(src)), None)
        if target is None and name.startswith("model."):
            short = name[len("model.") :]
            if variant == "pi05" and short.startswith("action_time_mlp_"):
                short = short.replace("action_time_mlp_", "time_mlp_", 1)  # OpenTau's legacy pi05 names
            elif variant == "pi0" and short.startswith("time_mlp_"):
                short = "action_" + short  # old pi0 checkpoints (LeRobot's loader renames them the same way)
            if short.split(".")[0] in EXPERT_SIDE:
                target = short
        if target is None:
            unexpected.append(key)
        else:
            mapped[target] = value
    if EMBED_KEY not in mapped and lm_head is not None:
        logger.info("token embedding missing: using the tied PaliGemma lm_head weight")
        mapped[EMBED_KEY] = lm_head
    return mapped, unexpected, ignored, normalization


def check_state(
    model: nn.Module, state: dict[str, torch.Tensor], layout: str, source: str, strict: bool = False
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Map a (tau-named or foreign) state dict onto model's names and check it: shapes must match exactly and
    values be finite. Returns the tensors to load and the report; nothing is loaded."""
    report = LoadReport(layout=layout)
    if layout != "tau":
        state, report.unexpected, report.ignored, report.normalization = map_foreign_state_dict(
            state, model.config.variant
        )
    own = model.state_dict()
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"{source}: shape mismatch for {key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}"
            )
        elif not torch.isfinite(value).all():
            raise ValueError(f"{source}: tensor {key} contains NaN or inf")
    report.missing = sorted(k for k in own if k not in state)
    report.unexpected = sorted(set(report.unexpected))
    if strict and (report.missing or report.unexpected):
        raise ValueError(
            f"{source}: strict load failed; missing {report.missing}, unexpected {report.unexpected}"
        )
    report.log()
    return {k: v for k, v in state.items() if k in own}, report


def load_state(
    model: nn.Module, state: dict[str, torch.Tensor], layout: str, source: str, strict: bool = False
) -> LoadReport:
    """check_state, then copy the tensors into model."""
    tensors, report = check_state(model, state, layout, source, strict)
    with torch.no_grad():
        model.load_state_dict(tensors, strict=False)
    return report


def resolve_folder(path_or_hub_id: str | Path) -> Path:
    """A local folder as is; anything else is downloaded from the Hugging Face hub (config + safetensors only)."""
    folder = Path(path_or_hub_id)
    if folder.is_dir():
        return folder
    if folder.exists() or str(path_or_hub_id).startswith((".", "/")):
        raise FileNotFoundError(f"checkpoint folder not found: {path_or_hub_id}")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path_or_hub_id), allow_patterns=[CONFIG_FILE, WEIGHTS_FILE]))


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint weights missing: {path} (only safetensors checkpoints are read)")
    try:
        return load_file(str(path))
    except SafetensorError as error:  # truncated or not a safetensors file: name it
        raise ValueError(f"{path} is not a readable safetensors file ({error}); re-export or re-download it") from error


def read_config_json(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint config missing: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def save_pretrained(model: nn.Module, directory: str | Path) -> Path:
    """Write config.json and model.safetensors (each to a temp name, then renamed: atomic).

    A prompt tokenizer given as a local folder is copied in as tokenizer/, so the checkpoint folder can be moved
    or shared on its own; hub tokenizer ids are recorded as they are.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    _atomic_write(folder / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    config = model.config.to_dict()
    if "tokenizer_name" in config:
        config["tokenizer_name"] = _bundle_tokenizer(config["tokenizer_name"], folder)
    text = json.dumps(config, indent=2)
    _atomic_write(folder / CONFIG_FILE, lambda p: Path(p).write_text(text))
    return folder


def _bundle_tokenizer(name: str, folder: Path) -> str:
    """Copy a local tokenizer folder into `folder`/tokenizer (atomically) and return the name config.json records."""
    source, target = Path(name), folder / TOKENIZER_DIR
    if not source.is_dir():
        return name
    if source.resolve() != target.resolve():
        partial = folder / (TOKENIZER_DIR + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)
    return TOKENIZER_DIR


def resolve_bundled_tokenizer(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A checkpoint config with its bundled tokenizer ("tokenizer") turned into a path inside the checkpoint."""
    if raw.get("tokenizer_name") == TOKENIZER_DIR and (folder / TOKENIZER_DIR).is_dir():
        return {**raw, "tokenizer_name": str(folder / TOKENIZER_DIR)}
    return raw


def _atomic_write(target: Path, write: Callable[[str], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".")
    os.close(fd)
    try:
        write(tmp)
        respect_umask(tmp)  # mkstemp and safetensors make 0600; teammates on a shared cluster must read it
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def respect_umask(path: str | Path) -> None:
    """Give `path` the mode `open()` gives a new file under this process's umask (0o666 minus the umask): writers
    that use temporary files (mkstemp, safetensors) otherwise leave 0600, unreadable to the group."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def saved_config(folder: Path, raw: dict[str, Any], vision_num_heads: int | None = None) -> PiConfig:
    """The PiConfig a checkpoint folder was saved with: a tau config.json, or a LeRobot / OpenTau config.json read
    with the tensor shapes (vision_num_heads: SigLIP's head count, which no shape shows)."""
    source = folder / CONFIG_FILE
    if raw.get("model_type") == "tau_pi":
        try:
            config = PiConfig.from_dict(raw)
        except (TypeError, ValueError) as error:  # unknown or mistyped fields: name the file
            raise ValueError(f"{source}: {error}") from error
        if vision_num_heads is not None and vision_num_heads != config.vision.num_heads:
            raise ValueError(
                f"{source}: vision_num_heads={vision_num_heads} changes the architecture of the checkpoint "
                f"(saved {config.vision.num_heads})"
            )
        return config
    if raw.get("type") in ("pi05", "pi0") or is_openpi_config(raw):
        return config_from_lerobot(folder, vision_num_heads)
    raise ValueError(
        f"{source}: neither a tau ('model_type': 'tau_pi'), a LeRobot/OpenTau ('type': 'pi05'/'pi0') nor an openpi "
        "('action_horizon', 'paligemma_variant', 'action_expert_variant') config"
    )


def load_pi_checkpoint(
    path_or_hub_id: str | Path, *, strict: bool = True, vision_num_heads: int | None = None, **overrides: Any
) -> tuple[PiModel, LoadReport]:
    """Build a PiModel from a tau, LeRobot or OpenTau checkpoint; returns the model and its LoadReport.

    The saved config is read first, the overrides (PiConfig runtime fields: dropout, dtype, gradient_checkpointing,
    num_inference_steps, tokenizer and loss settings, ...) are merged into it, an override that would change the
    architecture is refused naming the field, and only then is the model built, so every override takes effect.
    strict (default): any missing or unexpected key is an error naming the keys; strict=False logs them and
    keeps freshly initialised values for the missing ones.
    """
    folder = resolve_folder(path_or_hub_id)
    raw = resolve_bundled_tokenizer(read_config_json(folder), folder)
    state = read_weights(folder)
    layout = detect_layout(list(state))
    config = merge_overrides(saved_config(folder, raw, vision_num_heads), overrides, str(folder / CONFIG_FILE))
    with torch.device("meta"):  # no memory for weights that the checkpoint replaces anyway
        model = PiModel(config)
    source = str(folder / WEIGHTS_FILE)
    tensors, report = check_state(model, state, layout, source, strict)
    if report.missing:  # keep freshly initialised values for what the checkpoint lacks
        model = PiModel(config)
        with torch.no_grad():
            model.load_state_dict(tensors, strict=False)
    else:
        model.load_state_dict(tensors, strict=True, assign=True)
        model.to(torch.bfloat16 if config.dtype == "bfloat16" else torch.float32)
    return model, report


def from_pretrained(
    path_or_hub_id: str | Path, *, strict: bool = True, vision_num_heads: int | None = None, **overrides: Any
) -> PiModel:
    """PiModel from a folder or hub id (tau, LeRobot or OpenTau layout) with runtime overrides, loaded strictly by
    default (see load_pi_checkpoint); the load report is logged."""
    return load_pi_checkpoint(path_or_hub_id, strict=strict, vision_num_heads=vision_num_heads, **overrides)[0]
