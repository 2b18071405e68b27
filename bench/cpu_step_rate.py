"""Training step rate at nanoGPT's CPU configuration: ``zoo train``'s step, with and without XLA,
against keras-hub's GPT-2 of the same sizes, timed in alternating rounds.

    python bench/cpu_step_rate.py                       # zoo (XLA off), zoo (XLA on), keras-hub (XLA)
    python bench/cpu_step_rate.py --backend jax         # + the zoo model under Keras' JAX backend
    python bench/cpu_step_rate.py --systems zoo zoo-xla zoo-xla:onednn0 zoo-xla:intra=1:inter=1

The configuration: ``transformer_lm`` preset ``small`` (4 layers, 4 heads, width 128, FFN 512,
context 64), batch 12 x 64 tokens, the character vocabulary of tinyshakespeare (65 characters + 4
reserved ids = 69), float32. The zoo model is compiled as ``zoo/fitting.py`` compiles it: AdamW
with the warm-up + cosine schedule, weight decay off for biases / norms / embeddings, global
gradient-norm clipping, ``masked_lm_loss`` and the ``TokenNLL`` / ``Perplexity`` metrics. keras-hub's
``GPT2CausalLM`` (``GPT2Backbone`` of the same sizes, the same parameter count) gets the same
optimiser, sparse cross-entropy from logits and its own default accuracy metric. Every system
trains on the same random batches.

A system is ``MODEL[:OPTION...]``. MODEL: ``zoo`` (jit_compile=False, the zoo's CPU default on
TensorFlow), ``zoo-xla`` (jit_compile=True), ``hub`` / ``hub-xla`` (keras-hub, jit_compile False /
True). OPTIONs: ``jax`` (Keras' JAX backend, where every step is ``jax.jit``-compiled), ``fused``
(the zoo model with one fused Q/K/V projection), ``tfdata`` (``tf.data`` input on JAX, where the
zoo's engine takes NumPy batches; keras-hub always takes ``tf.data``), and on TensorFlow only
``onednn0`` (``TF_ENABLE_ONEDNN_OPTS=0``) and ``intra=N`` / ``inter=N`` (``tf.config.threading``).

Each system runs in its own worker process (the Keras backend, oneDNN and thread settings are
fixed when a process starts): all are built and warmed up (tracing, compilation) first, then
``--rounds`` rounds each time ``--steps`` steps of every system in turn, one worker running while
the others wait, the system going first rotating (``bench/_rounds.py``). A round's time is the
median of its steps, measured in ``model.fit`` (a callback around each step; the first step of
each ``fit`` call, its start-up, untimed) or, with ``--loop train_on_batch``, around each call.

Printed per system: the wall time of its warm-up (tracing, compiling and ``--warmup`` steps; the
workers warm up side by side, so with several systems an upper bound), the median ms/step over
rounds with its spread, the process CPU time of a step (about twice the wall time when a step
keeps both cores of a 2-core machine busy), the cores other processes kept busy meanwhile
(``/proc/stat``), and the median of its per-round speed ratios against ``--reference`` (default
``hub-xla``), over all rounds and over the quiet ones alone; then the zoo's XLA speed-up and each
zoo system against keras-hub compiled alike.
``--wait-quiet S`` waits up to S seconds before each round for the machine to fall quiet.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from bench._rounds import (  # noqa: E402
    QUIET_CORES,
    Spread,
    median,
    own_cpu_seconds,
    process_cpu_seconds,
    run_rounds,
    speed_ratio,
    wait_quiet,
)

SMALL = dict(num_layers=4, num_heads=4, d_model=128, ffn_dim=512, max_length=64)
# bench/train_throughput.py --tiny: 2 layers, width 128, context 128 (batch 8, vocabulary 8,192)
TINY = dict(num_layers=2, num_heads=4, d_model=128, ffn_dim=512, max_length=128)
CONFIGS = {"small": SMALL, "tiny": TINY}
DEFAULT_SIZES = {"small": dict(batch=12, seq_len=64, vocab=69),
                 "tiny": dict(batch=8, seq_len=128, vocab=8192)}
CHAR_VOCAB = 69  # tinyshakespeare's 65 characters + <pad> <unk> <bos> <eos>
MODELS = {"zoo": ("zoo", False), "zoo-xla": ("zoo", True), "hub": ("hub", False),
          "hub-xla": ("hub", True)}
REPLY = "@@"  # a worker's protocol lines start with this; anything else it prints is ignored


@dataclass
class System:
    """One compared system: which model, compiled how, in which kind of process."""

    name: str
    model: str  # "zoo" or "hub"
    jit: bool
    backend: str = "tensorflow"
    env: dict = field(default_factory=dict)
    intra: int | None = None
    inter: int | None = None
    fused_qkv: bool = False
    tf_data: bool = False  # tf.data input on a backend whose zoo engine takes NumPy batches

    @classmethod
    def parse(cls, spec: str) -> System:
        base, *options = spec.split(":")
        if base not in MODELS:
            raise ValueError(f"unknown model {base!r} in {spec!r}; choose from {', '.join(MODELS)}")
        model, jit = MODELS[base]
        system = cls(name=spec, model=model, jit=jit)
        for option in options:
            key, _, value = option.partition("=")
            if key == "jax":
                system.backend, system.jit = "jax", True  # JAX has no useful eager training step
            elif key == "onednn0":
                system.env["TF_ENABLE_ONEDNN_OPTS"] = "0"
            elif key in ("intra", "inter") and value.isdigit():
                setattr(system, key, int(value))
            elif key == "fused" and model == "zoo":
                system.fused_qkv = True
            elif key == "tfdata":
                system.tf_data = True
            else:
                raise ValueError(f"unknown option {option!r} in {spec!r}")
        if system.backend != "tensorflow" and (system.intra or system.inter or system.env):
            raise ValueError(f"{spec!r}: onednn0, intra and inter are TensorFlow settings")
        return system

    def describe(self) -> str:
        who = "zoo transformer_lm" if self.model == "zoo" else "keras-hub GPT2CausalLM"
        parts = [self.backend, f"jit_compile={self.jit}"]
        parts += [f"{k}={v}" for k, v in self.env.items()]
        parts += [f"{k}={getattr(self, k)}" for k in ("intra", "inter") if getattr(self, k)]
        parts += ["fused QKV"] if self.fused_qkv else []
        parts += ["tf.data input"] if self.tf_data else []
        return f"{who} ({', '.join(parts)})"


# ---------------------------------------------------------------- worker: one system, one process

def _compile_like_zoo(model, loss, jit: bool, total_steps: int, **metrics) -> None:
    """Compile ``model`` as ``zoo.fitting.fit_resumable`` does, with ``zoo train``'s defaults."""
    from zoo.config import TrainConfig
    from zoo.fitting import make_optimizer

    settings = TrainConfig(model="transformer_lm", data="bench", preset="small",
                           max_steps=total_steps, batch_size=12)
    optimizer = make_optimizer(settings, total_steps)
    optimizer.build(model.trainable_variables)
    model.compile(optimizer=optimizer, loss=loss, jit_compile=jit, **metrics)


