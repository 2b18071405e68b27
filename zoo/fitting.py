"""The resumable ``model.fit`` loop every zoo task trains with.

Training is cut into segments of ``checkpoint_every`` steps (Keras "epochs"). At the end of each
segment the validation metrics are measured and a checkpoint (model + optimizer) is written to
``RUN/checkpoints``. A task makes batch number s a pure function of (seed, s), so a run killed at
any moment and started again continues from its last checkpoint and sees exactly the batches an
uninterrupted run would have seen.

Optimiser: AdamW (no decay on LayerNorm scales/offsets, biases and embeddings, as GPT-2 /
nanoGPT / BERT), learning rate warm-up then cosine decay, global gradient-norm clipping.
On a GPU: bfloat16 mixed precision and XLA by default.

Two engines share the optimiser, the callbacks and the run directory:

* TensorFlow (``KERAS_BACKEND=tensorflow``): ``tf.distribute`` strategies, ``tf.data`` input,
  ``tf.train.Checkpoint`` (model + optimizer) in ``RUN/checkpoints``.
* JAX (and any other Keras backend): one device, jit-compiled steps, NumPy batches (or ``tf.data``
  where TensorFlow is installed), checkpoints ``RUN/checkpoints/ckpt-<step>.weights.h5`` (Keras
  weights files holding model and optimizer variables). No TensorFlow is needed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras

from zoo import backends, pretrained_vectors, progress
from zoo.config import TrainConfig
from zoo.errors import ZooError
from zoo.files import (
    CHECKPOINT_DIR,
    CHECKPOINT_PREFIX,
    CHECKPOINT_SUFFIX,
    CONFIG_FILE,
    LOG_DIR,
    METRICS_FILE,
    MODEL_FILE,
    portable_checkpoints,
    read_json,
    write_json_atomic,
)
from zoo.run import LoadedRun, load

log = logging.getLogger("zoo.train")


RESUMABLE_KEYS = ("model", "preset", "model_config", "train", "tokenizer", "data", "prepared")
# Settings that say where or how long a run trains, not what it trains: a run may resume under
# another one (a checkpoint written on another backend is then refused with a clear message).
PLACEMENT_KEYS = ("distribute", "backend", "target_validation_loss")


def _identity(record: dict, keys: tuple[str, ...]) -> dict:
    """What must match for a run directory to be resumed."""
    identity = {k: record.get(k) for k in keys}
    if isinstance(identity.get("train"), dict):
        identity["train"] = {k: v for k, v in identity["train"].items() if k not in PLACEMENT_KEYS}
    return identity


def context_config(model: str, preset: str, settings: TrainConfig, overrides: dict):
    """The model config of an encoder whose context ``max_length`` follows ``--seq-len``, and
    the sequence length to train with; a ``seq_len`` beyond the context raises ``ZooError``."""
    from zoo.models import make_config

    overrides = dict(overrides)
    if settings.seq_len and "max_length" not in overrides:
        overrides["max_length"] = settings.seq_len
    model_config = make_config(model, preset, **overrides)
    seq_len = settings.seq_len or model_config.max_length
    if seq_len > model_config.max_length:
        raise ZooError(f"seq_len {seq_len} is longer than the model's max_length="
                       f"{model_config.max_length}")
    return model_config, seq_len


def run_record(task: str, settings: TrainConfig, model_config, seq_len: int) -> dict:
    """The ``config.json`` record of a run of ``task`` (before its tokenizer is known)."""
    import dataclasses

    return {
        "task": task,
        "model": settings.model,
        "preset": settings.preset,
        "model_config": dataclasses.asdict(model_config),
        "train": settings.to_dict(),
        "tokenizer": settings.tokenizer,
        "data": settings.data,
        "seq_len": seq_len,
    }


def open_run(out: str, record: dict, worker, keys: tuple[str, ...] = RESUMABLE_KEYS):
    """Check ``out`` against the run ``record`` about to train there.

    Returns ``(previous_record_or_None, finished_run_or_None)``: a directory holding a run with
    other settings is refused (``ZooError`` naming them); a finished one is loaded and returned.
    The chief creates ``out``.
    """
    if worker.is_chief:
        os.makedirs(out, exist_ok=True)
    config_path = os.path.join(out, CONFIG_FILE)
    previous = read_json(config_path) if os.path.exists(config_path) else None
    if previous is None:
        return None, None
    before, now = _identity(previous, keys), _identity(record, keys)
    differs = [k for k in keys if before.get(k) != now.get(k)]
    if differs:
        trained = (os.path.exists(os.path.join(out, MODEL_FILE))
                   or _has_checkpoint(os.path.join(out, CHECKPOINT_DIR)))
        hint = ("" if trained else
                f" (it stopped before its first checkpoint: remove {out} to start it afresh)")
        raise ZooError(
            f"{out} already holds a run with other settings ({', '.join(differs)} differ); "
            f"use a new --out directory or the same settings to resume{hint}"
        )
    metrics_path = os.path.join(out, METRICS_FILE)
    if os.path.exists(os.path.join(out, MODEL_FILE)) and os.path.exists(metrics_path):
        if read_json(metrics_path).get("completed"):
            log.warning("%s is already trained; loading it", out)
            return previous, load(out)
    return previous, None


def write_record(out: str, record: dict, previous: dict | None, worker) -> None:
    """Write ``config.json`` once, on the chief, when the run is new."""
    if previous is None and worker.is_chief:
        write_json_atomic(os.path.join(out, CONFIG_FILE), record)


def finish_run(out: str, result: FitResult, metrics: dict, record: dict, tokenizer) -> LoadedRun:
    """Write ``metrics.json`` (chief) and return the trained run."""
    if not result.is_chief:
        return LoadedRun(path=out, model=result.model, tokenizer=tokenizer, config=record)
    write_json_atomic(os.path.join(out, METRICS_FILE), metrics)
    return load(out)


class _no_scope:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def gpu_available() -> bool:
    """True when the Keras backend's framework sees a GPU."""
    return backends.gpu_available()


