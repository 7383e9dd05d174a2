"""Fine-tuning the pretrained parity fixture (LeRobot's tiny pi0.5) through apps/train's code path: the exported
bundle holds the weights its provenance names (LoRA merged, EMA) and acts bit-identically once reloaded."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from click.testing import CliRunner
from data_app.cli import main as data_main
from tau_data import MixtureDataset, make_loader
from tau_models import SampleTokenizer
from tau_policy import Policy, load_policy
from tau_train import TrainConfig, Trainer, load_config, load_weights, read_metrics
from train_app.config import ModelSection, TrainAppConfig, ValidationSection
from train_app.run import build_policy, export_policy, mixture_config, mixtures, prompt_tokenizer
from train_app.run import train as run_training

TASK = "tabletop/push_red_to_target"
SHARED = Path(os.environ.get("TAU_SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared"))
FIXTURE = SHARED / "parity" / "pi05_tiny_a"
CAMERAS = ["observation.images.top", "observation.images.wrist"]


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("finetune") / "demos"
    result = CliRunner().invoke(data_main, ["generate", "--output", str(root), "--tasks", TASK,
                                            "--episodes-per-task", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root


def fine_tune(demos: Path, output: Path, overrides: list[str]) -> tuple[Trainer, TrainAppConfig, MixtureDataset]:
    """A 3-step fine-tune of the fixture checkpoint, built the way apps/train builds it."""
    train = load_config(None, [f"output_dir={output}", "steps=3", "batch_size=2", "schedule.warmup_steps=0",
                               "optimizer.lr=1e-2", "checkpoint.every_steps=0", "logging.progress_bar=false",
                               "logging.tensorboard=false", "logging.plots=false", *overrides], schema=TrainConfig)
    config = TrainAppConfig(
        data={"datasets": [{"path": str(demos), "cameras": CAMERAS}]},
        model=ModelSection(pretrained=str(FIXTURE / "checkpoint"), tokenizer=str(FIXTURE / "tokenizer"),
                           overrides={"vision_num_heads": 4, "num_inference_steps": 2}),
        train=train, num_workers=0)
    tokenizer = prompt_tokenizer(config)
    torch.manual_seed(0)
    model = build_policy(config, tokenizer)
    dataset = MixtureDataset(mixture_config(config, model.config))
    tokenize = SampleTokenizer(model.config)
    trainer = Trainer(train, model, lambda spec: make_loader(dataset, spec.batch_size, num_workers=0, seed=spec.seed,
                                                             transform=tokenize), run_config=config)
    trainer.fit()
    return trainer, config, dataset


def act(policy: Policy) -> np.ndarray:
    """Actions for a fixed random observation and fixed flow noise."""
    layout = policy.layout
    rng = np.random.default_rng(0)
    observation = {c: rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8) for c in layout.cameras if c}
    observation[layout.state_feature] = rng.standard_normal((2, layout.state_dim)).astype(np.float32)
    noise = torch.from_numpy(rng.standard_normal((2, layout.chunk_size, layout.max_action_dim)).astype(np.float32))
    return policy.act(observation, [TASK.split("/")[1].replace("_", " ")] * 2, noise=noise)


def test_lora_is_merged_at_export_and_reloads_bit_identically(demos: Path, tmp_path: Path) -> None:
    trainer, config, dataset = fine_tune(demos, tmp_path / "run", ["lora.enabled=true", "lora.r=4"])
    trained = trainer.accelerator.unwrap_model(trainer.model)
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in trained.named_parameters())  # the adapters trained
    bundle = export_policy(config, trainer, dataset, None)
    assert bundle.provenance.weights == "lora_merged"
    assert not any("lora_" in n for n in bundle.model.state_dict())  # plain base weights, adapters folded in
    bundle.save(tmp_path / "policy")
    reloaded = load_policy(tmp_path / "policy")
    assert reloaded.bundle.provenance.weights == "lora_merged"
    in_memory = act(Policy(bundle))
    np.testing.assert_array_equal(act(reloaded), in_memory)
    # The merge computes what the adapters computed (up to float rounding), and differs from the pretrained base.
    adapted = Policy(type(bundle)(trained, bundle.normalizer, bundle.layouts, bundle.provenance))
    np.testing.assert_allclose(in_memory, act(adapted), atol=1e-4)
    base = Policy(type(bundle)(build_policy(config, prompt_tokenizer(config)), bundle.normalizer, bundle.layouts, bundle.provenance))
    assert not np.allclose(in_memory, act(base), atol=1e-4)


def test_ema_is_exported_by_default_and_reloads_bit_identically(demos: Path, tmp_path: Path) -> None:
    trainer, config, dataset = fine_tune(demos, tmp_path / "run", ["ema.enabled=true", "ema.decay=0.5",
                                                                   "freeze=[vision]"])
    bundle = export_policy(config, trainer, dataset, None)
    assert bundle.provenance.weights == "ema"
    exported = dict(bundle.model.named_parameters())
    for name, shadow in trainer.ema.shadow.items():  # the bundle holds the EMA weights, not the raw ones
        torch.testing.assert_close(exported[name], shadow, rtol=0, atol=0)
    live = dict(trainer.accelerator.unwrap_model(trainer.model).named_parameters())
    assert any(not torch.equal(live[n], s) for n, s in trainer.ema.shadow.items())
    bundle.save(tmp_path / "policy")
    reloaded = load_policy(tmp_path / "policy")
    assert reloaded.bundle.provenance.weights == "ema"
    np.testing.assert_array_equal(act(reloaded), act(Policy(bundle)))

    config.export_weights = "raw"
    raw = export_policy(config, trainer, dataset, None)
    assert raw.provenance.weights == "raw"
    for name, param in raw.model.named_parameters():
        assert torch.equal(param, live[name])


def test_validation_split_logs_val_losses_and_exports_the_best(demos: Path, tmp_path: Path) -> None:
    """apps/train with a validation section: held-out episodes, val/* logged every step, the best weights kept
    and exported."""
    output = tmp_path / "run"
    train = load_config(None, [f"output_dir={output}", "steps=4", "batch_size=2", "schedule.warmup_steps=0",
                               "optimizer.lr=3e-2", "checkpoint.every_steps=0", "logging.progress_bar=false",
                               "logging.tensorboard=false", "logging.every_steps=1", "validation.every_steps=1",
                               "validation.max_batches=2", "validation.keep_best=val/loss"], schema=TrainConfig)
    config = TrainAppConfig(
        data={"datasets": [{"path": str(demos), "cameras": CAMERAS}]},
        model=ModelSection(pretrained=str(FIXTURE / "checkpoint"), tokenizer=str(FIXTURE / "tokenizer"),
                           overrides={"vision_num_heads": 4, "num_inference_steps": 2}),
        train=train, num_workers=0, validation=ValidationSection(fraction=0.5, seed=0), export_from="best")
    folder = run_training(config)
    metrics = read_metrics(output / "metrics.jsonl")
    val = {step: m["val/loss"] for step, m in metrics.items() if "val/loss" in m}
    assert sorted(val) == [1, 2, 3, 4]
    best = json.loads((output / "best" / "best.json").read_text())
    assert best["step"] == min(val, key=val.get) and best["value"] == pytest.approx(min(val.values()))
    bundle = load_policy(folder).bundle
    assert bundle.provenance.step == best["step"]
    saved = load_weights(output / "best" / "model.safetensors")
    for name, tensor in bundle.model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert (output / "plots" / "loss.png").stat().st_size > 1000


def test_validation_section_holds_out_whole_episodes(demos: Path) -> None:
    config = TrainAppConfig(data={"datasets": [{"path": str(demos), "cameras": CAMERAS}]},
                            validation=ValidationSection(fraction=0.5, seed=0))
    model = build_policy(TrainAppConfig(model=ModelSection(overrides={"chunk_size": 5})), None).config
    dataset, val = mixtures(config, model)
    trained = {int(e) for e in dataset.members[0].columns["episode_index"]}
    held_out = {int(e) for e in val.members[0].columns["episode_index"]}
    assert trained and held_out and trained.isdisjoint(held_out)
    assert val.normalizer is dataset.normalizer


def test_bf16_keeps_fp32_master_weights_and_freezing_holds_on_the_checkpoint(demos: Path, tmp_path: Path) -> None:
    """mixed_precision=bf16 (autocast) changes the computed loss but the weights the optimizer updates stay fp32;
    the frozen vision tower of the pretrained checkpoint is untouched while the rest trains."""
    common = ["steps=1", "freeze=[vision]", "gradient_checkpointing=true", "logging.every_steps=1"]
    fp32, _, _ = fine_tune(demos, tmp_path / "fp32", [*common, "mixed_precision=fp32"])
    AcceleratorState._reset_state(reset_partial_state=True)  # accelerate keeps one precision per process
    try:
        bf16, config, _ = fine_tune(demos, tmp_path / "bf16", [*common, "mixed_precision=bf16"])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    losses = [read_metrics(t.output_dir / "metrics.jsonl")[1]["train/loss"] for t in (fp32, bf16)]
    assert losses[0] != pytest.approx(losses[1], rel=1e-6, abs=0)  # the bf16 forward is not the fp32 one
    assert losses[0] == pytest.approx(losses[1], rel=0.05)
    pretrained = dict(build_policy(config, prompt_tokenizer(config)).named_parameters())
    trained = bf16.accelerator.unwrap_model(bf16.model)
    groups = trained.module_groups()
    for name, param in trained.named_parameters():
        assert param.dtype == torch.float32, name
        if any(name.startswith(prefix) for prefix in groups["vision"]):
            assert torch.equal(param, pretrained[name]), name
    expert = [n for n in pretrained if any(n.startswith(prefix) for prefix in groups["expert"])]
    assert expert and any(not torch.equal(trained.get_parameter(n), pretrained[n]) for n in expert)
