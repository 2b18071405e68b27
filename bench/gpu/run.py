"""GPU benchmark kit: the zoo on JAX against keras-hub (JAX) and Hugging Face (PyTorch), and
the time for the zoo to train nanoGPT's shakespeare-char model to a validation loss, in one run
that fits one 10-minute command on an H100. No TensorFlow is imported (or needed).

    python3 bench/gpu/run.py --json $OUT/gpu.json      # on the GPU machine (see README.md)
    python3 bench/gpu/run.py --cpu-smoke               # tiny sizes, same code paths, CPU minutes

Phase a, training throughput of GPT-2 small (124M: 12 layers, 12 heads, width 768, FFN 3072,
vocab 50,257, context 1024), bf16 mixed precision, AdamW (lr 3e-4, beta2 0.95, weight decay
0.1, global norm clipping 1.0), no dropout, the same random token batches for all:

* zoo: ``zoo.models.build_model("gpt2", preset="small")``, ``zoo.metrics.masked_lm_loss``,
  ``model.fit`` on JAX (jit);
* keras-hub: ``GPT2CausalLM`` over a ``GPT2Backbone`` of the same sizes (no preprocessor),
  sparse cross-entropy from logits, ``model.fit`` on JAX (jit);
* HF: ``transformers.GPT2LMHeadModel`` (``attn_implementation="sdpa"``) under bf16 autocast,
  ``torch.compile`` over model + loss, fused ``torch.optim.AdamW``.

Every system is built and warmed up once (compilation), then the systems are timed in
alternating rounds (zoo, keras-hub, HF, zoo, keras-hub, HF, ...), each round ``--steps`` steps
of each, synchronised before and after (JAX: the step's outputs are ready; torch:
``torch.cuda.synchronize``). Per system: the median over rounds of tokens/s and MFU; per pair:
the median of the per-round ratios with their min-max. FLOPs per token ``6N + 12LHQT``
(``zoo.models.flops``); MFU against the dense bf16 peak (H100 SXM / H200: 989 TFLOP/s).

Phase b, time to quality: ``zoo.train("transformer_lm", "prepared:DIR", preset="base",
backend="jax", ...)`` at nanoGPT's shakespeare-char GPU settings until the validation token NLL
over the whole validation split reaches ``--target`` (1.47), in a child process (a clean device
and a hard wall-clock limit). Reported: the wall time (compilation included), the steps, and the
validation curve from ``RUN/metrics.json``.

Each phase has a wall-clock budget, and the whole run one (``--total-budget``, 560 s): past its
budget the throughput phase builds no further system and stops after the round in progress (at
least ``--min-rounds``), and the shakespeare child is killed; both report what they reached.
"""

from __future__ import annotations

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported, here and in the child
os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # torch shares the GPU
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, REPO)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

DEFAULT_DATA = os.path.join(REPO, "device-data", "shakespeare_char")
# Dense bf16 peaks in TFLOP/s, matched against the device name in this order.
PEAKS = (("H100 PCIe", 756.0), ("GH200", 989.0), ("H200", 989.0), ("H100", 989.0),
         ("A100", 312.0))
SYSTEMS = ("zoo", "keras_hub", "hf")
# The kit's goals: zoo MFU, zoo/keras-hub, zoo/HF, seconds to the shakespeare target.
GOALS = {"mfu": 0.40, "zoo/keras_hub": 1.1, "zoo/hf": 1.0, "shakespeare_s": 120.0}
LABELS = {"zoo": "zoo {zoo_model} (JAX)", "keras_hub": "keras-hub GPT2CausalLM (JAX)",
          "hf": "HF GPT2LMHeadModel ({torch_mode})"}


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """A GPT-2-shaped decoder: layers, heads, width, FFN width, vocabulary, context."""

    num_layers: int
    num_heads: int
    d_model: int
    ffn_dim: int
    vocab: int
    context: int


GPT2_SMALL = Sizes(12, 12, 768, 3072, 50257, 1024)
SMOKE_SIZES = Sizes(2, 2, 64, 256, 512, 64)


@dataclass(frozen=True)
class ThroughputPlan:
    """Phase a: sizes, batch, sequence, rounds, timed steps per round, warm-up steps, budget."""

    sizes: Sizes
    batch: int
    seq_len: int
    rounds: int
    steps: int
    warmup: int
    budget_s: float
    systems: tuple[str, ...]
    min_rounds: int = 3
    torch_compile: bool = True
    zoo_model: str = "gpt2"  # or transformer_lm (fused Q/K/V, GPT-2's choices)

    def label(self, system: str) -> str:
        """The table's name of ``system``."""
        return LABELS[system].format(zoo_model=self.zoo_model, torch_mode="torch.compile"
                                     if self.torch_compile else "eager")


