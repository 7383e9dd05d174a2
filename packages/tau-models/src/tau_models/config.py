"""Typed configs for pi0 / pi0.5 and their presets (full size, tiny for tests, built from a LeRobot checkpoint)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

PALIGEMMA_TOKENIZER = "google/paligemma-3b-pt-224"
PALIGEMMA_VOCAB_SIZE = 257152
# Freezing flags older tau / LeRobot configs carry: what trains is tau-train's TrainConfig.freeze (PiModel.module_groups)
TRAINING_FLAGS = ("freeze_vision_encoder", "train_expert_only", "freeze_expert")


@dataclass
class VisionConfig:
    """SigLIP vision tower sizes (defaults: So400m/14 at 224x224)."""

    width: int = 1152
    depth: int = 27
    mlp_dim: int = 4304
    num_heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    layer_norm_eps: float = 1e-6

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass
class GemmaConfig:
    """One Gemma tower (VLM or action expert)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int = 8
    num_kv_heads: int = 1
    head_dim: int = 256
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0


def gemma_2b() -> GemmaConfig:
    """Gemma-2B, the PaliGemma language model."""
    return GemmaConfig(width=2048, depth=18, mlp_dim=16384, num_heads=8, num_kv_heads=1, head_dim=256)


def gemma_300m() -> GemmaConfig:
    """Gemma-300M, the pi0 / pi0.5 action expert."""
    return GemmaConfig(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256)


