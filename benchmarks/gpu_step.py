"""GPU check: full pi0.5 (random init, no download) trained in bf16 with FSDP2 on all local GPUs; one summary line.

Builds the model on each GPU, shards it with tau_train.parallelize (bf16 compute, fp32 shards and reduce), runs
warm-up and timed AdamW (fused) steps on random 3-camera 224^2 batches with a chunk of 50, and prints samples/s,
the peak memory (torch.cuda.max_memory_allocated, beside benchmarks/tau_train_memory.py's prediction), MFU (model
FLOPs from the same model over the H100/H200 bf16 dense peak) and the attention kernel torch chose. A few minutes
on one H100/H200-class GPU. With --tiny it runs a tiny pi0.5 on the CPU instead (fp32, gloo), which CI does.

Usage: python benchmarks/gpu_step.py [--batch 8] [--steps 10] [--warmup 3] [--peak-tflops 989]
       python benchmarks/gpu_step.py --tiny [--processes 2]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tau_models import PiModel, SampleTokenizer, pi05_config, tiny_pi05_config
from tau_models.local_tokenizer import build_local_tokenizer
from tau_train_memory import Workload, predict

from tau_train import FSDPConfig, parallelize

TASKS = ["pick up the red block and put it in the bowl", "open the top drawer", "stack the cubes on the plate"]
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "H20": 148.0, "A100": 312.0, "B200": 2250.0}


def launch_all_devices(args: argparse.Namespace) -> bool:
    """Re-run this script under torchrun with one process per GPU (or --processes on the CPU); True if it did."""
    if "LOCAL_RANK" in os.environ:
        return False
    processes = torch.cuda.device_count() if torch.cuda.is_available() and not args.tiny else args.processes
    if processes <= 1:
        return False
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               *sys.argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    sys.exit(subprocess.run(command, env=env).returncode)


def batch_of(cfg, batch: int, cameras: int, device: torch.device, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    size = cfg.vision.image_size
    values = {
        "images": torch.rand(batch, cameras, 3, size, size, generator=g),
        "image_mask": torch.ones(batch, cameras, dtype=torch.bool),
        "state": torch.rand(batch, cfg.max_state_dim, generator=g) * 2 - 1,
        "actions": torch.rand(batch, cfg.chunk_size, cfg.max_action_dim, generator=g) * 2 - 1,
        "action_is_pad": torch.zeros(batch, cfg.chunk_size, dtype=torch.bool),
        "noise": torch.randn(batch, cfg.chunk_size, cfg.max_action_dim, generator=g),
        "time": torch.rand(batch, generator=g) * 0.9 + 0.05,
    }
    values["prompt"] = [TASKS[i % len(TASKS)] for i in range(batch)]
    values = SampleTokenizer(cfg).tokenize_batch(values, advantage=None)  # token ids, as the loader workers make them
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in values.items()}


def attention_kernel(cfg, batch: int, prefix: int, dtype: torch.dtype, device: torch.device) -> str:
    """The SDPA backend torch picks for the VLM's masked grouped-query attention at these shapes."""
    g = cfg.vlm
    q = torch.randn(batch, g.num_heads, prefix, g.head_dim, dtype=dtype, device=device, requires_grad=True)
    kv = torch.randn(batch, g.num_kv_heads, prefix, g.head_dim, dtype=dtype, device=device, requires_grad=True)
    mask = torch.zeros(batch, 1, prefix, prefix, dtype=dtype, device=device)
    out = F.scaled_dot_product_attention(q, kv, kv, attn_mask=mask, enable_gqa=True)
    name = type(out.grad_fn).__name__ if out.grad_fn is not None else ""
    for kernel in ("Cudnn", "Flash", "Efficient"):
        if kernel in name:
            return kernel.lower()
    return "math"


def peak_tflops(args: argparse.Namespace) -> float:
    """The bf16 dense peak of this GPU: --peak-tflops, else by its name (H100/H200: 989)."""
    if args.peak_tflops:
        return args.peak_tflops
    name = torch.cuda.get_device_name()
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), 989.0)


def fitting_batch(cfg, cameras: int, world: int, device: torch.device) -> int:
    """The largest of 8, 4, 2, 1 samples per GPU whose predicted peak stays under 85% of the GPU's memory."""
    memory = torch.cuda.get_device_properties(device).total_memory
    for batch in (8, 4, 2, 1):
        w = Workload(cfg, batch, cameras, precision="bf16", fsdp=world, gradient_checkpointing=cfg.gradient_checkpointing)
        if predict(w).peak <= 0.85 * memory:
            return batch
    raise SystemExit(f"pi0.5 is predicted not to fit in {memory / 2**30:.0f} GiB even at batch 1")


