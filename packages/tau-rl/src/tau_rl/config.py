"""The typed configuration of a RECAP run (OmegaConf-compatible dataclasses, so apps/rl can load YAML + overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from tau_rl.conditioning import CONDITIONING_MODES
from tau_rl.returns import ReturnConfig
from tau_rl.rollouts import CollectConfig

MODEL_PRESETS: tuple[str, ...] = ("full", "tiny")


@dataclass
class TrainingSettings:
    """One tau-train run of a stage (the value model or the policy)."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-4
    warmup_steps: int = 50
    weight_decay: float = 0.01
    checkpoint_every: int = 250  # trainer checkpoints inside the stage, so a crash resumes mid-training
    num_workers: int = 0  # data-loading worker processes


@dataclass
class PolicyStageConfig:
    """The pi0.5 policy: where it starts, how it is fine-tuned each iteration and how it acts."""

    checkpoint: Optional[str] = None  # tau/LeRobot/OpenTau pi0.5 folder or hub id; None: a fresh `preset` model
    preset: str = "full"  # "full" pi0.5 or "tiny" (CPU tests), used when checkpoint is None
    overrides: dict[str, Any] = field(default_factory=dict)  # PiConfig fields (tokenizer_name, chunk_size, ...)
    sft: TrainingSettings = field(default_factory=lambda: TrainingSettings(steps=2000))  # init policy on demos
    # the prompts of that initial pass (every demo frame labelled positive): "positive" (every prompt carries
    # "Advantage: positive", no dropout: plain behaviour cloning) or "conditioned" (`conditioning_dropout` of the
    # prompts drop the line, so a checkpoint trained without it learns the line and keeps its plain prompt, which
    # classifier-free guidance needs)
    sft_mode: str = "positive"
    finetune: TrainingSettings = field(default_factory=TrainingSettings)  # each iteration
    restart_from: str = "initial"  # "initial" (RECAP/OpenTau: fine-tune the initial policy again) or "previous"
    # share of fine-tuning samples drawn from the demonstrations (the rest from the rollouts, each source in
    # proportion to its frames); None: every frame equally likely, so rollouts soon outweigh the demonstrations
    demo_fraction: Optional[float] = None
    # share of fine-tuning samples drawn from frames labelled positive (None: as labelled, about
    # advantages.positive_fraction); the positive-conditioned policy is unchanged in expectation, but a short
    # fine-tune spends more of its steps on the behaviour it will be asked for
    positive_sample_fraction: Optional[float] = None
    mode: str = "conditioned"  # "conditioned" (Advantage: positive/negative + dropout) or "positive"
    conditioning_dropout: float = 0.3
    guidance_weight: float = 1.0  # classifier-free guidance at inference; 1 = conditioned model, no guidance
    num_inference_steps: Optional[int] = None  # flow-matching Euler steps; None: the model's default


@dataclass
class ValueStageConfig:
    """The distributional value model and its training."""

    checkpoint: Optional[str] = None  # a pretrained value model folder; None: a fresh `preset` model
    preset: str = "full"
    overrides: dict[str, Any] = field(default_factory=dict)  # ValueConfig fields
    init_from_policy: bool = False  # start a fresh value model's backbone from the initial policy's VLM
    use_state: bool = False  # also feed the policy's (normalised) state to a fresh value model, as one token
    train: TrainingSettings = field(default_factory=TrainingSettings)
    restart_from: str = "previous"  # "previous" iteration's value model, or "initial" (checkpoint / fresh)
    predict_batch_size: int = 64


@dataclass
class AdvantageStageConfig:
    """N-step advantages and the automatic threshold."""

    lookahead: int = 50  # N
    positive_fraction: float = 0.3  # target fraction of frames labelled positive
    interventions_positive: bool = True  # frames an expert controlled are labelled positive
    # every frame of the demonstration datasets is labelled positive (expert data, as the interventions are), and
    # the threshold is chosen over the rollouts' frames alone; False: the value model ranks the demos too
    demos_positive: bool = False


@dataclass
class EvalSettings:
    """tau-sim evaluation of each iteration's policy on fixed seeds (apart from the collection seeds)."""

    episodes_per_task: int = 50
    seed: int = 100000
    num_envs: int = 10
    action_steps: Optional[int] = None
    use_async: bool = False
    videos_per_task: int = 2


