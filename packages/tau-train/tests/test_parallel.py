"""tau_train.parallelize on a tiny pi0.5 in this process (a one-rank gloo group): which modules become FSDP units,
the mixed-precision policy, and the forward methods a unit needs registered."""

import pytest
import torch
import torch.distributed as dist
from tiny_pi import PiSamples, build_model
from torch.distributed.fsdp import FSDPModule
from torch.utils.data import default_collate

from tau_train import ConfigError, FSDPConfig, parallelize, shard_units
from tau_train.parallel import mixed_precision_policy

LAYERS = (
    [f"pi.backbone.vision_tower.encoder.layers.{i}" for i in range(2)]
    + [f"pi.backbone.language_model.layers.{i}" for i in range(2)]
    + [f"pi.expert.layers.{i}" for i in range(2)]
)


@pytest.fixture
def one_rank():
    """parallelize starts a one-process group when none runs; tear it down after the test."""
    yield torch.device("cpu")
    if dist.is_initialized():
        dist.destroy_process_group()


def batch_of(model, size=2):
    return default_collate([PiSamples(model.pi.config)[i] for i in range(size)])


def test_shard_units_of_pi05_are_its_siglip_vlm_and_expert_layers():
    model = build_model()
    assert shard_units(model, []) == LAYERS
    assert shard_units(model, ["pi.expert.layers.*"]) == LAYERS[4:]  # nested matches keep the layer
    with pytest.raises(ConfigError, match=r"fsdp.units patterns \['pi.decoder.\*'\] match no module"):
        shard_units(model, ["pi.decoder.*"])


def test_every_layer_and_the_root_are_sharded_and_compute_what_the_plain_model_computes(one_rank):
    plain, sharded = build_model(), build_model()
    parallelize(sharded, FSDPConfig(enabled=True), "fp32", one_rank)
    assert [n for n, m in sharded.named_modules() if isinstance(m, FSDPModule)] == ["", *LAYERS]
    assert all(hasattr(p, "to_local") for p in sharded.parameters())  # every parameter is a DTensor shard
    batch = batch_of(plain)
    expected, actual = plain(batch)["loss"], sharded(batch)["loss"]
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-7)
    expected.backward()
    actual.backward()
    grad = sharded.pi.expert.layers[0].mlp.gate_proj.weight.grad.full_tensor()
    torch.testing.assert_close(grad, plain.pi.expert.layers[0].mlp.gate_proj.weight.grad, rtol=1e-5, atol=1e-7)


def test_the_last_vlm_layer_computes_only_key_values_so_that_method_is_registered(one_rank):
    model = build_model()
    parallelize(model, FSDPConfig(enabled=True, forward_methods=[]), "fp32", one_rank)
    with pytest.raises(RuntimeError, match="mixed torch.Tensor and DTensor"):
        model(batch_of(model))  # key_values ran on sharded parameters


def test_bf16_mixed_precision_computes_in_bf16_and_keeps_fp32_shards(one_rank):
    model = build_model()
    parallelize(model, FSDPConfig(enabled=True), "bf16", one_rank)
    seen = []
    layer = model.pi.expert.layers[0].mlp.gate_proj
    layer.register_forward_pre_hook(lambda module, args: seen.append(module.weight.dtype))
    out = model(batch_of(model))
    out["loss"].backward()
    assert seen == [torch.bfloat16] and out["loss"].dtype == torch.float32
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.grad.dtype for p in model.parameters() if p.grad is not None} == {torch.float32}


def test_mixed_precision_policy_follows_the_config():
    bf16 = mixed_precision_policy("bf16", "fp32")
    assert (bf16.param_dtype, bf16.reduce_dtype, bf16.cast_forward_inputs) == (torch.bfloat16, torch.float32, False)
    assert mixed_precision_policy("bf16", "bf16").reduce_dtype == torch.bfloat16
    fp32 = mixed_precision_policy("fp32", "fp32")
    assert (fp32.param_dtype, fp32.reduce_dtype) == (None, None)
    with pytest.raises(ConfigError, match="fp16"):
        mixed_precision_policy("fp16", "fp32")