def tracked_peak(model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: dict) -> int:
    """CPU: the peak bytes of one more step under torch's MemTracker (no allocator statistics on the CPU)."""
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(model, optimizer, *[t for t in data.values() if torch.is_tensor(t)])
    with tracker:
        model(data, noise=data["noise"], time=data["time"])["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny pi0.5 on the CPU (fp32, gloo): the CI check")
    parser.add_argument("--processes", type=int, default=1, help="CPU processes with --tiny")
    parser.add_argument("--batch", type=int, default=None,
                        help="samples per GPU (default: the largest of 8, 4, 2, 1 that the memory model puts under 85%% "
                             "of the GPU's memory; 2 with --tiny)")
    parser.add_argument("--checkpointing", action="store_true", help="PiConfig.gradient_checkpointing")
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10; 2 with --tiny)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; 1 with --tiny)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak of one GPU")
    args = parser.parse_args()
    launch_all_devices(args)
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        raise SystemExit("gpu_step.py needs a CUDA GPU; use --tiny to check it on the CPU")
    steps, warmup = args.steps or (2 if args.tiny else 10), args.warmup or (1 if args.tiny else 3)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if "LOCAL_RANK" in os.environ:
        dist.init_process_group("nccl" if cuda else "gloo")
    torch.set_num_threads(1 if args.tiny else torch.get_num_threads())
    precision = "bf16" if cuda else "fp32"

    with tempfile.TemporaryDirectory() as folder:
        tokenizer = str(build_local_tokenizer(folder, TASKS))
        build = tiny_pi05_config if args.tiny else pi05_config
        cfg = build(tokenizer_name=tokenizer, dropout=0.0, tokenizer_max_length=96 if args.tiny else 200,
                    gradient_checkpointing=args.checkpointing)
        world = dist.get_world_size() if dist.is_initialized() else 1
        batch = args.batch or (2 if args.tiny else fitting_batch(cfg, args.cameras, world, device))
        torch.manual_seed(0)
        with torch.device(device):
            model = PiModel(cfg).train()
        parameters = sum(p.numel() for p in model.parameters())
        parallelize(model, FSDPConfig(enabled=True), precision, device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
        rank = dist.get_rank()
        data = batch_of(cfg, batch, args.cameras, device, seed=rank)
        lengths: list[int] = []
        hook = model.backbone.language_model.layers[0].register_forward_pre_hook(lambda m, a: lengths.append(a[0].shape[1]))
        losses = []
        for index in range(warmup + steps):
            if index == warmup:
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                started = time.perf_counter()
            loss = model(data, noise=data["noise"], time=data["time"])["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            hook.remove()
        if cuda:
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - started) / steps
        peak = torch.cuda.max_memory_allocated() if cuda else tracked_peak(model, optimizer, data)
    prompt = lengths[0] - args.cameras * cfg.vision.num_patches
    kernel = attention_kernel(cfg, batch, lengths[0], torch.bfloat16 if cuda else torch.float32, device)
    w = Workload(cfg, batch, args.cameras, prompt_tokens=prompt, precision=precision, fsdp=world,
                 gradient_checkpointing=args.checkpointing, attention="math" if kernel == "math" else "fused",
                 device=device.type)
    prediction = predict(w)
    peaks = torch.tensor([float(peak)], device=device)
    dist.all_reduce(peaks, op=dist.ReduceOp.MAX)
    achieved = prediction.model_flops / seconds / 1e12
    if rank == 0:
        finite = all(math.isfinite(x) for x in losses)
        utilisation = f"MFU {achieved / peak_tflops(args):.1%}" if cuda else f"{achieved * 1e3:.1f} GFLOP/s (CPU)"
        memory = f"peak {peaks.item() / 2**30:.2f} GiB" if cuda else f"peak {peaks.item() / 2**30:.3f} GiB (MemTracker)"
        print(f"gpu_step: pi0.5 {parameters / 1e6:,.1f}M params | {world} x {torch.cuda.get_device_name() if cuda else 'CPU'} | "
              f"FSDP2 {precision} | batch {batch}/process, {args.cameras} cameras, prefix {lengths[0]} + chunk {cfg.chunk_size} | "
              f"{batch * world / seconds:.2f} samples/s ({seconds:.3f} s/step) | {memory}, predicted "
              f"{prediction.peak / 2**30:.3f} GiB | {utilisation} | attention {kernel} | "
              f"loss {losses[0]:.4f} -> {losses[-1]:.4f}{'' if finite else ' NON-FINITE'}", flush=True)
    dist.destroy_process_group()
    # Skip interpreter teardown, as packages/tau-train/tests/tiny_pi.py does: on a loaded CPU a gloo C++ thread has
    # aborted a process at exit ("terminate called without an active exception") after the figures were printed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
