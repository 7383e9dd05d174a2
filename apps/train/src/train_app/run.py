"""One training run: demonstrations (if asked), the mixture, the policy, tau-train's loop, the acting bundle."""

from __future__ import annotations

import logging
from pathlib import Path

from tau_data import LeRobotDataset, MixtureConfig, MixtureDataset, make_loader, split_episodes
from accelerate.utils import set_seed
from tau_models import PiConfig, PiModel, SampleTokenizer, from_pretrained, pi0_config, pi05_config, tiny_pi0_config, tiny_pi05_config
from tau_models.local_tokenizer import build_local_tokenizer
from tau_policy import PolicyBundle, Provenance, episode_labels, record_episodes
from tau_sim import ExpertConfig, generate_demos, suite_tasks
from tau_train import (LoaderSpec, Trainer, apply_lora, checkpoints_dir, export_kind, exported_model, load_best_weights,
                       load_final_weights, merge_lora)

from train_app.config import TrainAppConfig

log = logging.getLogger(__name__)

ROBOT_TYPE = "tau_sim_tabletop"  # the robot type of the demonstrations (their norm head)
MODEL_PRESETS = {"tiny_pi05": tiny_pi05_config, "tiny_pi0": tiny_pi0_config, "pi05": pi05_config, "pi0": pi0_config}


def ensure_demos(config: TrainAppConfig) -> None:
    """Write scripted tabletop demonstrations to the first dataset's path unless it already exists."""
    if config.demos is None:
        return
    root = Path(config.data["datasets"][0]["path"])
    if (root / "meta" / "info.json").is_file():
        return
    demos = config.demos
    log.info("generating %d demonstrations per task of suite %s into %s", demos.episodes_per_task, demos.suite, root)
    episodes = generate_demos(suite_tasks(demos.suite), demos.episodes_per_task, seed=demos.seed,
                              expert=ExpertConfig(demos.action_noise, demos.mistake_rate),
                              env_kwargs={"privileged_obs": True}, state_key=config.state_key)
    record_episodes(episodes, root, robot_type=ROBOT_TYPE, extras=episode_labels)


def model_config(config: TrainAppConfig, tokenizer: str | None) -> PiConfig:
    """The preset's PiConfig with the YAML overrides (nested sections merge field by field)."""
    section = config.model
    if section.preset not in MODEL_PRESETS:
        raise ValueError(f"model.preset must be one of {sorted(MODEL_PRESETS)}, got {section.preset!r}")
    data = MODEL_PRESETS[section.preset]().to_dict()
    for key, value in section.overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    if tokenizer is not None:
        data["tokenizer_name"] = tokenizer
    return PiConfig.from_dict(data)


def mixture_config(config: TrainAppConfig, model: PiConfig) -> MixtureConfig:
    """The data section as a MixtureConfig whose sample layout matches the model's inputs."""
    data = {**config.data, "image_size": [model.vision.image_size] * 2, "chunk_size": model.chunk_size,
            "max_state_dim": model.max_state_dim, "max_action_dim": model.max_action_dim}
    return MixtureConfig.from_dict(data)


def prompt_tokenizer(config: TrainAppConfig) -> str | None:
    """The tokenizer to use: as configured, or ("local") one trained on the datasets' task strings."""
    name = config.model.tokenizer
    if name != "local":
        return name
    folder = Path(config.train.output_dir) / "tokenizer"
    if not (folder / "tokenizer.json").is_file():
        tasks = [t for spec in config.data["datasets"] for t in LeRobotDataset(spec["path"]).meta.tasks.values()]
        vocab = model_config(config, None).vocab_size
        log.info("building a local prompt tokenizer (vocab %d) in %s", vocab, folder)
        build_local_tokenizer(folder, tasks, vocab_size=vocab)
    return str(folder)


