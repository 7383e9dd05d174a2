"""Numerical parity with LeRobot 0.6.1's pi0.5 on the shared fixture (fp32, max abs diff <= 1e-4)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tau_models import PiModel, SampleTokenizer, from_pretrained, load_pi_checkpoint

TOL = dict(rtol=0.0, atol=1e-4)  # max abs diff <= 1e-4 (observed ~1e-6)


@pytest.fixture(scope="module")
def fixture(parity_dir, tokenizer_dir):
    model, report = load_pi_checkpoint(
        parity_dir / "checkpoint", vision_num_heads=4, tokenizer_name=tokenizer_dir
    )
    model.eval()
    inputs = load_file(str(parity_dir / "inputs.safetensors"))
    outputs = load_file(str(parity_dir / "outputs.safetensors"))
    prompts = json.loads((parity_dir / "prompts.json").read_text())
    return model, report, inputs, outputs, prompts


def standard_batch(inputs, prompts, image_mask=None, model=None):
    """The fixture's inputs as a standard batch; tokenized by SampleTokenizer(model.config) when a model is given."""
    images = torch.stack([inputs[f"observation.images.cam{i}"] for i in range(2)], dim=1)
    state = torch.zeros(2, 32)
    state[:, :8] = inputs["observation.state"]
    batch = {
        "images": images,
        "image_mask": torch.ones(2, 2, dtype=torch.bool) if image_mask is None else image_mask,
        "state": state,
        "state_dim": torch.tensor([8, 8]),
        "actions": inputs["actions_padded"],
        "action_dim": torch.tensor([7, 7]),
        "action_is_pad": torch.zeros(2, 10, dtype=torch.bool),
        "prompt": prompts["tasks_raw"],
    }
    return batch if model is None else SampleTokenizer(model.config).tokenize_batch(batch)


def test_load_report(fixture):
    model, report, *_ = fixture
    assert report.layout == "lerobot"
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.ignored) == [
        "model.paligemma_with_expert.gemma_expert.lm_head.weight",
        "model.paligemma_with_expert.paligemma.lm_head.weight",
    ]
    assert (
        model.config.vlm.width == 256 and model.config.expert.width == 128 and model.config.vocab_size == 1024
    )


def test_prompts_and_tokens_match_lerobot(fixture):
    """SampleTokenizer builds LeRobot's prompt strings and its fixed-length (48) right-padded ids exactly."""
    model, _, inputs, _, prompts = fixture
    batch = standard_batch(inputs, prompts)
    tokenizer = SampleTokenizer(model.config)
    samples = [{k: v[i] for k, v in batch.items()} for i in range(2)]
    assert [tokenizer.prompt_text(s) for s in samples] == prompts["prompts"]
    tokenized = tokenizer.tokenize_batch(batch)
    assert torch.equal(tokenized["tokens"], inputs["observation.language.tokens"])
    assert torch.equal(tokenized["token_pad"], inputs["observation.language.attention_mask"])
    assert not tokenized["token_kind"].any()


def test_prefix_embedding_matches(fixture):
    model, _, inputs, outputs, _ = fixture
    images = torch.stack([inputs[f"model_images.{i}"] for i in range(2)], dim=1)
    masks = torch.stack([inputs[f"model_img_masks.{i}"] for i in range(2)], dim=1)
    with torch.no_grad():
        prefix = model.embed_prefix(
            images,
            masks,
            inputs["observation.language.tokens"],
            inputs["observation.language.attention_mask"],
        )
    torch.testing.assert_close(prefix.embs, outputs["train.prefix_embs"], **TOL)
    assert torch.equal(prefix.pad, outputs["train.prefix_pad_masks"])


@pytest.mark.parametrize("masked_camera", [False, True])
def test_loss_per_element_matches(fixture, masked_camera):
    model, _, inputs, outputs, _ = fixture
    images = torch.stack([inputs[f"model_images.{i}"] for i in range(2)], dim=1)
    masks = torch.stack([inputs[f"model_img_masks.{i}"] for i in range(2)], dim=1).clone()
    key = "loss_per_element"
    if masked_camera:
        masks[1, 1] = False
        key = "maskcam.loss_per_element"
    with torch.no_grad():
        prefix = model.embed_prefix(
            images,
            masks,
            inputs["observation.language.tokens"],
            inputs["observation.language.attention_mask"],
        )
        loss = model.flow_loss_per_element(prefix, inputs["actions_padded"], inputs["noise"], inputs["time"])
    torch.testing.assert_close(loss, outputs[key], **TOL)


def test_forward_loss_from_standard_batch(fixture):
    """End to end: raw tasks + state -> prompt -> tokens -> model -> masked mean == LeRobot's policy loss."""
    model, _, inputs, outputs, prompts = fixture
    with torch.no_grad():
        out = model(standard_batch(inputs, prompts, model=model), noise=inputs["noise"], time=inputs["time"])
    torch.testing.assert_close(out["loss"], outputs["loss_policy_mean"], **TOL)


@pytest.mark.parametrize("steps,key", [(10, "sample_actions"), (3, "sample_actions_steps3")])
def test_sample_actions_match(fixture, steps, key):
    model, _, inputs, outputs, prompts = fixture
    actions = model.sample_actions(
        standard_batch(inputs, prompts, model=model), noise=inputs["sample_noise"], num_steps=steps
    )
    torch.testing.assert_close(actions, outputs[key], **TOL)


def test_sample_actions_masked_camera(fixture):
    model, _, inputs, outputs, prompts = fixture
    mask = torch.tensor([[True, True], [True, False]])
    actions = model.sample_actions(standard_batch(inputs, prompts, mask, model), noise=inputs["sample_noise"])
    torch.testing.assert_close(actions, outputs["maskcam.sample_actions"], **TOL)


def test_save_and_reload_keeps_parity(fixture, tmp_path):
    model, _, inputs, outputs, prompts = fixture
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors", "tokenizer"]
    reloaded = from_pretrained(tmp_path / "ckpt", strict=True)
    assert isinstance(reloaded, PiModel)
    reloaded.eval()
    actions = reloaded.sample_actions(standard_batch(inputs, prompts, model=reloaded), noise=inputs["sample_noise"])
    torch.testing.assert_close(actions, outputs["sample_actions"], **TOL)


def test_attention_masks_and_positions_match(fixture):
    """The pure mask functions reproduce LeRobot's joint (prefix + suffix) attention matrix and RoPE positions."""
    from tau_models.attention_masks import block_attention, positions_from_pad, suffix_attention

    _, _, _, outputs, _ = fixture
    prefix_pad = outputs["train.prefix_pad_masks"]
    suffix_pad = outputs["train.suffix_pad_masks"]
    prefix_flags = outputs["train.prefix_att_masks"]
    suffix_flags = outputs["train.suffix_att_masks"].bool()
    pad = torch.cat([prefix_pad, suffix_pad], dim=1)
    joint = block_attention(pad, torch.cat([prefix_flags, suffix_flags], dim=1))
    assert torch.equal(joint, outputs["train.att_2d_mask"])
    assert torch.equal(positions_from_pad(pad), outputs["train.position_ids"])
    assert torch.equal(suffix_attention(prefix_pad, suffix_pad, suffix_flags), joint[:, 80:])
    assert torch.equal(block_attention(prefix_pad, prefix_flags), outputs["sample.prefix_att_2d_mask"])
