"""tau-train: a distributed training loop on accelerate with exact resume.

Train any `torch.nn.Module` whose `forward(batch)` returns a dict with a scalar "loss":

    config = load_config("train.yaml", ["optimizer.lr=3e-4", "steps=2000"])
    trainer = Trainer(config, model, train_loader_factory, val_loader_factory)
    trainer.fit()

`train_loader_factory(spec: LoaderSpec)` builds this process's loader of micro-batches of `spec.batch_size`;
give it `state_dict()` / `load_state_dict()` (torchdata's StatefulDataLoader) for exact resume. Launch many
processes with `accelerate launch --config_file <accelerate_config("multi_gpu")> app.py` or torchrun; shard
the model, gradients and optimizer state with `fsdp.enabled=true` (FSDP2). Checkpoints are sharded
(torch.distributed.checkpoint) and resume on any number of processes; `load_final_weights(output_dir)` reads
the final weights back as one state dict.
"""

from importlib.resources import files
from pathlib import Path

from .best import load_best_weights
from .checkpoint import (
    CheckpointError,
    DamagedCheckpointError,
    checkpoints_dir,
    export_weights,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint_weights,
    load_final_weights,
    read_state,
)
from .config import (
    CheckpointConfig,
    ConfigError,
    EMAConfig,
    FSDPConfig,
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
from .export import EXPORT_CHOICES, export_kind, exported_model, merge_lora
from .freezing import module_groups, select_parameters
from .interruption import TrainingInterrupted
from .lora import apply_lora
from .metrics import read_metrics
from .parallel import local_parameter_count, parallelize, shard_units
from .plots import plot_metrics
from .run_lock import RunLockedError
from .trainer import LoaderFactory, LoaderSpec, NonFiniteError, Trainer
from .weights import load_weights, save_weights

__version__ = "0.1.0"


def accelerate_config(name: str) -> Path:
    """Path of a bundled accelerate launch config: "multi_gpu" (one process per GPU; DDP, or FSDP2 with
    `fsdp.enabled=true`)."""
    path = Path(str(files(__package__) / "accelerate_configs" / f"{name}.yaml"))
    if not path.is_file():
        raise FileNotFoundError(f"no bundled accelerate config {name!r} (expected {path})")
    return path


__all__ = [
    "EXPORT_CHOICES",
    "CheckpointConfig",
    "CheckpointError",
    "ConfigError",
    "DamagedCheckpointError",
    "EMAConfig",
    "FSDPConfig",
    "LoRAConfig",
    "LoaderFactory",
    "LoaderSpec",
    "LoggingConfig",
    "NonFiniteError",
    "OptimizerConfig",
    "ParamGroupConfig",
    "RunLockedError",
    "ScheduleConfig",
    "TrainConfig",
    "Trainer",
    "TrainingInterrupted",
    "ValidationConfig",
    "WandbConfig",
    "accelerate_config",
    "apply_lora",
    "checkpoints_dir",
    "config_to_yaml",
    "export_kind",
    "export_weights",
    "exported_model",
    "latest_checkpoint",
    "list_checkpoints",
    "load_best_weights",
    "load_checkpoint_weights",
    "load_config",
    "load_final_weights",
    "load_weights",
    "local_parameter_count",
    "merge_lora",
    "module_groups",
    "parallelize",
    "plot_metrics",
    "read_metrics",
    "read_state",
    "save_weights",
    "select_parameters",
    "shard_units",
    "validate_config",
]
