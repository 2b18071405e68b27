"""The causal-LM task (the language models: ``transformer_lm``, ``gpt2``, the RNNs, ``mlp_lm``):
train, evaluate, score, export.

Next-token prediction; training minimises, and ``zoo eval`` reports, over every label of a split:

    loss       L = -(1/N) sum_t log p(x_t | x_<t)          N = labels (padding excluded)
    perplexity = exp(L)
    bits/char  = L / ln 2                                   (character-level tokenizers)

Data: a corpus ``zoo.data.load_corpus`` reads (a stream of text cut into windows of ``seq_len``
tokens, or a line corpus framed ``<bos> line <eos>``), or a directory made by ``zoo prepare``
(``prepared:DIR``): its tokenizer is used and the token ids are read from its shards instead of
tokenizing the text again. Batch number s is a pure function of (seed, s), so a run resumes
exactly (``zoo.fitting``); on JAX, with prepared data, no TensorFlow is imported.

Evaluation totals are accumulated in float64 (``zoo.evaluation``). A tokenizer whose ids 0-3 are
real tokens (GPT-2's byte-level BPE) has its ids moved up by 4 for the data pipeline, which pads
with 0 and frames lines with 2 and 3, and moved back before the model sees them, so every real
token counts.

Export: ``CausalLMTask.serving_module`` / ``warmup_records`` come from ``zoo.tasks.causal_serving``
(generation and ``score`` signatures; ``score_texts`` here is the reference for ``score``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import zlib
from typing import TYPE_CHECKING

import numpy as np
from keras import ops

from zoo import backends, progress
from zoo import data as zdata
from zoo import distribute as zdist
from zoo.config import DEFAULT_VOCAB_SIZES, TrainConfig
from zoo.data import prepared as zprepared
from zoo.data import windows
from zoo.errors import ZooError
from zoo.evaluation import nll_metrics, sum_nll, token_nll_step
from zoo.files import TOKENIZER_DIR
from zoo.fitting import FitPlan, finish_run, fit_resumable, open_run, run_record, write_record
from zoo.metrics import Perplexity, TokenNLL, masked_lm_loss
from zoo.models import build_model, make_config
from zoo.run import LoadedRun
from zoo.special_tokens import BOS_ID, EOS_ID, NUM_SPECIAL, PAD_ID
from zoo.tasks.base import Task, register_task
from zoo.training import make_settings

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["CausalLMTask", "evaluate", "evaluate_model", "score_texts", "train"]


# ------------------------------------------------------------------------------------------------
# training


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


def _copy_tree_atomic(source: str, target: str) -> None:
    tmp = target + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    os.replace(tmp, target)


def _run_tokenizer(settings: TrainConfig, tokenizer_dir: str, prepared, corpus, worker, previous,
                   verbose: int | None = None):
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
        tok = train_tokenizer(settings.tokenizer, corpus.training_texts(), vocab_size=vocab_size,
                              verbose=verbose)
    if worker.is_chief:
        tok.save(tokenizer_dir)
    return tok


def train(model: str, data: str, out: str, *, preset: str = "tiny", tokenizer: str | None = None,
          model_overrides: dict | None = None, verbose: int = 1, **train_settings) -> LoadedRun:
    """Train the language model ``model`` on ``data`` into the run directory ``out``.

    ``tokenizer``: ``char`` (the default), ``word``, ``wordpiece`` or ``sentencepiece``; for
    prepared data (``data="prepared:DIR"``) the tokenizer it was prepared with (None takes it).
    ``seq_len`` (if given) also sets the model's context ``max_length`` unless it is set.
    Rerunning the same call resumes from the last checkpoint; on a finished run it returns the
    finished model.
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

    record = run_record("causal_lm", settings, model_config, seq_len)
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
        tok = _run_tokenizer(settings, tokenizer_dir, prepared, corpus, worker, previous, verbose)
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
        tokens_per_step=settings.batch_size * seq_len,
        agree={
            "the vocabulary size": vocab_size,
            "the training data (checksum of its token ids)": data_fingerprint,
        },
        tokenizer=tok,  # model.embeddings matches its tokens
    )
    result = fit_resumable(out, settings, strategy, worker, plan, verbose=verbose)
    metrics = {}
    if result.is_chief:
        final = evaluate_model(result.model, tok, valid_ids, corpus_kind, seq_len,
                               settings.batch_size, tokenizer_kind=tokenizer_kind,
                               verbose=verbose)
        metrics = result.summary(settings, tokens_per_step=settings.batch_size * seq_len)
        metrics.update(total_steps=total_steps, validation=final)
    return finish_run(out, result, metrics, record, tok)


