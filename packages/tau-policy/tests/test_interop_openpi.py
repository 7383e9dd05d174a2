"""openpi's PyTorch checkpoint layout (model.safetensors without "model.", its 5-key config.json,
assets/<asset_id>/norm_stats.json) written from a tau model, loaded back through load_policy: same actions as the
tau bundle of the same model and statistics, with openpi's quantile formulas (eps 1e-6)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from tau_data import NormMode, Normalizer
from tau_models import PiModel, tiny_pi05_config
from tau_policy import PolicyBundle, PolicyLayout, Provenance, load_policy
from tau_policy.openpi_format import IMAGE_KEYS, save_openpi

from conftest import shared_dir

TOKENIZER = str(shared_dir() / "parity" / "pi05_tiny_a" / "tokenizer")
RUNTIME = dict(tokenizer_name=TOKENIZER, tokenizer_max_length=48, num_inference_steps=3)


def statistics(rng: np.random.Generator) -> dict:
    def entry(dim: int) -> dict:
        mean = rng.normal(size=dim)
        std = rng.uniform(0.1, 1.0, size=dim)
        return {"mean": mean, "std": std, "q01": mean - 2 * std, "q99": mean + 2.5 * std}

    return {"state": entry(6), "actions": entry(5)}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    torch.manual_seed(0)
    model = PiModel(tiny_pi05_config(**RUNTIME, chunk_size=4)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.05)
    normalizer = Normalizer(stats={"libero": statistics(np.random.default_rng(1))},
                            modes={"state": NormMode.QUANTILES, "actions": NormMode.QUANTILES}, convention="openpi",
                            eps=1e-6)
    root = tmp_path_factory.mktemp("openpi")
    folder = save_openpi(model, normalizer, root / "pi05_tiny_pytorch", asset_id="libero")
    layout = PolicyLayout(head="libero", cameras=IMAGE_KEYS, image_size=(56, 56), state_dim=6, action_dim=5,
                          chunk_size=4, max_state_dim=32, max_action_dim=32, state_feature="state")
    bundle = PolicyBundle(model, normalizer, (layout,), Provenance(source="test")).save(root / "bundle")
    rng = np.random.default_rng(2)
    observation = {key: rng.integers(0, 256, size=(2, 40, 60, 3), dtype=np.uint8) for key in IMAGE_KEYS}
    observation["state"] = rng.normal(size=(2, 6)).astype(np.float32)
    return folder, bundle, normalizer, observation


def test_the_written_folder_has_openpis_layout(written):
    folder, *_ = written
    assert json.loads((folder / "config.json").read_text()) == {
        "action_dim": 32, "action_horizon": 4, "paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m",
        "precision": "float32"}
    stats = json.loads((folder / "assets" / "libero" / "norm_stats.json").read_text())["norm_stats"]
    assert sorted(stats) == ["actions", "state"] and sorted(stats["state"]) == ["mean", "q01", "q99", "std"]
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert {"action_in_proj.weight", "time_mlp_in.weight",
            "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight",
            "paligemma_with_expert.gemma_expert.model.layers.0.input_layernorm.dense.weight",
            "paligemma_with_expert.paligemma.model.vision_tower.vision_model.embeddings.patch_embedding.weight"} <= keys
    assert not any(k.startswith(("model.", "backbone.", "expert.")) for k in keys)


def test_openpi_folder_acts_like_the_tau_bundle(written):
    folder, bundle, _, observation = written
    openpi = load_policy(folder, vision_num_heads=4, **RUNTIME)
    tau = load_policy(bundle)
    assert openpi.bundle.provenance.note == "loaded from a openpi checkpoint folder"
    assert openpi.layout.cameras == IMAGE_KEYS and (openpi.layout.state_dim, openpi.layout.action_dim) == (6, 5)
    noise = torch.randn(2, 4, 32, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(openpi.act(observation, ["pick up the bowl"] * 2, noise=noise),
                                  tau.act(observation, ["pick up the bowl"] * 2, noise=noise))


def test_openpi_quantile_formulas(written):
    folder, _, normalizer, observation = written
    policy = load_policy(folder, vision_num_heads=4, **RUNTIME)
    s = json.loads((folder / "assets" / "libero" / "norm_stats.json").read_text())["norm_stats"]
    q01, q99 = np.asarray(s["state"]["q01"]), np.asarray(s["state"]["q99"])
    expected = (observation["state"] - q01) / (q99 - q01 + 1e-6) * 2 - 1
    assert np.abs(policy.batch(observation, ["x", "y"])["state"][:, :6].numpy() - expected).max() <= 1e-5
    noise = torch.randn(2, 4, 32, generator=torch.Generator().manual_seed(4))
    batch = policy.batch(observation, ["x", "y"])
    raw = policy.model.sample_actions(batch, noise=noise, num_steps=policy.num_inference_steps)[..., :5].numpy()
    a01, a99 = np.asarray(s["actions"]["q01"]), np.asarray(s["actions"]["q99"])
    robot = (raw + 1) / 2 * (a99 - a01 + 1e-6) + a01
    assert np.abs(policy.act(observation, ["x", "y"], noise=noise) - robot).max() <= 1e-5


def test_missing_norm_stats_fail_in_one_line(written, tmp_path):
    folder, *_ = written
    import shutil

    copy = tmp_path / "ckpt"
    shutil.copytree(folder, copy)
    shutil.rmtree(copy / "assets")
    with pytest.raises(ValueError, match=r"no statistics \(assets/<asset_id>/norm_stats.json missing\); pass "):
        load_policy(copy, vision_num_heads=4, **RUNTIME)