@dataclass(frozen=True)
class ShakespearePlan:
    """Phase b: the arguments of ``zoo.train`` and the wall-clock budget of the child."""

    data: str
    preset: str
    batch_size: int
    seq_len: int
    max_steps: int
    checkpoint_every: int
    target: float
    warmup_steps: int
    budget_s: float
    learning_rate: float = 1e-3
    weight_decay: float = 0.1
    beta_2: float = 0.99
    min_learning_rate_ratio: float = 0.1

    def train_kwargs(self) -> dict:
        """Keyword arguments of ``zoo.train`` (after model, data, out)."""
        return dict(preset=self.preset, backend="jax", batch_size=self.batch_size,
                    seq_len=self.seq_len, max_steps=self.max_steps,
                    checkpoint_every=self.checkpoint_every, eval_batches=None,
                    target_validation_loss=self.target, learning_rate=self.learning_rate,
                    weight_decay=self.weight_decay, beta_2=self.beta_2,
                    warmup_steps=self.warmup_steps,
                    min_learning_rate_ratio=self.min_learning_rate_ratio)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (defaults: GPT-2 small on a GPU; ``--cpu-smoke`` shrinks everything)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes, a few steps, any device")
    p.add_argument("--json", help="write every figure to this JSON file")
    p.add_argument("--data", default=DEFAULT_DATA, help="directory made by `zoo prepare`")
    p.add_argument("--only", choices=["throughput", "shakespeare"], help="run one phase")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma-separated subset of zoo,keras_hub,hf")
    p.add_argument("--peak-tflops", type=float, help="dense bf16 peak for MFU (else by name)")
    p.add_argument("--batch", type=int, help="throughput batch (default 16; smoke 4)")
    p.add_argument("--seq-len", type=int, help="throughput sequence (default: the context)")
    p.add_argument("--rounds", type=int, help="alternating rounds (default 7; smoke 3)")
    p.add_argument("--steps", type=int, help="timed steps per system per round (10; smoke 3)")
    p.add_argument("--warmup", type=int, help="untimed steps per system first (5; smoke 3)")
    p.add_argument("--no-torch-compile", action="store_true", help="HF in eager mode")
    p.add_argument("--zoo-model", choices=["gpt2", "transformer_lm"], default="gpt2",
                   help="the zoo's model: gpt2, or transformer_lm with GPT-2's choices")
    p.add_argument("--target", type=float, help="validation loss target (1.47; smoke 3.6)")
    p.add_argument("--max-steps", type=int, help="shakespeare step limit (5000; smoke 60)")
    p.add_argument("--min-rounds", type=int, default=3,
                   help="rounds that run even past the throughput budget")
    p.add_argument("--throughput-budget", type=float, help="seconds (default 240; smoke 240)")
    p.add_argument("--shakespeare-budget", type=float, help="seconds (default 270; smoke 240)")
    p.add_argument("--total-budget", type=float, default=560.0,
                   help="seconds for the whole run; the shakespeare budget shrinks to fit")
    p.add_argument("--shakespeare-child", help=argparse.SUPPRESS)  # internal: plan as JSON
    p.add_argument("--scratch", help=argparse.SUPPRESS)  # internal: the child's directory
    return p.parse_args(argv)


def throughput_plan(args: argparse.Namespace) -> ThroughputPlan:
    """Phase a's plan from the command line."""
    smoke = args.cpu_smoke
    sizes = SMOKE_SIZES if smoke else GPT2_SMALL
    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    unknown = set(systems) - set(SYSTEMS)
    if unknown or not systems:
        raise SystemExit(f"--systems: choose from {', '.join(SYSTEMS)} (got {args.systems!r})")
    return ThroughputPlan(
        sizes=sizes, batch=args.batch or (4 if smoke else 16),
        seq_len=args.seq_len or sizes.context, rounds=args.rounds or (3 if smoke else 7),
        steps=args.steps or (3 if smoke else 10), warmup=args.warmup or (3 if smoke else 5),
        budget_s=args.throughput_budget or 240.0, systems=systems, min_rounds=args.min_rounds,
        torch_compile=not args.no_torch_compile, zoo_model=args.zoo_model,
    )