class _CheckpointAtSegmentEnd(keras.callbacks.Callback):
    """Saves model + optimizer at the end of every segment, numbered by the global step."""

    def __init__(self, manager, step_of, discard: bool = False):
        super().__init__()
        self.manager = manager
        self.step_of = step_of
        self.discard = discard  # a non-chief worker: take part in the save, keep nothing

    def on_epoch_end(self, epoch, logs=None):
        self.manager.save(checkpoint_number=self.step_of())
        if self.discard:
            shutil.rmtree(self.manager.directory, ignore_errors=True)


class _StopAtTarget(keras.callbacks.Callback):
    """Stops training once the validation metric ``monitor`` reaches ``target`` at a checkpoint
    (``<=`` for ``mode="min"``, ``>=`` for ``"max"``)."""

    def __init__(self, monitor: str, target: float, mode: str = "min"):
        super().__init__()
        self.monitor, self.target, self.mode = monitor, float(target), mode

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        reached = value <= self.target if self.mode == "min" else value >= self.target
        if reached:
            log.warning("%s = %.4f reached the target %.4f: stopping", self.monitor, value,
                        self.target)
            self.model.stop_training = True


class _StopAtStep(keras.callbacks.Callback):
    """Stops after the last step when it falls inside a segment. Counts the batches itself (one
    batch is one optimizer step): reading a variable after every step would make the JAX trainer
    copy its whole state back into the model each time."""

    def __init__(self, total_steps: int, start_step: int):
        super().__init__()
        self.total_steps = total_steps
        self.step = start_step

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step >= self.total_steps:
            self.model.stop_training = True


