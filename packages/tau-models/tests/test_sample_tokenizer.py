"""SampleTokenizer: fixed-length ids (prompt, response, FAST) made outside the model step; picklable; exact trimming."""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import make_batch, tokenize
from tau_models import (
    FastTokenizer,
    PiModel,
    PromptTokenizer,
    SampleTokenizer,
    tiny_pi05_config,
    tiny_value_config,
)
from tau_models.sample import trim_token_padding
from tau_models.tokenizer import EOS_ID, FAST, PROMPT, RESPONSE
from torch.utils.data import default_collate


@pytest.fixture
def config(tokenizer_dir, fast_dir):
    return tiny_pi05_config(
        tokenizer_name=tokenizer_dir,
        fast_tokenizer_path=str(fast_dir),
        fast_loss_weight=1.0,
        response_loss_weight=0.5,
        response_max_tokens=8,
        fast_max_tokens=60,
        dropout=0.0,
    )


def samples(n=2):
    batch = make_batch(n)
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def test_layout_and_fixed_length(config):
    tokenizer = SampleTokenizer(config)
    assert tokenizer.length == 48 + 8 + 60
    sample = {**samples(1)[0], "response": "grasp the block"}
    out = tokenizer(sample)
    tokens, pad, kind = out["tokens"], out["token_pad"], out["token_kind"]
    assert tokens.shape == pad.shape == kind.shape == (tokenizer.length,)
    assert tokens.dtype == kind.dtype == torch.long and pad.dtype == torch.bool
    prompt = tokenizer.prompt_tokenizer.token_ids(tokenizer.prompt_text(sample))
    response = tokenizer.response_ids(sample)
    fast = tokenizer.fast_ids(sample)
    n = len(prompt) + len(response) + len(fast)
    assert tokens[:n].tolist() == prompt + response + fast and tokens[n:].eq(0).all()
    assert pad[:n].all() and not pad[n:].any()
    assert kind[:n].tolist() == [PROMPT] * len(prompt) + [RESPONSE] * len(response) + [FAST] * len(fast)
    assert response[-1] == fast[-1] == EOS_ID
    assert out["prompt"] == sample["prompt"] and out["images"] is sample["images"]  # the rest is kept
    # different prompt lengths still stack with torch's default collate
    batch = default_collate([tokenizer(s) for s in samples(3)])
    assert batch["tokens"].shape == (3, tokenizer.length)


def test_acting_sample_has_no_fast_ids(config):
    tokenizer = SampleTokenizer(config)
    acting = {k: v for k, v in samples(1)[0].items() if k != "actions"}
    assert not (tokenizer(acting)["token_kind"] == FAST).any()


def test_picklable_and_the_same_after(config):
    tokenizer = SampleTokenizer(config)
    sample = samples(1)[0]
    expected = tokenizer(sample)
    blob = pickle.dumps(tokenizer)
    assert len(blob) < 200_000  # the prompt tokenizer travels by name, not as its vocabulary
    again = pickle.loads(blob)(sample)
    for key in ("tokens", "token_pad", "token_kind"):
        assert torch.equal(again[key], expected[key])


def test_given_tokenizers_are_used(config, tokenizer_dir, fast_dir):
    prompt = PromptTokenizer(tokenizer_dir, 48)
    fast = FastTokenizer.load(fast_dir)
    tokenizer = SampleTokenizer(config, prompt_tokenizer=prompt, fast_tokenizer=fast)
    assert tokenizer.prompt_tokenizer is prompt and tokenizer.fast_tokenizer is fast


def test_the_model_step_never_tokenizes(config, monkeypatch):
    """forward / sample_actions read only ids: the text and FAST tokenizers may be unusable inside the step."""
    model = PiModel(config)
    batch = tokenize(make_batch(2), model)

    def forbidden(*args, **kwargs):
        raise AssertionError("tokenizer called inside the model step")

    monkeypatch.setattr(PromptTokenizer, "token_ids", forbidden)
    monkeypatch.setattr(FastTokenizer, "encode", forbidden)
    out = model(batch)
    out["loss"].backward()
    assert {"flow_loss", "fast_loss", "response_loss"} <= set(out)
    assert model.eval().sample_actions(batch).shape == (2, 10, 32)


def test_dropping_all_padding_columns_is_exact(tokenizer_dir):
    """Trimming the shared padding gives the same losses as the full fixed length (what an accelerator runs)."""
    model = PiModel(tiny_pi05_config(tokenizer_name=tokenizer_dir, dropout=0.0)).eval()
    batch = tokenize(make_batch(2), model)
    tokens, pad, kind = batch["tokens"], batch["token_pad"], batch["token_kind"]
    short = trim_token_padding(tokens, pad, kind)
    assert short[0].shape[1] == int(pad.sum(dim=1).max()) < tokens.shape[1]
    assert torch.equal(short[1], pad[:, : short[1].shape[1]]) and not pad[:, short[1].shape[1] :].any()
    images, image_mask = model.prepare_images(batch)
    noise, t = torch.randn(2, 10, 32), torch.rand(2)
    with torch.no_grad():
        losses = [
            model.flow_loss_per_element(model.embed_prefix(images, image_mask, *ids), batch["actions"], noise, t)
            for ids in ((tokens, pad, kind), short)
        ]
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=1e-5)
    cuda_like = trim_token_padding(tokens.to("meta"), pad.to("meta"), kind.to("meta"))
    assert cuda_like[0].shape == tokens.shape  # off the CPU the fixed length is kept (no host sync)


def test_value_config_prompts(tokenizer_dir):
    tokenizer = SampleTokenizer(tiny_value_config(tokenizer_name=tokenizer_dir))
    sample = samples(1)[0]
    assert tokenizer.prompt_text(sample) == "Task: pick up the red block;\n"
    assert tokenizer.length == 48
    out = tokenizer(sample)
    assert out["tokens"].shape == (48,) and not out["token_kind"].any()


def test_bad_samples(config):
    tokenizer = SampleTokenizer(config)
    sample = samples(1)[0]
    with pytest.raises(ValueError, match=r"sample\['actions'\] has shape \(10, 7\)"):
        tokenizer({**sample, "actions": sample["actions"][:, :7]})
    bad = sample["actions"].clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"sample\['actions'\] contains NaN"):
        tokenizer({**sample, "actions": bad})
    with pytest.raises(TypeError, match=r"sample\['prompt'\] must be a str"):
        tokenizer({**sample, "prompt": ["a list"]})
    with pytest.raises(TypeError, match="PiConfig or ValueConfig"):
        SampleTokenizer({"tokenizer_name": "x"})
