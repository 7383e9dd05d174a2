"""FAST tokenizer (fit / save / load / round trip), FAST cross-entropy beside the flow loss, KV-cached decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_batch, smooth_chunks, tokenize
from scipy.fft import dct, idct
from tau_models import FastTokenizer, PiModel, SampleTokenizer, tiny_pi05_config
from tau_models.tokenizer import FAST


def test_round_trip_is_exact_up_to_rounding(fast_dir):
    fast = FastTokenizer.load(fast_dir)
    chunks = smooth_chunks(50, seed=1)  # held out
    ids = fast.encode(chunks)
    decoded = fast.decode(ids, time_horizon=10, action_dim=32)
    rounded = idct(
        np.around(dct(chunks, axis=1, norm="ortho") * fast.scale) / fast.scale, axis=1, norm="ortho"
    )
    np.testing.assert_allclose(decoded, rounded, atol=1e-12)
    assert np.abs(decoded - chunks).max() < 0.5 / fast.scale * np.sqrt(10)
    assert max(len(x) for x in ids) < 10 * 32 / 2  # the BPE compresses


def test_every_in_range_value_encodes():
    """Upstream FAST can drop coefficients never seen in fitting; ours covers the whole fitted range."""
    chunks = smooth_chunks(40, seed=2)
    fast = FastTokenizer.fit(chunks, vocab_size=300)
    coeffs = np.around(dct(chunks, axis=1, norm="ortho") * fast.scale)
    lo, hi = int(coeffs.min()), int(coeffs.max())
    probe = np.zeros((1, 10, 32))
    probe_coeffs = np.zeros((10, 32))
    values = np.arange(lo, hi + 1)[:320]
    probe_coeffs.flat[: len(values)] = values
    probe[0] = idct(probe_coeffs / fast.scale, axis=0, norm="ortho")
    decoded = fast.decode(fast.encode(probe), 10, 32)
    np.testing.assert_allclose(decoded, probe, atol=1e-9)


def test_save_load_same_ids(fast_dir, tmp_path):
    fast = FastTokenizer.load(fast_dir)
    fast.save(tmp_path / "copy")
    again = FastTokenizer.load(tmp_path / "copy")
    chunks = smooth_chunks(5, seed=3)
    assert fast.encode(chunks) == again.encode(chunks)
    assert (again.scale, again.min_token, again.vocab_size) == (fast.scale, fast.min_token, fast.vocab_size)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        FastTokenizer.load(tmp_path)
    with pytest.raises(ValueError, match="vocab_size"):
        FastTokenizer.fit(smooth_chunks(20) * 50, vocab_size=16)


@pytest.fixture
def fast_model(fast_dir, tokenizer_dir):
    cfg = tiny_pi05_config(
        tokenizer_name=tokenizer_dir,
        fast_tokenizer_path=str(fast_dir),
        fast_loss_weight=1.0,
        flow_loss_weight=0.5,
        dropout=0.0,
        fast_max_tokens=60,
    )
    return PiModel(cfg)


def test_fast_ce_beside_flow_loss(fast_model):
    out = fast_model(tokenize(make_batch(2), fast_model))
    assert set(out) >= {"loss", "flow_loss", "fast_loss"}
    torch.testing.assert_close(out["loss"], 0.5 * out["flow_loss"] + 1.0 * out["fast_loss"])
    # near-uniform logits at init: CE close to log(vocab)
    assert 0.5 * np.log(1024) < out["fast_loss"].item() < 2 * np.log(1024)


def test_fast_ce_averages_over_real_tokens_only(fast_model):
    """Per-token mean over the batch == token-weighted mean of per-sample losses (padding never counts)."""
    batch = make_batch(2)
    batch["actions"][1] *= 0.1  # different FAST lengths for the two samples
    tokenizer = SampleTokenizer(fast_model.config)
    ids = [tokenizer.fast_ids({"actions": a}) for a in batch["actions"]]
    assert len(ids[0]) != len(ids[1])
    batch = tokenizer.tokenize_batch(batch)
    n_fast = [int(((k == FAST) & p).sum()) for k, p in zip(batch["token_kind"], batch["token_pad"])]
    assert n_fast == [len(x) for x in ids]
    noise, time = torch.randn(2, 10, 32), torch.rand(2)
    with torch.no_grad():
        joint = fast_model(batch, noise=noise, time=time)["fast_loss"]
        singles = []
        for i in range(2):
            one = {
                k: (v[i : i + 1] if isinstance(v, torch.Tensor) else v[i : i + 1]) for k, v in batch.items()
            }
            singles.append(fast_model(one, noise=noise[i : i + 1], time=time[i : i + 1])["fast_loss"])
    n = torch.tensor([len(x) for x in ids], dtype=torch.float32)
    torch.testing.assert_close(joint, (singles[0] * n[0] + singles[1] * n[1]) / n.sum(), rtol=1e-5, atol=1e-5)


def test_kv_cached_decoding_equals_recomputation(fast_model):
    """Greedy decoding with the growing KV cache picks the same tokens as re-running the whole prefix each step."""
    model = fast_model.eval()
    model.config.fast_max_tokens = 12
    batch = tokenize({k: v for k, v in make_batch(2).items() if k != "actions"}, model)  # acting: no FAST ids
    prefix = model.prefix_from_batch(batch)
    cached = model.generate_fast_tokens(prefix)
    top = model.config.vocab_size - 1 - model.config.fast_skip_tokens
    allowed = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    allowed[top - model.fast_tokenizer.vocab_size + 1 : top + 1] = True
    allowed[1] = True
    for i in range(2):
        one = {k: (v[i : i + 1] if isinstance(v, torch.Tensor) else v[i : i + 1]) for k, v in batch.items()}
        seq: list[int] = []
        for _ in range(12):
            p = model.extend_prefix(model.prefix_from_batch(one), [seq], FAST)
            with torch.no_grad():
                hidden, _ = model.backbone.run_prefix(p.embs, p.pad, p.flags)
                logits = model.backbone.logits(hidden[:, -1]).masked_fill(~allowed, float("-inf"))
            token = int(logits.argmax())
            if token == 1:
                break
            seq.append(token)
        assert cached[i] == [top - t for t in seq]


def test_fast_mode_sampling_decodes_chunks(fast_model):
    model = fast_model.eval()
    model.config.fast_max_tokens = 8
    actions = model.sample_actions(tokenize(make_batch(2), model), mode="fast")
    assert actions.shape == (2, 10, 32) and torch.isfinite(actions).all()


@pytest.mark.parametrize(
    "head", [dict(), dict(fast_head="separate", fast_vocab_size=256, prompt_format="opentau")]
)
def test_fast_overfits_and_decodes(fast_dir, tokenizer_dir, head):
    """A few steps on one batch teach the VLM the FAST tokens; fast-mode sampling then decodes the chunk (on the VLM
    vocabulary ending at <eos>, or with OpenTau's separate head and marker, decoding fast_max_tokens ids)."""
    torch.manual_seed(0)
    cfg = tiny_pi05_config(
        tokenizer_name=tokenizer_dir,
        fast_tokenizer_path=str(fast_dir),
        fast_loss_weight=1.0,
        flow_loss_weight=0.0,
        dropout=0.0,
        fast_max_tokens=60,
        **head,
    )
    model = PiModel(cfg)
    batch = make_batch(1)
    batch["actions"] = torch.as_tensor(smooth_chunks(1, seed=5), dtype=torch.float32)
    target = batch["actions"]
    acting = tokenize({k: v for k, v in batch.items() if k != "actions"}, model)
    batch = tokenize(batch, model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss = model(batch)["fast_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert loss.item() < 0.05
    actions = model.sample_actions(acting, mode="fast")
    assert (actions - target).abs().max() < 0.2
    # a training batch (its FAST ids in the prefix) samples the same: inference masks the target tokens out
    torch.testing.assert_close(model.sample_actions(batch, mode="fast"), actions)


def test_loads_upstream_layout(tmp_path):
    """Files in the published physical-intelligence/fast layout (ByteLevel BPE + processor_config.json) load and
    round-trip; the algorithm is upstream's, so ids agree with encoding the same text through that BPE."""
    import json

    from tokenizers import ByteLevelBPETokenizer, trainers

    chunks = smooth_chunks(200, seed=7)
    coeffs = np.around(dct(chunks, axis=1, norm="ortho") * 10).astype(int)
    lo = int(coeffs.min())
    texts = ["".join(map(chr, (c.reshape(-1) - lo).tolist())) for c in coeffs]
    bpe = ByteLevelBPETokenizer()._tokenizer
    alphabet = [chr(i) for i in range(int(coeffs.max()) - lo + 1)]
    trainer = trainers.BpeTrainer(
        vocab_size=512, min_frequency=2, initial_alphabet=alphabet, show_progress=False
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    bpe.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "processor_config.json").write_text(
        json.dumps(
            {
                "action_dim": 32,
                "min_token": lo,
                "scale": 10,
                "time_horizon": 10,
                "vocab_size": 512,
                "processor_class": "UniversalActionProcessor",
            }
        )
    )
    fast = FastTokenizer.load(tmp_path)
    ids = fast.encode(chunks[:20])
    assert ids == [bpe.encode(t).ids for t in texts[:20]]
    decoded = fast.decode(ids)
    rounded = idct(coeffs[:20] / 10.0, axis=1, norm="ortho")
    np.testing.assert_allclose(decoded, rounded, atol=1e-12)