def shakespeare_plan(args: argparse.Namespace, seconds_left: float) -> ShakespearePlan:
    """Phase b's plan: nanoGPT's shakespeare-char GPU settings (smoke: the tiny preset), its
    budget cut to ``seconds_left``."""
    smoke = args.cpu_smoke
    budget = args.shakespeare_budget or (240.0 if smoke else 270.0)
    return ShakespearePlan(
        data=os.path.abspath(args.data), preset="tiny" if smoke else "base",
        batch_size=32 if smoke else 64, seq_len=64 if smoke else 256,
        max_steps=args.max_steps or (60 if smoke else 5000),
        checkpoint_every=20 if smoke else 250, target=args.target or (3.6 if smoke else 1.47),
        warmup_steps=5 if smoke else 100,
        budget_s=max(1.0, min(budget, seconds_left)),
    )


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


def version(package: str) -> str | None:
    """The installed version of ``package``, or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Device names (JAX and torch), package versions, date: recorded with every result."""
    import torch

    device = jax.devices()[0]
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "jax_device": device.device_kind if device.platform == "gpu" else device.platform,
        "torch_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "versions": {name: version(name) for name in
                     ("jax", "jaxlib", "keras", "keras-hub", "torch", "transformers", "numpy")},
        "tensorflow_installed": version("tensorflow") is not None,
    }


def peak_tflops(env: dict, given: float | None) -> tuple[float | None, str]:
    """The dense bf16 peak for MFU: ``--peak-tflops``, else by device name, else None (CPU)."""
    if given:
        return given, "--peak-tflops"
    name = env["torch_device"] if env["torch_device"] != "cpu" else env["jax_device"]
    for key, peak in PEAKS:
        if key in name:
            return peak, f"{name}: dense bf16 {peak:.0f} TFLOP/s"
    return None, f"{name}: no peak known (give --peak-tflops)"


def sync_jax(tree) -> None:
    """Wait until every JAX array in ``tree`` is computed."""
    jax.block_until_ready(tree)


# --------------------------------------------------------------------------------------------
# Phase a: the three systems
# --------------------------------------------------------------------------------------------


def token_batches(sizes: Sizes, batch: int, seq_len: int, count: int = 4, seed: int = 0):
    """``count`` random ``(x, y)`` int32 batches, ``y`` = ``x`` shifted by one (ids from 4)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, sizes.vocab, size=(count, batch, seq_len + 1), dtype=np.int32)
    return [(t[:, :-1].copy(), t[:, 1:].copy()) for t in tokens]


class System:
    """A warmed-up trainer: ``run(steps)`` trains ``steps`` steps, synchronised before and
    after, and returns the seconds they took."""

    name: str = ""
    params: int = 0
    flops_per_token: int | None = None  # the zoo's count, where the system can give it
    last_loss: float = float("nan")

    def run(self, steps: int) -> float:
        raise NotImplementedError


class FirstStepClock(keras.callbacks.Callback):
    """Synchronises and starts a clock as the first step of ``fit`` begins.

    It defines no ``on_*_batch_end``, so Keras keeps dispatching the steps asynchronously."""

    start = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            sync_jax([v.value for v in self.model.trainable_variables])
            self.start = time.perf_counter()


class KerasSystem(System):
    """A compiled Keras model trained with ``model.fit`` on the given batches."""

    def __init__(self, name: str, model, batches: list, batch: int, as_inputs: Callable,
                 fit: Callable | None = None):
        self.name, self.model, self.batches, self.batch = name, model, batches, batch
        self.as_inputs = as_inputs
        self.fit = fit or type(model).fit
        self.params = int(model.count_params())
        self._data: dict[int, tuple] = {}

    def _arrays(self, steps: int) -> tuple:
        """``steps`` batches (cycling through the random ones) as one ``(x, y)`` pair."""
        if steps not in self._data:
            picks = [self.batches[i % len(self.batches)] for i in range(steps)]
            x = np.concatenate([p[0] for p in picks])
            y = np.concatenate([p[1] for p in picks])
            self._data[steps] = (self.as_inputs(x), y)
        return self._data[steps]

    def run(self, steps: int) -> float:
        x, y = self._arrays(steps)
        clock = FirstStepClock()
        history = self.fit(self.model, x, y, batch_size=self.batch, epochs=1, shuffle=False,
                           verbose=0, callbacks=[clock])
        sync_jax([v.value for v in self.model.trainable_variables])
        seconds = time.perf_counter() - clock.start
        self.last_loss = float(history.history["loss"][-1])
        return seconds


def keras_optimizer():
    """AdamW as nanoGPT trains GPT-2 (the same settings as the torch optimiser)."""
    return keras.optimizers.AdamW(learning_rate=3e-4, weight_decay=0.1, beta_1=0.9, beta_2=0.95,
                                  epsilon=1e-8, global_clipnorm=1.0)


def zoo_system(plan: ThroughputPlan, batches: list) -> KerasSystem:
    """The zoo's ``gpt2`` (or ``transformer_lm`` with fused Q/K/V, tanh GELU, pre-norm, tied
    embeddings) with ``masked_lm_loss``, compiled for JAX."""
    from zoo.metrics import masked_lm_loss
    from zoo.models import build_model
    from zoo.models.flops import training_flops_per_token

    s = plan.sizes
    sizes = dict(num_layers=s.num_layers, num_heads=s.num_heads, d_model=s.d_model,
                 ffn_dim=s.ffn_dim, max_length=s.context, dropout=0.0)
    if plan.zoo_model == "gpt2":
        model = build_model("gpt2", vocab_size=s.vocab, preset="small", **sizes)
    else:
        model = build_model("transformer_lm", vocab_size=s.vocab, preset="tiny", fused_qkv=True,
                            activation="gelu_tanh", norm_first=True, tie_embeddings=True, **sizes)
    model.compile(optimizer=keras_optimizer(), loss=masked_lm_loss, jit_compile=True)
    system = KerasSystem("zoo", model, batches, plan.batch, lambda x: x)
    system.flops_per_token = training_flops_per_token(model, plan.seq_len)
    return system


def keras_hub_system(plan: ThroughputPlan, batches: list) -> KerasSystem:
    """keras-hub's ``GPT2CausalLM`` (no preprocessor) of the same sizes, compiled for JAX."""
    import keras_hub

    s = plan.sizes
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=s.vocab, num_layers=s.num_layers, num_heads=s.num_heads,
        hidden_dim=s.d_model, intermediate_dim=s.ffn_dim, dropout=0.0,
        max_sequence_length=s.context)
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    model.compile(optimizer=keras_optimizer(),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[], jit_compile=True)

    def as_inputs(x):
        return {"token_ids": x, "padding_mask": np.ones_like(x, dtype=bool)}

    # keras-hub's own ``fit`` (PipelineModel) turns arrays into a tf.data or Grain dataset to
    # map its preprocessor over them, even when there is none: Keras's ``fit``, which it would
    # then call, trains on the arrays directly, as the zoo's model does.
    return KerasSystem("keras_hub", model, batches, plan.batch, as_inputs, fit=keras.Model.fit)


