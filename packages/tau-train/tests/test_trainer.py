"""The training loop in one process: logs, plots, checkpoints, accumulation, failures and their messages."""

import logging

import pytest
import torch
from tau_train_toy import ToyDataset, ToyModel, loader_factory, val_factory

from tau_train import (
    CheckpointError,
    ConfigError,
    NonFiniteError,
    Trainer,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint_weights,
    load_config,
    read_metrics,
    read_state,
)

QUIET = [
    "logging.tensorboard=false",
    "logging.plots=false",
    "logging.progress_bar=false",
    "logging.every_steps=1",
]


def make_trainer(output_dir, overrides=(), model=None, with_val=False):
    config = load_config(
        None,
        [f"output_dir={output_dir}", "batch_size=4", "optimizer.lr=0.05", "mixed_precision=fp32", *overrides],
    )
    torch.manual_seed(0)
    model = model if model is not None else ToyModel()
    val = val_factory(ToyDataset(size=8, seed=1)) if with_val else None
    return Trainer(config, model, loader_factory(ToyDataset()), val)


def test_fit_writes_metrics_tensorboard_plots_and_checkpoints(tmp_path):
    overrides = [
        "steps=24",
        "checkpoint.every_steps=8",
        "validation.every_steps=12",
        "ema.enabled=true",
        "freeze=[norm.*]",
        "schedule.warmup_steps=4",
        "logging.every_steps=2",
    ]
    trainer = make_trainer(tmp_path, overrides, with_val=True)
    frozen = trainer.model.norm.weight.detach().clone()
    last = trainer.fit()

    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert sorted(metrics) == list(range(2, 25, 2))
    assert {
        "train/loss",
        "train/mae",
        "train/grad_norm",
        "lr/default",
        "perf/samples_per_s",
        "perf/data_time_s",
    } <= metrics[2].keys()
    assert "val/loss" in metrics[12] and "val_ema/loss" in metrics[24] and "val/loss" not in metrics[10]
    assert metrics[24]["val/loss"] < metrics[12]["val/loss"] and last["train/loss"] < metrics[2]["train/loss"]
    assert metrics[2]["lr/default"] == pytest.approx(0.05 * 2 / 4)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    for name in ("loss.png", "lr.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    torch.testing.assert_close(trainer.model.norm.weight, frozen, rtol=0, atol=0)

    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [8, 16, 24]
    checkpoint = latest_checkpoint(tmp_path / "checkpoints")
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "config.yaml",
        "rank_00000.pt",
        "state",
        "trainer_state.json",
    ]
    state = read_state(checkpoint)
    assert state["step"] == 24 and state["world_size"] == 1 and state["seed"] == trainer.config.seed
    assert state["data"] == {"epoch": 3, "samples": 24}  # 24 samples an epoch, 4 a step: epoch 3 just ended
    assert state["versions"]["torch"] == torch.__version__ and "python" in state["versions"]
    assert load_config(checkpoint / "config.yaml") == trainer.config
    weights = load_checkpoint_weights(checkpoint)
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(weights[name], value)
    ema = load_checkpoint_weights(checkpoint, ema=True)
    assert torch.equal(ema["inp.weight"], trainer.ema.shadow["inp.weight"])
    assert torch.equal(ema["norm.weight"], weights["norm.weight"])  # frozen: not in the EMA, the model's own
    assert not torch.equal(ema["inp.weight"], weights["inp.weight"])


