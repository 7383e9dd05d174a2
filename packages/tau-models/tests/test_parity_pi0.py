"""Numerical parity with LeRobot 0.6.1's pi0 on the shared fixture pi0_tiny_a (fp32, max abs diff <= 1e-4).

The fixture's tensors are cloned after loading: safetensors hands out unaligned buffers, on which fp32 CPU kernels
round a few elements differently (see the fixture README, section 8).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tau_models import PiModel, SampleTokenizer, from_pretrained, load_pi_checkpoint
from tau_models.flow import noisy_actions, time_embedding

TOL = dict(rtol=0.0, atol=1e-4)  # observed <= 4e-6


def read(path):
    return {k: v.clone() for k, v in load_file(str(path)).items()}


@pytest.fixture(scope="module")
def fixture(pi0_parity_dir):
    model, report = load_pi_checkpoint(
        pi0_parity_dir / "checkpoint", vision_num_heads=4, tokenizer_name=str(pi0_parity_dir / "tokenizer")
    )
    inputs = read(pi0_parity_dir / "inputs.safetensors")
    outputs = read(pi0_parity_dir / "outputs.safetensors")
    prompts = json.loads((pi0_parity_dir / "prompts.json").read_text())
    return model.eval(), report, inputs, outputs, prompts


def model_inputs(inputs, masked_camera=False):
    images = torch.stack([inputs[f"model_images.{i}"] for i in range(2)], dim=1)
    masks = torch.stack([inputs[f"model_img_masks.{i}"] for i in range(2)], dim=1).clone()
    if masked_camera:
        masks[1, 1] = False
    return images, masks


def standard_batch(model, inputs, prompts, image_mask=None):
    """Raw cameras in [0, 1], padded state/actions and raw tasks, tokenized by SampleTokenizer."""
    batch = {
        "images": torch.stack([inputs[f"observation.images.cam{i}"] for i in range(2)], dim=1),
        "image_mask": torch.ones(2, 2, dtype=torch.bool) if image_mask is None else image_mask,
        "state": inputs["state_padded"],
        "state_dim": torch.tensor([8, 8]),
        "actions": inputs["actions_padded"],
        "action_dim": torch.tensor([7, 7]),
        "action_is_pad": torch.zeros(2, 10, dtype=torch.bool),
        "prompt": prompts["tasks_raw"],
    }
    return SampleTokenizer(model.config).tokenize_batch(batch)


def test_config_and_load_report(fixture):
    model, report, *_ = fixture
    cfg = model.config
    assert report.layout == "lerobot" and report.missing == [] and report.unexpected == []
    assert cfg.variant == "pi0" and cfg.tokenizer_max_length == 24 and cfg.vision.image_size == 28
    assert (cfg.vision.width, cfg.vlm.width, cfg.expert.width, cfg.vlm.head_dim) == (64, 128, 64, 16)
    assert model.state_proj.weight.shape == (64, 32) and model.action_time_mlp_in.weight.shape == (64, 128)


def test_prompts_and_tokens_match_lerobot(fixture):
    model, _, inputs, _, prompts = fixture
    tokenizer = SampleTokenizer(model.config)
    assert [tokenizer.prompt_text({"prompt": t}) for t in prompts["tasks_raw"]] == prompts["prompts"]
    batch = standard_batch(model, inputs, prompts)
    assert torch.equal(batch["tokens"], inputs["observation.language.tokens"])
    assert torch.equal(batch["token_pad"], inputs["observation.language.attention_mask"])


def test_prefix_and_suffix_embeddings_match(fixture):
    model, _, inputs, outputs, _ = fixture
    images, masks = model_inputs(inputs)
    t, state = inputs["time"], inputs["state_padded"]
    with torch.no_grad():
        prefix = model.embed_prefix(
            images, masks, inputs["observation.language.tokens"], inputs["observation.language.attention_mask"]
        )
        x_t, u = noisy_actions(inputs["actions_padded"], inputs["noise"], t)
        suffix, flags, cond = model.embed_suffix(x_t, t, state)
    torch.testing.assert_close(prefix.embs, outputs["train.prefix_embs"], **TOL)
    assert torch.equal(prefix.pad, outputs["train.prefix_pad_masks"])
    torch.testing.assert_close(time_embedding(t, 64, 4e-3, 4.0), outputs["train.time_sincos"], rtol=0, atol=1e-6)
    torch.testing.assert_close(model.state_proj(state), outputs["train.state_emb"], **TOL)
    torch.testing.assert_close(suffix, outputs["train.suffix_embs"], **TOL)
    assert torch.equal(flags, outputs["train.suffix_att_masks"].bool()) and cond is None
    torch.testing.assert_close(u, outputs["train.u_t"], **TOL)


@pytest.mark.parametrize("masked_camera", [False, True])
def test_loss_per_element_matches(fixture, masked_camera):
    model, _, inputs, outputs, _ = fixture
    images, masks = model_inputs(inputs, masked_camera)
    with torch.no_grad():
        prefix = model.embed_prefix(
            images, masks, inputs["observation.language.tokens"], inputs["observation.language.attention_mask"]
        )
        loss = model.flow_loss_per_element(
            prefix, inputs["actions_padded"], inputs["noise"], inputs["time"], inputs["state_padded"]
        )
    key = "maskcam.loss_per_element" if masked_camera else "loss_per_element"
    torch.testing.assert_close(loss, outputs[key], **TOL)


def test_forward_loss_from_standard_batch(fixture):
    model, _, inputs, outputs, prompts = fixture
    with torch.no_grad():
        out = model(standard_batch(model, inputs, prompts), noise=inputs["noise"], time=inputs["time"])
    torch.testing.assert_close(out["loss"], outputs["loss_policy_mean"], **TOL)


@pytest.mark.parametrize("steps,key", [(10, "sample_actions"), (3, "sample_actions_steps3")])
def test_sample_actions_match(fixture, steps, key):
    model, _, inputs, outputs, prompts = fixture
    batch = standard_batch(model, inputs, prompts)
    actions = model.sample_actions(batch, noise=inputs["sample_noise"], num_steps=steps)
    torch.testing.assert_close(actions, outputs[key], **TOL)
    # tighter than any fp32 rounding seen (<= 1e-6) and than a float32 time embedding's shift (1.1e-5, README 8)
    torch.testing.assert_close(actions, outputs[key], rtol=0.0, atol=5e-6)


def test_sample_actions_masked_camera(fixture):
    model, _, inputs, outputs, prompts = fixture
    batch = standard_batch(model, inputs, prompts, torch.tensor([[True, True], [True, False]]))
    actions = model.sample_actions(batch, noise=inputs["sample_noise"])
    torch.testing.assert_close(actions, outputs["maskcam.sample_actions"], **TOL)


def test_attention_masks_and_positions_match(fixture):
    from tau_models.attention_masks import block_attention, positions_from_pad, suffix_attention

    _, _, _, outputs, _ = fixture
    prefix_pad, suffix_pad = outputs["train.prefix_pad_masks"], outputs["train.suffix_pad_masks"]
    suffix_flags = outputs["train.suffix_att_masks"].bool()
    pad = torch.cat([prefix_pad, suffix_pad], dim=1)
    joint = block_attention(pad, torch.cat([outputs["train.prefix_att_masks"], suffix_flags], dim=1))
    assert torch.equal(joint, outputs["train.att_2d_mask"])
    assert torch.equal(positions_from_pad(pad), outputs["train.position_ids"])
    assert torch.equal(suffix_attention(prefix_pad, suffix_pad, suffix_flags), joint[:, 32:])


def test_save_reload_and_legacy_time_mlp_names(fixture, pi0_parity_dir, tmp_path):
    """tau's own checkpoint keeps parity, and so does a pi0 saved under the old time_mlp_* names."""
    model, _, inputs, outputs, prompts = fixture
    model.save_pretrained(tmp_path / "tau")
    reloaded = from_pretrained(tmp_path / "tau").eval()
    assert isinstance(reloaded, PiModel)
    state = load_file(str(pi0_parity_dir / "checkpoint" / "model.safetensors"))
    for part in ("in", "out"):
        for kind in ("weight", "bias"):
            state[f"model.time_mlp_{part}.{kind}"] = state.pop(f"model.action_time_mlp_{part}.{kind}")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    save_file(state, str(legacy / "model.safetensors"))
    (legacy / "config.json").write_text((pi0_parity_dir / "checkpoint" / "config.json").read_text())
    old = from_pretrained(legacy, vision_num_heads=4, tokenizer_name=str(pi0_parity_dir / "tokenizer")).eval()
    for policy in (reloaded, old):
        actions = policy.sample_actions(standard_batch(policy, inputs, prompts), noise=inputs["sample_noise"])
        torch.testing.assert_close(actions, outputs["sample_actions"], **TOL)