# ------------------------------------------------------------------------------------------------
# evaluation


def _special_ids(tokenizer, corpus_kind: str):
    """``None`` for the zoo's reserved ids, else the tokenizer's ``(bos, eos)`` (see above)."""
    ids = tuple(getattr(tokenizer, name, default) for name, default in
                (("pad_id", PAD_ID), ("bos_id", BOS_ID), ("eos_id", EOS_ID)))
    if ids == (PAD_ID, BOS_ID, EOS_ID):
        return None
    if corpus_kind == "lines" and None in ids[1:]:
        raise ZooError("a line corpus needs <bos>/<eos> ids, and this tokenizer has none")
    return tuple(-1 if i is None else i for i in ids[1:])


def _shifted(source):
    """The window source with every id moved up by ``NUM_SPECIAL`` (see the module docstring)."""
    if isinstance(source, windows.StreamIds):
        return windows.StreamIds(np.concatenate(source.shards).astype(np.int32) + NUM_SPECIAL)
    flat, splits = source
    return flat + NUM_SPECIAL, splits


def _unshifted(special: tuple[int, int]):
    """``(x, y) -> (x, y, mask)``: pipeline ids back to the tokenizer's (``<bos>``/``<eos>`` to
    ``special``, padding to 0), counting the labels that were not padding."""
    bos, eos = special

    def unshift(ids):
        return ops.where(ids >= NUM_SPECIAL, ids - NUM_SPECIAL,
                         ops.where(ids == BOS_ID, bos, ops.where(ids == EOS_ID, eos, 0)))

    def remap(x, y):
        return unshift(x), unshift(y), ops.not_equal(y, PAD_ID)

    return remap


def evaluate_model(model, tokenizer, ids, corpus_kind: str, seq_len: int, batch_size: int,
                   tokenizer_kind: str | None = None, max_batches: int | None = None,
                   verbose: int | None = None) -> dict:
    """Corpus-level loss / perplexity of ``model`` on encoded ``ids`` (see ``zoo.data.encode``;
    or a ``zoo.data.windows`` source), on any Keras backend; ``max_batches`` limits the windows.
    ``verbose`` > 0: a progress bar over the batches on stderr (None: the ambient level,
    ``zoo.progress``).

    Returns ``{"loss", "perplexity", "tokens", "total_nll"}`` (and ``bits_per_char`` for a
    character tokenizer)."""
    special = _special_ids(tokenizer, corpus_kind)
    source = windows.source_of(ids, corpus_kind)
    if special is not None:
        source = _shifted(source)
    x, y = windows.evaluation_windows(source, seq_len, batch_size)  # (windows, seq_len) each
    step = token_nll_step(model, None if special is None else _unshifted(special))
    num_batches = len(x) // batch_size if max_batches is None else min(max_batches, len(x) // batch_size)
    batches = ((x[b * batch_size:(b + 1) * batch_size], y[b * batch_size:(b + 1) * batch_size])
               for b in range(num_batches))
    label = f"evaluating: {num_batches} batches of {batch_size} windows of {seq_len} tokens"
    total_nll, total_tokens = sum_nll(step, progress.track(batches, label, num_batches, verbose))
    result = nll_metrics(total_nll, total_tokens)
    result["total_nll"] = total_nll
    if (tokenizer_kind or getattr(tokenizer, "kind", None)) == "char":
        result["bits_per_char"] = result["loss"] / math.log(2.0)
    return result


