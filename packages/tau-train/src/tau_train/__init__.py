"""tau-train: a distributed training loop on accelerate with exact resume.

Train any `torch.nn.Module` whose `forward(batch)` returns a dict with a scalar "loss":

    config = load_config("train.yaml", ["optimizer.lr=3e-4", "steps=2000"])
    trainer = Trainer(config, model, train_loader_factory, val_loader_factory)
    trainer.fit()

`train_loader_factory(spec: LoaderSpec)` builds this process's loader of micro-batches of `spec.batch_size`;
give it `state_dict()` / `load_state_dict()` (torchdata's StatefulDataLoader) for exact resume. Launch many
processes with `accelerate launch --config_file <accelerate_config("ddp")> app.py`.
"""

from importlib.resources import files
from pathlib import Path

from .checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, load_weights, save_weights
from .config import (
    CheckpointConfig,
    ConfigError,
    EMAConfig,
    LoggingConfig,
    LoRAConfig,
    OptimizerConfig,
    ParamGroupConfig,
    ScheduleConfig,
    TrainConfig,
    ValidationConfig,
    WandbConfig,
    config_to_yaml,
    load_config,
    validate_config,
)
from .metrics import read_metrics
from .plots import plot_metrics
from .trainer import LoaderFactory, LoaderSpec, NonFiniteError, Trainer

__version__ = "0.1.0"


def accelerate_config(name: str) -> Path:
    """Path of a bundled accelerate launch config: "ddp" or "fsdp" (FSDP2)."""
    path = Path(str(files(__package__) / "accelerate_configs" / f"{name}.yaml"))
    if not path.is_file():
        raise FileNotFoundError(f"no bundled accelerate config {name!r} (expected {path})")
    return path


__all__ = [
    "CheckpointConfig",
    "CheckpointError",
    "ConfigError",
    "EMAConfig",
    "LoRAConfig",
    "LoaderFactory",
    "LoaderSpec",
    "LoggingConfig",
    "NonFiniteError",
    "OptimizerConfig",
    "ParamGroupConfig",
    "ScheduleConfig",
    "TrainConfig",
    "Trainer",
    "ValidationConfig",
    "WandbConfig",
    "accelerate_config",
    "config_to_yaml",
    "latest_checkpoint",
    "list_checkpoints",
    "load_config",
    "load_weights",
    "plot_metrics",
    "read_metrics",
    "save_weights",
    "validate_config",
]