class TorchSystem(System):
    """Hugging Face GPT-2 on PyTorch: bf16 autocast, ``torch.compile``d model + loss, fused
    AdamW, gradient clipping; batches already on the device."""

    def __init__(self, plan: ThroughputPlan, batches: list):
        import torch

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        self.model = hf_model(plan.sizes).to(self.device).train()
        self.name, self.params = "hf", sum(p.numel() for p in self.model.parameters())
        loss_fn = _hf_loss_module(self.model)
        self.loss_fn = torch.compile(loss_fn) if plan.torch_compile else loss_fn
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=3e-4, betas=(0.9, 0.95),
                                           eps=1e-8, weight_decay=0.1, fused=True)
        self.batches = [(torch.from_numpy(x).long().to(self.device),
                         torch.from_numpy(y).long().to(self.device)) for x, y in batches]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def _step(self, x, y):
        with self.torch.autocast(self.device.type, dtype=self.torch.bfloat16):
            loss = self.loss_fn(x, y)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def run(self, steps: int) -> float:
        self._sync()
        start = time.perf_counter()
        for i in range(steps):
            loss = self._step(*self.batches[i % len(self.batches)])
        self._sync()
        seconds = time.perf_counter() - start
        self.last_loss = float(loss.detach().float().cpu())
        return seconds


def hf_model(sizes: Sizes):
    """``GPT2LMHeadModel`` of ``sizes`` (tied embeddings, tanh GELU, no dropout, SDPA)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=sizes.vocab, n_positions=sizes.context, n_embd=sizes.d_model,
        n_layer=sizes.num_layers, n_head=sizes.num_heads, n_inner=sizes.ffn_dim,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=sizes.vocab - 1, eos_token_id=sizes.vocab - 1, use_cache=False)
    return GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")


def _hf_loss_module(model):
    """``(x, y) -> mean cross-entropy`` of ``model``'s logits (upcast to float32) as a module."""
    import torch

    class LossOfModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x, y):
            logits = self.model(input_ids=x).logits
            return torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))

    return LossOfModel()


BUILDERS: dict[str, Callable[[ThroughputPlan, list], System]] = {
    "zoo": zoo_system, "keras_hub": keras_hub_system, "hf": TorchSystem,
}


# --------------------------------------------------------------------------------------------
# Phase a: build, warm up, alternate, summarise
# --------------------------------------------------------------------------------------------


@dataclass
class ThroughputRun:
    """What phase a measured: per system its rounds' seconds, warm-up time, errors."""

    plan: ThroughputPlan
    seconds: dict[str, list[float]] = field(default_factory=dict)
    warmup_s: dict[str, float] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    zoo_flops_per_token: int | None = None
    memory: dict = field(default_factory=dict)
    losses: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    stopped: str | None = None


