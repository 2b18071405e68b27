"""Training throughput: the zoo's ``transformer_lm`` against keras-hub's GPT-2 causal LM, same
configuration, batch, precision and optimiser, side by side in one run.

    python bench/train_throughput.py --tiny                 # a small model, minutes on a CPU
    python bench/train_throughput.py                        # GPT-2 small (124M), sequence 1024

Both models are trained with ``model.fit`` on the same random token batches (AdamW, sparse
cross-entropy from logits). Both are built and warmed up first (``--warmup`` steps: tracing, XLA
compilation), then timed in alternating rounds (``bench/_rounds.py``): each of ``--rounds``
rounds runs ``--steps`` timed steps of each model in turn (one ``model.fit`` call each, its
first step, the call's start-up, untimed), the model going first alternating, so that a change
in the machine's load falls on both. A round's time is the median of its steps. Printed for each
model: the median over rounds of its training tokens/s, the model FLOP rate and the model FLOPs
utilisation (MFU); then the median of the per-round zoo / keras-hub ratios with its spread.

FLOPs per token (PaLM, Chowdhery et al. 2022, appendix B; nanoGPT's ``estimate_mfu``)::

    F = 6 N + 12 L H Q T

with N the parameters (without the position table), L layers, H heads, Q the head width, T the
sequence length: 6N for the forward and backward matmuls of the weights, 12LHQT for attention's
QK^T and AV. MFU = tokens/s x F / peak, with the dense bf16 peak of the device (H100 SXM 989
TFLOP/s, H100 PCIe 756; ``--peak-tflops`` for anything else; none is assumed for a CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench._rounds import QUIET_CORES, median, run_rounds, speed_ratio  # noqa: E402
from zoo.metrics import masked_lm_loss  # noqa: E402
from zoo.models import build_model  # noqa: E402
from zoo.models.flops import training_flops_per_token  # noqa: E402

GPT2_SMALL = dict(num_layers=12, num_heads=12, d_model=768, ffn_dim=3072, max_length=1024)
TINY = dict(num_layers=2, num_heads=4, d_model=128, ffn_dim=512, max_length=128)
GPT2_VOCAB = 50257
DENSE_BF16_PEAK_TFLOPS = {"H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0}


class StepTimer(keras.callbacks.Callback):
    """Wall time of every training step after the first ``warmup`` (tracing, compilation)."""

    def __init__(self, warmup: int):
        super().__init__()
        self.warmup = warmup
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch >= self.warmup:
            # The loss is read back so the step has really finished on an accelerator.
            float(logs["loss"]) if logs and "loss" in logs else None
            self.times.append(time.perf_counter() - self._start)


def token_batches(vocab: int, batch: int, seq_len: int, steps: int, seed: int = 0):
    """``steps`` random ``(x, y)`` int32 batches (shifted by one, as a language model trains)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, vocab, size=(steps, batch, seq_len + 1), dtype=np.int32)
    return tokens[:, :, :-1], tokens[:, :, 1:]


def fit_steps(model, dataset, steps: int, skip: int = 1) -> float:
    """Median seconds per step of one ``model.fit`` call of ``skip + steps`` steps, the first
    ``skip`` (the call's start-up; at the first call, tracing and compilation) untimed."""
    timer = StepTimer(skip)
    model.fit(dataset, epochs=1, steps_per_epoch=skip + steps, callbacks=[timer], verbose=0,
              shuffle=False)
    return float(np.median(timer.times))


def optimizer() -> keras.optimizers.Optimizer:
    return keras.optimizers.AdamW(learning_rate=3e-4, weight_decay=0.1, beta_2=0.95,
                                  global_clipnorm=1.0)


def zoo_model(sizes: dict, vocab: int, jit: bool, fused_qkv: bool = True):
    model = build_model("transformer_lm", vocab, "tiny", dropout=0.0, fused_qkv=fused_qkv, **sizes)
    model.compile(optimizer=optimizer(), loss=masked_lm_loss, jit_compile=jit)
    return model


