"""Memory and FLOPs model of one pi0.5 training step (forward, backward, AdamW), validated on the CPU.

For a PiConfig, a per-GPU micro-batch, a sequence (cameras x image tokens + prompt, then the action chunk), a
precision, gradient checkpointing on/off and N-way FSDP2, it predicts the bytes each GPU holds for parameters,
gradients, AdamW moments, gathered (unsharded) FSDP parameters and saved activations, the peak over the step, and
the FLOPs of the step. Activations are counted tensor by tensor as PiModel's forward saves them for backward
(`Stage` lists per layer), so the model can be checked against torch's own trackers:

  python benchmarks/tau_train_memory.py           # full pi0.5 on 8 x 80 GB GPUs, beside OpenTau's figures
  python benchmarks/tau_train_memory_check.py     # tiny and small configs measured on the CPU against the model

Validation measures the peak with torch.distributed._tools.mem_tracker.MemTracker (also inside each of 2 gloo
FSDP2 processes) and FLOPs with torch.utils.flop_counter.FlopCounterMode (math attention, whose matmuls it sees).
Scope: pi0.5 flow-matching training (no FAST / response loss), full fine-tuning, AdamW. Not modelled: the CUDA
context and allocator fragmentation (typically 1-3 GiB per GPU), NCCL buffers.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field

from tau_models import PiConfig, pi05_config

GIB = 2**30
FP32 = 4


@dataclass
class Workload:
    """One training step on one GPU (or CPU process)."""

    config: PiConfig
    batch: int  # micro-batch per process
    cameras: int = 3
    prompt_tokens: int | None = None  # prompt length after padding (default: config.tokenizer_max_length)
    precision: str = "fp32"  # fp32, or bf16 = FSDP2 mixed precision (bf16 compute, fp32 shards and reduce)
    gradient_checkpointing: bool = False  # PiModel's: every Gemma layer of the VLM and the expert
    fsdp: int = 0  # shard over this many processes with tau_train.parallelize (0: no FSDP, a full replica)
    reshard_after_forward: bool = True  # False keeps every gathered layer from its forward to its backward (ZeRO-2)
    attention: str = "fused"  # fused (flash / cuDNN / CPU flash: q, k, v, out, lse) or math (probabilities)
    device: str = "cuda"  # dropout keeps a 1-byte mask on CUDA, a mask in the activation dtype on the CPU
    accumulation_steps: int = 1  # micro-batches per optimizer step (gradients live through the later forwards)

    @property
    def act_bytes(self) -> int:
        return 2 if self.precision == "bf16" else FP32

    @property
    def patches(self) -> int:
        return self.config.vision.num_patches

    @property
    def prefix(self) -> int:
        cfg = self.config
        prompt = self.prompt_tokens if self.prompt_tokens is not None else cfg.tokenizer_max_length
        return self.cameras * self.patches + prompt + (1 if cfg.state_mode == "continuous" else 0)

    @property
    def suffix(self) -> int:
        return self.config.chunk_size


@dataclass
class Stage:
    """A piece of the forward pass in execution order: bytes it saves for backward, its parameters' gradient
    bytes, and the transient peaks of its forward and backward above what is saved."""

    name: str
    saved: int
    grads: int = 0
    forward_temp: int = 0
    backward_temp: int = 0
    params: int = 0  # parameter elements of this stage's FSDP unit (0: in the root unit)
    early_grads: int | None = None  # gradient bytes already made at the backward peak (None: all of `grads`)
    held: int = 0  # activation-gradient bytes its backward leaves for an earlier stage (< 0: it consumes them)


@dataclass
class Prediction:
    """Per-process bytes (and FLOPs) of one training step."""

    parameters: int
    gradients: int
    optimizer: int
    gathered: int  # FSDP: unsharded parameter copies alive at the peak (root + the layers being computed)
    activations: int  # saved for backward at the end of the forward pass
    inputs: int
    peak: int
    flops: int  # as executed (recomputation under gradient checkpointing included)
    model_flops: int  # forward + backward without recomputation (for MFU)
    stages: list[Stage] = field(default_factory=list, repr=False)


# ---------------------------------------------------------------------------------------------------- parameters


def _linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def siglip_layer_params(cfg: PiConfig) -> int:
    w, m = cfg.vision.width, cfg.vision.mlp_dim
    return 4 * _linear(w, w) + 4 * w + _linear(w, m) + _linear(m, w)


def gemma_layer_params(cfg: PiConfig, tower: str) -> tuple[int, int]:
    """(parameters, of which used by the key/value-only last VLM layer) of one Gemma layer."""
    g = getattr(cfg, tower)
    q, kv = g.num_heads * g.head_dim, g.num_kv_heads * g.head_dim
    norm = _linear(cfg.expert.width, 3 * g.width) if tower == "expert" else g.width
    attn = g.width * q + 2 * g.width * kv + q * g.width
    total = attn + 3 * g.width * g.mlp_dim + 2 * norm
    return total, 2 * g.width * kv + norm


def root_params(cfg: PiConfig) -> int:
    """Everything outside the layers: embeddings, projections, final norms, time MLP."""
    v, lm, ex = cfg.vision, cfg.vlm, cfg.expert
    vision = v.width * 3 * v.patch_size**2 + v.width + v.num_patches * v.width + 2 * v.width
    total = vision + _linear(v.width, lm.width) + cfg.vocab_size * lm.width + lm.width
    total += _linear(ex.width, 3 * ex.width)  # the expert's final adaRMS norm
    total += _linear(cfg.max_action_dim, ex.width) + _linear(ex.width, cfg.max_action_dim) + 2 * _linear(ex.width, ex.width)
    if cfg.state_mode == "continuous":
        total += _linear(cfg.max_state_dim, lm.width)
    return total


def parameter_count(cfg: PiConfig) -> tuple[int, int]:
    """(all parameters, those that get a gradient in flow-matching training: not the VLM's final norm nor the
    last VLM layer's query / output / MLP weights, which the key/value-only last layer never uses)."""
    if cfg.variant != "pi05" or cfg.uses_fast or cfg.response_loss_weight > 0:
        raise ValueError("the model covers pi0.5 flow-matching training only (no FAST / response loss)")
    vlm, vlm_kv = gemma_layer_params(cfg, "vlm")
    expert, _ = gemma_layer_params(cfg, "expert")
    layers = cfg.vision.depth * siglip_layer_params(cfg) + cfg.vlm.depth * vlm + cfg.expert.depth * expert
    total = root_params(cfg) + layers
    return total, total - (vlm - vlm_kv) - cfg.vlm.width


# ---------------------------------------------------------------------------------------------------- activations


def _attention_saved(w: Workload, batch: int, heads: int, kv_heads: int, head_dim: int, q_len: int, k_len: int,
                     cat_kv: bool) -> tuple[int, int, int]:
    """(saved, forward transient, backward transient) bytes of one scaled_dot_product_attention call.

    fused: q, k, v, out and the log-sum-exp (fp32); `cat_kv` when k / v are concatenations made for this call.
    math: sqrt-scaled q and k (k and v repeated to the query heads), the softmax probabilities, v, and the
    output copy the output projection reads.
    """
    a = w.act_bytes
    q = batch * heads * q_len * head_dim * a
    probs = batch * heads * q_len * k_len * a
    if w.attention == "fused":
        kv = 2 * batch * kv_heads * k_len * head_dim * a if cat_kv else 2 * batch * kv_heads * q_len * head_dim * a
        return 2 * q + kv + batch * heads * q_len * FP32, 0, q + kv
    expanded = 2 * batch * heads * k_len * head_dim * a
    return 2 * q + expanded + probs, probs, 2 * probs


def _norm_saved(w: Workload, tokens: int, width: int, adaptive: bool, batch: int) -> int:
    """(Ada)RMSNorm in float32: the float32 input, the normalised values, the output in the activation dtype,
    1 / rms; adaptive norms also keep 1 + scale (fp32) and their dense output (the residual gate reads it)."""
    saved = tokens * width * (2 * FP32 + w.act_bytes) + tokens * FP32
    if adaptive:
        saved += batch * width * FP32 + batch * 3 * width * w.act_bytes
    return saved


def _dropout_bytes(w: Workload, elements: int) -> int:
    if w.config.dropout <= 0:
        return 0
    return elements * (1 if w.device == "cuda" else w.act_bytes)


def stages(w: Workload) -> list[Stage]:
    """The forward pass of PiModel as stages, each with what it saves for backward (see the module docstring)."""
    cfg, a, b = w.config, w.act_bytes, w.batch
    v, lm, ex = cfg.vision, cfg.vlm, cfg.expert
    images = b * w.cameras
    nv, p, s = images * w.patches, w.prefix, w.suffix
    pa = a if w.fsdp else FP32  # gradient dtype of the unsharded parameters
    gc = w.gradient_checkpointing
    out: list[Stage] = []

    conv = v.width * 3 * v.patch_size**2 + v.width + v.num_patches * v.width
    out.append(Stage("vision.embeddings", images * 3 * v.image_size**2 * a, conv * pa, nv * v.width * a))
    siglip = siglip_layer_params(cfg)
    for i in range(v.depth):
        attn, fwd_t, bwd_t = _attention_saved(w, images, v.num_heads, v.num_heads, v.width // v.num_heads,
                                              w.patches, w.patches, cat_kv=False)
        saved = 4 * nv * v.width * a + 2 * nv * v.mlp_dim * a + 4 * nv * FP32 + attn
        temp = nv * v.width * a + max(2 * nv * v.mlp_dim * a, bwd_t)
        out.append(Stage(f"vision.layer{i}", saved, siglip * pa, fwd_t, temp, params=siglip,
                         early_grads=_linear(v.mlp_dim, v.width) * pa))
    tokens = p - w.cameras * w.patches
    prefix_grads = 2 * v.width + _linear(v.width, lm.width) + cfg.vocab_size * lm.width
    saved = 2 * nv * v.width * a + 2 * nv * FP32 + b * tokens * 8
    out.append(Stage("prefix", saved, prefix_grads * pa, b * p * lm.width * a, b * p * lm.width * a))

    tables = 2 * b * p * lm.head_dim * FP32 + b * p * p * a
    vlm, vlm_kv = gemma_layer_params(cfg, "vlm")
    kv_out = 2 * b * lm.num_kv_heads * p * lm.head_dim * a
    for i in range(lm.depth - 1):
        attn, fwd_t, bwd_t = _attention_saved(w, b, lm.num_heads, lm.num_kv_heads, lm.head_dim, p, p, False)
        full = (2 * _norm_saved(w, b * p, lm.width, False, b) + attn + 4 * b * p * lm.mlp_dim * a
                + 2 * _dropout_bytes(w, b * p * lm.width))
        temp = b * p * lm.width * a + max(2 * b * p * lm.mlp_dim * a, bwd_t)
        saved = (b * p * lm.width * a + kv_out if gc else full) + (tables if i == 0 else 0)
        out.append(Stage(f"vlm.layer{i}", saved, vlm * pa, fwd_t, temp + (full if gc else 0), params=vlm,
                         early_grads=lm.mlp_dim * lm.width * pa, held=-kv_out))
    saved = _norm_saved(w, b * p, lm.width, False, b) + (kv_out if gc else 0)
    out.append(Stage(f"vlm.layer{lm.depth - 1}.kv", saved, vlm_kv * pa, kv_out, b * p * lm.width * a,
                     params=vlm, held=-kv_out))

    suffix_grads = _linear(cfg.max_action_dim, ex.width) + 2 * _linear(ex.width, ex.width)
    out.append(Stage("suffix", b * s * cfg.max_action_dim * a + 5 * b * ex.width * a, suffix_grads * pa))
    tables = 2 * b * s * ex.head_dim * FP32 + b * s * (p + s) * a
    expert, _ = gemma_layer_params(cfg, "expert")
    for i in range(ex.depth):
        attn, fwd_t, bwd_t = _attention_saved(w, b, ex.num_heads, ex.num_kv_heads, ex.head_dim, s, p + s, True)
        gated = 2 * (b * s * ex.width * a + _dropout_bytes(w, b * s * ex.width))
        full = 2 * _norm_saved(w, b * s, ex.width, True, b) + attn + 4 * b * s * ex.mlp_dim * a + gated
        temp = b * s * ex.width * a + max(2 * b * s * ex.mlp_dim * a, bwd_t)
        saved = (b * s * ex.width * a if gc else full) + (tables if i == 0 else 0)
        out.append(Stage(f"expert.layer{i}", saved, expert * pa, fwd_t, temp + (full if gc else 0), params=expert,
                         early_grads=ex.mlp_dim * ex.width * pa, held=kv_out))
    head_grads = _linear(ex.width, 3 * ex.width) + _linear(ex.width, cfg.max_action_dim)
    saved = _norm_saved(w, b * s, ex.width, True, b) - b * 3 * ex.width * a + 2 * b * s * cfg.max_action_dim * FP32
    out.append(Stage("head", saved, head_grads * pa))
    return out


def inputs_bytes(w: Workload) -> int:
    """The batch on the device: float32 images, state, actions, noise."""
    cfg = w.config
    return FP32 * w.batch * (w.cameras * 3 * cfg.vision.image_size**2 + cfg.max_state_dim
                             + 2 * cfg.chunk_size * cfg.max_action_dim)


# ---------------------------------------------------------------------------------------------------- prediction


def predict(w: Workload) -> Prediction:
    """Per-process memory and FLOPs of one training step of `w` (see the module docstring)."""
    if w.precision not in ("fp32", "bf16") or (w.precision == "bf16" and not w.fsdp):
        raise ValueError("precision is fp32, or bf16 with FSDP2 mixed precision (fsdp >= 1)")
    if w.attention not in ("fused", "math"):
        raise ValueError(f"attention is fused or math, got {w.attention!r}")
    total, trained = parameter_count(w.config)
    shards = max(w.fsdp, 1)
    parameters = FP32 * math.ceil(total / shards)
    gradients = FP32 * math.ceil(trained / shards)
    optimizer = 2 * gradients
    plan = stages(w)
    gathered_root = gathered_unit = 0
    if w.fsdp:
        gathered_root = w.act_bytes * root_params(w.config)
        gathered_unit = w.act_bytes * max(s.params for s in plan)
    inputs = inputs_bytes(w)
    base = parameters + optimizer + inputs + gathered_root
    live = base + (gradients if w.accumulation_steps > 1 else 0)
    peak = kept = 0  # kept: gathered layers held between forward and backward (reshard_after_forward=False)
    for stage in plan:  # forward: saved tensors accumulate
        unit = w.act_bytes * stage.params if w.fsdp else 0
        peak = max(peak, live + kept + stage.saved + stage.forward_temp + unit)
        live += stage.saved
        kept += 0 if w.reshard_after_forward else unit
    activations = live - base - (gradients if w.accumulation_steps > 1 else 0)
    live += kept
    grads = gradients if w.accumulation_steps > 1 else 0
    held = 0
    for stage in reversed(plan):  # backward: gradients appear as saved tensors are freed
        gathered = 2 * w.act_bytes * stage.params if w.fsdp else 0  # this unit and the next, prefetched
        early = stage.grads if stage.early_grads is None else stage.early_grads
        peak = max(peak, live + grads + held + early + stage.backward_temp + gathered)
        live -= stage.saved + (0 if w.reshard_after_forward else gathered // 2)
        held += stage.held
        if w.fsdp and stage.params:
            # post-backward: the unit's unsharded gradients and the fp32 reduce-scatter input, then fp32 shards
            peak = max(peak, live + grads + held + gathered + stage.grads + stage.grads // w.act_bytes * FP32)
            grads += stage.grads // w.act_bytes * FP32 // shards
        else:
            grads += stage.grads
    if w.fsdp:  # the root unit reduce-scatters last
        root = sum(s.grads for s in plan if not s.params)
        peak = max(peak, live + grads + root // w.act_bytes * FP32)
    peak = max(peak, base + gradients)  # the fused AdamW step allocates nothing more
    flops, model_flops = step_flops(w)
    gathered = gathered_root + (2 * gathered_unit if w.reshard_after_forward else kept)
    return Prediction(parameters, gradients, optimizer, gathered, activations, inputs, peak, flops, model_flops, plan)


# ---------------------------------------------------------------------------------------------------- FLOPs


def _mm(tokens: int, fan_in: int, fan_out: int, input_grad: bool = True) -> tuple[int, int]:
    """(forward, backward) FLOPs of a linear layer: the weight gradient always, the input gradient if needed."""
    forward = 2 * tokens * fan_in * fan_out
    return forward, forward * (2 if input_grad else 1)


def _attention(w: Workload, batch: int, heads: int, head_dim: int, q_len: int, k_len: int) -> tuple[int, int, int]:
    """(forward, backward as executed, backward without recomputing the scores): fused kernels recompute the
    scores in backward (5 matmuls, as torch's FlopCounterMode counts them), math keeps them (4)."""
    unit = 2 * batch * heads * q_len * k_len * head_dim
    return 2 * unit, (5 if w.attention == "fused" else 4) * unit, 4 * unit


def step_flops(w: Workload) -> tuple[int, int]:
    """(FLOPs of one micro-batch forward + backward as executed, model FLOPs without any recomputation)."""
    cfg, b = w.config, w.batch
    v, lm, ex = cfg.vision, cfg.vlm, cfg.expert
    nv, p, s = b * w.cameras * w.patches, w.prefix, w.suffix
    parts: list[tuple[int, int, int, bool]] = []  # (forward, backward executed, backward model, recomputed)

    def linear(tokens: int, fan_in: int, fan_out: int, input_grad: bool = True, recomputed: bool = False) -> None:
        fwd, bwd = _mm(tokens, fan_in, fan_out, input_grad)
        parts.append((fwd, bwd, bwd, recomputed))

    def attention(batch: int, heads: int, head_dim: int, q_len: int, k_len: int, recomputed: bool) -> None:
        parts.append((*_attention(w, batch, heads, head_dim, q_len, k_len), recomputed))

    linear(nv, 3 * v.patch_size**2, v.width, input_grad=False)  # the patch convolution
    for _ in range(v.depth):
        for _ in range(4):
            linear(nv, v.width, v.width)
        linear(nv, v.width, v.mlp_dim)
        linear(nv, v.mlp_dim, v.width)
        attention(b * w.cameras, v.num_heads, v.width // v.num_heads, w.patches, w.patches, False)
    linear(nv, v.width, lm.width)
    gc = w.gradient_checkpointing
    q, kv = lm.num_heads * lm.head_dim, lm.num_kv_heads * lm.head_dim
    for _ in range(lm.depth - 1):
        for fan_in, fan_out in ((lm.width, q), (lm.width, kv), (lm.width, kv), (q, lm.width)):
            linear(b * p, fan_in, fan_out, recomputed=gc)
        for fan_in, fan_out in ((lm.width, lm.mlp_dim),) * 2 + ((lm.mlp_dim, lm.width),):
            linear(b * p, fan_in, fan_out, recomputed=gc)
        attention(b, lm.num_heads, lm.head_dim, p, p, gc)
    linear(b * p, lm.width, kv)
    linear(b * p, lm.width, kv)
    linear(b * s, cfg.max_action_dim, ex.width, input_grad=False)
    linear(b, ex.width, ex.width, input_grad=False)
    linear(b, ex.width, ex.width)
    q, kv = ex.num_heads * ex.head_dim, ex.num_kv_heads * ex.head_dim
    for _ in range(ex.depth):
        linear(b, ex.width, 3 * ex.width, recomputed=gc)
        linear(b, ex.width, 3 * ex.width, recomputed=gc)
        for fan_in, fan_out in ((ex.width, q), (ex.width, kv), (ex.width, kv), (q, ex.width)):
            linear(b * s, fan_in, fan_out, recomputed=gc)
        for fan_in, fan_out in ((ex.width, ex.mlp_dim),) * 2 + ((ex.mlp_dim, ex.width),):
            linear(b * s, fan_in, fan_out, recomputed=gc)
        attention(b, ex.num_heads, ex.head_dim, s, p + s, gc)
    linear(b, ex.width, 3 * ex.width)
    linear(b * s, ex.width, cfg.max_action_dim)
    executed = sum(f + bwd + (f if again else 0) for f, bwd, _, again in parts)
    model = sum(f + bwd for f, _, bwd, _ in parts)
    return executed, model


# ---------------------------------------------------------------------------------------------------- full pi0.5

OPENTAU_ZERO2 = {8: 53.3, 16: 78.7}  # GiB per rank, pi05 full fine-tune, 8 x A100-80GB, chunk 10, no checkpointing


def full_pi05(batch: int, gradient_checkpointing: bool, *, chunk: int = 50, gpus: int = 8, attention: str = "fused",
              reshard_after_forward: bool = True) -> Workload:
    """Full pi0.5 at 224^2 with 3 cameras and 200-token prompts, bf16 FSDP2 over `gpus` GPUs."""
    return Workload(pi05_config(chunk_size=chunk), batch, cameras=3, precision="bf16", fsdp=gpus,
                    gradient_checkpointing=gradient_checkpointing, attention=attention, device="cuda",
                    reshard_after_forward=reshard_after_forward)


def _row(label: str, w: Workload, memory_gib: float, tflops: float, mfu: float) -> str:
    p = predict(w)
    seconds = p.flops / (tflops * 1e12 * mfu)  # executed FLOPs: checkpointing's recomputation costs time
    fits = "yes" if p.peak <= memory_gib * GIB else "NO"
    return (f"{label:<34} {p.parameters / GIB:6.2f} {p.gradients / GIB:6.2f} {p.optimizer / GIB:6.2f} "
            f"{p.gathered / GIB:8.2f} {p.activations / GIB:11.2f} {p.peak / GIB:8.2f}  {fits:<4} "
            f"{p.flops / 1e12:9.1f} {w.batch / seconds:9.1f}")


def print_full_pi05(gpus: int, memory_gib: float, tflops: float, mfu: float) -> None:
    """The predictions for full pi0.5, and the model at OpenTau's published ZeRO-2 setting."""
    total, _ = parameter_count(pi05_config())
    w = full_pi05(8, False)
    print(f"pi0.5, {total / 1e9:.2f} B parameters; sequence {w.cameras} x {w.patches} image tokens + "
          f"{w.config.tokenizer_max_length} prompt = {w.prefix} prefix + {w.suffix} action tokens; "
          f"per GPU of {gpus} x {memory_gib:.0f} GB, bf16 FSDP2 (fp32 shards and reduce), fused AdamW")
    print(f"GiB per GPU; TFLOP per micro-batch step (forward + backward, recomputation included); samples/s per GPU "
          f"if the GPU runs those FLOPs at {mfu:.0%} of {tflops:.0f} TFLOP/s. CUDA context and allocator slack "
          "(1-3 GiB) are not included.")
    header = f"{'batch / checkpointing / attention':<34} {'params':>6} {'grads':>6} {'adam':>6} {'gathered':>8} " \
             f"{'activations':>11} {'peak':>8}  fits {'TFLOP':>9} {'samples/s':>9}"
    print(header)
    for batch in (8, 16, 32):
        for checkpointing in (False, True):
            for attention in ("fused", "math"):
                w = full_pi05(batch, checkpointing, gpus=gpus, attention=attention)
                label = f"{batch} / {'on' if checkpointing else 'off'} / {attention}"
                print(_row(label, w, memory_gib, tflops, mfu))
    print("\nOpenTau's setting: chunk 10, no checkpointing, 8 GPUs, ZeRO-2-like (bf16 parameters kept gathered):")
    print(header)
    for batch, published in OPENTAU_ZERO2.items():
        w = full_pi05(batch, False, chunk=10, gpus=8, reshard_after_forward=False)
        print(_row(f"{batch} / off / fused", w, memory_gib, tflops, mfu) + f"   OpenTau measured {published} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--gpu-memory-gib", type=float, default=80.0)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
    parser.add_argument("--mfu", type=float, default=0.4, help="assumed FLOPs utilisation for samples/s")
    args = parser.parse_args()
    print_full_pi05(args.gpus, args.gpu_memory_gib, args.peak_tflops, args.mfu)


if __name__ == "__main__":
    main()