def evaluate(run: LoadedRun, data: str | None = None, split: str = "validation",
             batch_size: int | None = None, **task_options) -> dict:
    """``zoo eval``'s JSON for a language model: ``loss``, ``perplexity``, ``tokens``,
    ``total_nll`` (``bits_per_char``), with ``data``, ``split`` and ``model``, over ``split`` of
    ``data`` (default: the data it was trained on; an imported checkpoint records none).

    ``task_options`` (translation's ``strategy``, ``num_beams``, ``max_examples``) are refused."""
    if task_options:
        raise ZooError(f"{', '.join(sorted(task_options))}: only for translation runs")
    source = data or run.config.get("data")
    if not source:
        raise ZooError(f"{run.path} records no corpus (an imported checkpoint): give the data "
                       "to evaluate on (--data)")
    if zdata.is_prepared(source):  # already tokenized shards (zoo prepare)
        prepared = zdata.open_prepared(source)
        ids, kind = prepared.window_source(split), prepared.kind
    else:
        with progress.stage(f"reading and tokenizing the {split} split of {source}"):
            corpus = zdata.load_corpus(source)
            ids, kind = zdata.encode(run.tokenizer, corpus, split), corpus.kind
    seq_len = run.config["seq_len"]
    batch = batch_size or run.config["train"]["batch_size"]
    result = evaluate_model(run.model, run.tokenizer, ids, kind, seq_len, batch)
    result.update(data=source, split=split, model=run.config["model"])
    return result


def score_texts(model, tokenizer, texts, line_corpus: bool) -> list[tuple[float, int]]:
    """Log-likelihood of each text under ``model``: ``[(sum of log p, tokens scored), ...]``.

    The sequence is the text's tokens (``line_corpus=False``: the first token has no context and
    is not scored) or ``<bos> tokens <eos>`` (``line_corpus=True``: every token after ``<bos>``,
    ``<eos>`` included, is scored). A model with a finite context (``model.max_length``) scores
    a longer text in consecutive windows of ``max_length`` predictions, as ``evaluate`` walks a
    split. Computed text by text, window by window, with a float64 log-softmax; the reference for
    the exported ``score`` signature.
    """
    import tensorflow as tf

    if isinstance(texts, str):
        texts = [texts]
    window = getattr(model, "max_length", None)
    results = []
    for text in texts:
        ids = tokenizer.tokenize(tf.constant([text]))
        ids = ids.merge_dims(1, -1) if ids.ragged_rank > 1 else ids
        seq = [int(t) for t in ids[0].numpy()]
        if line_corpus:
            seq = [getattr(tokenizer, "bos_id", BOS_ID), *seq, getattr(tokenizer, "eos_id", EOS_ID)]
        labels = len(seq) - 1
        if labels < 1:
            results.append((0.0, 0))
            continue
        stride = window or labels
        total = 0.0
        for start in range(0, labels, stride):
            chunk = np.asarray(seq[start : start + stride + 1], np.int32)
            x, y = chunk[:-1], chunk[1:]
            logits = np.asarray(model(x[None, :], training=False), np.float64)[0]  # (T, V)
            top = logits.max(axis=-1, keepdims=True)
            log_z = np.log(np.exp(logits - top).sum(axis=-1)) + top[:, 0]
            total += float(np.sum(logits[np.arange(len(y)), y] - log_z))
        results.append((total, labels))
    return results


# ------------------------------------------------------------------------------------------------
# the task


@register_task
class CausalLMTask(Task):
    """Next-token prediction: the language models.

    Trains and evaluates on the mean next-token negative log-likelihood over every label of the
    corpus windows (padding excluded):

        L = -(1/N) sum_t log p(x_t | x_<t),     perplexity = exp(L),     bits/char = L / ln 2

    Export (generation and scoring signatures) is ``zoo.tasks.causal_serving``'s.

    Example:
        >>> task = get_task("causal_lm")
        >>> run = task.train("transformer_lm", "dataset:tinyshakespeare", "runs/lm", max_steps=200)
        >>> task.evaluate(run)["perplexity"]
    """

    name = "causal_lm"
    # the module's functions are the task's methods
    train = staticmethod(train)
    evaluate = staticmethod(evaluate)

    def serving_module(self, run: LoadedRun,
                       **export_settings) -> tuple[tf.Module, dict, dict]:
        """The generation / scoring SavedModel module (``zoo.tasks.causal_serving``)."""
        from zoo.tasks import causal_serving

        return causal_serving.serving_module(run, **export_settings)

    def warmup_records(self, run: LoadedRun, **export_settings) -> list[bytes]:
        """Warm-up requests for the export (``zoo.tasks.causal_serving``)."""
        from zoo.tasks import causal_serving

        return causal_serving.warmup_records(run, **export_settings)