def keras_hub_model(sizes: dict, vocab: int, jit: bool):
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=vocab, num_layers=sizes["num_layers"], num_heads=sizes["num_heads"],
        hidden_dim=sizes["d_model"], intermediate_dim=sizes["ffn_dim"], dropout=0.0,
        max_sequence_length=sizes["max_length"],
    )
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    model.compile(optimizer=optimizer(),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    return model


def peak_tflops(args) -> tuple[float | None, str]:
    if args.peak_tflops:
        return args.peak_tflops, "--peak-tflops"
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None, "CPU: no peak assumed"
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    for key in ("H100 PCIe", "H100 SXM", "H100", "A100"):
        if key.replace(" SXM", "") in name and (key != "H100 PCIe" or "PCIe" in name):
            return DENSE_BF16_PEAK_TFLOPS[key], name
    return None, f"{name}: unknown peak (give --peak-tflops)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="2 layers, 128 wide, sequence 128")
    parser.add_argument("--batch", type=int, help="default 8 (GPT-2 small) / 8 (tiny)")
    parser.add_argument("--seq-len", type=int, help="default: the configuration's context")
    parser.add_argument("--vocab", type=int, default=GPT2_VOCAB)
    parser.add_argument("--rounds", type=int, default=8,
                        help="alternating rounds (each: --steps timed steps of every model)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per model per round")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps per model before the rounds (tracing, compilation)")
    parser.add_argument("--precision", choices=["auto", "float32", "mixed_bfloat16"], default="auto",
                        help="auto: mixed_bfloat16 on a GPU, float32 on a CPU")
    parser.add_argument("--xla", choices=["auto", "on", "off"], default="auto",
                        help="auto: on on a GPU")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense peak, for MFU")
    parser.add_argument("--only", choices=["zoo", "keras_hub"], help="measure one side only")
    parser.add_argument("--separate-qkv", action="store_true",
                        help="the zoo model with three Q/K/V projections instead of one fused")
    parser.add_argument("--verbose", action="store_true", help="print every round's times")
    args = parser.parse_args(argv)
    if min(args.rounds, args.steps) < 1 or args.warmup < 0:
        parser.error("--rounds and --steps must be >= 1, --warmup >= 0")

    gpu = bool(tf.config.list_physical_devices("GPU"))
    sizes = dict(TINY if args.tiny else GPT2_SMALL)
    seq_len = args.seq_len or sizes["max_length"]
    sizes["max_length"] = max(sizes["max_length"], seq_len)
    batch = args.batch or 8
    precision = args.precision if args.precision != "auto" else ("mixed_bfloat16" if gpu else "float32")
    jit = args.xla == "on" or (args.xla == "auto" and gpu)
    keras.mixed_precision.set_global_policy(precision)
    peak, peak_source = peak_tflops(args)

    # Every fit call reads the same batches from the start: both models train on the same data.
    x, y = token_batches(args.vocab, batch, seq_len, 1 + args.steps)
    sides = [s for s in ("zoo", "keras_hub") if args.only in (None, s)]
    models, data, info = {}, {}, {}
    for side in sides:  # build and warm up every model before any timing
        keras.utils.set_random_seed(0)
        if side == "zoo":
            model = zoo_model(sizes, args.vocab, jit, fused_qkv=not args.separate_qkv)
            dataset = tf.data.Dataset.from_tensor_slices((x, y))
        else:
            model = keras_hub_model(sizes, args.vocab, jit)
            mask = np.ones_like(x, dtype=bool)
            dataset = tf.data.Dataset.from_tensor_slices(({"token_ids": x, "padding_mask": mask}, y))
        models[side], data[side] = model, dataset.repeat()
        fit_steps(model, data[side], 1, skip=args.warmup)
        info[side] = dict(params=model.count_params(),
                          flops=training_flops_per_token(model, seq_len, sizes))

    def one_round(side):
        return lambda: fit_steps(models[side], data[side], args.steps)

    rounds = run_rounds({side: one_round(side) for side in sides}, args.rounds,
                        progress=print if args.verbose else None)
    times = rounds.times

    print(f"# transformer training throughput, {'tiny' if args.tiny else 'GPT-2 small'}: "
          f"{sizes['num_layers']} layers, {sizes['num_heads']} heads, width {sizes['d_model']}, "
          f"vocab {args.vocab}, sequence {seq_len}, batch {batch}, {precision}, "
          f"XLA {'on' if jit else 'off'}, {'separate' if args.separate_qkv else 'fused'} QKV; "
          f"{args.rounds} alternating rounds of {args.steps} timed steps per model "
          f"(after {args.warmup} warm-up steps), medians over rounds; other processes' load "
          f"while timing: median {rounds.median_load():.2f} cores; "
          f"device {'GPU' if gpu else 'CPU'} ({peak_source})")
    print("| model | parameters | FLOPs/token | ms/step (min-max over rounds) | tokens/s | "
          "TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|")
    for side in sides:
        seconds, flops = median(times[side]), info[side]["flops"]
        tokens_per_s = batch * seq_len / seconds
        tflops = tokens_per_s * flops / 1e12
        mfu = f"{100 * tflops / peak:.1f}%" if peak else "n/a"
        name = "zoo transformer_lm" if side == "zoo" else "keras-hub GPT2CausalLM"
        print(f"| {name} | {info[side]['params']:,} | {flops / 1e6:.1f} M | {seconds * 1e3:.1f} "
              f"({min(times[side]) * 1e3:.1f}-{max(times[side]) * 1e3:.1f}) | "
              f"{tokens_per_s:,.0f} | {tflops:.3f} | {mfu} |")
    if len(sides) == 2:
        print(f"\nzoo / keras-hub tokens/s, median of per-round ratios: "
              f"{speed_ratio(times['zoo'], times['keras_hub'])}")
        quiet = rounds.quiet()
        if quiet and len(quiet) < args.rounds:
            print(f"  over the quiet rounds alone (other load < {QUIET_CORES} cores): "
                  f"{speed_ratio(times['zoo'], times['keras_hub'], quiet)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
