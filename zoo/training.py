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
import os
import shutil
import zlib

import numpy as np

from zoo import backends
from zoo import data as zdata
from zoo import distribute as zdist
from zoo.config import DEFAULT_VOCAB_SIZES, TrainConfig
from zoo.data import prepared as zprepared
from zoo.data import windows
from zoo.errors import ZooError
from zoo.evaluation import evaluate_model
from zoo.fitting import FitPlan, finish_run, fit_resumable, gpu_available, open_run, write_record
from zoo.metrics import Perplexity, TokenNLL, masked_lm_loss
from zoo.models import build_model, get_spec, make_config
from zoo.run import TOKENIZER_DIR, LoadedRun

log = logging.getLogger("zoo.train")

__all__ = ["gpu_available", "make_settings", "train"]


def _fingerprint(ids) -> int:
    """crc32 of a split's ids (and line lengths): the workers check they train on the same data."""
    if hasattr(ids, "row_splits"):  # a tf.RaggedTensor of lines
        flat, splits = windows.line_parts(ids)
        crc = zlib.crc32(flat.astype("<i4").tobytes())
        return zlib.crc32(np.diff(splits).astype("<i8").tobytes(), crc)
    return zlib.crc32(np.ascontiguousarray(ids, dtype="<i4").tobytes())


def _resolve_seq_len(train: TrainConfig, model_config) -> int:
    context = getattr(model_config, "max_length", None)
    seq_len = train.seq_len or context or 64
    if context is not None and seq_len > context:
        raise ZooError(f"seq_len {seq_len} is longer than the model's context max_length={context}")
    return seq_len


def make_settings(model: str, data: str, preset: str, tokenizer: str | None,
                  model_overrides: dict | None, train_settings: dict,
                  default_tokenizer: str = "char") -> TrainConfig:
    """``TrainConfig`` from ``zoo.train``'s arguments; a bad setting raises ``ZooError``.

    ``backend`` defaults to the Keras backend of the process, and must be it."""
    try:
        settings = TrainConfig(
            model=model,
            data=data,
            preset=preset,
            tokenizer=tokenizer or default_tokenizer,
            model_overrides=dict(model_overrides or {}),
            **train_settings,
        )
    except TypeError as err:
        raise ZooError(f"invalid training setting: {err}") from err
    settings.backend = settings.backend or backends.current()
    backends.ensure(settings.backend)
    return settings


def _copy_tree_atomic(source: str, target: str) -> None:
    tmp = target + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    os.replace(tmp, target)


