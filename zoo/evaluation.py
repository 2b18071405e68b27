"""Evaluation of a causal LM (``zoo.evaluate``, in ``zoo.run``): loss, perplexity and bits per character over a whole split.

    loss       = (sum over every label of -log p(label | context)) / (number of labels)
    perplexity = exp(loss)
    bits/char  = loss / ln 2        (character-level tokenizers)

Totals are accumulated in float64 across batches; padding labels (id 0) are excluded. A
tokenizer whose ids 0-3 are real tokens (GPT-2's byte-level BPE) has its ids moved up by 4 for
the data pipeline, which pads with 0 and frames lines with 2 and 3, and moved back before the
model sees them, so every real token counts.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

from zoo.backends import model_function
from zoo.data import windows
from zoo.errors import ZooError
from zoo.metrics import masked_token_nll
from zoo.special_tokens import BOS_ID, EOS_ID, NUM_SPECIAL, PAD_ID


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


def _batch_nll(model, special=None):
    """``(x, y) -> (sum of NLL, number of labels)`` of one batch, compiled for the backend."""

    def unshift(ids):  # pipeline ids -> the tokenizer's (padding -> 0, masked anyway)
        bos, eos = special
        return ops.where(ids >= NUM_SPECIAL, ids - NUM_SPECIAL,
                         ops.where(ids == BOS_ID, bos, ops.where(ids == EOS_ID, eos, 0)))

    def totals(call, x, y):
        mask = None
        if special is not None:
            mask = ops.not_equal(y, PAD_ID)
            x, y = unshift(x), unshift(y)
        nll, mask = masked_token_nll(y, call(x), mask)
        return ops.sum(nll), ops.sum(mask)

    return model_function(model, totals)


def evaluate_model(model, tokenizer, ids, corpus_kind: str, seq_len: int, batch_size: int,
                   tokenizer_kind: str | None = None, max_batches: int | None = None) -> dict:
    """Corpus-level loss / perplexity of ``model`` on encoded ``ids`` (see ``zoo.data.encode``;
    or a ``zoo.data.windows`` source), on any Keras backend; ``max_batches`` limits the windows."""
    special = _special_ids(tokenizer, corpus_kind)
    source = windows.source_of(ids, corpus_kind)
    if special is not None:
        source = _shifted(source)
    x, y = windows.evaluation_windows(source, seq_len, batch_size)
    step = _batch_nll(model, special)
    total_nll, total_tokens = 0.0, 0.0
    num_batches = len(x) // batch_size if max_batches is None else min(max_batches, len(x) // batch_size)
    for b in range(num_batches):
        rows = slice(b * batch_size, (b + 1) * batch_size)
        nll, count = step(x[rows], y[rows])
        total_nll += float(np.float64(np.asarray(nll)))
        total_tokens += float(np.asarray(count))
    loss = total_nll / max(total_tokens, 1.0)
    result = {
        "loss": loss,
        "perplexity": math.exp(loss),
        "tokens": int(total_tokens),
        "total_nll": total_nll,
    }
    if (tokenizer_kind or getattr(tokenizer, "kind", None)) == "char":
        result["bits_per_char"] = loss / math.log(2.0)
    return result


def evaluate_run(run, data: str | None = None, split: str = "validation",
                 batch_size: int | None = None, **task_options) -> dict:
    """Evaluate a loaded run on ``split`` of ``data`` (default: the data it was trained on).

    Runs of other tasks (masked LM, translation, classification) report their own metrics;
    ``task_options`` go to their ``evaluate`` (translation: ``strategy``, ``num_beams``,
    ``max_examples``)."""
    from zoo.tasks import get_task, task_of

    task = task_of(run.config)
    if task != "causal_lm":
        return get_task(task).evaluate(run, data=data, split=split, batch_size=batch_size,
                                       **task_options)
    if task_options:
        raise ZooError(f"{', '.join(sorted(task_options))}: only for translation runs")
    source = data or run.config.get("data")
    if not source:
        raise ZooError(f"{run.path} records no corpus (an imported checkpoint): give the data "
                       "to evaluate on (--data)")
    from zoo import data as zdata

    if zdata.is_prepared(source):  # already tokenized shards (zoo prepare)
        prepared = zdata.open_prepared(source)
        ids, kind = prepared.window_source(split), prepared.kind
    else:
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
    the ``score`` signature of ``export.saved_model``.
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
            logits = np.asarray(model(x[None, :], training=False), np.float64)[0]
            top = logits.max(axis=-1, keepdims=True)
            log_z = np.log(np.exp(logits - top).sum(axis=-1)) + top[:, 0]
            total += float(np.sum(logits[np.arange(len(y)), y] - log_z))
        results.append((total, labels))
    return results