class _StepProgress(keras.callbacks.Callback):
    """Training progress over the global step, on stderr (``zoo.progress``), in place of Keras'
    per-"epoch" bars (an epoch here is only a checkpoint segment)::

        step 1200/2000  loss 1.2340  12,345 tok/s  ETA 1m20s
        checkpoint at step 1200: val_loss 1.3012  val_perplexity 3.67  (validation 2.1 s)

    ``loss`` is Keras' running mean since the last checkpoint; ``tok/s`` counts training time
    only (``steps/s`` when ``tokens_per_step`` is unknown); the ETA extrapolates the wall-clock
    rate since the first step (compilation excluded; validations included). ``verbose=1``: a
    step line at most every ``interval`` seconds (on a terminal one line rewritten in place,
    every 0.2 s) and at each checkpoint; ``verbose=2``: the lines of the checkpoints only.
    Counts the batches itself, like ``_StopAtStep``, and never reads the model per step."""

    def __init__(self, total_steps: int, start_step: int, segment: int,
                 tokens_per_step: int | None, verbose: int, interval: float = 10.0):
        super().__init__()
        self.total_steps, self.start_step, self.segment = total_steps, start_step, segment
        self.step = start_step
        self.tokens_per_step = tokens_per_step
        self.verbose = verbose
        self.live = verbose == 1 and getattr(progress.stream(), "isatty", lambda: False)()
        self.interval = 0.2 if self.live else interval
        self._open_line = False  # a live line is on the screen without its newline

    def _out(self, text: str) -> None:
        out = progress.stream()
        out.write(text)
        out.flush()

    def on_train_begin(self, logs=None):
        self._first = None  # (time, step) once the first step (and its compilation) is done
        self._last_line = 0.0
        self._train_seconds = 0.0
        self._batch_started = None
        self._validation_started = None
        self._validation_seconds = 0.0
        self._out(f"training steps {self.start_step + 1}-{self.total_steps} of "
                  f"{self.total_steps}, a checkpoint every {self.segment} steps\n")

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        now = time.perf_counter()
        if self._first is None:
            self._first = (now, self.step)
        elif self._batch_started is not None:
            self._train_seconds += now - self._batch_started
        if self.verbose == 1 and (now - self._last_line >= self.interval
                                  or self.step == self._first[1]):
            self._line(logs, now)

    def _line(self, logs, now: float, end: bool = False) -> None:
        steps = self.step - self._first[1] if self._first else 0
        rate = steps / self._train_seconds if steps and self._train_seconds > 0 else None
        wall = (now - self._first[0]) / steps if steps else None
        eta = wall * (self.total_steps - self.step) if wall is not None else None
        loss = (logs or {}).get("loss")
        line = progress.step_line(
            self.step, self.total_steps, None if loss is None else float(loss),
            tokens_per_second=rate * self.tokens_per_step if rate and self.tokens_per_step else None,
            steps_per_second=rate, eta_seconds=eta if self.step < self.total_steps else None)
        if self.live:
            self._out("\r" + line.ljust(79) + ("\n" if end else ""))
            self._open_line = not end
        else:
            self._out(line + "\n")
        self._last_line = now

    def on_test_begin(self, logs=None):
        self._validation_started = time.perf_counter()

    def on_test_end(self, logs=None):
        if self._validation_started is not None:
            self._validation_seconds = time.perf_counter() - self._validation_started

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._line(logs, time.perf_counter(), end=True)
        values = "  ".join(f"{k} {float(v):.4f}" for k, v in logs.items() if k.startswith("val_"))
        took = f"  (validation {self._validation_seconds:.1f} s)" if self._validation_seconds else ""
        self._out(f"checkpoint at step {self.step}: {values or 'saved'}{took}\n")
        self._validation_seconds = 0.0

    def on_train_end(self, logs=None):
        if self._open_line:
            self._out("\n")
            self._open_line = False


