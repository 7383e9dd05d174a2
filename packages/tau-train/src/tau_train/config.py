"""Typed training configuration: dataclasses loaded from YAML with dotted command-line overrides (OmegaConf)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, TypeVar

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")

MIXED_PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")  # not "no": YAML reads a bare `no` as false
REDUCE_DTYPE_CHOICES = ("fp32", "bf16")


class ConfigError(ValueError):
    """A configuration that cannot be loaded or cannot work; the message names the field and what was expected."""


@dataclass
class OptimizerConfig:
    """AdamW hyper-parameters; `fused=None` picks the fused kernel when every trainable parameter is on CUDA."""

    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    fused: Optional[bool] = None
    grad_clip: float = (
        1.0  # max global grad norm; 0 disables clipping (the norm is still computed and checked)
    )


@dataclass
class ScheduleConfig:
    """Linear warmup from 0 to the peak LR, then cosine decay to `min_lr_ratio * peak` at `decay_steps`."""

    warmup_steps: int = 0
    decay_steps: Optional[int] = None  # None: decay over the whole run (`TrainConfig.steps`)
    min_lr_ratio: float = 0.1


@dataclass
class ParamGroupConfig:
    """Parameters whose names match any glob in `patterns` get their own LR / weight decay (first match wins)."""

    patterns: list[str] = field(default_factory=list)
    lr: Optional[float] = None  # None: the optimizer's lr
    weight_decay: Optional[float] = None  # None: the optimizer's weight_decay


@dataclass
class EMAConfig:
    """Exponential moving average of the trainable weights, updated after every optimizer step."""

    enabled: bool = False
    decay: float = 0.999
    start_step: int = 0  # before this step the EMA copies the weights


@dataclass
class LoRAConfig:
    """LoRA adapters injected through peft; every other parameter is frozen except those named by `trainable`
    (module group names or parameter globs, resolved like `TrainConfig.freeze`)."""

    enabled: bool = False
    r: int = 16
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    trainable: list[str] = field(default_factory=list)  # groups / globs of parameters kept fully trainable


@dataclass
class CheckpointConfig:
    """When checkpoints are written, how many are kept, and where a run resumes from."""

    every_steps: int = 1000  # 0: only at the end of the run
    keep_last: int = 3  # 0: keep all
    keep_every: int = 0  # additionally keep every checkpoint whose step is a multiple of this (0: none)
    resume: str = "auto"  # "auto": latest complete checkpoint in output_dir, "never", or a checkpoint path
    # A damaged latest checkpoint under resume=auto (unreadable trainer_state.json or state shards): "fall_back"
    # reports it by name and resumes from the previous complete one; "stop" refuses to start.
    on_damaged: str = "fall_back"
    save_on_sigterm: bool = (
        True  # on SIGTERM (cluster pre-emption): finish the step, checkpoint, return from fit
    )
    # Write the sharded state in a background thread (torch.distributed.checkpoint.async_save); the checkpoint
    # is renamed into place once every process has finished writing, at a later step boundary.
    async_save: bool = False


@dataclass
class FSDPConfig:
    """Fully sharded data parallel (FSDP2), applied by tau-train from outside the model (`tau_train.parallelize`):
    `fully_shard` on every shard unit, then on the root. Parameters, gradients and AdamW moments are split across
    all processes; `TrainConfig.mixed_precision=bf16` computes with bf16 parameters and reduces in `reduce_dtype`.
    """

    enabled: bool = False
    # Module-name globs of the shard units; empty: each element of every nn.ModuleList (the transformer layers:
    # for pi0.5 every SigLIP, VLM and action-expert layer).
    units: list[str] = field(default_factory=list)
    reshard_after_forward: bool = True  # free gathered parameters after forward (ZeRO-3); false keeps them (ZeRO-2)
    reduce_dtype: str = "fp32"  # dtype of the gradient reduce-scatter under bf16 mixed precision
    # Methods of a shard unit the model calls instead of forward (they need its gathered parameters too):
    # pi0.5's last VLM layer computes only `key_values` for the flow loss.
    forward_methods: list[str] = field(default_factory=lambda: ["key_values"])


@dataclass
class WandbConfig:
    """Weights & Biases logging; wandb is imported only when enabled."""

    enabled: bool = False
    project: str = "tau"
    entity: Optional[str] = None
    name: Optional[str] = None
    mode: str = "online"  # online | offline | disabled


@dataclass
class LoggingConfig:
    """Metric sinks: JSONL always, TensorBoard and wandb optional, a progress bar and PNG plots at the end."""

    every_steps: int = 10
    tensorboard: bool = True
    progress_bar: bool = True
    plots: bool = True
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class ValidationConfig:
    """Validation loss on a held-out loader every `every_steps` (0: never) over at most `max_batches` (0: all)."""

    every_steps: int = 0
    max_batches: int = 0
    # Keep the weights of the validation with the lowest value of this metric (e.g. "val/loss") in
    # <output_dir>/best (tau_train.best); "": off.
    keep_best: str = ""


@dataclass
class TrainConfig:
    """One training run. `batch_size` is the global number of samples per optimizer step."""

    output_dir: str = "runs/train"
    steps: int = 1000
    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    seed: int = 0
    mixed_precision: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU; or fp32 | bf16 | fp16
    gradient_checkpointing: bool = False
    compile: bool = False
    find_unused_parameters: bool = (
        False  # DDP: needed when some trainable parameters get no gradient in a step
    )
    # Parameters to freeze: module group names from `model.module_groups()` (pi0.5: vision, vlm, language_model,
    # expert) or parameter-name globs. Fully frozen sub-modules stay in eval mode (no dropout) while training.
    freeze: list[str] = field(default_factory=list)
    param_groups: list[ParamGroupConfig] = field(default_factory=list)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), schema: type[T] = TrainConfig
) -> T:
    """Load `schema` from a YAML file (optional) and dotted overrides like `optimizer.lr=3e-4` or
    `data.datasets[0].path=/data` (list items by index, `data.datasets.0.path` too); types are checked and every
    failure is one ConfigError line naming the file or the override."""
    merged = OmegaConf.structured(schema)
    if path is not None:
        merged = _merge_file(merged, Path(path))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.steps=200)")
        key = key.strip()
        try:
            if "[" in key or any(part.isdigit() for part in key.split(".")):  # a list item, by index
                OmegaConf.update(merged, key, _parse_value(text), merge=True)
            else:  # merged like a file, so frozen dataclass sections (read-only nodes) take overrides too
                merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([f"{key}={text}"]))
        except OmegaConfBaseException as error:
            raise ConfigError(f"override {item!r}: {_first_line(error)}") from error
    try:
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        source = f"config file {path}" if path is not None else "config"
        raise ConfigError(f"{source} with overrides {list(overrides)}: {_first_line(error)}") from error


def _merge_file(merged: Any, path: Path) -> Any:
    """`merged` with the YAML mapping in `path` merged in; unreadable, malformed or non-mapping files are refused."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = OmegaConf.load(path)  # OmegaConf's YAML reading (1e-3 is a float), as dotted overrides get
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        hint = " (indent with spaces, not tabs)" if "\t" in path.read_text(errors="replace") else ""
        raise ConfigError(f"config file {path} is not valid YAML{at}: {problem}{hint}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} cannot be read: {error}") from error
    if not isinstance(data, DictConfig):
        kind = "list" if isinstance(data, ListConfig) else type(data).__name__
        raise ConfigError(f"config file {path} must hold a mapping of settings at the top level (key: value), "
                          f"got a {kind}")
    try:
        return OmegaConf.merge(merged, data)
    except OmegaConfBaseException as error:
        raise ConfigError(f"config file {path}: {_first_line(error)}") from error