def build_policy(config: TrainAppConfig, tokenizer: str | None) -> PiModel:
    """A fresh model of the configured size, or the pretrained checkpoint with the overrides applied."""
    if config.model.pretrained is None:
        return PiModel(model_config(config, tokenizer))
    overrides = dict(config.model.overrides)
    if tokenizer is not None:
        overrides["tokenizer_name"] = tokenizer
    # Merged into the saved config before the model is built (architecture changes are refused by name).
    return from_pretrained(config.model.pretrained, **overrides)


def mixtures(config: TrainAppConfig, model: PiConfig) -> tuple[MixtureDataset, MixtureDataset | None]:
    """The training mixture and, with a validation section, the held-out episodes' mixture (normalised with the
    training statistics)."""
    mixture = mixture_config(config, model)
    if config.validation is None:
        return MixtureDataset(mixture), None
    train_mixture, val_mixture = split_episodes(mixture, config.validation.fraction, config.validation.seed)
    dataset = MixtureDataset(train_mixture)
    return dataset, MixtureDataset(val_mixture, normalizer=dataset.normalizer)


def train(config: TrainAppConfig) -> Path:
    """Train and return the folder of the acting bundle (model, normaliser and sample layout of every head) for
    `apps/eval`."""
    ensure_demos(config)
    tokenizer = prompt_tokenizer(config)
    set_seed(config.train.seed)  # the model's initialisation is part of a seeded run
    model = build_policy(config, tokenizer)
    tokenize = SampleTokenizer(model.config)
    dataset, val_dataset = mixtures(config, model.config)
    log.info("mixture: %d frames from %d dataset(s), weights %s", len(dataset), len(dataset.members),
             dataset.weights.round(3).tolist())

    def loaders(spec: LoaderSpec):  # noqa: ANN202 - a torchdata StatefulDataLoader
        return make_loader(dataset, spec.batch_size, num_workers=config.num_workers, seed=spec.seed,
                           rank=spec.rank, world_size=spec.world_size, transform=tokenize)

    def val_loaders(spec: LoaderSpec):  # noqa: ANN202 - the same draws at every validation
        return make_loader(val_dataset, spec.batch_size, num_workers=config.num_workers, seed=spec.seed,
                           rank=spec.rank, world_size=spec.world_size, transform=tokenize, repeat=True)

    trainer = Trainer(config.train, model, loaders, val_loaders if val_dataset is not None else None,
                      run_config=config)
    trainer.fit()
    folder = Path(config.train.output_dir) / "policy"
    if trainer.accelerator.is_main_process:
        export_policy(config, trainer, dataset, tokenizer).save(folder)
    trainer.close()
    return folder


def export_policy(config: TrainAppConfig, trainer: Trainer, dataset: MixtureDataset,
                  tokenizer: str | None) -> PolicyBundle:
    """The acting bundle of a finished run: the weights `config.export_weights` chooses (EMA by default when the
    run kept one), LoRA adapters merged into the base weights, and the provenance saying which they are."""
    train_config = config.train
    kind = export_kind(config.export_weights, ema=trainer.ema is not None, lora=train_config.lora.enabled)
    step = trainer.step
    if config.export_from not in ("final", "best"):
        raise ValueError(f"export_from must be 'final' or 'best', got {config.export_from!r}")
    if config.export_from == "best" or trainer.sharded:  # FSDP2 sharded the model in place: rebuild a plain one
        if config.export_from == "best":
            weights, record = load_best_weights(train_config.output_dir, ema=kind == "ema")
            step = record["step"]
        else:
            weights = load_final_weights(train_config.output_dir, ema=kind == "ema")
        trained = build_policy(config, tokenizer)
        if train_config.lora.enabled:
            trained = apply_lora(trained, train_config.lora)
        trained.load_state_dict(weights)
        trained = merge_lora(trained)
    else:
        trained = exported_model(trainer.accelerator.unwrap_model(trainer.model), ema=trainer.ema,
                                 use_ema=kind == "ema")
    provenance = Provenance(source=str(checkpoints_dir(train_config.output_dir)), step=step, weights=kind)
    return PolicyBundle.from_mixture(trained, dataset, provenance=provenance, sim_state_key=config.state_key)