class _StepTensorBoard(keras.callbacks.Callback):
    """TensorBoard scalars keyed by the **global step** (Keras' own callback keys its
    ``update_freq="epoch"`` scalars by the epoch, here a checkpoint segment, whose count restarts
    on resume). At each checkpoint: the training metrics (Keras' means since the previous
    checkpoint) and the learning rate in ``LOG_DIR/train``, the validation metrics (``val_``
    removed) in ``LOG_DIR/validation``. ``tensorboard --logdir RUN/logs`` shows them."""

    def __init__(self, log_dir: str, start_step: int):
        super().__init__()
        self.log_dir = log_dir
        self.step = start_step
        self._writers: dict = {}

    def _writer(self, name: str):
        import tensorflow as tf

        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.log_dir, name))
        return self._writers[name]

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        logs = dict(logs or {})
        optimizer = getattr(self.model, "optimizer", None)
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # a loss-scale wrapper
        if optimizer is not None and "learning_rate" not in logs:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        for split, prefix in (("train", ""), ("validation", "val_")):
            values = {k[len(prefix):]: v for k, v in logs.items()
                      if k.startswith("val_") == bool(prefix)}
            if values:
                with self._writer(split).as_default():
                    for name, value in values.items():
                        tf.summary.scalar(name, float(value), step=self.step)
                self._writer(split).flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def learning_rate_schedule(train: TrainConfig, total_steps: int):
    """Linear warm-up to ``learning_rate`` then cosine decay to ``min_learning_rate_ratio`` of it:

        lr(t) = peak * t / W                                      for t < W
        lr(t) = peak * (a + (1 - a) * (1 + cos(pi * (t - W) / (T - W))) / 2)   afterwards
    """
    warmup = train.warmup_steps if train.warmup_steps is not None else min(100, total_steps // 20)
    warmup = min(warmup, max(total_steps - 1, 0))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else train.learning_rate,
        warmup_target=train.learning_rate if warmup else None,
        warmup_steps=warmup,
        decay_steps=max(total_steps - warmup, 1),
        alpha=train.min_learning_rate_ratio,
    )


@dataclass
class FitPlan:
    """What to fit: the task supplies these, ``fit_resumable`` does the rest.

    ``build_model()`` and ``make_metrics()`` are called inside the strategy scope (metric variables
must be created there to be aggregated across replicas) and the mixed-precision policy;
    ``make_train_ds(start_step, num_steps)`` yields the batches from ``start_step`` on;
    ``make_valid_ds()`` the validation batches measured at every checkpoint; ``monitor`` the
    validation metric (lower is better unless ``monitor_mode="max"``) for early stopping.
    ``agree``: values every worker of a multi-worker run must share (checked before training).
    ``tokenizer``: the run's, whose tokens ``model.embeddings`` (pretrained word vectors) match;
    ``source_tokenizer``: an encoder-decoder's source side (``model.source_embeddings``; the
    same object as ``tokenizer`` when the vocabulary is shared).
    """

    build_model: Callable[[], keras.Model]
    loss: object
    make_metrics: Callable[[], list]
    make_train_ds: Callable[[int, int], object]  # tf.data.Dataset or an iterator of (x, y)
    make_valid_ds: Callable[[], object]  # tf.data.Dataset or NumPy (x, y)
    total_steps: int
    monitor: str
    monitor_mode: str = "min"
    agree: dict = field(default_factory=dict)
    no_decay: tuple[str, ...] = ("bias", "gamma", "beta", "embeddings")
    tokens_per_step: int | None = None  # for the progress lines' tok/s (None: steps/s)
    tokenizer: object = None  # the run's tokenizer (for model.embeddings)
    source_tokenizer: object = None  # an encoder-decoder's source tokenizer


@dataclass
class FitResult:
    """What ``fit_resumable`` did: the trained model and the facts for ``metrics.json``."""

    model: keras.Model
    is_chief: bool
    start_step: int
    steps: int
    history: dict
    train_seconds: float
    mixed_precision: bool
    jit_compile: bool
    replicas: int
    workers: int

    def summary(self, settings: TrainConfig, tokens_per_step: int | None = None) -> dict:
        """The common part of ``metrics.json``."""
        result = {
            "completed": True,
            "steps": self.steps,
            "resumed_from_step": self.start_step,
            "train_seconds": round(self.train_seconds, 2),
            "parameters": int(self.model.count_params()),
            "history": self.history,
            "mixed_precision": self.mixed_precision,
            "jit_compile": self.jit_compile,
            "distribute": settings.distribute,
            "replicas": self.replicas,
            "workers": self.workers,
        }
        if tokens_per_step:
            result["tokens_per_second"] = round(
                (self.steps - self.start_step) * tokens_per_step / max(self.train_seconds, 1e-9), 1
            )
        return result


