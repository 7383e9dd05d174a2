"""tau-models CPU benchmark: pi0.5 train step (forward + backward + AdamW) and sample_actions (10 Euler steps).

Single thread, fp32, batch 8, the batch tokenized once beforehand (as the loader workers do). Reports the minimum process CPU-seconds over several repetitions (robust on a shared
machine), the wall time of that repetition, and the peak RSS. Two configs:
  parity  the LeRobot parity fixture's tiny pi0.5 (shared/parity/pi05_tiny_a: 2 cameras 56x56, chunk 10, vocab 1024)
  lerobot the config LeRobot 0.6.1 was measured at in shared/research/models.md section 2.3 (3 cameras 56x56,
          chunk 50, vocab 257152, state/action dim 14), compared with its published CPU-seconds;
  lerobot-v1024  the same with the VLM vocabulary cut to 1024 (also measured for LeRobot there).
Each measurement runs in its own process. AdamW runs both as torch's default (a per-tensor loop on CPU) and fused=True.

--train-step instead times only forward + backward of the tiny pi0.5 (2 cameras 56x56, chunk 10, batch 32, fp32,
dropout 0), without and with the FAST loss, and, where tau_models has SampleTokenizer, the tokenization of that
batch apart (the loader workers' share). It runs against any tau_models on PYTHONPATH, so the same command measures
an older commit (e.g. PYTHONPATH=<old checkout>/packages/tau-models/src) whose model tokenized inside the step.

Usage: python benchmarks/tau_models_bench.py [--config parity|lerobot|lerobot-v1024|all]
           [--optimizer default|fused|both] [--steps 6] [--shared DIR] [--train-step]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import tau_models  # noqa: E402
from tau_models import FastTokenizer, PiModel, config_from_lerobot, tiny_pi05_config  # noqa: E402

TASKS = [
    "pick up the red block",
    "stack the cubes in the bowl",
    "open the top drawer",
    "push the button twice",
]


def shared_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get("TAU_SHARED_DIR"):
        return Path(os.environ["TAU_SHARED_DIR"])
    return Path(__file__).resolve().parents[2] / "shared"


def make_batch(batch: int, cams: int, size: int, chunk: int, state_dim: int, action_dim: int) -> dict:
    g = torch.Generator().manual_seed(0)
    state = torch.zeros(batch, 32)
    state[:, :state_dim] = torch.rand(batch, state_dim, generator=g) * 2 - 1
    actions = torch.zeros(batch, chunk, 32)
    actions[:, :, :action_dim] = torch.rand(batch, chunk, action_dim, generator=g) * 2 - 1
    return {
        "images": torch.rand(batch, cams, 3, size, size, generator=g),
        "image_mask": torch.ones(batch, cams, dtype=torch.bool),
        "state": state,
        "state_dim": torch.full((batch,), state_dim),
        "actions": actions,
        "action_dim": torch.full((batch,), action_dim),
        "action_is_pad": torch.zeros(batch, chunk, dtype=torch.bool),
        "prompt": [TASKS[i % len(TASKS)] for i in range(batch)],
    }


def timed(fn, repeats: int) -> tuple[float, float]:
    """Minimum process CPU-seconds over repeats (after one warm-up call) and the wall time of that repetition."""
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        best = min(best, (time.process_time() - c0, time.perf_counter() - w0))
    return best


def bench(name: str, model: PiModel, batch: dict, steps: int, fused: bool) -> dict:
    batch = tau_models.SampleTokenizer(model.config).tokenize_batch(batch)  # the loader workers' share, untimed
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2.5e-5, betas=(0.9, 0.95), fused=fused)
    model.train()

    def train_step() -> None:
        loss = model(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    train_cpu, train_wall = timed(train_step, steps)
    model.eval()
    infer_cpu, infer_wall = timed(lambda: model.sample_actions(batch, num_steps=10), max(3, steps // 2))
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"[{name}, AdamW {'fused' if fused else 'default'}] params {n_params / 1e6:.2f} M | train step {train_cpu:.3f} CPU-s ({train_wall:.3f} s wall) | "
        f"sample_actions(10) {infer_cpu:.3f} CPU-s ({infer_wall:.3f} s wall) | peak RSS {rss_gb:.2f} GB"
    )
    return {"train": train_cpu, "infer": infer_cpu, "rss": rss_gb}


def smooth_actions(batch: int, chunk: int, action_dim: int, seed: int) -> torch.Tensor:
    """Smooth action chunks in [-1, 1] zero-padded to 32 dims (FAST compresses them like real trajectories)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, chunk)[None, :, None]
    shape = (batch, 1, action_dim)
    waves = rng.uniform(0.2, 0.9, shape) * np.sin(
        2 * np.pi * rng.uniform(0.2, 1.5, shape) * t + rng.uniform(0, 2 * np.pi, shape)
    )
    out = np.zeros((batch, chunk, 32), dtype=np.float32)
    out[:, :, :action_dim] = waves
    return torch.from_numpy(out)


