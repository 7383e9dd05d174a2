"""tau-models: pi0 / pi0.5 vision-language-action models with FAST actions, knowledge insulation and LeRobot
checkpoint I/O.

    config = tiny_pi05_config(tokenizer_name="path/to/tokenizer")   # or pi05_config() / pi0_config()
    model, tokenize = PiModel(config), SampleTokenizer(config)
    sample = tokenize(sample, rng=seed)        # the dataset transform: adds tokens / token_pad / token_kind
    out = model(batch)                         # collated tokenized samples -> {"loss", "flow_loss", ...}
    actions = model.sample_actions(batch)      # (B, chunk, max_action_dim); mode="fast", guidance_weight=w
    model.save_pretrained("ckpt")              # config.json + model.safetensors
    model = from_pretrained("lerobot/pi05_base")  # tau, LeRobot or OpenTau layout, folder or hub id
"""

from tau_models.checkpoint import LoadReport, from_pretrained, load_pi_checkpoint, respect_umask, save_pretrained
from tau_models.config import (
    GemmaConfig,
    PiConfig,
    VisionConfig,
    config_from_lerobot,
    pi0_config,
    pi05_config,
    tiny_pi0_config,
    tiny_pi05_config,
)
from tau_models.fast import FastTokenizer
from tau_models.flow import guided_velocity
from tau_models.images import resize_with_pad
from tau_models.pi0 import PiModel
from tau_models.rtc import ActionPrefix, inpaint_velocity, soft_mask_weights
from tau_models.sample import Batch, Sample
from tau_models.sample_tokenizer import SampleTokenizer
from tau_models.tokenizer import PromptTokenizer, discretize_state, format_prompt
from tau_models.value import (
    ValueConfig,
    ValueModel,
    bin_centers,
    expected_value,
    returns_to_bins,
    tiny_value_config,
    value_config,
)

__version__ = "0.1.0"

__all__ = [
    "ActionPrefix",
    "respect_umask",
    "Batch",
    "FastTokenizer",
    "GemmaConfig",
    "LoadReport",
    "PiConfig",
    "PiModel",
    "PromptTokenizer",
    "Sample",
    "SampleTokenizer",
    "ValueConfig",
    "ValueModel",
    "VisionConfig",
    "bin_centers",
    "config_from_lerobot",
    "discretize_state",
    "expected_value",
    "format_prompt",
    "from_pretrained",
    "guided_velocity",
    "inpaint_velocity",
    "load_pi_checkpoint",
    "pi0_config",
    "pi05_config",
    "resize_with_pad",
    "returns_to_bins",
    "save_pretrained",
    "soft_mask_weights",
    "tiny_pi0_config",
    "tiny_pi05_config",
    "tiny_value_config",
    "value_config",
]