def build_systems(plan: ThroughputPlan, run: ThroughputRun, deadline: float) -> list[System]:
    """Build and warm up each system once (compilation); a failure is recorded, not raised."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    batches = token_batches(plan.sizes, plan.batch, plan.seq_len)
    systems = []
    for name in plan.systems:
        if time.monotonic() > deadline:
            run.errors[name] = "skipped: the phase's time budget ran out before it was built"
            continue
        started = time.perf_counter()
        try:
            keras.utils.set_random_seed(0)
            system = BUILDERS[name](plan, batches)
            system.run(plan.warmup)
        except Exception as err:  # noqa: BLE001 - reported; the other systems go on
            run.errors[name] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
            continue
        run.warmup_s[name] = time.perf_counter() - started
        run.params[name] = system.params
        run.zoo_flops_per_token = run.zoo_flops_per_token or system.flops_per_token
        systems.append(system)
        log(f"{name}: built and warmed up in {run.warmup_s[name]:.1f} s "
            f"({system.params:,} parameters, loss {system.last_loss:.3f})")
    return systems


def alternate(systems: list[System], run: ThroughputRun, deadline: float) -> None:
    """Rounds of ``plan.steps`` steps of every system in turn, until ``plan.rounds`` or the
    deadline (checked before each round, once ``plan.min_rounds`` have run)."""
    run.seconds = {s.name: [] for s in systems}
    for r in range(run.plan.rounds):
        if r >= max(run.plan.min_rounds, 1) and time.monotonic() > deadline:
            run.stopped = f"time budget: stopped after {r} of {run.plan.rounds} rounds"
            break
        for system in systems:
            run.seconds[system.name].append(system.run(run.plan.steps))
        tokens = run.plan.steps * run.plan.batch * run.plan.seq_len
        log(f"round {r + 1}/{run.plan.rounds}: " + ", ".join(
            f"{s.name} {tokens / run.seconds[s.name][-1]:,.0f} tok/s" for s in systems))
    run.losses = {s.name: s.last_loss for s in systems}
    run.memory = device_memory()


def device_memory() -> dict:
    """Peak device memory in GiB: JAX's allocator (both Keras systems) and torch's (HF)."""
    import torch

    stats = jax.devices()[0].memory_stats() or {}
    peaks = {"jax_peak_gib": stats.get("peak_bytes_in_use", 0) / 2**30 or None}
    if torch.cuda.is_available():
        peaks["torch_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return peaks


def release(systems: list[System]) -> None:
    """Free the models (device memory for the next phase) and reset Keras's global state."""
    systems.clear()
    gc.collect()
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def gpt2_parameters(s: Sizes) -> int:
    """GPT-2's parameter count (tied output embedding): 124,439,808 for GPT-2 small."""
    per_layer = (4 * s.d_model * s.d_model + 4 * s.d_model  # fused Q/K/V + output projection
                 + 2 * s.d_model * s.ffn_dim + s.ffn_dim + s.d_model  # FFN
                 + 4 * s.d_model)  # two LayerNorms
    return (s.vocab + s.context) * s.d_model + s.num_layers * per_layer + 2 * s.d_model


