"""``zoo.train``: fit a named model on a corpus with ``model.fit``, resumable after a crash.

Training is cut into segments of ``checkpoint_every`` steps (Keras "epochs"). At the end of each
segment the validation loss is measured and a checkpoint (model + optimizer) is written. Batch
number s is a pure function of (seed, s) (see ``zoo.data.training_dataset``), so a run killed at
any moment and started again with the same command continues from its last checkpoint and sees
exactly the batches an uninterrupted run would have seen.

Optimiser: AdamW, learning rate warm-up then cosine decay, global gradient-norm clipping.

Distribution (``distribute=``: none, mirrored, multiworker, tpu; see ``zoo.distribute``): the model
and optimiser are built inside ``strategy.scope()``; ``batch_size`` is the global batch, split
across replicas, and the learning rate is not rescaled, so the same settings train the same model
whatever the strategy. Under multi-worker training only the chief writes the run directory.

Data: ``data`` may also be a directory made by ``zoo prepare`` (``prepared:DIR``): its tokenizer
is used and the token ids are read from its shards instead of tokenizing the text again.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
import zlib

import keras
import numpy as np
import tensorflow as tf

from zoo import data as zdata
from zoo import distribute as zdist
from zoo.config import DEFAULT_VOCAB_SIZES, TrainConfig
from zoo.data import prepared as zprepared
from zoo.errors import ZooError
from zoo.evaluation import evaluate_model
from zoo.metrics import Perplexity, TokenNLL, masked_lm_loss
from zoo.models import build_model, make_config
from zoo.run import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LOG_DIR,
    METRICS_FILE,
    MODEL_FILE,
    TOKENIZER_DIR,
    LoadedRun,
    load,
    read_json,
    write_json_atomic,
)
from zoo.tokenizers import load_tokenizer, train_tokenizer

log = logging.getLogger("zoo.train")

RESUMABLE_KEYS = ("model", "preset", "model_config", "train", "tokenizer", "data", "prepared")
# Settings that say where a run trains, not what it trains: a run may resume under another one.
PLACEMENT_KEYS = ("distribute",)


def _identity(record: dict) -> dict:
    """What must match for a run directory to be resumed."""
    identity = {k: record.get(k) for k in RESUMABLE_KEYS}
    if isinstance(identity.get("train"), dict):
        identity["train"] = {k: v for k, v in identity["train"].items() if k not in PLACEMENT_KEYS}
    return identity


def _fingerprint(ids) -> int:
    """crc32 of a split's ids (and line lengths): the workers check they train on the same data."""
    if isinstance(ids, tf.RaggedTensor):
        crc = zlib.crc32(ids.flat_values.numpy().astype("<i4").tobytes())
        return zlib.crc32(ids.row_lengths().numpy().astype("<i8").tobytes(), crc)
    return zlib.crc32(np.ascontiguousarray(ids, dtype="<i4").tobytes())


class _no_scope:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def gpu_available() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def _resolve_seq_len(train: TrainConfig, model_config) -> int:
    context = getattr(model_config, "max_length", None)
    seq_len = train.seq_len or context or 64
    if context is not None and seq_len > context:
        raise ZooError(f"seq_len {seq_len} is longer than the model's context max_length={context}")
    return seq_len


class _CheckpointAtSegmentEnd(keras.callbacks.Callback):
    """Saves model + optimizer at the end of every segment, numbered by the global step."""

    def __init__(self, manager: tf.train.CheckpointManager, step_of, discard: bool = False):
        super().__init__()
        self.manager = manager
        self.step_of = step_of
        self.discard = discard  # a non-chief worker: take part in the save, keep nothing

    def on_epoch_end(self, epoch, logs=None):
        self.manager.save(checkpoint_number=self.step_of())
        if self.discard:
            shutil.rmtree(self.manager.directory, ignore_errors=True)


class _StopAtStep(keras.callbacks.Callback):
    """Stops after the last step when it falls inside a segment."""

    def __init__(self, total_steps: int, step_of):
        super().__init__()
        self.total_steps = total_steps
        self.step_of = step_of

    def on_train_batch_end(self, batch, logs=None):
        if self.step_of() >= self.total_steps:
            self.model.stop_training = True


