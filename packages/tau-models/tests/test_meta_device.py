"""Full-size presets built on the meta device: shapes and unique parameter counts."""

from __future__ import annotations

import torch
from tau_models import PiModel, pi0_config, pi05_config


def unique_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def test_pi05_full_size_parameter_count():
    with torch.device("meta"):
        model = PiModel(pi05_config())
    total = unique_params(model)
    assert abs(total - 3.353e9) / 3.353e9 < 0.005, total
    assert unique_params(model.backbone.vision_tower) == 412_442_352
    assert unique_params(model.backbone.language_model) == 2_508_531_712
    assert unique_params(model.expert) == 427_932_672
    assert model.backbone.language_model.embed_tokens.weight.shape == (257152, 2048)


def test_pi0_full_size_builds():
    with torch.device("meta"):
        model = PiModel(pi0_config())
    assert model.state_proj.weight.shape == (1024, 32)
    assert model.expert.layers[0].input_layernorm.weight.shape == (1024,)
    assert 3.1e9 < unique_params(model) < 3.4e9


def test_full_size_forward_shapes_on_meta(tokenizer_dir):
    """The full-size pi0.5 forward runs through every layer with meta tensors (shapes only, no compute)."""
    from conftest import make_batch, tokenize

    with torch.device("meta"):
        model = PiModel(pi05_config(tokenizer_name=tokenizer_dir))
    batch = tokenize(make_batch(2, n_cams=3, image_size=224, chunk=50), model)
    assert batch["tokens"].shape == (2, 200)
    for key in ("images", "actions", "tokens", "token_pad", "token_kind"):
        batch[key] = batch[key].to("meta")
    out = model(batch, noise=torch.zeros(2, 50, 32, device="meta"), time=torch.ones(2, device="meta"))
    assert out["loss"].shape == () and out["loss"].device.type == "meta"