@dataclass
class RecapConfig:
    """A whole RECAP run: N iterations of collect -> fit value -> advantages -> fit policy -> evaluate."""

    run_dir: str = "runs/recap"
    iterations: int = 2
    tasks: list[str] = field(default_factory=lambda: ["tabletop/push_red_to_target"])
    demos: list[str] = field(default_factory=list)  # LeRobot datasets for the initial policy, kept in every iteration
    demos_assume_success: Optional[bool] = None  # label for demo datasets without a "success" column
    cameras: list[str] = field(default_factory=lambda: ["observation.images.top", "observation.images.wrist"])
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to tau-sim's make_env (collect and eval)
    returns: ReturnConfig = field(default_factory=ReturnConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    value: ValueStageConfig = field(default_factory=ValueStageConfig)
    advantages: AdvantageStageConfig = field(default_factory=AdvantageStageConfig)
    policy: PolicyStageConfig = field(default_factory=PolicyStageConfig)
    eval: EvalSettings = field(default_factory=EvalSettings)
    seed: int = 0

    def validate(self) -> None:
        """Reject settings that cannot work, naming the field."""
        problems = []
        if self.iterations < 1:
            problems.append(f"iterations must be >= 1, got {self.iterations}")
        if not self.tasks:
            problems.append("tasks is empty")
        if not self.demos:
            problems.append("demos is empty: give the LeRobot datasets the initial policy and normaliser come from")
        for name, preset in (("policy.preset", self.policy.preset), ("value.preset", self.value.preset)):
            if preset not in MODEL_PRESETS:
                problems.append(f"{name} must be one of {MODEL_PRESETS}, got {preset!r}")
        fraction = self.policy.demo_fraction
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            problems.append(f"policy.demo_fraction must be in [0, 1] or None, got {fraction}")
        share = self.policy.positive_sample_fraction
        if share is not None and not 0.0 < share < 1.0:
            problems.append(f"policy.positive_sample_fraction must be in (0, 1) or None, got {share}")
        if share is not None and self.policy.mode != "conditioned":
            problems.append("policy.positive_sample_fraction needs policy.mode='conditioned' (in 'positive' mode "
                            "every frame is positive)")
        if self.policy.restart_from not in ("initial", "previous"):
            problems.append(f"policy.restart_from must be 'initial' or 'previous', got {self.policy.restart_from!r}")
        if self.value.restart_from not in ("initial", "previous"):
            problems.append(f"value.restart_from must be 'initial' or 'previous', got {self.value.restart_from!r}")
        for name, mode in (("policy.mode", self.policy.mode), ("policy.sft_mode", self.policy.sft_mode)):
            if mode not in CONDITIONING_MODES:
                problems.append(f"{name} must be 'conditioned' or 'positive', got {mode!r}")
        if not 0.0 <= self.policy.conditioning_dropout < 1.0:
            problems.append(f"policy.conditioning_dropout must be in [0, 1), got {self.policy.conditioning_dropout}")
        if self.policy.guidance_weight < 0:
            problems.append(f"policy.guidance_weight must be >= 0, got {self.policy.guidance_weight}")
        if self.policy.guidance_weight != 1.0 and self.policy.mode != "conditioned":
            problems.append("policy.guidance_weight != 1 needs policy.mode='conditioned' (guidance needs the "
                            "unconditioned model learnt through conditioning dropout)")
        if self.advantages.lookahead < 1:
            problems.append(f"advantages.lookahead must be >= 1, got {self.advantages.lookahead}")
        if not 0.0 < self.advantages.positive_fraction < 1.0:
            problems.append(f"advantages.positive_fraction must be in (0, 1), got {self.advantages.positive_fraction}")
        if not self.cameras:
            problems.append("cameras is empty")
        for name, settings in (("policy.sft", self.policy.sft), ("policy.finetune", self.policy.finetune),
                               ("value.train", self.value.train)):
            if settings.steps < 0 or settings.batch_size < 1 or settings.lr <= 0:
                problems.append(f"{name} needs steps >= 0, batch_size >= 1 and lr > 0")
        if problems:
            raise ValueError("invalid RECAP config:\n  - " + "\n  - ".join(problems))