def _learning_rate(train: TrainConfig, total_steps: int):
    warmup = train.warmup_steps if train.warmup_steps is not None else min(100, total_steps // 20)
    warmup = min(warmup, max(total_steps - 1, 0))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else train.learning_rate,
        warmup_target=train.learning_rate if warmup else None,
        warmup_steps=warmup,
        decay_steps=max(total_steps - warmup, 1),
        alpha=train.min_learning_rate_ratio,
    )


def train(
    model: str,
    data: str,
    out: str,
    *,
    preset: str = "tiny",
    tokenizer: str | None = None,
    model_overrides: dict | None = None,
    verbose: int = 1,
    **train_settings,
) -> LoadedRun:
    """Train ``model`` on ``data`` into the run directory ``out`` and return the loaded result.

    Rerunning the same call on the same ``out`` after an interruption resumes from the last
    checkpoint; on a finished run it returns the finished model.

    ``tokenizer``: ``char`` (the default), ``word``, ``wordpiece`` or ``sentencepiece``; for
    prepared data (``data="prepared:DIR"``) the tokenizer it was prepared with (None takes it).
    ``distribute``: ``none`` (default), ``mirrored``, ``multiworker`` or ``tpu`` (see
    ``zoo.distribute``); ``batch_size`` is the global batch under every strategy.

    Example:
        >>> run = zoo.train("transformer_lm", "dataset:tinyshakespeare", "runs/tiny", max_steps=200)
        >>> run.generate("ROMEO:", max_new_tokens=50)
    """
    prepared = zprepared.open_prepared(data) if zprepared.is_prepared(data) else None
    if prepared is not None:
        if tokenizer not in (None, prepared.tokenizer_kind):
            raise ZooError(
                f"{prepared.path} was prepared with the {prepared.tokenizer_kind} tokenizer, not "
                f"{tokenizer}: train with --tokenizer {prepared.tokenizer_kind} (or prepare again)"
            )
        asked_vocab = train_settings.get("vocab_size")
        if asked_vocab is not None and asked_vocab != prepared.vocab_size:
            raise ZooError(
                f"{prepared.path} has a vocabulary of {prepared.vocab_size}, not {asked_vocab}: "
                "leave the vocabulary size out (or prepare again)"
            )
        tokenizer = prepared.tokenizer_kind
        data = zprepared.PREFIX + prepared.path  # one name for the data, however it was given
    try:
        settings = TrainConfig(
            model=model,
            data=data,
            preset=preset,
            tokenizer=tokenizer or "char",
            model_overrides=dict(model_overrides or {}),
            **train_settings,
        )
    except TypeError as err:
        raise ZooError(f"invalid training setting: {err}") from err
    # Before TensorFlow runs anything: a multi-worker strategy can only be set up then.
    strategy, worker = zdist.make_strategy(settings.distribute)
    overrides = dict(settings.model_overrides)
    if settings.seq_len and "max_length" not in overrides:
        probe = make_config(model, preset, **overrides)
        if hasattr(probe, "max_length"):
            overrides["max_length"] = settings.seq_len  # the context follows --seq-len
    model_config = make_config(model, preset, **overrides)
    seq_len = _resolve_seq_len(settings, model_config)

    if worker.is_chief:
        os.makedirs(out, exist_ok=True)
    config_path = os.path.join(out, CONFIG_FILE)
    record = {
        "model": model,
        "preset": preset,
        "model_config": dataclasses.asdict(model_config),
        "train": settings.to_dict(),
        "tokenizer": settings.tokenizer,
        "data": data,
        "seq_len": seq_len,
    }
    if prepared is not None:
        record["prepared"] = prepared.digest
    previous = read_json(config_path) if os.path.exists(config_path) else None
    if previous is not None:
        before, now = _identity(previous), _identity(record)
        differs = [k for k in RESUMABLE_KEYS if before.get(k) != now.get(k)]
        if differs:
            raise ZooError(
                f"{out} already holds a run with other settings ({', '.join(differs)} differ); "
                "use a new --out directory or the same settings to resume"
            )
        metrics_path = os.path.join(out, METRICS_FILE)
        if os.path.exists(os.path.join(out, MODEL_FILE)) and os.path.exists(metrics_path):
            if read_json(metrics_path).get("completed"):
                log.warning("%s is already trained; loading it", out)
                return load(out)

    corpus = None if prepared is not None else zdata.load_corpus(data)
    tokenizer_dir = os.path.join(out, TOKENIZER_DIR)
    # A non-chief worker trusts the run's tokenizer only once config.json (written after it) exists.
    if os.path.exists(os.path.join(tokenizer_dir, "tokenizer.json")) and (
        worker.is_chief or previous is not None
    ):
        tok = load_tokenizer(tokenizer_dir)
    else:
        if prepared is not None:
            tok = prepared.tokenizer()
        else:
            vocab_size = settings.vocab_size or DEFAULT_VOCAB_SIZES[settings.tokenizer]
            tok = train_tokenizer(settings.tokenizer, corpus.training_texts(), vocab_size=vocab_size)
        if worker.is_chief:
            tok.save(tokenizer_dir)
    corpus_kind = prepared.kind if prepared is not None else corpus.kind
    record.update(vocab_size=tok.vocab_size, corpus_kind=corpus_kind)
    if previous is None and worker.is_chief:
        write_json_atomic(config_path, record)

    if prepared is not None:
        train_ids = None  # streamed from the shards (stream) or loaded when the dataset is made
        valid_ids = prepared.ids("validation")
        data_fingerprint = int(prepared.digest[:15], 16)
    else:
        train_ids = zdata.encode(tok, corpus, "train")
        valid_ids = zdata.encode(tok, corpus, "validation")
        data_fingerprint = _fingerprint(train_ids) if worker.num_workers > 1 else 0
    if settings.max_steps is not None:
        total_steps = settings.max_steps
    else:
        epochs = settings.epochs or 1
        if prepared is not None:
            per_epoch = prepared.steps_per_epoch(seq_len, settings.batch_size)
        else:
            per_epoch = zdata.steps_per_epoch(train_ids, corpus_kind, seq_len, settings.batch_size)
        total_steps = epochs * per_epoch
    segment = min(settings.checkpoint_every, total_steps)
    if strategy is not None:
        zdist.per_replica_batch(strategy, settings.batch_size)  # a clear error before any work

    use_gpu = gpu_available()
    mixed = settings.mixed_precision if settings.mixed_precision is not None else use_gpu
    # XLA compiles a step for one device: with several local replicas it cannot reach the others'
    # variables ("Trying to access resource ... located in device ..."), so it is off by default.
    local_replicas = len(getattr(strategy.extended, "worker_devices", ())) if strategy else 1
    if settings.jit_compile and local_replicas > 1 and settings.distribute != "tpu":
        raise ZooError(
            f"jit_compile=True does not work with {local_replicas} local replicas under "
            f"distribute={settings.distribute!r} (XLA compiles the step for one device); leave "
            "jit_compile unset"
        )
    jit = settings.jit_compile if settings.jit_compile is not None else use_gpu and local_replicas == 1
    previous_policy = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    # A non-chief worker writes its share of each save here, and deletes it.
    scratch = None if worker.is_chief else tempfile.mkdtemp(prefix=f"zoo-worker{worker.task_index}-")
    try:
        with strategy.scope() if strategy is not None else _no_scope():
            keras.utils.set_random_seed(settings.seed)
            lm = build_model(model, tok.vocab_size, preset, **dataclasses.asdict(model_config))
            optimizer = keras.optimizers.AdamW(
                learning_rate=_learning_rate(settings, total_steps),
                weight_decay=settings.weight_decay,
                beta_2=settings.beta_2,
                global_clipnorm=settings.clipnorm,
            )
            # LayerNorm scales/offsets, biases and embeddings are not decayed (as GPT-2 / nanoGPT).
            optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "embeddings"])
            optimizer.build(lm.trainable_variables)
            replicas = strategy.num_replicas_in_sync if strategy is not None else 1
            lm.compile(
                optimizer=optimizer,
                loss=masked_lm_loss,
                # Keras scales a per-replica loss by 1/replicas before the gradients are summed
                # across replicas, but not a loss that is already a scalar, as masked_lm_loss is:
                # the weight does it, so the update is the mean over replicas, as on one device.
                loss_weights=1.0 / replicas if replicas > 1 else None,
                metrics=[TokenNLL(), Perplexity()],
                jit_compile=jit,
            )
            if replicas > 1 and hasattr(lm, "_compile_config"):
                # model.keras records the compile settings of a single device (loss weight 1).
                lm._compile_config.config["loss_weights"] = None

        checkpoint = tf.train.Checkpoint(model=lm, optimizer=optimizer)
        checkpoint_dir = os.path.join(out, CHECKPOINT_DIR)
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
                    "the vocabulary size": tok.vocab_size,
                    "the training data (checksum of its token ids)": data_fingerprint,
                },
            )

        def step_of() -> int:
            return int(optimizer.iterations.numpy())

        callbacks: list[keras.callbacks.Callback] = [
            _CheckpointAtSegmentEnd(manager, step_of, discard=scratch is not None),
            _StopAtStep(total_steps, step_of),
        ]
        if worker.is_chief:
            callbacks.append(
                keras.callbacks.TensorBoard(log_dir=os.path.join(out, LOG_DIR), update_freq="epoch")
            )
        if settings.early_stopping_patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_token_nll",
                    mode="min",
                    patience=settings.early_stopping_patience,
                    restore_best_weights=True,
                )
            )

        def make_train_ds() -> tf.data.Dataset:
            batches = dict(
                seq_len=seq_len,
                batch_size=settings.batch_size,
                seed=settings.seed,
                start_step=start_step,
                num_steps=total_steps - start_step,
            )
            if prepared is not None:
                return prepared.training_dataset(**batches)
            return zdata.training_dataset(train_ids, corpus_kind, **batches)

        def make_valid_ds() -> tf.data.Dataset:
            valid = zdata.evaluation_dataset(valid_ids, corpus_kind, seq_len, settings.batch_size)
            return valid.take(settings.eval_batches) if settings.eval_batches else valid

        validation_steps = None
        if strategy is None:
            train_ds, valid_ds = make_train_ds(), make_valid_ds()
        else:  # the same global batches, each replica taking its rows
            train_ds = zdist.distribute_batches(strategy, make_train_ds, settings.batch_size)
            valid_ds = zdist.distribute_batches(strategy, make_valid_ds, settings.batch_size)
            validation_steps = int(make_valid_ds().cardinality())  # unknown once distributed

        started = time.time()
        history = {}
        if start_step < total_steps:
            fit = lm.fit(
                train_ds,
                epochs=math.ceil(total_steps / segment),
                initial_epoch=start_step // segment,
                steps_per_epoch=segment,
                validation_data=valid_ds,
                validation_steps=validation_steps,
                callbacks=callbacks,
                shuffle=False,  # batches are already random, and a function of the step
                verbose=verbose if worker.is_chief else 0,
            )
            history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
        train_seconds = time.time() - started

        # Every worker saves (reading synchronised variables may be collective); the chief's counts.
        tmp_model = os.path.join(out if scratch is None else scratch, ".tmp-" + MODEL_FILE)
        lm.save(tmp_model)
        if not worker.is_chief:
            return LoadedRun(path=out, model=lm, tokenizer=tok, config=record)
        os.replace(tmp_model, os.path.join(out, MODEL_FILE))
        final = evaluate_model(
            lm, tok, valid_ids, corpus_kind, seq_len, settings.batch_size, tokenizer_kind=tok.kind
        )
        metrics = {
            "completed": True,
            "steps": step_of(),
            "total_steps": total_steps,
            "resumed_from_step": start_step,
            "train_seconds": round(train_seconds, 2),
            "tokens_per_second": round(
                (step_of() - start_step) * settings.batch_size * seq_len / max(train_seconds, 1e-9), 1
            ),
            "parameters": int(lm.count_params()),
            "validation": final,
            "history": history,
            "mixed_precision": bool(mixed),
            "jit_compile": bool(jit),
            "distribute": settings.distribute,
            "replicas": int(strategy.num_replicas_in_sync) if strategy is not None else 1,
            "workers": worker.num_workers,
        }
        write_json_atomic(os.path.join(out, METRICS_FILE), metrics)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return load(out)
