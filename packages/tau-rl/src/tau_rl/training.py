"""Training a stage's model with tau-train's Trainer on a (labelled) tau-data mixture.

The trainer writes its own checkpoints under the stage folder, so a crash inside a long training stage resumes at
the last trainer checkpoint; when it had already finished, the trainer loads the final weights and returns at once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tau_data.loader import make_loader
from tau_models import SampleTokenizer
from tau_train import (
    CheckpointConfig,
    LoaderSpec,
    LoggingConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
    Trainer,
    checkpoints_dir,
    list_checkpoints,
    load_final_weights,
    read_metrics,
)

from tau_rl.config import TrainingSettings
from tau_rl.training_data import FrameGroups, LabelledMixture

log = logging.getLogger(__name__)


def train_config(settings: TrainingSettings, output_dir: Path, seed: int) -> TrainConfig:
    """The tau-train config of one stage run (fp32 on CPU, bf16 on CUDA; no TensorBoard)."""
    return TrainConfig(
        output_dir=str(output_dir), steps=settings.steps, batch_size=settings.batch_size, seed=seed,
        optimizer=OptimizerConfig(lr=settings.lr, weight_decay=settings.weight_decay),
        schedule=ScheduleConfig(warmup_steps=min(settings.warmup_steps, settings.steps)),
        checkpoint=CheckpointConfig(every_steps=settings.checkpoint_every, keep_last=1),
        logging=LoggingConfig(every_steps=max(1, min(10, settings.steps)), tensorboard=False),
    )


def train(model: torch.nn.Module, dataset: LabelledMixture | FrameGroups, settings: TrainingSettings, output_dir: Path,
          seed: int) -> dict[str, float]:
    """Train `model` in place for `settings.steps` steps (resuming a crashed run); return the last metrics."""
    if settings.steps == 0:
        return {}
    finished = [path for step, path in list_checkpoints(checkpoints_dir(output_dir)) if step >= settings.steps]
    if finished:
        log.info("%s training already finished: loading %s", type(model).__name__, finished[-1])
        model.load_state_dict(load_final_weights(output_dir))
        return _last_metrics(output_dir)

    def loaders(spec: LoaderSpec):  # noqa: ANN202 - a StatefulDataLoader
        return make_loader(dataset, spec.batch_size, num_workers=settings.num_workers, seed=spec.seed, rank=spec.rank,
                           world_size=spec.world_size, transform=SampleTokenizer(model.config))

    trainer = Trainer(train_config(settings, output_dir, seed), model, loaders)
    if trainer.resumed_from is not None:
        log.info("resuming %s training from %s", type(model).__name__, trainer.resumed_from)
    trainer.fit()
    trained = trainer.accelerator.unwrap_model(trainer.model)
    if trained is not model:
        model.load_state_dict(trained.state_dict())
    return _last_metrics(output_dir)


def _last_metrics(output_dir: Path) -> dict[str, float]:
    """The training metrics of the last logged step (loss, grad norm, ...)."""
    logged = read_metrics(output_dir / "metrics.jsonl")
    if not logged:
        return {}
    step = max(logged)
    return {"step": step, **{k: v for k, v in logged[step].items() if k.startswith("train/")}}
