"""Quality for time: every causal zoo model on character-level tinyshakespeare, in one table.

    python bench/quality.py --budget 120            # this CPU: the loss each reaches in ~2 min
    python bench/quality.py --steps 2000 --models gcnn_lm transformer_lm   # nanoGPT's CPU run
    python bench/quality.py --gpu-target            # a GPU: time for transformer_lm to reach 1.47

CPU mode: each model (``transformer_lm``, ``lstm_lm``, ``gru_lm``, ``rnn_lm``, ``mlp_lm``,
``gcnn_lm``, small presets, batch 12, context 64: nanoGPT's CPU configuration) first runs a few
steps to measure its speed, then trains ``budget x steps/s`` steps (warm-up + cosine schedule over
exactly that many steps) with ``zoo.train``; the table gives the steps, the wall time and the
validation loss over the whole validation split (nats/char, as nanoGPT reports it). ``--steps N``
skips the probe and trains every model exactly ``N`` steps (nanoGPT's CPU budget: 2000).

GPU mode: nanoGPT's GPU recipe (6 layers, 6 heads, 384 wide, context 256, dropout 0.2, batch 64,
5000 steps, learning rate 1e-3) for ``transformer_lm``, validation measured every 250 steps; the
time to reach the published 1.4697 is interpolated from the first segment at or below it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import zoo  # noqa: E402

MODELS = ("transformer_lm", "lstm_lm", "gru_lm", "rnn_lm", "mlp_lm", "gcnn_lm")
NANOGPT_CPU = dict(batch_size=12, seq_len=64)
NANOGPT_GPU = dict(batch_size=64, seq_len=256, max_steps=5000, learning_rate=1e-3,
                   checkpoint_every=250, eval_batches=20, warmup_steps=100, beta_2=0.99)
NANOGPT_GPU_MODEL = dict(num_layers=6, num_heads=6, d_model=384, ffn_dim=1536, max_length=256,
                         dropout=0.2)
TARGET_LOSS = 1.4697  # nanoGPT's shakespeare_char validation loss


def steps_per_second(model: str, data: str, root: str, probe_steps: int) -> float:
    """Training steps per second of ``model``: two short runs of N and 3N steps, so tracing and
    the final evaluation cancel out: 2N / (t_3N - t_N) (3N / t_3N if the difference is too small
    to trust, which underestimates the rate: the budget is then not exceeded)."""
    seconds = []
    for steps in (probe_steps, 3 * probe_steps):
        run = zoo.train(model, data, os.path.join(root, f"probe-{model}-{steps}"), preset="small",
                        max_steps=steps, checkpoint_every=steps, eval_batches=1, verbose=0,
                        **NANOGPT_CPU)
        with open(os.path.join(run.path, "metrics.json")) as f:
            seconds.append(json.load(f)["train_seconds"])
    difference = seconds[1] - seconds[0]
    if difference < 0.2 * seconds[1]:
        return 3 * probe_steps / max(seconds[1], 1e-3)
    return 2 * probe_steps / difference


def cpu_table(args) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for model in args.models:
            if args.steps:
                steps = args.steps
            else:
                rate = steps_per_second(model, args.data, root, args.probe_steps)
                steps = max(int(args.budget * rate), 10)
            started = time.time()
            run = zoo.train(model, args.data, os.path.join(root, model), preset="small",
                            max_steps=steps, checkpoint_every=max(steps // 4, 1), eval_batches=10,
                            verbose=0, **NANOGPT_CPU)
            wall = time.time() - started
            with open(os.path.join(run.path, "metrics.json")) as f:
                metrics = json.load(f)
            rows.append((model, metrics["parameters"], steps, metrics["train_seconds"], wall,
                         metrics["validation"]["loss"]))
            print(f"{model}: {steps} steps, {metrics['train_seconds']:.0f} s, "
                  f"val loss {metrics['validation']['loss']:.3f}", flush=True)
    budget = f"{args.steps} steps" if args.steps else f"budget {args.budget:.0f} s of training"
    print(f"\n# tinyshakespeare (characters), small presets, batch {NANOGPT_CPU['batch_size']}, "
          f"context {NANOGPT_CPU['seq_len']}, {budget} each")
    print("| model | parameters | steps | train s | wall s (with evaluation) | "
          "validation loss (nats/char) |")
    print("|---|---|---|---|---|---|")
    for model, params, steps, train_s, wall, loss in sorted(rows, key=lambda r: r[-1]):
        print(f"| `{model}` | {params:,} | {steps} | {train_s:.0f} | {wall:.0f} | {loss:.3f} |")


def gpu_target(args) -> None:
    with tempfile.TemporaryDirectory() as root:
        run = zoo.train("transformer_lm", args.data, os.path.join(root, "gpu"), preset="small",
                        model_overrides=NANOGPT_GPU_MODEL, verbose=0, **NANOGPT_GPU)
        with open(os.path.join(run.path, "metrics.json")) as f:
            metrics = json.load(f)
    losses = metrics["history"].get("val_token_nll", [])
    seconds, every = metrics["train_seconds"], NANOGPT_GPU["checkpoint_every"]
    reached = next((i for i, loss in enumerate(losses) if loss <= TARGET_LOSS), None)
    print(f"transformer_lm, nanoGPT GPU recipe: {metrics['steps']} steps in {seconds:.0f} s, "
          f"final validation loss {metrics['validation']['loss']:.4f} (whole split)")
    if reached is None:
        print(f"did not reach {TARGET_LOSS} (best sampled validation {min(losses):.4f})")
    else:
        step = (reached + 1) * every
        print(f"reached {losses[reached]:.4f} <= {TARGET_LOSS} at step {step}, about "
              f"{seconds * step / metrics['steps']:.0f} s of training")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="dataset:tinyshakespeare")
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds per model")
    parser.add_argument("--probe-steps", type=int, default=100)
    parser.add_argument("--steps", type=int, default=0,
                        help="train every model exactly this many steps (no speed probe)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--gpu-target", action="store_true",
                        help="time transformer_lm to validation loss 1.47 (nanoGPT GPU recipe)")
    args = parser.parse_args(argv)
    if args.gpu_target:
        gpu_target(args)
    else:
        cpu_table(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