def _parse_value(text: str) -> Any:
    """An override's value as YAML would read it (numbers, booleans, lists, null), else the plain string."""
    try:
        return OmegaConf.from_dotlist([f"value={text}"])["value"]
    except (yaml.YAMLError, OmegaConfBaseException):
        return text


def _first_line(error: Exception) -> str:
    """OmegaConf's message without its multi-line full_key / object_type trailer."""
    lines = str(error).strip().splitlines()
    full_key = next((line.split(":", 1)[1].strip() for line in lines if line.strip().startswith("full_key:")), "")
    head = lines[0] if lines else type(error).__name__
    return f"{full_key}: {head}" if full_key and full_key not in head else head


def config_to_yaml(config: Any) -> str:
    """Render a dataclass config (or a plain dict) as YAML, the format `load_config` reads back."""
    if dataclasses.is_dataclass(config):
        return OmegaConf.to_yaml(OmegaConf.structured(config))
    return OmegaConf.to_yaml(OmegaConf.create(config))


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain, JSON-able dict of a dataclass config or dict (for logging and for comparing configs on resume)."""
    if isinstance(config, dict):
        return OmegaConf.to_container(OmegaConf.create(config), resolve=True)
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts, as "key: old -> new"."""
    changes = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


def validate_config(config: TrainConfig, world_size: int = 1) -> None:
    """Reject a configuration that cannot work, before any training starts."""
    problems = []
    if config.steps <= 0:
        problems.append(f"steps must be > 0, got {config.steps}")
    if config.gradient_accumulation_steps <= 0:
        problems.append(f"gradient_accumulation_steps must be > 0, got {config.gradient_accumulation_steps}")
    elif config.batch_size <= 0 or config.batch_size % (config.gradient_accumulation_steps * world_size):
        problems.append(
            f"batch_size ({config.batch_size}) must be a positive multiple of gradient_accumulation_steps "
            f"({config.gradient_accumulation_steps}) x processes ({world_size}) = "
            f"{config.gradient_accumulation_steps * world_size}"
        )
    if config.mixed_precision not in MIXED_PRECISION_CHOICES:
        problems.append(
            f"mixed_precision must be one of {MIXED_PRECISION_CHOICES}, got {config.mixed_precision!r}"
        )
    optim = config.optimizer
    if optim.lr <= 0:
        problems.append(f"optimizer.lr must be > 0, got {optim.lr}")
    if optim.weight_decay < 0:
        problems.append(f"optimizer.weight_decay must be >= 0, got {optim.weight_decay}")
    if len(optim.betas) != 2 or not all(0 <= b < 1 for b in optim.betas):
        problems.append(f"optimizer.betas must be two numbers in [0, 1), got {optim.betas}")
    if optim.grad_clip < 0:
        problems.append(f"optimizer.grad_clip must be >= 0, got {optim.grad_clip}")
    schedule = config.schedule
    if schedule.warmup_steps < 0:
        problems.append(f"schedule.warmup_steps must be >= 0, got {schedule.warmup_steps}")
    decay_steps = schedule.decay_steps if schedule.decay_steps is not None else config.steps
    if decay_steps < schedule.warmup_steps:
        problems.append(
            f"schedule.decay_steps ({decay_steps}) must be >= schedule.warmup_steps ({schedule.warmup_steps})"
        )
    if not 0 <= schedule.min_lr_ratio <= 1:
        problems.append(f"schedule.min_lr_ratio must be in [0, 1], got {schedule.min_lr_ratio}")
    for index, group in enumerate(config.param_groups):
        if not group.patterns:
            problems.append(f"param_groups[{index}].patterns is empty")
        if group.lr is not None and group.lr <= 0:
            problems.append(f"param_groups[{index}].lr must be > 0, got {group.lr}")
    if config.ema.enabled and not 0 <= config.ema.decay < 1:
        problems.append(f"ema.decay must be in [0, 1), got {config.ema.decay}")
    if config.lora.enabled and (config.lora.r <= 0 or not config.lora.target_modules):
        problems.append(
            f"lora needs r > 0 and target_modules, got r={config.lora.r}, {config.lora.target_modules}"
        )
    if config.fsdp.enabled:
        if config.mixed_precision == "fp16":
            problems.append("fsdp.enabled supports mixed_precision fp32 or bf16, not fp16 (no sharded loss scaler)")
        if config.fsdp.reduce_dtype not in REDUCE_DTYPE_CHOICES:
            problems.append(
                f"fsdp.reduce_dtype must be one of {REDUCE_DTYPE_CHOICES}, got {config.fsdp.reduce_dtype!r}"
            )
    ckpt = config.checkpoint
    for name in ("every_steps", "keep_last", "keep_every"):
        if getattr(ckpt, name) < 0:
            problems.append(f"checkpoint.{name} must be >= 0, got {getattr(ckpt, name)}")
    if ckpt.on_damaged not in ("fall_back", "stop"):
        problems.append(f"checkpoint.on_damaged must be fall_back or stop, got {ckpt.on_damaged!r}")
    if config.logging.every_steps <= 0:
        problems.append(f"logging.every_steps must be > 0, got {config.logging.every_steps}")
    if config.logging.wandb.mode not in ("online", "offline", "disabled"):
        problems.append(
            f"logging.wandb.mode must be online, offline or disabled, got {config.logging.wandb.mode!r}"
        )
    if config.validation.every_steps < 0 or config.validation.max_batches < 0:
        problems.append("validation.every_steps and validation.max_batches must be >= 0")
    if config.validation.keep_best and not config.validation.every_steps:
        problems.append(f"validation.keep_best={config.validation.keep_best!r} needs validation.every_steps > 0")
    if problems:
        raise ConfigError("invalid training config: " + "; ".join(problems))
