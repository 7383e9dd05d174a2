"""The policy bundle: a trained model with everything acting needs, saved as one folder.

    <folder>/model/            config.json + model.safetensors (+ tokenizer/), tau-models' checkpoint format
    <folder>/normalizer.json   tau-data's Normalizer with every norm head the policy was trained with
    <folder>/bundle.json       {"format": "tau_policy.bundle/1", "heads": [PolicyLayout...], "provenance": {...}}

bundle.json is written last, so a folder with one is complete. Folders written by the old tau-rl PolicyBundle
(bundle.json without "format") load too (see tau_policy.legacy), and so do LeRobot / OpenTau / openpi checkpoint
folders (see tau_policy.foreign). A hub repo id is downloaded with huggingface_hub.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from huggingface_hub import snapshot_download
from tau_data import MixtureDataset, Normalizer
from tau_models import PiConfig, PiModel, from_pretrained, respect_umask, save_pretrained
from tau_models.checkpoint import read_config_json, resolve_bundled_tokenizer

from tau_policy.foreign import check_no_lora, load_foreign
from tau_policy.layout import PolicyLayout, choose_layout
from tau_policy.legacy import is_legacy, legacy_layout

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "tau_policy.bundle/1"
BUNDLE_FILE, NORMALIZER_FILE, MODEL_DIR = "bundle.json", "normalizer.json", "model"
WEIGHT_KINDS = ("raw", "ema", "lora_merged")


def tau_versions() -> dict[str, str]:
    """Versions of the tau packages that build and read bundles."""
    import tau_data
    import tau_models
    import tau_policy

    return {"tau_policy": tau_policy.__version__, "tau_models": tau_models.__version__,
            "tau_data": tau_data.__version__}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Provenance:
    """Where the bundle's weights come from."""

    source: str | None = None        # the checkpoint folder / run the weights were taken from
    step: int | None = None          # its training step
    weights: str | None = "raw"      # "raw", "ema" or "lora_merged"; None: unknown (a converted old bundle)
    versions: dict[str, str] = field(default_factory=tau_versions)
    created: str = field(default_factory=_now)
    note: str | None = None

    def __post_init__(self) -> None:
        if self.weights is not None and self.weights not in WEIGHT_KINDS:
            raise ValueError(f"Provenance.weights must be one of {WEIGHT_KINDS} or None, got {self.weights!r}")