def test_gradient_accumulation_matches_one_larger_micro_batch(tmp_path):
    common = ["steps=4", "batch_size=8", *QUIET]
    accumulated = make_trainer(tmp_path / "a", [*common, "gradient_accumulation_steps=4"])
    single = make_trainer(tmp_path / "b", [*common, "gradient_accumulation_steps=1"])
    assert accumulated.train_loader.batch_size == 2 and single.train_loader.batch_size == 8
    accumulated.fit()
    single.fit()
    a, b = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    for step in a:
        assert a[step]["train/loss"] == pytest.approx(b[step]["train/loss"], rel=1e-6)
    for (name, p), q in zip(accumulated.model.named_parameters(), single.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = make_trainer(
        tmp_path, ["steps=10", "checkpoint.every_steps=2", *QUIET], model=ToyModel(nan_at_forward=5)
    )
    with pytest.raises(
        NonFiniteError, match=r"train/loss.* at step 5 .*Last good checkpoint: .*step_000000004"
    ):
        trainer.fit()
    assert trainer.step == 4
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step_000000004"
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert all(
        torch.isfinite(t).all()
        for t in load_checkpoint_weights(tmp_path / "checkpoints" / "step_000000004").values()
    )


def test_resume_continues_from_latest_checkpoint_and_reports_config_changes(tmp_path, caplog):
    make_trainer(tmp_path, ["steps=4", "checkpoint.every_steps=2", *QUIET]).fit()
    with caplog.at_level(logging.WARNING):
        trainer = make_trainer(tmp_path, ["steps=6", "checkpoint.every_steps=2", *QUIET])
    assert trainer.step == 4 and trainer.resumed_from.name == "step_000000004"
    assert "config differs from the checkpoint's" in caplog.text and "steps: 4 -> 6" in caplog.text
    trainer.fit()
    assert trainer.step == 6


def test_resume_with_a_parameter_that_never_gets_a_gradient(tmp_path):
    class WithUnused(ToyModel):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Linear(2, 2)  # like a VLM layer only FAST tokens reach

    make_trainer(tmp_path, ["steps=2", "checkpoint.every_steps=2", *QUIET], model=WithUnused()).fit()
    trainer = make_trainer(tmp_path, ["steps=3", "checkpoint.every_steps=2", *QUIET], model=WithUnused())
    assert trainer.step == 2
    state = trainer._torch_optimizer.state
    assert trainer.model.unused.weight not in state  # no AdamW state, as in the run that continued
    assert state[trainer.model.out.weight]["step"].item() == 2
    trainer.fit()
    assert trainer.step == 3


def test_model_must_return_a_scalar_loss(tmp_path):
    class NoDict(ToyModel):
        def forward(self, batch):
            return super().forward(batch)["loss"]

    with pytest.raises(
        TypeError, match="NoDict.forward\\(batch\\) must return a dict with a scalar tensor 'loss'"
    ):
        make_trainer(tmp_path, ["steps=1", *QUIET], model=NoDict()).fit()


def test_checkpoint_of_another_model_is_rejected_with_its_file(tmp_path):
    make_trainer(tmp_path, ["steps=1", *QUIET]).fit()

    class Wider(ToyModel):
        def __init__(self):
            super().__init__(hidden=32)

    with pytest.raises(CheckpointError, match="state does not fit Wider"):
        make_trainer(tmp_path, ["steps=2", *QUIET], model=Wider())


def test_resume_never_refuses_to_mix_runs(tmp_path):
    make_trainer(tmp_path, ["steps=1", *QUIET]).fit()
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        make_trainer(tmp_path, ["steps=1", "checkpoint.resume=never", *QUIET])


def test_invalid_config_is_rejected_before_anything_runs(tmp_path):
    with pytest.raises(
        ConfigError,
        match="batch_size \\(4\\) must be a positive multiple of gradient_accumulation_steps \\(3\\)",
    ):
        make_trainer(tmp_path / "run", ["gradient_accumulation_steps=3"])
    assert not (tmp_path / "run").exists()


def test_gradient_checkpointing_switch(tmp_path):
    trainer = make_trainer(tmp_path, ["steps=1", "gradient_checkpointing=true", *QUIET])
    assert trainer.model.checkpointing

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(6, 2)

        def forward(self, batch):
            return {"loss": torch.nn.functional.mse_loss(self.layer(batch["x"]), batch["y"])}

    with pytest.raises(ConfigError, match="Plain has no gradient_checkpointing_enable\\(\\) method"):
        make_trainer(tmp_path / "plain", ["gradient_checkpointing=true"], model=Plain())


def test_lora_and_per_group_learning_rates_through_the_trainer(tmp_path):
    overrides = [
        "steps=3",
        "lora.enabled=true",
        "lora.r=2",
        "lora.target_modules=[inp]",
        "lora.trainable=[out.*]",
        "param_groups=[{patterns: ['out.*'], lr: 0.001}]",
        "checkpoint.every_steps=2",
        *QUIET,
    ]
    trainer = make_trainer(tmp_path, overrides)
    base = trainer.model.inp.base_layer.weight.detach().clone()
    trainer.fit()
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert metrics[1]["lr/group0"] == 0.001 and metrics[1]["lr/default"] == 0.05
    assert torch.equal(trainer.model.inp.base_layer.weight, base)
    assert any("lora_B" in name for name in load_checkpoint_weights(latest_checkpoint(tmp_path / "checkpoints")))
    resumed = make_trainer(tmp_path, [*overrides, "steps=4"])
    assert resumed.step == 3
    torch.testing.assert_close(
        resumed.model.inp.lora_B.default.weight, trainer.model.inp.lora_B.default.weight, rtol=0, atol=0
    )


def test_wandb_is_imported_only_when_enabled(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "wandb", None)
    make_trainer(tmp_path / "off", ["steps=1", *QUIET]).fit()
    with pytest.raises(ImportError, match="logging.wandb.enabled=true needs the `wandb` package"):
        make_trainer(tmp_path / "on", ["steps=1", "logging.wandb.enabled=true", *QUIET]).fit()


def test_non_finite_gradient_with_finite_loss_stops_the_run(tmp_path):
    class InfiniteGradient(ToyModel):
        def forward(self, batch):
            outputs = super().forward(batch)
            total = self.out.weight.sum()
            outputs["loss"] = outputs["loss"] + torch.sqrt(total - total.detach())  # value 0, gradient inf
            return outputs

    trainer = make_trainer(tmp_path, ["steps=3", *QUIET], model=InfiniteGradient())
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(
        NonFiniteError, match=r"non-finite train/grad_norm at step 1 .*Last good checkpoint: none"
    ):
        trainer.fit()
    assert all(torch.equal(p, q) for p, q in zip(trainer.model.parameters(), before))