def _run_tokenizer(settings: TrainConfig, tokenizer_dir: str, prepared, corpus, worker, previous):
    """The run's tokenizer: reloaded when resuming, else the prepared data's or trained on the
    corpus, and saved by the chief."""
    from zoo.tokenizers import load_tokenizer, train_tokenizer

    # A non-chief worker trusts the run's tokenizer only once config.json (written after it) exists.
    if os.path.exists(os.path.join(tokenizer_dir, "tokenizer.json")) and (
        worker.is_chief or previous is not None
    ):
        return load_tokenizer(tokenizer_dir)
    if prepared is not None:
        tok = prepared.tokenizer()
    else:
        vocab_size = settings.vocab_size or DEFAULT_VOCAB_SIZES[settings.tokenizer]
        tok = train_tokenizer(settings.tokenizer, corpus.training_texts(), vocab_size=vocab_size)
    if worker.is_chief:
        tok.save(tokenizer_dir)
    return tok


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
    spec = get_spec(model)
    if spec.task != "causal_lm":  # masked LM, translation, classification: their own trainers
        from zoo.tasks import get_task

        return get_task(spec.task).train(
            model, data, out, preset=preset, tokenizer=tokenizer,
            model_overrides=model_overrides, verbose=verbose, **train_settings,
        )
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
    settings = make_settings(model, data, preset, tokenizer, model_overrides, train_settings)
    # Before TensorFlow runs anything: a multi-worker strategy can only be set up then.
    strategy, worker = zdist.make_strategy(settings.distribute)
    overrides = dict(settings.model_overrides)
    if settings.seq_len and "max_length" not in overrides:
        probe = make_config(model, preset, **overrides)
        if hasattr(probe, "max_length"):
            overrides["max_length"] = settings.seq_len  # the context follows --seq-len
    model_config = make_config(model, preset, **overrides)
    seq_len = _resolve_seq_len(settings, model_config)

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
    previous, finished = open_run(out, record, worker)
    if finished is not None:
        return finished

    corpus = None if prepared is not None else zdata.load_corpus(data)
    tokenizer_dir = os.path.join(out, TOKENIZER_DIR)
    if prepared is not None and not backends.tensorflow_installed():
        # Training on prepared ids needs no tokenizer object (a TensorFlow module): its files go
        # into the run as they are, for generation and export where TensorFlow is.
        tok, vocab_size, tokenizer_kind = None, prepared.vocab_size, prepared.tokenizer_kind
        if worker.is_chief and not os.path.exists(os.path.join(tokenizer_dir, "tokenizer.json")):
            _copy_tree_atomic(os.path.join(prepared.path, prepared.manifest["tokenizer"]["dir"]),
                              tokenizer_dir)
    else:
        tok = _run_tokenizer(settings, tokenizer_dir, prepared, corpus, worker, previous)
        vocab_size, tokenizer_kind = tok.vocab_size, tok.kind
    corpus_kind = prepared.kind if prepared is not None else corpus.kind
    record.update(vocab_size=vocab_size, corpus_kind=corpus_kind)
    write_record(out, record, previous, worker)

    if prepared is not None:
        train_ids = None  # streamed from the shards (stream) or loaded when the dataset is made
        valid_ids = prepared.window_source("validation")
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
    on_tensorflow = settings.backend == "tensorflow"

    def make_train_ds(start_step: int, num_steps: int):
        batches = dict(seq_len=seq_len, batch_size=settings.batch_size, seed=settings.seed,
                       start_step=start_step, num_steps=num_steps)
        if on_tensorflow:
            if prepared is not None:
                return prepared.training_dataset(**batches)
            return zdata.training_dataset(train_ids, corpus_kind, **batches)
        source = (prepared.window_source("train") if prepared is not None
                  else windows.source_of(train_ids, corpus_kind))
        sampler = windows.TrainingWindows(source, seq_len, settings.batch_size, settings.seed)
        return sampler.iterate(start_step, num_steps)  # NumPy batches

    def make_valid_ds():
        if on_tensorflow:
            from zoo.data import pipelines

            valid = pipelines.evaluation_dataset(valid_ids, corpus_kind, seq_len,
                                                 settings.batch_size)
            return valid.take(settings.eval_batches) if settings.eval_batches else valid
        x, y = windows.evaluation_windows(windows.source_of(valid_ids, corpus_kind), seq_len,
                                          settings.batch_size)
        rows = settings.eval_batches * settings.batch_size if settings.eval_batches else len(x)
        return x[:rows], y[:rows]

    plan = FitPlan(
        build_model=lambda: build_model(model, vocab_size, preset, **dataclasses.asdict(model_config)),
        loss=masked_lm_loss,
        make_metrics=lambda: [TokenNLL(), Perplexity()],
        make_train_ds=make_train_ds,
        make_valid_ds=make_valid_ds,
        total_steps=total_steps,
        monitor="val_token_nll",
        agree={
            "the vocabulary size": vocab_size,
            "the training data (checksum of its token ids)": data_fingerprint,
        },
    )
    result = fit_resumable(out, settings, strategy, worker, plan, verbose=verbose)
    metrics = {}
    if result.is_chief:
        final = evaluate_model(result.model, tok, valid_ids, corpus_kind, seq_len,
                               settings.batch_size, tokenizer_kind=tokenizer_kind)
        metrics = result.summary(settings, tokens_per_step=settings.batch_size * seq_len)
        metrics.update(total_steps=total_steps, validation=final)
    return finish_run(out, result, metrics, record, tok)
