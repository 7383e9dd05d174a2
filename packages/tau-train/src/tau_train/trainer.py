"""The training loop: DDP (accelerate) or FSDP2-sharded model, gradient accumulation, validation, checkpoints.

Any `torch.nn.Module` whose `forward(batch)` returns a dict with a scalar "loss" (plus optional scalar metrics)
can be trained. Data comes from a factory called once per process with a `LoaderSpec`; the loader it returns
yields this process's micro-batches (`spec.batch_size` samples, its own shard of the stream) and, to resume
exactly, has `state_dict()` / `load_state_dict()`, as torchdata's StatefulDataLoader does. A `sampler.set_epoch`
is called at every epoch; `data_stream` says how the data position re-shards when a run resumes on another number
of processes. With StatefulDataLoader, give a shuffling sampler its own torch.Generator (not the loader's
`generator=`): torchdata 0.11 restores a generator shared with the worker-seed draw to a state one draw short, so
epochs after a resume would differ. The validation loader should be deterministic (no shuffling); it
is iterated from the start at every validation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, send_to_device, set_seed
from tqdm.auto import tqdm

from .best import BestWeights
from .checkpoint import TrainingParts, checkpoint_name, latest_checkpoint
from .config import ConfigError, TrainConfig, config_to_dict, validate_config
from .data_stream import DataStream, isolated_rng
from .ema import EMA
from .freezing import freeze, frozen_modules, train_mode
from .interruption import SigtermFlag, TrainingInterrupted
from .lora import apply_lora
from .lr_schedule import build_scheduler
from .metrics import METRICS_FILE, MetricsLogger
from .optimizer import build_optimizer, build_param_groups
from .parallel import parallelize
from .plots import plot_metrics
from .run_checkpoints import RunCheckpoints

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoaderSpec:
    """What a loader factory builds: process `rank` of `world_size`'s shard of the data stream, in micro-batches
    of `batch_size` samples; `seed` is the run seed, the same on every process (so shards share one shuffle)."""

    rank: int
    world_size: int
    batch_size: int
    seed: int


LoaderFactory = Callable[[LoaderSpec], Iterable[dict]]


class NonFiniteError(FloatingPointError):
    """The loss or the gradient norm became NaN/inf; the weights of that step were not updated."""


class Trainer:
    """Trains `model` on batches from `train_loader_factory` as configured by `config`; see `fit`.

    Construction validates the config, adapts the model (LoRA, freezing, gradient checkpointing, FSDP2 sharding),
    prepares it with accelerate (DDP) unless it is sharded, builds the loaders and restores the checkpoint chosen
    by `checkpoint.resume` (by default the latest complete one in output_dir). `run_config` (a dataclass or dict;
    default `config`) is the full resolved configuration written into every checkpoint, so an app can store its
    model and data settings beside the training ones.
    """

    def __init__(
        self,
        config: TrainConfig,
        model: torch.nn.Module,
        train_loader_factory: LoaderFactory,
        val_loader_factory: LoaderFactory | None = None,
        *,
        run_config: Any = None,
    ):
        self.config = config
        self.run_config = run_config if run_config is not None else config
        validate_config(config)
        mixed_precision = config.mixed_precision
        if mixed_precision == "auto":
            mixed_precision = "bf16" if torch.cuda.is_available() else "fp32"
        self.sharded = config.fsdp.enabled
        ddp = DistributedDataParallelKwargs(find_unused_parameters=config.find_unused_parameters)
        # Under FSDP2 the precision is the sharding's mixed-precision policy, not accelerate's autocast.
        autocast = "no" if mixed_precision == "fp32" or self.sharded else mixed_precision
        self.accelerator = Accelerator(mixed_precision=autocast, kwargs_handlers=[ddp])
        if self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            raise ConfigError(
                f"accelerate was launched for {self.accelerator.distributed_type.value}; tau-train shards the model "
                "itself: launch with tau_train.accelerate_config('multi_gpu') (or torchrun) and set fsdp.enabled=true"
            )
        self.rank = self.accelerator.process_index
        self.world_size = self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        validate_config(config, self.world_size)
        log.info(
            "accelerate: %s, %d processes, mixed precision %s%s",
            self.accelerator.distributed_type,
            self.world_size,
            mixed_precision,
            ", FSDP2" if self.sharded else "",
        )
        self.output_dir = Path(config.output_dir)
        set_seed(config.seed + self.rank)

        model = self._adapt_model(model)
        if self.sharded:
            model = parallelize(model, config.fsdp, mixed_precision, self.accelerator.device)
        self._frozen = frozen_modules(model)
        param_groups = build_param_groups(model, config.optimizer, config.param_groups)
        optimizer = build_optimizer(param_groups, config.optimizer, self.accelerator.device)
        if self.sharded:
            self.model, self.optimizer = model, optimizer
        else:
            self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self._torch_optimizer = optimizer
        decay_steps = config.schedule.decay_steps if config.schedule.decay_steps is not None else config.steps
        self.scheduler = build_scheduler(
            optimizer, config.schedule.warmup_steps, decay_steps, config.schedule.min_lr_ratio
        )
        self.ema = None
        if config.ema.enabled:
            self.ema = EMA(self.accelerator.unwrap_model(self.model), config.ema.decay, config.ema.start_step)

        self.best = BestWeights(config.output_dir, config.validation.keep_best, is_main=self.is_main) \
            if config.validation.keep_best else None
        self.step = 0
        self._first_group = self._torch_optimizer.param_groups[0].get("name", "default")
        micro_batch = config.batch_size // (config.gradient_accumulation_steps * self.world_size)
        spec = LoaderSpec(self.rank, self.world_size, micro_batch, config.seed)
        self.train_loader = train_loader_factory(spec)
        self.val_loader = val_loader_factory(spec) if val_loader_factory is not None else None
        if not hasattr(self.train_loader, "state_dict"):
            log.warning("the train loader has no state_dict(): a resumed run re-reads its epoch up to the position")
        self.data = DataStream(self.train_loader, micro_batch, self.world_size)
        parts = TrainingParts(self.model, self._torch_optimizer, self.scheduler, self.ema)
        self.checkpoints = RunCheckpoints(
            config, self.run_config, parts, self.data, self.accelerator, any_process=self._any_process
        )
        self.resumed_from, self.step = self.checkpoints.resume()

    @property
    def epoch(self) -> int:
        """The epoch the data stream is in."""
        return self.data.epoch

    def _adapt_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """LoRA, freezing, gradient checkpointing and compilation, in that order, before the optimizer sees it."""
        config = self.config
        if config.lora.enabled:
            model = apply_lora(model, config.lora)
        if config.freeze:
            count = freeze(model, config.freeze)
            log.info("froze %d parameter tensors selected by %s", count, config.freeze)
        if config.gradient_checkpointing:
            enable = getattr(model, "gradient_checkpointing_enable", None)
            if enable is None:
                raise ConfigError(
                    f"gradient_checkpointing=true but {type(model).__name__} has no gradient_checkpointing_enable() "
                    "method; tau-train turns activation checkpointing on through it (PiModel has one)"
                )
            enable()
        if config.compile:
            model.compile()
        return model

    # ------------------------------------------------------------------ checkpoints

    def load(self, path: str | Path) -> None:
        """Restore the training state of checkpoint `path` (see `RunCheckpoints.load`)."""
        self.step = self.checkpoints.load(Path(path))

    def save(self) -> Path:
        """Checkpoint the current step (see `RunCheckpoints.save`); returns the checkpoint's final path."""
        return self.checkpoints.save(self.step)

    # ------------------------------------------------------------------ loop

    def fit(self) -> dict[str, float]:
        """Train until `config.steps`, validating, logging and checkpointing on schedule; return the last metrics.

        On SIGTERM (with `checkpoint.save_on_sigterm`) the current step finishes, a checkpoint is written and fit
        raises TrainingInterrupted (the run is paused, not finished). The output_dir stays locked until fit ends.
        """
        config = self.config
        metrics: dict[str, float] = {}
        self.checkpoints.lock_run()
        with ExitStack() as stack:
            stack.callback(self.checkpoints.lock.release)
            logger = None
            if self.is_main:
                run_config = config_to_dict(self.run_config)
                logger = stack.enter_context(MetricsLogger(self.output_dir, config.logging, run_config))
            show_bar = self.is_main and config.logging.progress_bar
            bar = stack.enter_context(
                tqdm(total=config.steps, initial=self.step, unit="step", disable=not show_bar)
            )
            sigterm = stack.enter_context(SigtermFlag(enabled=config.checkpoint.save_on_sigterm))
            while self.step < config.steps:
                started = time.perf_counter()
                metrics = self._train_step()
                self.step += 1
                if self.ema is not None:
                    self.ema.update(self.step)
                elapsed = time.perf_counter() - started
                metrics["perf/step_time_s"] = elapsed
                metrics["perf/samples_per_s"] = config.batch_size / elapsed
                metrics["epoch"] = self.epoch
                if self.val_loader is not None and _due(
                    self.step, config.validation.every_steps, config.steps
                ):
                    metrics.update(self.validate())
                    if self.best is not None:
                        self.best.update(self.step, metrics, self.accelerator.unwrap_model(self.model), self.ema)
                if logger is not None and (
                    _due(self.step, config.logging.every_steps, config.steps) or "val/loss" in metrics
                ):
                    logger.log(self.step, metrics)
                self.checkpoints.finish(wait=False)
                saved = _due(self.step, config.checkpoint.every_steps, config.steps)
                if saved:
                    self.save()
                bar.update(1)
                bar.set_postfix(
                    loss=f"{metrics['train/loss']:.4g}", lr=f"{metrics['lr/' + self._first_group]:.3g}"
                )
                if self._any_process(sigterm.received):
                    path = self.checkpoints.root / checkpoint_name(self.step)
                    if not saved:
                        path = self.save()
                    self.checkpoints.finish()
                    log.warning("SIGTERM received: checkpoint of step %d written, stopping", self.step)
                    raise TrainingInterrupted(path, self.step, config.steps)
            self.checkpoints.finish()
        if self.is_main and config.logging.plots:
            plot_metrics(self.output_dir / METRICS_FILE, self.output_dir / "plots")
        return metrics

    def close(self) -> None:
        """Finish a checkpoint still being written and leave the process groups. Call it once this process is
        done with distributed work: gloo processes that exit with their groups alive can abort at exit."""
        self.checkpoints.finish()
        if self.world_size > 1:
            self.accelerator.wait_for_everyone()
        self.accelerator.end_training()

    def _any_process(self, flag: bool) -> bool:
        """True on every process when `flag` is true on any of them."""
        if self.world_size == 1:
            return flag
        total = self.accelerator.reduce(torch.tensor([float(flag)], device=self.accelerator.device), "sum")
        return bool(total.item() > 0)

    def _train_step(self) -> dict[str, float]:
        """One optimizer step over `gradient_accumulation_steps` micro-batches; raises NonFiniteError before
        updating the weights if the loss or the gradient norm is not finite."""
        accumulation = self.config.gradient_accumulation_steps
        train_mode(self.model, self._frozen)
        totals: dict[str, torch.Tensor] = {}
        data_time = 0.0
        for micro in range(accumulation):
            started = time.perf_counter()
            batch = send_to_device(next(self.data), self.accelerator.device)
            data_time += time.perf_counter() - started
            with self._gradient_sync(micro == accumulation - 1):
                outputs = self._forward(batch)
                self.accelerator.backward(outputs["loss"] / accumulation)
            for key, value in outputs.items():
                totals[key] = totals.get(key, 0.0) + value.detach().float() / accumulation
        max_norm = self.config.optimizer.grad_clip or math.inf
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2 returns the norm as a DTensor
            grad_norm = grad_norm.full_tensor()
        keys = sorted(totals)
        local = torch.stack(
            [totals[k] for k in keys]
            + [torch.as_tensor(grad_norm, dtype=torch.float32, device=self.accelerator.device)]
        )
        values = self.accelerator.reduce(local, reduction="mean").tolist()
        metrics = {f"train/{k}": v for k, v in zip(keys, values)}
        metrics["train/grad_norm"] = values[-1]
        if not all(math.isfinite(v) for v in values):
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            last_good = latest_checkpoint(self.checkpoints.root)
            raise NonFiniteError(
                f"non-finite {', '.join(bad)} at step {self.step + 1} (loss={metrics['train/loss']}, "
                f"grad_norm={metrics['train/grad_norm']}); stopped before updating the weights. "
                f"Last good checkpoint: {last_good or 'none'}"
            )
        for group in self._torch_optimizer.param_groups:
            metrics[f"lr/{group.get('name', 'default')}"] = group["lr"]
        metrics["perf/data_time_s"] = (
            data_time  # this process's wait for batches (a data-bound run shows here)
        )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return metrics

    def _gradient_sync(self, sync: bool):
        """Reduce gradients only in the last micro-batch of a step (DDP no_sync / FSDP2's own switch)."""
        if self.sharded:
            self.model.set_requires_gradient_sync(sync)
            return nullcontext()
        return nullcontext() if sync else self.accelerator.no_sync(self.model)

    def _forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Run the model and keep its scalar outputs; the model contract is checked here with a clear message."""
        outputs = self.model(batch)
        if (
            not isinstance(outputs, dict)
            or not torch.is_tensor(outputs.get("loss"))
            or outputs["loss"].ndim != 0
        ):
            raise TypeError(
                f"{type(self.accelerator.unwrap_model(self.model)).__name__}.forward(batch) must return a dict with a "
                f"scalar tensor 'loss', got {type(outputs).__name__}"
                + (f" with keys {sorted(outputs)}" if isinstance(outputs, dict) else "")
            )
        return {k: v for k, v in outputs.items() if torch.is_tensor(v) and v.ndim == 0}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean of the model's scalar outputs over the validation loader (and with EMA weights, when enabled).

        Runs under a fixed torch seed and leaves the training RNG untouched, so validation losses are comparable
        across steps and the training stream does not depend on how often validation runs.
        """
        metrics = {}
        with isolated_rng():
            torch.manual_seed(self.config.seed + self.rank)
            metrics.update(self._evaluate("val"))
        if self.ema is not None:
            with self.ema.swapped_in(), isolated_rng():
                torch.manual_seed(self.config.seed + self.rank)
                metrics.update(self._evaluate("val_ema"))
        return metrics

    def _evaluate(self, prefix: str) -> dict[str, float]:
        self.model.eval()
        limit = self._val_batch_limit()
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for index, batch in enumerate(self.val_loader):
            if limit is not None and index >= limit:
                break
            outputs = self._forward(send_to_device(batch, self.accelerator.device))
            for key, value in outputs.items():
                sums[key] = sums.get(key, 0.0) + value.float()
            count += 1
        train_mode(self.model, self._frozen)
        if count == 0:
            raise RuntimeError("the validation loader yields no batches")
        keys = sorted(sums)
        local = torch.stack(
            [sums[k] for k in keys] + [torch.tensor(float(count), device=self.accelerator.device)]
        )
        totals = self.accelerator.reduce(local, reduction="sum").tolist()
        return {f"{prefix}/{k}": v / totals[-1] for k, v in zip(keys, totals)}

    def _val_batch_limit(self) -> int | None:
        """Batches each process evaluates: the same on every process, so sharded models never wait on each other."""
        limit = self.config.validation.max_batches or None
        if hasattr(self.val_loader, "__len__"):
            length = len(self.val_loader)
            limit = length if limit is None else min(limit, length)
        if limit is not None and self.world_size > 1:
            gathered = self.accelerator.gather(torch.tensor([limit], device=self.accelerator.device))
            limit = int(gathered.min())
        return limit


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)