def make_optimizer(settings: TrainConfig, total_steps: int,
                   no_decay: tuple[str, ...] = ("bias", "gamma", "beta", "embeddings")):
    """The zoo's optimiser: AdamW (decoupled weight decay, none on ``no_decay`` variables) with
    ``learning_rate_schedule`` and global gradient-norm clipping."""
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate_schedule(settings, total_steps),
        weight_decay=settings.weight_decay,
        beta_2=settings.beta_2,
        global_clipnorm=settings.clipnorm,
    )
    optimizer.exclude_from_weight_decay(var_names=list(no_decay))
    return optimizer


def _common_callbacks(out: str, settings: TrainConfig, plan: FitPlan, start_step: int,
                      total_steps: int, worker, verbose: int = 0) -> list:
    """Stop at the last step, TensorBoard by global step (chief, where TensorFlow is
    installed), the progress lines (chief, ``verbose`` > 0), early stopping and the target
    metric."""
    callbacks: list[keras.callbacks.Callback] = [_StopAtStep(total_steps, start_step)]
    if worker.is_chief and backends.tensorflow_installed():
        callbacks.append(_StepTensorBoard(os.path.join(out, LOG_DIR), start_step))
    if worker.is_chief and verbose:
        callbacks.append(_StepProgress(total_steps, start_step,
                                       min(settings.checkpoint_every, total_steps),
                                       plan.tokens_per_step, verbose))
    if settings.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=plan.monitor,
                mode=plan.monitor_mode,
                patience=settings.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    if settings.target_validation_loss is not None:
        callbacks.append(_StopAtTarget(plan.monitor, settings.target_validation_loss,
                                       plan.monitor_mode))
    return callbacks


def _mixed_precision(settings: TrainConfig, out: str | None = None, worker=None) -> str:
    """The run's Keras dtype policy: ``mixed_bfloat16``, ``mixed_float16`` or ``float32``.

    A run keeps the policy its ``config.json`` records as ``"mixed_precision"``: a resumed run
    must build the optimizer its checkpoints hold (a float16 run's carries a loss scale), whatever
    device it resumes on. A new run takes ``settings.mixed_precision`` (``None``: the device's
    default, ``backends.default_mixed_precision``: bfloat16 on compute capability >= 8.0, float16
    on 7.x, float32 elsewhere), and the chief records the choice in ``out/config.json``.
    """
    config_path = os.path.join(out, CONFIG_FILE) if out else None
    record = read_json(config_path) if config_path and os.path.isfile(config_path) else None
    recorded = record.get("mixed_precision") if record else None
    if recorded in backends.PRECISION_POLICIES:
        return recorded
    policy = backends.mixed_precision_policy(settings.mixed_precision)
    if record is not None and (worker is None or worker.is_chief):
        write_json_atomic(config_path, {**record, "mixed_precision": policy})
    return policy


def _loss_scaled(optimizer, policy: str):
    """``optimizer`` wrapped in ``keras.optimizers.LossScaleOptimizer`` under ``mixed_float16``
    (dynamic loss scaling keeps small float16 gradients from underflowing), else as it is.
    ``Model.compile`` would wrap it too (``auto_scale_loss``), but only the model's own copy:
    wrapped here, the loss scale is the optimizer the checkpoints save and restore."""
    if policy == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


# XLA's compilation costs a few seconds on a CPU (about 4 s more warm-up for transformer_lm small)
# and saves about 13 ms a step there: it pays for itself after some 300 steps.
XLA_CPU_MIN_STEPS = 500


def _jit(settings: TrainConfig, model, total_steps: int, strategy=None) -> bool:
    """XLA / jit by default where it is the faster choice (``bench/cpu_step_rate.py``):

    * JAX: always (every JAX step is compiled).
    * TensorFlow on a GPU: on, unless a strategy holds several local replicas (one XLA step
      cannot reach the other devices' variables).
    * TensorFlow on a CPU: on for the models whose step XLA speeds up there
      (``model.xla_on_cpu``: attention and n-gram models, 1.1-1.5x) in runs long enough to pay
      for the compilation (``XLA_CPU_MIN_STEPS``); off for recurrent ones (XLA's CPU loops were
      0.6-0.9x); off with several replicas (XLA's CPU backend has no collective ops).
    """
    if settings.jit_compile is not None:
        return bool(settings.jit_compile)
    if backends.current() == "jax":
        return True
    local_replicas = len(getattr(strategy.extended, "worker_devices", ())) if strategy else 1
    if local_replicas > 1:
        return False
    if gpu_available():
        return True
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    return (replicas == 1 and total_steps >= XLA_CPU_MIN_STEPS
            and bool(getattr(model, "xla_on_cpu", False)))