@dataclass
class PolicyBundle:
    """A model, its normaliser (every head) and the sample layout of each head, plus provenance."""

    model: PiModel
    normalizer: Normalizer
    layouts: tuple[PolicyLayout, ...]
    provenance: Provenance

    def __post_init__(self) -> None:
        self.layouts = tuple(self.layouts)
        if not self.layouts:
            raise ValueError("a policy bundle needs at least one head layout")
        cfg = self.model.config
        for layout in self.layouts:
            if layout.head not in self.normalizer.stats:
                raise ValueError(f"head {layout.head!r} has no stats in the normaliser (heads: "
                                 f"{self.normalizer.heads})")
            sizes = (layout.chunk_size, layout.max_state_dim, layout.max_action_dim)
            if sizes != (cfg.chunk_size, cfg.max_state_dim, cfg.max_action_dim):
                raise ValueError(f"head {layout.head!r} has (chunk_size, max_state_dim, max_action_dim) {sizes}, "
                                 f"the model {(cfg.chunk_size, cfg.max_state_dim, cfg.max_action_dim)}")

    def layout(self, head: str | None = None) -> PolicyLayout:
        """The layout of the head named `head` (norm head, robot type or dataset); None: the only head."""
        return choose_layout(self.layouts, head)

    def save(self, folder: str | Path) -> Path:
        """Write model/, normalizer.json, then bundle.json (so a folder with bundle.json is complete)."""
        folder = Path(folder)
        (folder / BUNDLE_FILE).unlink(missing_ok=True)
        save_pretrained(self.model, folder / MODEL_DIR)
        self.normalizer.save(folder / NORMALIZER_FILE)
        document = {"format": BUNDLE_FORMAT, "heads": [layout.to_dict() for layout in self.layouts],
                    "provenance": dataclasses.asdict(self.provenance)}
        _write_json_atomic(folder / BUNDLE_FILE, document)
        return folder

    @classmethod
    def load(cls, path_or_hub_id: str | Path, *, device: str | torch.device = "cpu",
             statistics: Normalizer | str | Path | None = None, strict: bool = True,
             vision_num_heads: int | None = None, **overrides: Any) -> PolicyBundle:
        """Load a bundle folder (or hub repo id), or a LeRobot / OpenTau / openpi checkpoint folder (see
        tau_policy.foreign); old tau-rl bundle folders are converted on the fly. `statistics` (a Normalizer or a
        normaliser file) replaces the folder's own; `overrides` are PiConfig runtime fields (tokenizer_name, ...)."""
        folder = resolve_policy_folder(path_or_hub_id)
        own = Normalizer.load(statistics) if isinstance(statistics, (str, Path)) else statistics
        if not (folder / BUNDLE_FILE).is_file():
            if (folder / MODEL_DIR).is_dir() or (folder / NORMALIZER_FILE).is_file():
                resolve_bundle(folder)  # a tau bundle without bundle.json: an unfinished save
            model, normalizer, layouts, kind = load_foreign(folder, device=device, statistics=own, strict=strict,
                                                            vision_num_heads=vision_num_heads, **overrides)
            note = f"loaded from a {kind} checkpoint folder" + ("" if own is None else " with the caller's statistics")
            return cls(model, normalizer, layouts, Provenance(source=str(folder), weights=None, note=note))
        check_no_lora(folder / MODEL_DIR)
        normalizer = own or Normalizer.load(folder / NORMALIZER_FILE)
        layouts, provenance = read_layouts(folder)
        model = from_pretrained(folder / MODEL_DIR, strict=strict, vision_num_heads=vision_num_heads, **overrides)
        return cls(model.to(device), normalizer, layouts, provenance)

    @classmethod
    def from_mixture(cls, model: PiModel, mixture: MixtureDataset, *, provenance: Provenance,
                     sim_state_key: str = "state",
                     action_bounds: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
                     ) -> PolicyBundle:
        """The bundle of a model trained on `mixture`: one layout per norm head, with the camera and state features
        of the head's first dataset; `action_bounds` maps a norm head to the (low, high) its actions are clipped to
        (heads not in it are not clipped)."""
        mc, pc = mixture.config, model.config
        sizes = (mc.chunk_size, mc.max_state_dim, mc.max_action_dim)
        if sizes != (pc.chunk_size, pc.max_state_dim, pc.max_action_dim):
            raise ValueError(f"the mixture's (chunk_size, max_state_dim, max_action_dim) {sizes} differ from the "
                             f"model's {(pc.chunk_size, pc.max_state_dim, pc.max_action_dim)}")
        bounds = dict(action_bounds or {})
        unknown = sorted(set(bounds) - set(mixture.heads))
        if unknown:
            raise ValueError(f"action_bounds names heads {unknown} the mixture does not have ({sorted(set(mixture.heads))})")
        layouts: dict[str, PolicyLayout] = {}
        for d, (spec, member, head) in enumerate(zip(mc.datasets, mixture.members, mixture.heads)):
            cameras = tuple([*spec.cameras, *[None] * (mc.num_cameras - len(spec.cameras))])
            if head in layouts:
                first = layouts[head]
                if first.cameras != cameras or first.state_feature != spec.state:
                    log.warning("dataset %s maps cameras %s / state %s, head %s keeps those of its first dataset "
                                "(%s / %s)", member.name, cameras, spec.state, head, first.cameras,
                                first.state_feature)
                layouts[head] = dataclasses.replace(first, datasets=(*first.datasets, member.name))
                continue
            low, high = bounds.get(head, (None, None))
            layouts[head] = PolicyLayout(
                head=head, cameras=cameras, image_size=tuple(mc.image_size), state_dim=mixture.state_dims[d],
                action_dim=mixture.action_dims[d], chunk_size=pc.chunk_size, max_state_dim=pc.max_state_dim,
                max_action_dim=pc.max_action_dim, state_feature=spec.state,
                action_low=None if low is None else tuple(float(v) for v in low),
                action_high=None if high is None else tuple(float(v) for v in high),
                robot_type=spec.robot_type or member.meta.robot_type, datasets=(member.name,),
                sim_state_key=sim_state_key, relative_actions=None if mixture.relative_masks[d] is None else
                tuple(bool(v) for v in mixture.relative_masks[d]))
        return cls(model, mixture.normalizer, tuple(layouts.values()), provenance)