def analytic_flops_per_token(plan: ThroughputPlan) -> int:
    """``6N + 12LHQT`` (N without the position table), the formula of ``zoo.models.flops``
    written out, for when the zoo's model could not be built."""
    s = plan.sizes
    n = gpt2_parameters(s) - s.context * s.d_model
    return 6 * n + 12 * s.num_layers * s.num_heads * (s.d_model // s.num_heads) * plan.seq_len


def ratio_spread(ours: list[float], peer: list[float]) -> dict:
    """Per-round speed ratios ours/peer (peer seconds / our seconds): median, min, max."""
    ratios = [p / o for o, p in zip(ours, peer, strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "rounds": len(ratios), "per_round": ratios}


def summarise_throughput(run: ThroughputRun, peak: float | None) -> dict:
    """Per-system median tokens/s, TFLOP/s and MFU; per-pair median ratios with spread."""
    plan = run.plan
    flops = run.zoo_flops_per_token or analytic_flops_per_token(plan)
    tokens = plan.steps * plan.batch * plan.seq_len
    systems = {}
    for name, secs in run.seconds.items():
        rates = [tokens / s for s in secs]
        tps = statistics.median(rates)
        systems[name] = {
            "label": plan.label(name), "parameters": run.params[name], "tokens_per_s": tps,
            "tokens_per_s_min": min(rates), "tokens_per_s_max": max(rates),
            "step_ms": 1e3 * statistics.median(secs) / plan.steps,
            "tflops": tps * flops / 1e12, "mfu": tps * flops / (peak * 1e12) if peak else None,
            "warmup_s": run.warmup_s[name], "final_loss": run.losses.get(name),
            "round_seconds": secs,
        }
    ratios = {f"zoo/{peer}": ratio_spread(run.seconds["zoo"], run.seconds[peer])
              for peer in ("keras_hub", "hf") if "zoo" in run.seconds and peer in run.seconds}
    return {"plan": dataclasses.asdict(plan), "flops_per_token": flops,
            "flops_source": "zoo.models.flops.training_flops_per_token(zoo model)"
            if run.zoo_flops_per_token else "6N + 12LHQT from the sizes",
            "expected_parameters": gpt2_parameters(plan.sizes), "peak_tflops": peak,
            "systems": systems, "ratios": ratios, "errors": run.errors, "stopped": run.stopped,
            "memory": run.memory}


def throughput_phase(plan: ThroughputPlan, peak: float | None) -> dict:
    """Phase a: build and warm up the systems, alternate them in rounds, summarise."""
    deadline = time.monotonic() + plan.budget_s
    run = ThroughputRun(plan)
    systems = build_systems(plan, run, deadline)
    try:
        if systems:
            alternate(systems, run, deadline)
    finally:
        release(systems)
    return summarise_throughput(run, peak)


# --------------------------------------------------------------------------------------------
# Phase b: shakespeare-char to a validation loss (child process)
# --------------------------------------------------------------------------------------------

VAL_LINE = re.compile(r"val_token_nll: ([0-9.eE+-]+|nan)")
EPOCH_LINE = re.compile(r"^Epoch (\d+)/(\d+)")


def shakespeare_child(plan_json: str, scratch: str) -> int:
    """In the child: ``zoo.train`` the plan into ``scratch/run``; write ``scratch/result.json``."""
    plan = ShakespearePlan(**json.loads(plan_json))
    out = os.path.join(scratch, "run")
    import zoo

    print(f"ZOO_TRAIN_START {time.time():.3f}", flush=True)
    started = time.perf_counter()
    zoo.train("transformer_lm", "prepared:" + plan.data, out, verbose=2, **plan.train_kwargs())
    wall = time.perf_counter() - started
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(scratch, "result.json"), "w") as f:
        json.dump({"zoo_train_wall_s": wall, "metrics": metrics}, f)
    return 0


@dataclass
class ChildWatch:
    """The child's output as it comes: echoed, with the validation losses and when they came."""

    lines: list[str] = field(default_factory=list)
    start_epoch_time: float | None = None
    curve: list[dict] = field(default_factory=list)
    _epoch: int = 0

    def feed(self, line: str) -> None:
        """Echo one line and pick the start marker, epoch numbers and validation losses."""
        now = time.time()
        line = line.rstrip("\n")
        self.lines.append(line)
        print(f"  | {line}", flush=True)
        if line.startswith("ZOO_TRAIN_START "):
            self.start_epoch_time = float(line.split()[1])
        if match := EPOCH_LINE.match(line.strip()):
            self._epoch = int(match.group(1))
        if match := VAL_LINE.search(line):
            since = now - self.start_epoch_time if self.start_epoch_time else None
            self.curve.append({"checkpoint": self._epoch, "val_token_nll": float(match.group(1)),
                               "seconds_since_zoo_train": since})


def watch_child(command: list[str], budget_s: float) -> tuple[ChildWatch, int | None, float]:
    """Run ``command``, echoing its output; kill it past ``budget_s``. Returns the watch, the
    exit code (None if killed) and the process's wall seconds."""
    watch = ChildWatch()
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    reader = threading.Thread(target=lambda: [watch.feed(line) for line in proc.stdout],
                              daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=budget_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    reader.join(timeout=10)
    return watch, code, time.perf_counter() - started


def merge_curve(history: list[float], watch: ChildWatch, every: int) -> list[dict]:
    """Validation points: the losses of ``metrics.json``'s history (else those read from the
    child's output), each with its step and, where read, the seconds since ``zoo.train`` began."""
    values = history or [point["val_token_nll"] for point in watch.curve]
    points = []
    for i, value in enumerate(values):
        since = watch.curve[i]["seconds_since_zoo_train"] if i < len(watch.curve) else None
        points.append({"step": (i + 1) * every, "val_token_nll": float(value),
                       "seconds_since_zoo_train": since})
    return points


def summarise_shakespeare(plan: ShakespearePlan, watch: ChildWatch, code: int | None,
                          process_s: float, result: dict | None) -> dict:
    """The phase's figures: wall times, steps, validation curve, whether the target was met."""
    summary: dict = {"plan": dataclasses.asdict(plan), "process_wall_s": process_s,
                     "exit_code": code, "killed_by_time_guard": code is None}
    history: list[float] = []
    if result:
        metrics = result["metrics"]
        history = metrics.get("history", {}).get("val_token_nll", [])
        summary.update(zoo_train_wall_s=result["zoo_train_wall_s"],
                       train_seconds=metrics.get("train_seconds"), steps=metrics.get("steps"),
                       tokens_per_second=metrics.get("tokens_per_second"),
                       final_validation=metrics.get("validation"),
                       parameters=metrics.get("parameters"))
    curve = merge_curve(history, watch, plan.checkpoint_every)
    reached = next((p for p in curve if p["val_token_nll"] <= plan.target), None)
    summary.update(curve=curve,
                   best_val_token_nll=min((p["val_token_nll"] for p in curve), default=None),
                   target_reached=reached is not None,
                   target_step=reached["step"] if reached else None,
                   target_seconds_since_zoo_train=reached["seconds_since_zoo_train"]
                   if reached else None)
    if code not in (0, None):
        summary["error_tail"] = watch.lines[-25:]
    return summary


def shakespeare_phase(plan: ShakespearePlan) -> dict:
    """Phase b: run the child under the budget and summarise what it reached."""
    if not os.path.isfile(os.path.join(plan.data, "prepared.json")):
        return {"plan": dataclasses.asdict(plan),
                "error": f"no prepared data in {plan.data} (run `zoo prepare`, see README.md)"}
    scratch = tempfile.mkdtemp(prefix="zoo-shakespeare-")
    command = [sys.executable, os.path.abspath(__file__),
               "--shakespeare-child", json.dumps(dataclasses.asdict(plan)), "--scratch", scratch]
    try:
        watch, code, process_s = watch_child(command, plan.budget_s)
        result = None
        if code == 0:
            with open(os.path.join(scratch, "result.json")) as f:
                result = json.load(f)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return summarise_shakespeare(plan, watch, code, process_s, result)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def log(message: str) -> None:
    """A progress line, timestamped."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def print_throughput(t: dict, peak_source: str) -> None:
    """The throughput table and the ratio lines."""
    p = t["plan"]
    s = p["sizes"]
    print(f"\n## a. training throughput: {s['num_layers']} layers, {s['num_heads']} heads, "
          f"width {s['d_model']}, FFN {s['ffn_dim']}, vocab {s['vocab']}, batch {p['batch']} x "
          f"sequence {p['seq_len']}, mixed_bfloat16; {p['rounds']} rounds x {p['steps']} steps "
          f"after {p['warmup']} warm-up steps; {t['flops_per_token'] / 1e6:.1f} MFLOP/token; "
          f"peak: {peak_source}")
    print("| system | parameters | warm-up s | ms/step | tokens/s (median) | min-max | TFLOP/s "
          "| MFU | loss |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in t["systems"].values():
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"| {r['label']} | {r['parameters']:,} | {r['warmup_s']:.1f} | {r['step_ms']:.1f} "
              f"| {r['tokens_per_s']:,.0f} | {r['tokens_per_s_min']:,.0f}-"
              f"{r['tokens_per_s_max']:,.0f} | {r['tflops']:.2f} | {mfu} | "
              f"{r['final_loss']:.3f} |")
    for pair, r in t["ratios"].items():
        print(f"{pair}: {r['median']:.2f}x (per-round min-max {r['min']:.2f}-{r['max']:.2f}, "
              f"{r['rounds']} rounds)")
    for name, err in t["errors"].items():
        print(f"{name}: NOT MEASURED: {err}")
    if t["stopped"]:
        print(f"note: {t['stopped']}")
    if any(t["memory"].values()):
        print("peak device memory: " + ", ".join(
            f"{k.removesuffix('_peak_gib')} {v:.1f} GiB" for k, v in t["memory"].items() if v))


def print_shakespeare(s: dict) -> None:
    """The time-to-quality lines and the validation curve."""
    p = s["plan"]
    print(f"\n## b. zoo transformer_lm preset {p['preset']} on shakespeare-char to validation "
          f"loss <= {p['target']}: batch {p['batch_size']} x {p['seq_len']}, lr "
          f"{p['learning_rate']}, at most {p['max_steps']} steps, validation over the whole split "
          f"every {p['checkpoint_every']}")
    if "error" in s:
        print(f"NOT MEASURED: {s['error']}")
        return
    since = s["target_seconds_since_zoo_train"]
    verdict = (f"reached at step {s['target_step']}"
               + ("" if since is None else f", {since:.1f} s after zoo.train began")
               if s["target_reached"] else "NOT reached" + (
                   f" (best {s['best_val_token_nll']:.4f})" if s["curve"] else " (no checkpoint)"))
    print(f"target: {verdict}; child process {s['process_wall_s']:.1f} s"
          + (f", zoo.train call {s['zoo_train_wall_s']:.1f} s, fit (compilation, training, "
             f"validation) {s['train_seconds']} s, {s['steps']} steps, "
             f"{s['tokens_per_second']} tokens/s" if "zoo_train_wall_s" in s else ""))
    if s["killed_by_time_guard"]:
        print(f"note: stopped by the time guard after {p['budget_s']:.0f} s")
    if s.get("error_tail"):
        print("child failed; its last lines:\n  " + "\n  ".join(s["error_tail"]))
    print("| step | val token NLL | s since zoo.train |")
    print("|---|---|---|")
    for point in s["curve"]:
        since = point.get("seconds_since_zoo_train")
        print(f"| {point['step']} | {point['val_token_nll']:.4f} | "
              f"{'' if since is None else f'{since:.1f}'} |")


def goals(results: dict) -> dict:
    """Each goal of ``GOALS``: the measured figure and whether it is met (None: not measured)."""
    t = results.get("throughput", {})
    zoo = t.get("systems", {}).get("zoo", {})
    s = results.get("shakespeare", {})
    seconds = s.get("target_seconds_since_zoo_train") or (
        s.get("train_seconds") if s.get("target_reached") else None)
    figures = {"mfu": zoo.get("mfu"),
               "zoo/keras_hub": t.get("ratios", {}).get("zoo/keras_hub", {}).get("median"),
               "zoo/hf": t.get("ratios", {}).get("zoo/hf", {}).get("median"),
               "shakespeare_s": seconds}
    verdicts = {}
    for key, value in figures.items():
        met = None if value is None else (
            value <= GOALS[key] if key == "shakespeare_s" else value >= GOALS[key])
        if key == "shakespeare_s" and "plan" in s and not s.get("target_reached"):
            met = False
        verdicts[key] = {"goal": GOALS[key], "measured": value, "met": met}
    return verdicts


def print_goals(verdicts: dict) -> None:
    """One line per goal."""
    words = {True: "met", False: "NOT met", None: "not measured"}
    print("\n## goals")
    for key, v in verdicts.items():
        measured = "-" if v["measured"] is None else (
            f"{100 * v['measured']:.1f}%" if key == "mfu" else f"{v['measured']:.2f}")
        goal = f">= {100 * v['goal']:.0f}%" if key == "mfu" else (
            f"<= {v['goal']:.0f} s to the target" if key == "shakespeare_s" else f">= {v['goal']}x")
        print(f"{key}: {measured} ({goal}): {words[v['met']]}")


def write_json(path: str | None, results: dict) -> None:
    """Write ``results`` to ``path`` (atomically) if a path was given."""
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2, default=str)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Run the phases, print the tables, write the JSON."""
    args = parse_args(argv)
    started = time.monotonic()
    if args.shakespeare_child:
        return shakespeare_child(args.shakespeare_child, args.scratch)
    env = environment()
    peak, peak_source = peak_tflops(env, args.peak_tflops)
    results: dict = {"environment": env, "cpu_smoke": args.cpu_smoke}
    log(f"device {env['jax_device']} / torch {env['torch_device']}; {env['versions']}")
    if args.only in (None, "throughput"):
        results["throughput"] = throughput_phase(throughput_plan(args), peak)
        write_json(args.json, results)
    if args.only in (None, "shakespeare"):
        log("shakespeare-char: zoo.train in a child process")
        seconds_left = args.total_budget - (time.monotonic() - started) - 10.0  # the report
        results["shakespeare"] = shakespeare_phase(shakespeare_plan(args, seconds_left))
    results["tensorflow_imported"] = "tensorflow" in sys.modules
    results["goals"] = goals(results)
    write_json(args.json, results)
    print(f"\n# bench/gpu/run.py, {env['date_utc']}: {env['jax_device']}; torch "
          f"{env['torch_device']}; " + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
          + f"; TensorFlow imported: {'yes' if results['tensorflow_imported'] else 'no'}")
    if "throughput" in results:
        print_throughput(results["throughput"], peak_source)
    if "shakespeare" in results:
        print_shakespeare(results["shakespeare"])
    print_goals(results["goals"])
    failed = bool(results.get("throughput", {}).get("errors")) or (
        "error" in results.get("shakespeare", {})
        or results.get("shakespeare", {}).get("exit_code") not in (0, None))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
