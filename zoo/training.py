"""``zoo.train``: fit a named model on a corpus with ``model.fit``, resumable after a crash.

Training is cut into segments of ``checkpoint_every`` steps (Keras "epochs"). At the end of each
segment the validation loss is measured and a checkpoint (model + optimizer) is written. Batch
number s is a pure function of (seed, s) (see ``zoo.data.training_dataset``), so a run killed at
any moment and started again with the same command continues from its last checkpoint and sees
exactly the batches an uninterrupted run would have seen.

Optimiser: AdamW, learning rate warm-up then cosine decay, global gradient-norm clipping.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time

import keras
import tensorflow as tf

from zoo import data as zdata
from zoo.config import DEFAULT_VOCAB_SIZES, TrainConfig
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

RESUMABLE_KEYS = ("model", "preset", "model_config", "train", "tokenizer", "data")


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

    def __init__(self, manager: tf.train.CheckpointManager, step_of):
        super().__init__()
        self.manager = manager
        self.step_of = step_of

    def on_epoch_end(self, epoch, logs=None):
        self.manager.save(checkpoint_number=self.step_of())


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
    tokenizer: str = "char",
    model_overrides: dict | None = None,
    verbose: int = 1,
    **train_settings,
) -> LoadedRun:
    """Train ``model`` on ``data`` into the run directory ``out`` and return the loaded result.

    Rerunning the same call on the same ``out`` after an interruption resumes from the last
    checkpoint; on a finished run it returns the finished model.

    Example:
        >>> run = zoo.train("transformer_lm", "dataset:tinyshakespeare", "runs/tiny", max_steps=200)
        >>> run.generate("ROMEO:", max_new_tokens=50)
    """
    try:
        settings = TrainConfig(
            model=model,
            data=data,
            preset=preset,
            tokenizer=tokenizer,
            model_overrides=dict(model_overrides or {}),
            **train_settings,
        )
    except TypeError as err:
        raise ZooError(f"invalid training setting: {err}") from err
    overrides = dict(settings.model_overrides)
    if settings.seq_len and "max_length" not in overrides:
        probe = make_config(model, preset, **overrides)
        if hasattr(probe, "max_length"):
            overrides["max_length"] = settings.seq_len  # the context follows --seq-len
    model_config = make_config(model, preset, **overrides)
    seq_len = _resolve_seq_len(settings, model_config)

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
    previous = read_json(config_path) if os.path.exists(config_path) else None
    if previous is not None:
        differs = [k for k in RESUMABLE_KEYS if previous.get(k) != record.get(k)]
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

    corpus = zdata.load_corpus(data)
    tokenizer_dir = os.path.join(out, TOKENIZER_DIR)
    if os.path.exists(os.path.join(tokenizer_dir, "tokenizer.json")):
        tok = load_tokenizer(tokenizer_dir)
    else:
        vocab_size = settings.vocab_size or DEFAULT_VOCAB_SIZES[settings.tokenizer]
        tok = train_tokenizer(settings.tokenizer, corpus.training_texts(), vocab_size=vocab_size)
        tok.save(tokenizer_dir)
    record.update(vocab_size=tok.vocab_size, corpus_kind=corpus.kind)
    if previous is None:
        write_json_atomic(config_path, record)

    train_ids = zdata.encode(tok, corpus, "train")
    valid_ids = zdata.encode(tok, corpus, "validation")
    if settings.max_steps is not None:
        total_steps = settings.max_steps
    else:
        epochs = settings.epochs or 1
        per_epoch = zdata.steps_per_epoch(train_ids, corpus.kind, seq_len, settings.batch_size)
        total_steps = epochs * per_epoch
    segment = min(settings.checkpoint_every, total_steps)

    use_gpu = gpu_available()
    mixed = settings.mixed_precision if settings.mixed_precision is not None else use_gpu
    jit = settings.jit_compile if settings.jit_compile is not None else use_gpu
    previous_policy = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
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
        lm.compile(
            optimizer=optimizer,
            loss=masked_lm_loss,
            metrics=[TokenNLL(), Perplexity()],
            jit_compile=jit,
        )

        checkpoint = tf.train.Checkpoint(model=lm, optimizer=optimizer)
        manager = tf.train.CheckpointManager(
            checkpoint, os.path.join(out, CHECKPOINT_DIR), max_to_keep=3
        )
        start_step = 0
        if manager.latest_checkpoint:
            checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            start_step = int(optimizer.iterations.numpy())
            log.warning("resuming from checkpoint at step %d of %d (%s)", start_step, total_steps, out)

        def step_of() -> int:
            return int(optimizer.iterations.numpy())

        callbacks: list[keras.callbacks.Callback] = [
            _CheckpointAtSegmentEnd(manager, step_of),
            _StopAtStep(total_steps, step_of),
            keras.callbacks.TensorBoard(log_dir=os.path.join(out, LOG_DIR), update_freq="epoch"),
        ]
        if settings.early_stopping_patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_token_nll",
                    mode="min",
                    patience=settings.early_stopping_patience,
                    restore_best_weights=True,
                )
            )
        train_ds = zdata.training_dataset(
            train_ids,
            corpus.kind,
            seq_len=seq_len,
            batch_size=settings.batch_size,
            seed=settings.seed,
            start_step=start_step,
            num_steps=total_steps - start_step,
        )
        valid_ds = zdata.evaluation_dataset(valid_ids, corpus.kind, seq_len, settings.batch_size)
        if settings.eval_batches:
            valid_ds = valid_ds.take(settings.eval_batches)

        started = time.time()
        history = {}
        if start_step < total_steps:
            fit = lm.fit(
                train_ds,
                epochs=math.ceil(total_steps / segment),
                initial_epoch=start_step // segment,
                steps_per_epoch=segment,
                validation_data=valid_ds,
                callbacks=callbacks,
                shuffle=False,  # batches are already random, and a function of the step
                verbose=verbose,
            )
            history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
        train_seconds = time.time() - started

        final = evaluate_model(
            lm, tok, valid_ids, corpus.kind, seq_len, settings.batch_size, tokenizer_kind=tok.kind
        )
        tmp_model = os.path.join(out, ".tmp-" + MODEL_FILE)
        lm.save(tmp_model)
        os.replace(tmp_model, os.path.join(out, MODEL_FILE))
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
        }
        write_json_atomic(os.path.join(out, METRICS_FILE), metrics)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    return load(out)
