"""OpenTau 0.14 pi0.5 with its FAST head (shared/interop/opentau_pi05_fast_a): every key loads (FAST embedding and
da_head into tau's separate FAST head, normalisation statistics into the LoadReport), and tau reproduces OpenTau's
prompts, ids, flow loss, FAST cross-entropy, da_head logits and sampled actions (fp32, <= 1e-4)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tau_models import SampleTokenizer, from_pretrained, load_pi_checkpoint
from tau_models.tokenizer import FAST, MARKER

TOL = dict(rtol=0.0, atol=1e-4)
EPS = 1e-6  # OpenTau's normalisation epsilon (config_version 1)


@pytest.fixture(scope="module")
def fixture(opentau_dir):
    model, report = load_pi_checkpoint(
        opentau_dir / "checkpoint", vision_num_heads=2, tokenizer_name=str(opentau_dir / "tokenizer")
    )
    read = lambda name: {k: v.clone() for k, v in load_file(str(opentau_dir / name)).items()}  # noqa: E731
    prompts = json.loads((opentau_dir / "prompts.json").read_text())
    return model.eval(), report, read("inputs.safetensors"), read("outputs.safetensors"), prompts


def tokenized(model, inputs, outputs, prompts, training=True):
    """OpenTau's batch as a tau sample batch: normalised state/actions from its own normalisers (the policy layer's
    job), the MIN_MAX-normalised chunk as fast_actions, all 32 state dims binned (OpenTau bins the padding too)."""
    batch = {
        "images": torch.stack([inputs[f"camera{i}"] for i in range(2)], dim=1),
        "image_mask": torch.ones(2, 2, dtype=torch.bool),
        "state": outputs["train.state_normalized"],
        "prompt": prompts["tasks"],
    }
    if training:
        batch.update(
            actions=outputs["train.actions_normalized"],
            fast_actions=outputs["train.discrete_actions_normalized"],
            action_dim=inputs["real_action_dim"],
            action_is_pad=inputs["action_is_pad"],
        )
    return SampleTokenizer(model.config).tokenize_batch(batch)


def test_every_key_loads_and_the_config_is_read(fixture, opentau_dir):
    model, report, *_ = fixture
    assert report.layout == "opentau" and report.missing == [] and report.unexpected == []
    assert report.ignored == ["model.paligemma_with_expert.paligemma.lm_head.weight"]  # tied to embed_tokens
    assert sorted(report.normalization) == sorted(
        f"{module}.buffer_{feature}.{stat}"
        for module, feature, stats in [
            ("normalize_inputs", "state", ("mean", "std")),
            ("normalize_targets", "actions", ("mean", "std")),
            ("normalize_discrete_actions", "actions", ("min", "max")),
            ("unnormalize_outputs", "actions", ("mean", "std")),
        ]
        for stat in stats
    )
    assert all(v.shape == (1, 32) for v in report.normalization.values())
    cfg = model.config
    assert (cfg.fast_head, cfg.fast_vocab_size, cfg.fast_max_tokens, cfg.prompt_format) == (
        "separate", 256, 40, "opentau"
    )
    assert cfg.fast_tokenizer_path == str(opentau_dir / "fast_tokenizer") and cfg.fast_loss_weight == 1.0
    assert (cfg.tokenizer_max_length, cfg.chunk_size, cfg.vision.image_size) == (160, 8, 42)
    assert cfg.dropout == 0.1 and cfg.knowledge_insulation
    file = load_file(str(opentau_dir / "checkpoint" / "model.safetensors"))
    assert torch.equal(model.fast_head.da_head.weight, file["model.paligemma_with_expert.da_head.weight"])
    assert torch.equal(
        model.fast_head.discrete_action_embedding.weight,
        file["model.paligemma_with_expert.discrete_action_embedding.weight"],
    )


def test_normalization_statistics_rebuild_opentau_normalisers(fixture):
    """The statistics in the report are the ones OpenTau normalised with (MEAN_STD: std := 1 below eps)."""
    _, report, inputs, outputs, _ = fixture
    stats = report.normalization
    mean, std = stats["normalize_inputs.buffer_state.mean"][0], stats["normalize_inputs.buffer_state.std"][0]
    std = torch.where(std.abs() < EPS, torch.ones_like(std), std)
    torch.testing.assert_close((inputs["state"] - mean) / (std + EPS), outputs["train.state_normalized"], **TOL)
    lo, hi = stats["normalize_discrete_actions.buffer_actions.min"][0], stats["normalize_discrete_actions.buffer_actions.max"][0]
    r = hi - lo
    d = torch.where(r.abs() < EPS, torch.ones_like(r), r)
    minmax = (inputs["actions"] - lo + 0.5 * (d - r)) / (d + EPS) * 2 - 1
    torch.testing.assert_close(minmax, outputs["train.discrete_actions_normalized"], **TOL)


def test_prompts_and_token_ids_match_opentau(fixture):
    model, _, inputs, outputs, prompts = fixture
    tokenizer = SampleTokenizer(model.config)
    texts = [tokenizer.prompt_text({"prompt": t, "state": s}) for t, s in zip(prompts["tasks"], outputs["train.state_normalized"])]
    assert texts == prompts["train_prompts"]  # the task verbatim, the state clamped to [-1, 1] before binning
    batch = tokenized(model, inputs, outputs, prompts)
    for i in range(2):
        n, m = int(outputs["train.lang_masks"][i].sum()), int(outputs["train.discrete_action_masks"][i].sum())
        tokens, kind = batch["tokens"][i], batch["token_kind"][i]
        assert torch.equal(tokens[:n], outputs["train.lang_tokens"][i, :n])
        assert tokens[n : n + 3].tolist() == prompts["discrete_action_indicator_ids"]
        assert torch.equal(tokens[n + 3 : n + 3 + m], outputs["train.discrete_action_tokens"][i, :m])
        assert kind[n : n + 3].eq(MARKER).all() and kind[n + 3 : n + 3 + m].eq(FAST).all()
        assert int(batch["token_pad"][i].sum()) == n + 3 + m  # no <eos> after a separate head's FAST ids


def test_flow_loss_and_fast_cross_entropy_match(fixture):
    model, _, inputs, outputs, prompts = fixture
    with torch.no_grad():
        out = model(tokenized(model, inputs, outputs, prompts), noise=inputs["noise"], time=inputs["time"])
    torch.testing.assert_close(out["flow_loss"], outputs["loss.MSE"], **TOL)
    # tau averages the FAST cross-entropy over real tokens; OpenTau's per-sample sums / counts give that mean
    per_token = outputs["loss.CE_per_sample.sum"].sum() / outputs["loss.CE_per_sample.count"].sum()
    torch.testing.assert_close(out["fast_loss"], per_token, **TOL)


def test_da_head_logits_match(fixture):
    model, _, inputs, outputs, prompts = fixture
    with torch.no_grad():
        prefix = model.prefix_from_batch(tokenized(model, inputs, outputs, prompts))
        hidden, _ = model.backbone.run_prefix(prefix.embs, prefix.pad, prefix.flags)
        logits = model.fast_logits(hidden)
    for i in range(2):
        fast = ((prefix.kind[i] == FAST) & prefix.pad[i]).nonzero()[:, 0]
        m = int(outputs["train.discrete_action_masks"][i].sum())
        assert len(fast) == m
        torch.testing.assert_close(logits[i, fast - 1], outputs["train.da_logits"][i, :m], **TOL)


def test_sample_actions_match(fixture):
    """Flow sampling from an acting sample (no actions) in normalised and, through the stats, robot units."""
    model, report, inputs, outputs, prompts = fixture
    batch = tokenized(model, inputs, outputs, prompts, training=False)
    actions = model.sample_actions(batch, noise=inputs["sample_noise"])
    torch.testing.assert_close(actions, outputs["sample_actions_normalized"], **TOL)
    std = report.normalization["unnormalize_outputs.buffer_actions.std"][0]
    mean = report.normalization["unnormalize_outputs.buffer_actions.mean"][0]
    std = torch.where(std.abs() < EPS, torch.ones_like(std), std)
    robot = actions * (std + EPS) + mean
    torch.testing.assert_close(robot[..., :7], outputs["sample_actions_robot"][..., :7], rtol=0.0, atol=1e-4)
    training = tokenized(model, inputs, outputs, prompts)  # its FAST ids are masked out for inference
    torch.testing.assert_close(model.sample_actions(training, noise=inputs["sample_noise"]), actions)


def test_fast_decoding_with_the_separate_head(fixture):
    """Greedy KV-cached decoding over da_head equals recomputing the prefix each step; mode="fast" decodes chunks."""
    model, _, inputs, outputs, prompts = fixture
    batch = tokenized(model, inputs, outputs, prompts, training=False)
    prefix = model.prefix_from_batch(batch).without_fast()
    model.config.fast_max_tokens = 6
    try:
        cached = model.generate_fast_tokens(prefix)
        for i in range(2):
            one = model.prefix_from_batch({k: v[i : i + 1] for k, v in batch.items()})
            seq: list[int] = []
            for _ in range(6):
                p = model.extend_prefix(one, [seq], FAST)
                with torch.no_grad():
                    hidden, _ = model.backbone.run_prefix(p.embs, p.pad, p.flags)
                    last = int(p.pad[0].nonzero()[-1])
                    seq.append(int(model.fast_logits(hidden[:, last]).argmax()))
            assert cached[i] == seq and all(0 <= t < 256 for t in seq)
        chunks = model.sample_actions(batch, mode="fast")
    finally:
        model.config.fast_max_tokens = 40
    assert chunks.shape == (2, 8, 32) and torch.isfinite(chunks).all()


def test_tau_checkpoint_of_the_opentau_model_keeps_parity(fixture, tmp_path):
    model, _, inputs, outputs, prompts = fixture
    model.save_pretrained(tmp_path)
    reloaded = from_pretrained(tmp_path).eval()  # strict
    assert (reloaded.config.fast_head, reloaded.config.prompt_format) == ("separate", "opentau")
    batch = tokenized(reloaded, inputs, outputs, prompts, training=False)
    actions = reloaded.sample_actions(batch, noise=inputs["sample_noise"])
    torch.testing.assert_close(actions, outputs["sample_actions_normalized"], **TOL)