def fit_resumable(out: str, settings: TrainConfig, strategy, worker, plan: FitPlan,
                  verbose: int = 1) -> FitResult:
    """Build, compile and ``fit`` ``plan``'s model into run directory ``out``, resuming from the
    latest checkpoint in ``out/checkpoints``; writes ``out/model.keras`` (chief only).

    ``settings.batch_size`` is the global batch under every strategy; the learning rate is not
    rescaled, so the same settings train the same model whatever the strategy. Runs on the
    Keras backend of the process, which must be ``settings.backend``. Pretrained word vectors
    (``model.embeddings``, ``model.source_embeddings``, ``model.freeze_embeddings``) go into each
    newly built model (``_with_pretrained_vectors``).
    """
    backends.ensure(settings.backend)
    plan = _with_pretrained_vectors(out, settings, worker, plan, verbose)
    if settings.backend == "tensorflow":
        return _fit_tensorflow(out, settings, strategy, worker, plan, verbose)
    if strategy is not None:
        raise ZooError(f"distribute={settings.distribute!r} needs --backend tensorflow "
                       "(tf.distribute); on JAX the zoo trains on one device")
    return _fit_portable(out, settings, worker, plan, verbose)


def _with_pretrained_vectors(out: str, settings: TrainConfig, worker, plan: FitPlan,
                             verbose: int) -> FitPlan:
    """``plan`` whose ``build_model`` also applies ``model.embeddings`` /
    ``model.source_embeddings`` / ``model.freeze_embeddings``
    (``zoo.pretrained_vectors.initialise``): the vectors when the run starts from scratch, only
    the freeze when it resumes from a checkpoint (whose weights are restored over them). The
    freeze comes before the optimizer is built, so the optimizer never holds (or restores) slots
    for a frozen table."""
    if not pretrained_vectors.wants_vectors(settings.model_overrides):
        return plan
    resuming = _has_checkpoint(os.path.join(out, CHECKPOINT_DIR))
    build = plan.build_model

    def build_with_vectors() -> keras.Model:
        return pretrained_vectors.initialise(
            build(), settings.model_overrides, plan.tokenizer, out=out, resuming=resuming,
            is_chief=worker.is_chief, model_name=settings.model, verbose=verbose,
            source_tokenizer=plan.source_tokenizer)

    return dataclasses.replace(plan, build_model=build_with_vectors)


# --------------------------------------------------------------------------------------------------
# JAX (any backend but TensorFlow): Keras weights files as checkpoints
# --------------------------------------------------------------------------------------------------

def _has_checkpoint(checkpoint_dir: str) -> bool:
    """Whether ``checkpoint_dir`` holds a checkpoint of either kind (a resume starts there)."""
    return bool(portable_checkpoints(checkpoint_dir)) or _has_tf_checkpoint(checkpoint_dir)


def _has_tf_checkpoint(checkpoint_dir: str) -> bool:
    return os.path.isfile(os.path.join(checkpoint_dir, "checkpoint"))


class _KerasCheckpoints(keras.callbacks.Callback):
    """Writes ``ckpt-<step>.weights.h5`` (model + optimizer variables) at the end of every
    segment, atomically (written beside, then renamed), keeping the newest ``keep``."""

    def __init__(self, directory: str, keep: int = 3):
        super().__init__()
        self.directory, self.keep = directory, keep

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        model = self.model  # on JAX, reading .model copies the trainer's state into the model
        step = int(model.optimizer.iterations)
        final = os.path.join(self.directory, f"{CHECKPOINT_PREFIX}{step}{CHECKPOINT_SUFFIX}")
        tmp = os.path.join(self.directory, f".tmp-{CHECKPOINT_PREFIX}{step}{CHECKPOINT_SUFFIX}")
        model.save_weights(tmp)
        os.replace(tmp, final)
        for _, old in portable_checkpoints(self.directory)[: -self.keep]:
            os.remove(old)