@dataclass
class PiConfig:
    """Everything that defines a pi0 / pi0.5 model and its training losses.

    variant "pi05": time conditions the expert through adaptive RMSNorm, the state is discretised into the prompt
    (or one continuous prefix token with state_mode="continuous"). variant "pi0": a state token and time mixed into
    the action tokens.
    """

    variant: Literal["pi05", "pi0"] = "pi05"
    vision: VisionConfig = field(default_factory=VisionConfig)
    vlm: GemmaConfig = field(default_factory=gemma_2b)
    expert: GemmaConfig = field(default_factory=gemma_300m)
    vocab_size: int = PALIGEMMA_VOCAB_SIZE
    max_state_dim: int = 32
    max_action_dim: int = 32
    chunk_size: int = 50
    num_inference_steps: int = 10
    state_mode: Literal["discrete", "continuous"] = "discrete"
    state_bins: int = 256
    # prompt tokenizer (hub id or local directory) and the maximum prompt length in tokens
    tokenizer_name: str = PALIGEMMA_TOKENIZER
    tokenizer_max_length: int = 200
    # "lerobot": "Task: {cleaned task}, State: {bins};\nAction: " (openpi / LeRobot); "opentau": "Task: {task},
    # State: {bins of the state clamped to [-1, 1]};\n", then "Action: " as a causal marker block before the FAST
    # tokens that the action expert does not see (OpenTau's pi0.5)
    prompt_format: Literal["lerobot", "opentau"] = "lerobot"
    # flow matching
    time_beta_alpha: float = 1.5
    time_beta_beta: float = 1.0
    time_scale: float = 0.999
    time_offset: float = 0.001
    min_period: float = 4e-3
    max_period: float = 4.0
    # regularisation and gradient routing (what trains at all is tau-train's TrainConfig.freeze)
    dropout: float = 0.1
    knowledge_insulation: bool = False
    # FAST discrete actions: tokenizer directory (or hub id), token budget and loss weights. fast_head "vlm_vocab"
    # (openpi): FAST ids on the VLM vocabulary's tail, tied embedding / LM head, ending with <eos>; "separate"
    # (OpenTau): an own embedding and linear head over fast_vocab_size ids, no <eos>
    fast_head: Literal["vlm_vocab", "separate"] = "vlm_vocab"
    fast_vocab_size: int = 0
    fast_tokenizer_path: str | None = None
    fast_max_tokens: int = 64
    fast_skip_tokens: int = 128
    flow_loss_weight: float = 1.0
    fast_loss_weight: float = 0.0
    # response / subtask text after the prompt (VLM co-training), trained by cross-entropy when the weight is > 0
    response_loss_weight: float = 0.0
    response_max_tokens: int = 52
    # RL advantage conditioning: "Advantage: positive/negative" in the prompt, dropped with this probability
    advantage_conditioning: bool = False
    advantage_dropout: float = 0.3
    # real-time chunking training (tau_models.rtc): a delay d in [0, rtc_max_delay] per sample, the chunk's first d
    # actions given clean (time 0) and left out of the loss; 0 = off. Such a model samples with mode "prefix"
    rtc_max_delay: int = 0
    dtype: Literal["float32", "bfloat16"] = "float32"
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.variant not in ("pi05", "pi0"):
            raise ValueError(f"PiConfig.variant must be 'pi05' or 'pi0', got {self.variant!r}")
        if self.vlm.depth != self.expert.depth:
            raise ValueError(f"vlm.depth ({self.vlm.depth}) must equal expert.depth ({self.expert.depth})")
        if (self.vlm.head_dim, self.vlm.num_kv_heads) != (self.expert.head_dim, self.expert.num_kv_heads):
            raise ValueError("vlm and expert must share head_dim and num_kv_heads (they attend jointly)")
        if self.expert.width % 2:
            raise ValueError(
                f"expert.width must be even (sinusoidal time embedding), got {self.expert.width}"
            )
        if self.fast_loss_weight > 0 and self.fast_tokenizer_path is None:
            raise ValueError("fast_loss_weight > 0 needs fast_tokenizer_path")
        if self.fast_head not in ("vlm_vocab", "separate"):
            raise ValueError(f"fast_head must be 'vlm_vocab' or 'separate', got {self.fast_head!r}")
        if self.fast_head == "separate" and self.fast_vocab_size <= 0:
            raise ValueError("fast_head='separate' needs fast_vocab_size > 0 (the FAST tokenizer's vocabulary)")
        if self.prompt_format not in ("lerobot", "opentau"):
            raise ValueError(f"prompt_format must be 'lerobot' or 'opentau', got {self.prompt_format!r}")
        if not 0 <= self.rtc_max_delay < self.chunk_size:
            raise ValueError(f"rtc_max_delay must be in [0, chunk_size={self.chunk_size}), got {self.rtc_max_delay}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def uses_fast(self) -> bool:
        return self.fast_loss_weight > 0

    def architecture_fields(self) -> set[str]:
        """Fields that decide which parameters exist or their shapes (or how the towers compute over them): a
        checkpoint's weights mean nothing under other values. Every other field is a runtime setting."""
        fields = {"variant", "vision", "vlm", "expert", "vocab_size", "state_mode", "max_action_dim", "fast_head"}
        if self.variant == "pi0" or self.state_mode == "continuous":
            fields.add("max_state_dim")  # the state projection's input width
        if self.fast_head == "separate":
            fields.add("fast_vocab_size")  # the FAST embedding / head sizes
        return fields

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": "tau_pi", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PiConfig:
        data = {k: v for k, v in data.items() if k != "model_type"}
        _drop_training_flags(data, "PiConfig")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown PiConfig fields: {sorted(unknown)}")
        data["vision"] = VisionConfig(**data.get("vision", {}))
        for name in ("vlm", "expert"):
            if name in data:
                data[name] = GemmaConfig(**data[name])
        return cls(**data)


def _drop_training_flags(data: dict[str, Any], source: str) -> None:
    """Remove the freezing flags of older configs (in place), saying where freezing is set now."""
    set_flags = [k for k in TRAINING_FLAGS if data.pop(k, False)]
    if set_flags:
        logger.warning(
            "%s: %s are training settings, not model settings: freeze parameter groups with tau-train's "
            "TrainConfig.freeze (e.g. [vision], [vlm]); ignored here",
            source,
            set_flags,
        )


def merge_overrides(config: Any, overrides: Mapping[str, Any], source: str) -> Any:
    """config (a PiConfig or ValueConfig read from a checkpoint) with runtime overrides applied before any model is
    built. An override of an architecture field to a different value is refused, naming the field."""
    known = {f.name for f in dataclasses.fields(config)}
    architecture = config.architecture_fields()
    for name, value in overrides.items():
        if name not in known:
            raise ValueError(f"{source}: unknown {type(config).__name__} field {name!r} in the overrides")
        saved = getattr(config, name)
        if name in architecture and value != saved:
            raise ValueError(
                f"{source}: override {name}={value!r} changes the architecture of the checkpoint (saved {saved!r}); "
                "only runtime fields can be overridden when loading weights"
            )
    return dataclasses.replace(config, **overrides)


def pi05_config(**overrides: Any) -> PiConfig:
    """Full-size pi0.5: SigLIP So400m/14 at 224, Gemma-2B VLM, Gemma-300M expert with adaRMS."""
    return PiConfig(variant="pi05", **overrides)


def pi0_config(**overrides: Any) -> PiConfig:
    """Full-size pi0: same towers, state token and time mixed into the action tokens, 48-token prompts."""
    overrides.setdefault("tokenizer_max_length", 48)
    return PiConfig(variant="pi0", **overrides)


def tiny_vision() -> VisionConfig:
    return VisionConfig(width=128, depth=2, mlp_dim=512, num_heads=4, patch_size=14, image_size=56)


def tiny_pi05_config(**overrides: Any) -> PiConfig:
    """A few-million-parameter pi0.5 for CPU tests (sizes of the LeRobot parity fixture)."""
    base: dict[str, Any] = dict(
        variant="pi05",
        vision=tiny_vision(),
        vlm=GemmaConfig(width=256, depth=2, mlp_dim=1024, num_heads=8, num_kv_heads=1, head_dim=32),
        expert=GemmaConfig(width=128, depth=2, mlp_dim=512, num_heads=8, num_kv_heads=1, head_dim=32),
        vocab_size=1024,
        chunk_size=10,
        tokenizer_max_length=48,
    )
    base.update(overrides)
    return PiConfig(**base)


def tiny_pi0_config(**overrides: Any) -> PiConfig:
    """The tiny sizes as a pi0."""
    overrides.setdefault("variant", "pi0")
    return tiny_pi05_config(**overrides)


def is_openpi_config(raw: dict[str, Any]) -> bool:
    """Whether a config.json is the one openpi's JAX->PyTorch conversion writes: {"action_dim", "action_horizon",
    "paligemma_variant", "action_expert_variant", "precision"}."""
    return "type" not in raw and {"action_horizon", "paligemma_variant", "action_expert_variant"} <= set(raw)


def openpi_as_lerobot(raw: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """openpi's config.json read as LeRobot's: pi0.5 when the weights have time_mlp_in (pi0: state_proj and
    action_time_mlp_*), the chunk from action_horizon, the padded state/action width from action_in_proj."""
    width = shapes["model.action_in_proj.weight"][1]
    vision = "model.paligemma_with_expert.paligemma.model.vision_tower.vision_model.embeddings."
    patches, patch = shapes[vision + "position_embedding.weight"][0], shapes[vision + "patch_embedding.weight"][-1]
    side = round(patches**0.5) * patch  # openpi's images are square (224 for the released models)
    return {"type": "pi05" if "model.time_mlp_in.weight" in shapes else "pi0", "image_resolution": [side, side],
            "chunk_size": int(raw["action_horizon"]), "max_action_dim": width, "max_state_dim": width,
            "tokenizer_max_length": int(raw.get("max_token_len", 200 if "model.time_mlp_in.weight" in shapes else 48)),
            "dtype": raw.get("precision", "float32")}


def _lerobot_expert_is_adarms(keys: set[str]) -> bool:
    return any(k.endswith("input_layernorm.dense.weight") and "gemma_expert" in k for k in keys)


OPENTAU_FAST_HEAD = "model.paligemma_with_expert.da_head.weight"


def _opentau_fields(lr: dict[str, Any], shapes: dict[str, tuple[int, ...]], folder: Path) -> dict[str, Any]:
    """PiConfig fields of OpenTau's pi0.5: its prompt layout when config.json is OpenTau's, and its FAST branch
    when the weights hold one (separate embedding + da_head; the tokenizer path resolved as OpenTau does, from the
    working directory, or beside the checkpoint folder)."""
    fields: dict[str, Any] = {}
    if "opentau_version" in lr:
        if lr.get("state_type", "discrete") != "discrete":
            raise ValueError(f"{folder / 'config.json'}: OpenTau's continuous state layout is not supported")
        fields["prompt_format"] = "opentau"
    if OPENTAU_FAST_HEAD in shapes:
        path = str(lr.get("discrete_action_tokenizer_path") or "physical-intelligence/fast")
        for candidate in (Path(path), folder.parent / path):
            if candidate.is_dir():
                path = str(candidate)
                break
        fields.update(
            fast_head="separate",
            fast_vocab_size=shapes[OPENTAU_FAST_HEAD][0],
            fast_tokenizer_path=path,
            fast_max_tokens=int(lr.get("discrete_action_max_length", 32)),
            fast_loss_weight=1.0,  # OpenTau trains the FAST cross-entropy beside the flow loss
        )
    return fields


def config_from_lerobot(
    checkpoint_dir: str | Path, vision_num_heads: int | None = None, **overrides: Any
) -> PiConfig:
    """Build a PiConfig from a LeRobot (or OpenTau) pi0 / pi05 checkpoint folder (config.json + model.safetensors).

    LeRobot's config.json names the tower sizes only by variant ("gemma_2b"), so the sizes are read from the
    tensor shapes. SigLIP's head count is not visible in any shape: pass vision_num_heads unless the tower is
    So400m (width 1152, 16 heads). Runtime overrides apply as in merge_overrides.
    """
    from safetensors import safe_open

    folder = Path(checkpoint_dir)
    cfg_path, weights_path = folder / "config.json", folder / "model.safetensors"
    for path in (cfg_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"LeRobot checkpoint file missing: {path}")
    lr = json.loads(cfg_path.read_text())
    with safe_open(str(weights_path), framework="pt") as f:
        # openpi's PyTorch conversion has no "model." prefix (its PI0Pytorch is saved on its own)
        shapes = {k if k.startswith(("model.", "normalize_", "unnormalize_")) else "model." + k:
                  tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    if is_openpi_config(lr):
        lr = openpi_as_lerobot(lr, shapes)
    kind = lr.get("type")
    if kind not in ("pi05", "pi0"):
        raise ValueError(
            f"{cfg_path}: 'type' must be 'pi05' or 'pi0' for a LeRobot pi checkpoint, got {kind!r}"
        )

    pg = "model.paligemma_with_expert.paligemma.model."
    vis, lm, ex = (
        pg + "vision_tower.vision_model.",
        pg + "language_model.",
        "model.paligemma_with_expert.gemma_expert.model.",
    )

    def depth(prefix: str) -> int:
        return 1 + max(int(k[len(prefix) :].split(".")[0]) for k in shapes if k.startswith(prefix))

    def gemma(prefix: str) -> GemmaConfig:
        q_out, width = shapes[prefix + "layers.0.self_attn.q_proj.weight"]
        kv_out = shapes[prefix + "layers.0.self_attn.k_proj.weight"][0]
        num_heads = 8  # LeRobot hard-codes 8 query heads in both towers
        head_dim = q_out // num_heads
        return GemmaConfig(
            width=width,
            depth=depth(prefix + "layers."),
            mlp_dim=shapes[prefix + "layers.0.mlp.gate_proj.weight"][0],
            num_heads=num_heads,
            num_kv_heads=kv_out // head_dim,
            head_dim=head_dim,
        )

    v_width = shapes[vis + "embeddings.patch_embedding.weight"][0]
    patch = shapes[vis + "embeddings.patch_embedding.weight"][-1]
    if vision_num_heads is None:
        if v_width != 1152:
            raise ValueError(
                f"{weights_path}: SigLIP width {v_width} is not So400m's 1152; pass vision_num_heads explicitly"
            )
        vision_num_heads = 16
    resolution = (
        lr.get("image_resolution") or lr.get("resize_imgs_with_padding") or [224, 224]
    )  # LeRobot / OpenTau
    vision = VisionConfig(
        width=v_width,
        depth=depth(vis + "encoder.layers."),
        mlp_dim=shapes[vis + "encoder.layers.0.mlp.fc1.weight"][0],
        num_heads=vision_num_heads,
        patch_size=patch,
        image_size=int(resolution[0]),
    )
    vocab_key = lm + "embed_tokens.weight"
    if vocab_key not in shapes:
        vocab_key = "model.paligemma_with_expert.paligemma.lm_head.weight"
    keys = set(shapes)
    variant = kind
    if kind == "pi05" and not _lerobot_expert_is_adarms(keys):
        raise ValueError(f"{weights_path}: pi05 checkpoint without adaRMS expert norms")
    base: dict[str, Any] = dict(
        variant=variant,
        vision=vision,
        vlm=gemma(lm),
        expert=gemma(ex),
        vocab_size=shapes[vocab_key][0],
        max_state_dim=int(lr.get("max_state_dim", 32)),
        max_action_dim=int(lr.get("max_action_dim", 32)),
        chunk_size=int(lr.get("chunk_size", 50)),
        num_inference_steps=int(lr.get("num_inference_steps", lr.get("num_steps", 10))),
        tokenizer_max_length=int(
            lr.get("tokenizer_max_length", lr.get("prompt_max_length", 200 if kind == "pi05" else 48))
        ),
        time_beta_alpha=float(lr.get("time_sampling_beta_alpha", 1.5)),
        time_beta_beta=float(lr.get("time_sampling_beta_beta", 1.0)),
        time_scale=float(lr.get("time_sampling_scale", 0.999)),
        time_offset=float(lr.get("time_sampling_offset", 0.001)),
        min_period=float(lr.get("min_period", 4e-3)),
        max_period=float(lr.get("max_period", 4.0)),
        dropout=float(lr.get("dropout", 0.0)),  # OpenTau has dropout; LeRobot has none
        knowledge_insulation=bool(lr.get("knowledge_insulation", False)),
        dtype="bfloat16" if lr.get("dtype") == "bfloat16" else "float32",
    )
    base.update(_opentau_fields(lr, shapes, folder))
    _drop_training_flags(dict(lr), str(cfg_path))
    return merge_overrides(PiConfig(**base), overrides, str(cfg_path))