def train_step(parity: Path, steps: int) -> None:
    """CPU-seconds of forward + backward (no optimizer) at batch 32, with the tokenization done where it happens."""
    sample_tokenizer = getattr(tau_models, "SampleTokenizer", None)
    where = "before the step (SampleTokenizer)" if sample_tokenizer else "inside forward"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, tau_models from "
          f"{Path(tau_models.__file__).parent}, tokenization {where}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        FastTokenizer.fit(smooth_actions(400, 10, 7, seed=1).numpy(), vocab_size=256).save(tmp)
        for fast in (False, True):
            extra = dict(fast_tokenizer_path=tmp, fast_loss_weight=1.0) if fast else {}
            cfg = tiny_pi05_config(tokenizer_name=str(parity / "tokenizer"), dropout=0.0, **extra)
            torch.manual_seed(0)
            model = PiModel(cfg).train()
            batch = make_batch(32, 2, 56, 10, 8, 7)
            batch["actions"] = smooth_actions(32, 10, 7, seed=2)
            note = ""
            if sample_tokenizer is not None:
                tokenizer = sample_tokenizer(cfg)
                tok_cpu, _ = timed(lambda: tokenizer.tokenize_batch(batch), steps)
                batch = tokenizer.tokenize_batch(batch)
                note = f" | SampleTokenizer on the batch {tok_cpu:.3f} CPU-s (in the loader workers)"

            def step() -> None:
                model.zero_grad(set_to_none=True)
                model(batch)["loss"].backward()

            cpu, wall = timed(step, steps)
            print(f"[train step, batch 32, {'flow + FAST' if fast else 'flow'}] forward+backward {cpu:.3f} CPU-s "
                  f"({wall:.3f} s wall){note}", flush=True)


CONFIGS = ("parity", "lerobot", "lerobot-v1024")
# LeRobot 0.6.1 figures (models.md section 2.3) for the configs measured there: (train CPU-s, sample CPU-s).
LEROBOT = {"lerobot": (1.29, 0.31), "lerobot-v1024": (0.28, 0.33)}


def run_one(config: str, fused: bool, steps: int, parity: Path) -> None:
    tokenizer = str(parity / "tokenizer")
    if config == "parity":
        cfg = config_from_lerobot(parity / "checkpoint", vision_num_heads=4, tokenizer_name=tokenizer)
        result = bench(
            "parity tiny: 2 cams 56px, chunk 10, vocab 1024",
            PiModel(cfg),
            make_batch(8, 2, 56, 10, 8, 7),
            steps,
            fused,
        )
    else:
        vocab = 257152 if config == "lerobot" else 1024
        cfg = tiny_pi05_config(tokenizer_name=tokenizer, vocab_size=vocab, chunk_size=50, dropout=0.0)
        result = bench(
            f"models.md 2.3: 3 cams 56px, chunk 50, vocab {vocab}",
            PiModel(cfg),
            make_batch(8, 3, 56, 50, 14, 14),
            steps,
            fused,
        )
        train_ref, infer_ref = LEROBOT[config]
        print(
            f"  vs LeRobot 0.6.1 at this config (models.md 2.3, default AdamW): train {train_ref} CPU-s -> ratio "
            f"{result['train'] / train_ref:.2f}; sample_actions {infer_ref} CPU-s -> ratio "
            f"{result['infer'] / infer_ref:.2f} (target <= 0.5)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    parser.add_argument(
        "--optimizer",
        choices=["default", "fused", "both"],
        default="both",
        help="torch AdamW implementation (LeRobot's figures used the default)",
    )
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--shared", default=None)
    parser.add_argument("--train-step", action="store_true", help="time forward + backward only (see above)")
    args = parser.parse_args()
    if args.train_step:
        torch.set_num_threads(1)
        train_step(shared_dir(args.shared) / "parity" / "pi05_tiny_a", args.steps)
        return
    if args.config == "all" or args.optimizer == "both":
        # one process per measurement, so that each peak RSS is its own
        configs = CONFIGS if args.config == "all" else (args.config,)
        optimizers = ("default", "fused") if args.optimizer == "both" else (args.optimizer,)
        for config in configs:
            for opt in optimizers:
                cmd = [
                    sys.executable,
                    __file__,
                    "--config",
                    config,
                    "--optimizer",
                    opt,
                    "--steps",
                    str(args.steps),
                ]
                if args.shared:
                    cmd += ["--shared", args.shared]
                subprocess.run(cmd, check=True)
        return
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch 8, fp32", flush=True)
    run_one(
        args.config, args.optimizer == "fused", args.steps, shared_dir(args.shared) / "parity" / "pi05_tiny_a"
    )


if __name__ == "__main__":
    main()
