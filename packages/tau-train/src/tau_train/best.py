"""Keep-best: the model (and EMA) weights of the validation with the lowest chosen metric, in <output_dir>/best.

    best/model.safetensors   full model weights (gathered from every process under FSDP2)
    best/ema.safetensors     the EMA shadow weights, when the run keeps an EMA
    best/best.json           {"metric", "value", "step"}, written last (a folder with it is complete)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from .checkpoint import CheckpointError
from .weights import load_weights, save_weights

BEST_DIR, BEST_FILE = "best", "best.json"


class BestWeights:
    """Tracks `metric` over validations; `update` saves the weights whenever it reaches a new minimum."""

    def __init__(self, output_dir: str | Path, metric: str, *, is_main: bool):
        self.folder = Path(output_dir) / BEST_DIR
        self.metric = metric
        self.is_main = is_main
        self.value = math.inf
        record = self.folder / BEST_FILE
        if record.is_file():  # a resumed run keeps improving on the best so far
            self.value = float(json.loads(record.read_text())["value"])

    def update(self, step: int, metrics: dict[str, float], model: torch.nn.Module, ema: Any = None) -> bool:
        """Save the weights if `metrics[metric]` is a new minimum (every process calls this: gathering a sharded
        model is collective); returns whether it did."""
        if self.metric not in metrics:
            raise KeyError(f"validation.keep_best={self.metric!r} is not a validation metric; got {sorted(metrics)}")
        value = float(metrics[self.metric])
        if not value < self.value:
            return False
        self.value = value
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights = get_model_state_dict(model, options=options)
        if self.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / BEST_FILE).unlink(missing_ok=True)
            save_weights(weights, self.folder / "model.safetensors")
            if ema is not None:
                save_weights({n: _full(t) for n, t in ema.shadow.items()}, self.folder / "ema.safetensors")
            (self.folder / BEST_FILE).write_text(json.dumps({"metric": self.metric, "value": value, "step": step}))
        return True


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A plain CPU tensor of a (possibly DTensor-sharded) EMA shadow."""
    if hasattr(tensor, "full_tensor"):
        tensor = tensor.full_tensor()
    return tensor.detach().cpu()


def load_best_weights(output_dir: str | Path, *, ema: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The best weights of a run (EMA shadow weights in place of the trainable ones with `ema`) and its best.json."""
    folder = Path(output_dir) / BEST_DIR
    record = folder / BEST_FILE
    if not record.is_file():
        raise CheckpointError(f"{record} does not exist: the run kept no best weights (validation.keep_best)")
    weights = load_weights(folder / "model.safetensors")
    if ema:
        if not (folder / "ema.safetensors").is_file():
            raise CheckpointError(f"{folder} holds no EMA weights (the run was trained without EMA)")
        weights.update({n: t.to(weights[n].dtype) for n, t in load_weights(folder / "ema.safetensors").items()})
    return weights, json.loads(record.read_text())
