"""tau-data: LeRobot datasets (v2.1, v3.0), weighted heterogeneous mixtures, normalisation and a resumable loader.

Read: `LeRobotDataset(root_or_repo_id, delta_timestamps=...)`, `load_meta`, `info`.
Mix: `MixtureConfig` / `DatasetSpec` -> `MixtureDataset` (standard samples) -> `make_loader` (resumable).
Sample: `build_sample(images, state, prompt, normalizer=, head=, image_size=, max_state_dim=[, actions=...])` turns
one frame (dataset row or live observation) into the standard sample; training and acting both use it.
Normalise: `Normalizer` (MEAN_STD, MIN_MAX, QUANTILES, IDENTITY per norm head; save/load json or safetensors).
Stats: `dataset_stats`, `write_dataset_stats` (exact quantiles, written next to the dataset).
Write: `DatasetWriter` (LeRobot v3.0), `convert_v21_to_v30`.
"""

from tau_data.action_chunks import normalized_action_chunks
from tau_data.convert import convert_v21_to_v30
from tau_data.dataset import LeRobotDataset
from tau_data.errors import DatasetError
from tau_data.info import info
from tau_data.loader import MixtureSampler, draw_seed, make_loader
from tau_data.metadata import DatasetMeta, load_meta
from tau_data.mixture import DatasetSpec, MixtureConfig, MixtureDataset
from tau_data.normalize import NormMode, Normalizer
from tau_data.sample import build_sample
from tau_data.split import split_episodes
from tau_data.stats import dataset_stats, read_stats, write_dataset_stats, write_stats
from tau_data.transforms import AugmentConfig, augment
from tau_data.writer import DatasetWriter

__version__ = "0.1.0"

__all__ = [
    "AugmentConfig", "DatasetError", "DatasetMeta", "DatasetSpec", "DatasetWriter", "LeRobotDataset",
    "MixtureConfig", "MixtureDataset", "MixtureSampler", "NormMode", "Normalizer", "augment", "build_sample",
    "convert_v21_to_v30", "dataset_stats", "info", "load_meta", "draw_seed", "make_loader", "normalized_action_chunks", "read_stats", "split_episodes",
    "write_dataset_stats", "write_stats",
]