def _fit_portable(out: str, settings: TrainConfig, worker, plan: FitPlan, verbose: int) -> FitResult:
    total_steps = plan.total_steps
    segment = min(settings.checkpoint_every, total_steps)
    policy = _mixed_precision(settings, out, worker)
    mixed = policy != "float32"
    checkpoint_dir = os.path.join(out, CHECKPOINT_DIR)
    if _has_tf_checkpoint(checkpoint_dir) and not portable_checkpoints(checkpoint_dir):
        raise ZooError(f"{out} holds TensorFlow checkpoints: resume it with --backend tensorflow")
    previous_policy = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(settings.seed)
        model = plan.build_model()
        jit = _jit(settings, model, total_steps)
        optimizer = _loss_scaled(make_optimizer(settings, total_steps, plan.no_decay), policy)
        optimizer.build(model.trainable_variables)
        model.compile(optimizer=optimizer, loss=plan.loss, metrics=plan.make_metrics(),
                      jit_compile=jit)
        start_step = 0
        saved = portable_checkpoints(checkpoint_dir)
        if saved:
            model.load_weights(saved[-1][1])
            start_step = int(optimizer.iterations)
            log.warning("resuming from checkpoint at step %d of %d (%s)", start_step, total_steps, out)

        def step_of() -> int:
            return int(optimizer.iterations)

        callbacks = [_KerasCheckpoints(checkpoint_dir),
                     *_common_callbacks(out, settings, plan, start_step, total_steps, worker,
                                        verbose)]
        valid = plan.make_valid_ds()
        validation = dict(validation_data=valid)
        if isinstance(valid, tuple):  # NumPy (x, y): batched here
            validation["validation_batch_size"] = settings.batch_size
        started = time.time()
        history = {}
        if start_step < total_steps:
            fit = model.fit(
                plan.make_train_ds(start_step, total_steps - start_step),
                epochs=math.ceil(total_steps / segment),
                initial_epoch=start_step // segment,
                steps_per_epoch=segment,
                callbacks=callbacks,
                shuffle=False,  # batches are already random, and a function of the step
                verbose=0,  # progress over the global step: _StepProgress
                **validation,
            )
            history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
        train_seconds = time.time() - started
        tmp_model = os.path.join(out, ".tmp-" + MODEL_FILE)
        model.save(tmp_model)
        os.replace(tmp_model, os.path.join(out, MODEL_FILE))
        return FitResult(model=model, is_chief=True, start_step=start_step, steps=step_of(),
                         history=history, train_seconds=train_seconds, mixed_precision=mixed,
                         jit_compile=jit, replicas=1, workers=1)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


# --------------------------------------------------------------------------------------------------
# TensorFlow: tf.distribute and tf.train checkpoints
# --------------------------------------------------------------------------------------------------