def _build(system: System, vocab: int, total_steps: int, sizes: dict = SMALL):
    import keras

    keras.utils.set_random_seed(1337)
    if system.model == "zoo":
        from zoo.metrics import Perplexity, TokenNLL, masked_lm_loss
        from zoo.models import build_model

        model = build_model("transformer_lm", vocab, "small", fused_qkv=system.fused_qkv, **sizes)
        _compile_like_zoo(model, masked_lm_loss, system.jit, total_steps,
                          metrics=[TokenNLL(), Perplexity()])
        return model
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=vocab, num_layers=sizes["num_layers"], num_heads=sizes["num_heads"],
        hidden_dim=sizes["d_model"], intermediate_dim=sizes["ffn_dim"], dropout=0.0,
        max_sequence_length=sizes["max_length"])
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    # keras-hub's own default metric (weighted_metrics="auto": accuracy) stays.
    _compile_like_zoo(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      system.jit, total_steps)
    return model


def _worker(spec: dict) -> int:
    """Build one system, warm it up, then run one round per ``run`` line read from stdin."""
    system = System(**spec["system"])
    if system.backend == "tensorflow" and (system.intra or system.inter):
        import tensorflow as tf

        if system.intra:
            tf.config.threading.set_intra_op_parallelism_threads(system.intra)
        if system.inter:
            tf.config.threading.set_inter_op_parallelism_threads(system.inter)
    import keras
    import numpy as np

    batch, seq_len, steps, vocab = spec["batch"], spec["seq_len"], spec["steps"], spec["vocab"]
    model = _build(system, vocab, total_steps=2000, sizes=CONFIGS[spec.get("config", "small")])
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, vocab, size=(steps + 1, batch, seq_len + 1), dtype=np.int32)
    x, y = tokens[:, :, :-1], tokens[:, :, 1:]
    if system.model == "hub":
        x = {"token_ids": x, "padding_mask": np.ones_like(x, dtype=bool)}

    def one_batch(i):
        if isinstance(x, dict):
            return {k: v[i] for k, v in x.items()}, y[i]
        return x[i], y[i]

    class StepTimer(keras.callbacks.Callback):
        """Wall and process CPU seconds of each step but the first (the fit call's start-up)."""

        def __init__(self):
            super().__init__()
            self.times: list[tuple[float, float]] = []
            self._start = (0.0, 0.0)

        def on_train_batch_begin(self, batch, logs=None):
            self._start = (time.perf_counter(), time.process_time())

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # the step has finished (an asynchronous backend)
            if batch >= 1:
                self.times.append((time.perf_counter() - self._start[0],
                                   time.process_time() - self._start[1]))

    if spec["loop"] == "fit":
        # The input zoo train gives each engine: tf.data on TensorFlow, NumPy batches elsewhere;
        # keras-hub's fit takes tf.data (it turns NumPy input into tf.data itself).
        if system.backend == "tensorflow" or system.model == "hub" or system.tf_data:
            import tensorflow as tf

            data = tf.data.Dataset.from_tensor_slices((x, y)).repeat()
        else:
            data = (one_batch(i % (steps + 1)) for i in itertools.count())

        def one_round(n: int) -> list[tuple[float, float]]:
            timer = StepTimer()
            model.fit(data, epochs=1, steps_per_epoch=n + 1, callbacks=[timer], verbose=0,
                      shuffle=False)
            return timer.times
    else:
        def one_round(n: int) -> list[tuple[float, float]]:
            times = []
            for i in range(n):
                start = (time.perf_counter(), time.process_time())
                model.train_on_batch(*one_batch(i % (steps + 1)))  # returns host floats
                times.append((time.perf_counter() - start[0], time.process_time() - start[1]))
            return times

    started = time.perf_counter()
    one_round(spec["warmup"])  # the first step traces and compiles
    warmup_seconds = time.perf_counter() - started
    one_round(2)
    versions = {"keras": keras.__version__, "backend": keras.backend.backend()}
    for name in ("tensorflow", "keras_hub", "jax"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = module.__version__
    print(REPLY + json.dumps({"params": int(model.count_params()), "versions": versions,
                              "warmup_seconds": warmup_seconds}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        wall, cpu = zip(*one_round(steps), strict=True)
        print(REPLY + json.dumps({"seconds": float(np.median(wall)),
                                  "cpu_seconds": float(np.median(cpu))}), flush=True)
    return 0


# ---------------------------------------------------------------- parent: rounds over the workers

class Worker:
    """A system's worker process: started, waited for, asked for rounds."""

    def __init__(self, system: System, spec: dict):
        self.system = system
        env = dict(os.environ, KERAS_BACKEND=system.backend, TF_CPP_MIN_LOG_LEVEL="2",
                   **system.env)
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker",
             json.dumps({**spec, "system": system.__dict__})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.info: dict = {}
        self.cpu_seconds: list[float] = []  # per round: the median process CPU time of a step

    def reply(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY):])
        self.log.seek(0)
        tail = self.log.read()[-3000:]
        raise RuntimeError(f"worker {self.system.name} ended (status {self.process.wait()}):\n"
                           f"{tail}")

    def run(self) -> float:
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        reply = self.reply()
        self.cpu_seconds.append(reply["cpu_seconds"])
        return reply["seconds"]

    def close(self, kill: bool = False) -> None:
        """End the worker: at the end of its input, or at once (``kill``, after an error)."""
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.stdin.close()
            self.process.wait(timeout=60)
        self.log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--systems", nargs="+", default=["zoo", "zoo-xla", "hub-xla"],
                        help="MODEL[:OPTION...] (see the module docstring)")
    parser.add_argument("--backend", choices=["tensorflow", "jax"], default="tensorflow",
                        help="jax: also time the zoo model under Keras' JAX backend "
                             "(zoo-xla:jax, in its own process)")
    parser.add_argument("--reference", default="hub-xla", help="the system the ratios are against")
    parser.add_argument("--pairs", nargs="*", default=[], metavar="OURS/PEER",
                        help="more speed ratios to print, e.g. zoo:intra=1/zoo")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per system per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before the rounds")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small",
                        help="small: nanoGPT's CPU configuration (default); tiny: "
                             "bench/train_throughput.py --tiny's")
    parser.add_argument("--batch", type=int, help="default 12 (small), 8 (tiny)")
    parser.add_argument("--seq-len", type=int, help="default 64 (small), 128 (tiny)")
    parser.add_argument("--vocab", type=int, help=f"default {CHAR_VOCAB} (small), 8192 (tiny)")
    parser.add_argument("--loop", choices=["fit", "train_on_batch"], default="fit")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each round wait up to SECONDS for the machine to be quiet "
                             f"(other processes below {QUIET_CORES} cores for 0.5 s)")
    parser.add_argument("--json", help="also write the per-round times here")
    parser.add_argument("--verbose", action="store_true", help="print every round's times")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(json.loads(args.worker))
    if min(args.rounds, args.steps) < 1 or args.warmup < 0:
        parser.error("--rounds and --steps must be >= 1, --warmup >= 0")
    for key, value in DEFAULT_SIZES[args.config].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.seq_len > CONFIGS[args.config]["max_length"]:
        parser.error(f"--seq-len is at most the context, {CONFIGS[args.config]['max_length']}")
    specs = list(args.systems) + (["zoo-xla:jax"] if args.backend == "jax" else [])
    specs = list(dict.fromkeys(specs))
    try:
        systems = [System.parse(s) for s in specs]
    except ValueError as error:
        parser.error(str(error))

    spec = dict(batch=args.batch, seq_len=args.seq_len, steps=args.steps, warmup=args.warmup,
                vocab=args.vocab, loop=args.loop, config=args.config)
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load_before = os.getloadavg()
    workers = {s.name: Worker(s, spec) for s in systems}  # built and warmed up side by side
    finished = False
    try:
        for worker in workers.values():
            worker.info = worker.reply()
        rounds = run_rounds(
            {name: w.run for name, w in workers.items()}, args.rounds,
            progress=print if args.verbose else None,
            cpu_of=lambda name: own_cpu_seconds() + process_cpu_seconds(workers[name].process.pid),
            before_round=(lambda: wait_quiet(timeout=args.wait_quiet)) if args.wait_quiet else None)
        times = rounds.times
        finished = True
    finally:
        for worker in workers.values():
            worker.close(kill=not finished)
    load_after = os.getloadavg()

    versions = {}
    for worker in workers.values():
        versions.update({k: v for k, v in worker.info["versions"].items() if k != "backend"})
    tokens = args.batch * args.seq_len
    c = CONFIGS[args.config]
    print(f"# training step, transformer_lm {args.config} ({c['num_layers']} layers, "
          f"{c['num_heads']} heads, width {c['d_model']}, FFN {c['ffn_dim']}), "
          f"vocab {args.vocab}, batch {args.batch} x {args.seq_len} tokens, float32, zoo's "
          f"AdamW/schedule/clipnorm; timed in {args.loop}; {args.rounds} alternating rounds of "
          f"{args.steps} steps per system after {args.warmup} warm-up steps, one process per "
          f"system")
    print(f"# {started}, {platform.machine()} CPU, {os.cpu_count()} cores, load average "
          f"{load_before[0]:.2f} before / {load_after[0]:.2f} after; "
          + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    reference = args.reference if args.reference in times else None
    load = rounds.other_load

    def quiet(*names: str) -> list[int]:
        return [r for r in range(args.rounds) if all(load[n][r] < QUIET_CORES for n in names)]

    def versus(name: str, peer: str | None, rounds_: list[int] | None = None) -> str:
        if peer is None or name == peer or rounds_ == []:
            return ""
        return str(speed_ratio(times[name], times[peer], rounds_))

    print(f"| system | parameters | warm-up s | ms/step, median (IQR) | min-max | CPU ms/step | "
          f"tokens/s | other load, cores | speed vs {reference or '-'}: median (IQR, min-max) | "
          f"the same, quiet rounds only (other load < {QUIET_CORES}) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, worker in workers.items():
        spread = Spread.of([1e3 * t for t in times[name]])
        print(f"| `{name}` {worker.system.describe()} | {worker.info['params']:,} | "
              f"{worker.info['warmup_seconds']:.1f} | "
              f"{spread.median:.1f} ({spread.q1:.1f}-{spread.q3:.1f}) | "
              f"{spread.low:.1f}-{spread.high:.1f} | {1e3 * median(worker.cpu_seconds):.1f} | "
              f"{tokens / median(times[name]):,.0f} | {median(load[name]):.2f} | "
              f"{versus(name, reference)} | "
              f"{versus(name, reference, quiet(name, reference) if reference else None)} |")
    # More pairs: the zoo's XLA speed-up, each zoo system against keras-hub compiled alike (same
    # backend and options), and any --pairs.
    pairs = [("zoo-xla", "zoo")] + [(n, "hub" + n[3:]) for n in times if n.startswith("zoo")]
    pairs += [tuple(p.split("/", 1)) for p in args.pairs]
    print()
    for ours, peer in dict.fromkeys(pairs):
        if ours in times and peer in times and peer != reference and ours != peer:
            print(f"{ours} vs {peer}: {versus(ours, peer)}; quiet rounds only: "
                  f"{versus(ours, peer, quiet(ours, peer)) or 'none'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": started, "args": vars(args), "times": times, "other_load": load,
                       "cpu_times": {n: w.cpu_seconds for n, w in workers.items()},
                       "params": {n: w.info["params"] for n, w in workers.items()},
                       "versions": versions, "load": [load_before, load_after]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
