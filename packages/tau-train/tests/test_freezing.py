"""One freezing mechanism: TrainConfig.freeze and LoRA's trainable list name module groups (model.module_groups())
or parameter globs; frozen parameters get no gradient and do not move, fully frozen modules train in eval mode."""

import pytest
import torch
from tau_models import PiModel
from tau_train_toy import ToyDataset, ToyModel, loader_factory
from tiny_pi import PiSamples, tiny_config
from tiny_pi import loader_factory as pi_loaders

from tau_train import ConfigError, Trainer, load_config, module_groups, read_metrics, select_parameters
from tau_train.freezing import freeze, frozen_modules, train_mode

QUIET = ["logging.tensorboard=false", "logging.plots=false", "logging.progress_bar=false", "logging.every_steps=1"]


class Grouped(ToyModel):
    """The toy MLP with named groups, like PiModel's module_groups()."""

    def module_groups(self):
        return {"encoder": ["inp", "norm"], "head": ["out"]}


def test_entries_are_group_names_or_parameter_globs():
    model = Grouped()
    assert select_parameters(model, ["encoder"], "freeze") == {"inp.weight", "inp.bias", "norm.weight", "norm.bias"}
    assert select_parameters(model, ["head", "*.bias"], "freeze") == {"out.weight", "out.bias", "inp.bias", "norm.bias"}
    with pytest.raises(ConfigError, match=r"freeze entry 'decoder' matches no parameter .* groups are \['encoder', 'head'\]"):
        select_parameters(model, ["decoder"], "freeze")
    assert module_groups(ToyModel()) == {}  # a model without groups takes globs only


def test_fully_frozen_modules_stay_in_eval_mode():
    model = Grouped(dropout=0.5)
    assert freeze(model, ["encoder"]) == 4
    frozen = frozen_modules(model)
    assert frozen == [model.inp, model.norm]  # drop and out are not frozen (drop has no parameters)
    train_mode(model, frozen)
    assert model.training and model.out.training and model.drop.training and not model.inp.training


def make_trainer(output_dir, model, loaders, overrides):
    config = load_config(None, [f"output_dir={output_dir}", "mixed_precision=fp32", "optimizer.lr=0.01", *QUIET,
                                *overrides])
    return Trainer(config, model, loaders)


def test_frozen_group_gets_no_gradient_and_does_not_move(tmp_path):
    trainer = make_trainer(tmp_path, Grouped(), loader_factory(ToyDataset()), ["steps=3", "batch_size=4",
                                                                                "freeze=[encoder]"])
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    for name, param in trainer.model.named_parameters():
        moved = not torch.equal(param, before[name])
        assert moved == name.startswith("out."), name
        assert (param.grad is None) or name.startswith("out."), name


def test_lora_trainable_takes_group_names(tmp_path):
    overrides = ["steps=1", "batch_size=4", "lora.enabled=true", "lora.r=2", "lora.target_modules=[inp]",
                 "lora.trainable=[head]"]
    trainer = make_trainer(tmp_path, Grouped(), loader_factory(ToyDataset()), overrides)
    trainable = sorted(n for n, p in trainer.model.named_parameters() if p.requires_grad)
    assert trainable == ["inp.lora_A.default.weight", "inp.lora_B.default.weight", "out.bias", "out.weight"]


def pi_trainer(tmp_path, overrides, **config):
    torch.manual_seed(0)  # the same initial weights for every trainer a test compares
    model = PiModel(tiny_config(**config))
    return make_trainer(tmp_path, model, pi_loaders(PiSamples(model.config)), ["batch_size=4", *overrides])


def test_a_frozen_tower_of_pi05_has_no_gradient_no_change_and_no_dropout(tmp_path):
    trainer = pi_trainer(tmp_path, ["steps=3", "freeze=[backbone.language_model.*]"], dropout=0.3)
    model = trainer.model
    lm = model.backbone.language_model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    modes = []
    lm.layers[0].dropout.register_forward_pre_hook(lambda m, a: modes.append(("vlm", m.training)))
    model.expert.layers[0].dropout.register_forward_pre_hook(lambda m, a: modes.append(("expert", m.training)))
    trainer.fit()
    for name, param in model.named_parameters():
        if name.startswith("backbone.language_model."):
            assert param.grad is None and torch.equal(param, before[name]), name
    assert not torch.equal(model.expert.layers[0].mlp.up_proj.weight, before["expert.layers.0.mlp.up_proj.weight"])
    assert ("vlm", True) not in modes and ("vlm", False) in modes and ("expert", True) in modes


def test_pi05_module_groups_freeze_the_vision_tower(tmp_path):
    trainer = pi_trainer(tmp_path, ["steps=2", "freeze=[vision]"])
    model = trainer.model
    prefixes = model.module_groups()["vision"]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.fit()
    for name, param in model.named_parameters():
        in_group = any(name.startswith(p) for p in prefixes)  # module_groups() prefixes end with "."
        assert param.requires_grad != in_group, name
        if in_group:
            assert param.grad is None and torch.equal(param, before[name]), name
    assert any(n.startswith("backbone.vision_tower.") for n in before if any(n.startswith(p) for p in prefixes))


def test_pi05_gradient_checkpointing_through_the_trainer_keeps_the_losses(tmp_path):
    pi_trainer(tmp_path / "plain", ["steps=2"]).fit()  # each trainer seeds the process RNG: build, then fit
    pi_trainer(tmp_path / "checkpointed", ["steps=2", "gradient_checkpointing=true"]).fit()
    a, b = read_metrics(tmp_path / "plain" / "metrics.jsonl"), read_metrics(tmp_path / "checkpointed" / "metrics.jsonl")
    assert [b[s]["train/loss"] for s in (1, 2)] == pytest.approx([a[s]["train/loss"] for s in (1, 2)], rel=1e-5)