def _fit_tensorflow(out: str, settings: TrainConfig, strategy, worker, plan: FitPlan,
                    verbose: int) -> FitResult:
    import tensorflow as tf

    from zoo import distribute as zdist

    total_steps = plan.total_steps
    segment = min(settings.checkpoint_every, total_steps)
    if strategy is not None:
        zdist.per_replica_batch(strategy, settings.batch_size)  # a clear error before any work
    checkpoint_dir = os.path.join(out, CHECKPOINT_DIR)
    if portable_checkpoints(checkpoint_dir) and not _has_tf_checkpoint(checkpoint_dir):
        raise ZooError(f"{out} holds checkpoints written on JAX: resume it with --backend jax")

    # XLA compiles a step for one device: with several local replicas it cannot reach the others'
    # variables ("Trying to access resource ... located in device ..."), so it is off by default.
    local_replicas = len(getattr(strategy.extended, "worker_devices", ())) if strategy else 1
    if settings.jit_compile and local_replicas > 1 and settings.distribute != "tpu":
        raise ZooError(
            f"jit_compile=True does not work with {local_replicas} local replicas under "
            f"distribute={settings.distribute!r} (XLA compiles the step for one device); leave "
            "jit_compile unset"
        )
    policy = _mixed_precision(settings, out, worker)
    mixed = policy != "float32"
    previous_policy = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy(policy)
    # A non-chief worker writes its share of each save here, and deletes it.
    scratch = None if worker.is_chief else tempfile.mkdtemp(prefix=f"zoo-worker{worker.task_index}-")
    try:
        with strategy.scope() if strategy is not None else _no_scope():
            keras.utils.set_random_seed(settings.seed)
            model = plan.build_model()
            jit = _jit(settings, model, total_steps, strategy)
            optimizer = _loss_scaled(make_optimizer(settings, total_steps, plan.no_decay), policy)
            optimizer.build(model.trainable_variables)
            replicas = strategy.num_replicas_in_sync if strategy is not None else 1
            model.compile(
                optimizer=optimizer,
                loss=plan.loss,
                # Keras scales a per-replica loss by 1/replicas before the gradients are summed
                # across replicas, but not a loss that is already a scalar, as the zoo's masked
                # losses are: the weight does it, so the update is the mean over replicas.
                loss_weights=1.0 / replicas if replicas > 1 else None,
                metrics=plan.make_metrics(),
                jit_compile=jit,
            )
            if replicas > 1 and hasattr(model, "_compile_config"):
                # model.keras records the compile settings of a single device (loss weight 1).
                model._compile_config.config["loss_weights"] = None

        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
        manager = tf.train.CheckpointManager(
            checkpoint,
            checkpoint_dir if scratch is None else os.path.join(scratch, CHECKPOINT_DIR),
            max_to_keep=3,
        )
        start_step = 0
        # Every worker resumes from the chief's checkpoints.
        latest = tf.train.latest_checkpoint(checkpoint_dir) if os.path.isdir(checkpoint_dir) else None
        if latest:
            checkpoint.restore(latest).assert_existing_objects_matched()
            start_step = int(optimizer.iterations.numpy())
            log.warning("resuming from checkpoint at step %d of %d (%s)", start_step, total_steps, out)
        if strategy is not None:
            zdist.check_workers_agree(
                strategy,
                worker,
                {
                    "the step to resume from (the latest checkpoint in RUN/checkpoints)": start_step,
                    "the number of steps": total_steps,
                    **plan.agree,
                },
            )

        def step_of() -> int:
            return int(optimizer.iterations.numpy())

        callbacks = [_CheckpointAtSegmentEnd(manager, step_of, discard=scratch is not None),
                     *_common_callbacks(out, settings, plan, start_step, total_steps, worker,
                                        verbose)]

        def make_train_ds():
            return plan.make_train_ds(start_step, total_steps - start_step)

        validation_steps = None
        if strategy is None:
            train_ds, valid_ds = make_train_ds(), plan.make_valid_ds()
        else:  # the same global batches, each replica taking its rows
            train_ds = zdist.distribute_batches(strategy, make_train_ds, settings.batch_size)
            valid_ds = zdist.distribute_batches(strategy, plan.make_valid_ds, settings.batch_size)
            validation_steps = int(plan.make_valid_ds().cardinality())  # unknown once distributed

        started = time.time()
        history = {}
        if start_step < total_steps:
            fit = model.fit(
                train_ds,
                epochs=math.ceil(total_steps / segment),
                initial_epoch=start_step // segment,
                steps_per_epoch=segment,
                validation_data=valid_ds,
                validation_steps=validation_steps,
                callbacks=callbacks,
                shuffle=False,  # batches are already random, and a function of the step
                verbose=0,  # progress over the global step: _StepProgress (chief)
            )
            history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
        train_seconds = time.time() - started

        # Every worker saves (reading synchronised variables may be collective); the chief's counts.
        tmp_model = os.path.join(out if scratch is None else scratch, ".tmp-" + MODEL_FILE)
        model.save(tmp_model)
        if worker.is_chief:
            os.replace(tmp_model, os.path.join(out, MODEL_FILE))
        return FitResult(
            model=model,
            is_chief=worker.is_chief,
            start_step=start_step,
            steps=step_of(),
            history=history,
            train_seconds=train_seconds,
            mixed_precision=bool(mixed),
            jit_compile=bool(jit),
            replicas=int(strategy.num_replicas_in_sync) if strategy is not None else 1,
            workers=worker.num_workers,
        )
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
