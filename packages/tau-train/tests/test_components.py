"""The small pieces: LR schedule, parameter groups and freezing, LoRA, EMA, checkpoint directories and weights,
the metrics file."""

import math

import pytest
import torch
from tau_train_toy import ToyModel

from tau_train import (
    CheckpointError,
    ConfigError,
    latest_checkpoint,
    list_checkpoints,
    load_weights,
    read_metrics,
    save_weights,
)
from tau_train.checkpoint import (
    STATE_FILE,
    begin_checkpoint,
    commit_checkpoint,
    prune_checkpoints,
    read_state,
    remove_temporaries,
)
from tau_train.config import LoggingConfig, LoRAConfig, OptimizerConfig, ParamGroupConfig
from tau_train.ema import EMA
from tau_train.freezing import freeze
from tau_train.lora import apply_lora
from tau_train.lr_schedule import WarmupCosine
from tau_train.metrics import MetricsLogger
from tau_train.optimizer import build_optimizer, build_param_groups


def test_warmup_then_cosine():
    schedule = WarmupCosine(warmup_steps=4, decay_steps=14, min_lr_ratio=0.1)
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert schedule(14) == schedule(100) == 0.1
    assert all(schedule(s) >= schedule(s + 1) for s in range(4, 20))


def test_param_groups_lr_weight_decay_and_freezing():
    model = ToyModel()
    assert freeze(model, ["norm.*"]) == 2
    groups = build_param_groups(
        model, OptimizerConfig(lr=1e-3, weight_decay=0.1), [ParamGroupConfig(["out.*"], lr=1e-2)]
    )
    by_name = {(g["name"], g["weight_decay"]): g for g in groups}
    assert by_name[("group0", 0.1)]["lr"] == 1e-2 and len(by_name[("group0", 0.1)]["params"]) == 1
    assert by_name[("group0", 0.0)]["params"][0] is model.out.bias
    assert by_name[("default", 0.1)]["lr"] == 1e-3
    trained = {id(p) for g in groups for p in g["params"]}
    assert id(model.norm.weight) not in trained and id(model.inp.weight) in trained
    optimizer = build_optimizer(groups, OptimizerConfig(), torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.AdamW) and not optimizer.defaults["fused"]


def test_patterns_that_match_nothing_are_errors():
    with pytest.raises(ConfigError, match="freeze entry 'encoder.\\*' matches no parameter"):
        freeze(ToyModel(), ["encoder.*"])
    with pytest.raises(ConfigError, match="head"):
        build_param_groups(ToyModel(), OptimizerConfig(), [ParamGroupConfig(["head.*"])])


def test_lora_trains_only_adapters_and_listed_parameters():
    model = apply_lora(
        ToyModel(), LoRAConfig(enabled=True, r=2, target_modules=["inp"], trainable=["norm.*"])
    )
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["inp.lora_A.default.weight", "inp.lora_B.default.weight", "norm.bias", "norm.weight"]
    batch = {"x": torch.randn(3, 6), "y": torch.randn(3, 2)}
    model(batch)["loss"].backward()
    assert model.inp.lora_B.default.weight.grad is not None and model.out.weight.grad is None


def test_ema_update_swap_and_state():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.5)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(2.0)
    ema.update(step=1)
    torch.testing.assert_close(ema.shadow["weight"], start + 1.0)
    with ema.swapped_in():
        torch.testing.assert_close(model.weight, start + 1.0)
    torch.testing.assert_close(model.weight, start + 2.0)
    other = EMA(model, decay=0.5)
    other.load_state_dict(ema.state_dict())
    torch.testing.assert_close(other.shadow["weight"], start + 1.0)
    with pytest.raises(KeyError, match="missing"):
        other.load_state_dict({})


def test_ema_copies_weights_before_start_step():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.9, start_step=5)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(step=2)
    torch.testing.assert_close(ema.shadow["weight"], model.weight.detach())


def _write(root, step, fail=False):
    temp = begin_checkpoint(root, step, is_main=True, barrier=lambda: None)
    (temp / "state").mkdir()
    if fail:
        raise KeyboardInterrupt("interrupted while saving")
    return commit_checkpoint(temp, {"step": step}, is_main=True, barrier=lambda: None)


def test_interrupted_save_never_looks_complete(tmp_path):
    _write(tmp_path, 1)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path, 2, fail=True)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert latest_checkpoint(tmp_path).name == "step_000000001"
    assert read_state(latest_checkpoint(tmp_path))["step"] == 1
    remove_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000000001"]


def test_a_directory_without_the_state_file_is_not_a_checkpoint(tmp_path):
    (tmp_path / "step_000000003" / "state").mkdir(parents=True)
    assert list_checkpoints(tmp_path) == []
    with pytest.raises(CheckpointError, match=STATE_FILE):
        read_state(tmp_path / "step_000000003")


def test_checkpoint_of_another_format_is_rejected_with_its_version(tmp_path):
    (tmp_path / STATE_FILE).write_text('{"step": 3, "format_version": 1}')
    with pytest.raises(CheckpointError, match="format_version 1"):
        read_state(tmp_path)


def test_retention_keeps_last_and_milestones(tmp_path):
    for step in range(1, 9):
        _write(tmp_path, step)
    removed = prune_checkpoints(tmp_path, keep_last=2, keep_every=4)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 7, 8]
    assert len(removed) == 5
    assert prune_checkpoints(tmp_path, keep_last=0) == []


def test_weights_round_trip_with_tied_tensors(tmp_path):
    embedding = torch.nn.Embedding(5, 3)
    head = torch.nn.Linear(3, 5, bias=False)
    head.weight = embedding.weight
    model = torch.nn.ModuleDict({"embed": embedding, "head": head})
    save_weights(model.state_dict(), tmp_path / "w.safetensors")
    loaded = load_weights(tmp_path / "w.safetensors")
    assert loaded["embed.weight"] is loaded["head.weight"]
    torch.testing.assert_close(loaded["head.weight"], embedding.weight.detach())
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_weights(tmp_path / "missing.safetensors")


def test_metrics_survive_a_torn_last_record(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "train/loss": 2.0}\n{"step": 2, "train/lo')
    assert read_metrics(tmp_path / "metrics.jsonl") == {1: {"train/loss": 2.0}}
    with MetricsLogger(tmp_path, LoggingConfig(tensorboard=False), {}) as logger:
        logger.log(2, {"train/loss": 1.5})
    assert read_metrics(tmp_path / "metrics.jsonl") == {1: {"train/loss": 2.0}, 2: {"train/loss": 1.5}}
    (tmp_path / "bad.jsonl").write_text("{oops}\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_metrics(tmp_path / "bad.jsonl")