# what a policy folder on the hub may hold: a tau bundle, or a LeRobot / OpenTau / openpi checkpoint with its
# statistics (processor files, assets/<id>/norm_stats.json) and tokenizers
HUB_PATTERNS = ["*.json", "*.safetensors", f"{MODEL_DIR}/**", "assets/**", "tokenizer/**", "fast_tokenizer/**"]


def resolve_policy_folder(path_or_hub_id: str | Path) -> Path:
    """A local folder as is; anything else is downloaded from the Hugging Face hub (policy files only)."""
    folder = Path(path_or_hub_id)
    if folder.is_dir():
        return folder
    if folder.exists() or str(path_or_hub_id).startswith((".", "/", "~")):
        raise FileNotFoundError(f"policy bundle folder not found: {path_or_hub_id}")
    return Path(snapshot_download(str(path_or_hub_id), allow_patterns=HUB_PATTERNS))


def resolve_bundle(path_or_hub_id: str | Path) -> Path:
    """A tau bundle folder (local, or downloaded from the hub); a folder without bundle.json is an error."""
    folder = resolve_policy_folder(path_or_hub_id)
    if not (folder / BUNDLE_FILE).is_file():
        raise FileNotFoundError(f"{folder} is no policy bundle: {BUNDLE_FILE} missing (an unfinished save, or a "
                                "bare model checkpoint)")
    return folder


def read_model_config(path_or_hub_id: str | Path) -> PiConfig:
    """The bundle's PiConfig, without building the model."""
    folder = resolve_bundle(path_or_hub_id)
    model_dir = folder / MODEL_DIR
    return PiConfig.from_dict(resolve_bundled_tokenizer(read_config_json(model_dir), model_dir))


def read_layouts(path_or_hub_id: str | Path) -> tuple[tuple[PolicyLayout, ...], Provenance]:
    """The head layouts and provenance in bundle.json, without loading the model."""
    folder = resolve_bundle(path_or_hub_id)
    path = folder / BUNDLE_FILE
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if is_legacy(document):
        layout = legacy_layout(document, read_model_config(folder), str(path))
        return (layout,), Provenance(source=str(folder), weights=None, versions={}, created="",
                                     note="converted from a tau-rl PolicyBundle folder (bundle.json without format)")
    if document.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{path}: format {document.get('format')!r} is not {BUNDLE_FORMAT!r}")
    heads = document.get("heads")
    if not isinstance(heads, list):
        raise ValueError(f"{path}: 'heads' must be a list of head layouts")
    layouts = tuple(PolicyLayout.from_dict(h, f"{path} heads[{i}]") for i, h in enumerate(heads))
    try:
        provenance = Provenance(**document.get("provenance", {}))
    except TypeError as error:
        raise ValueError(f"{path}: bad provenance ({error})") from error
    return layouts, provenance


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        respect_umask(tmp)  # mkstemp makes 0600; a shared cluster's group must be able to read it
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
