"""``zoo.evaluate``: loss, perplexity and bits per character over a whole split.

    loss       = (sum over every label of -log p(label | context)) / (number of labels)
    perplexity = exp(loss)
    bits/char  = loss / ln 2        (character-level tokenizers)

Totals are accumulated in float64 across batches; padding labels (id 0) are excluded.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from zoo import data as zdata
from zoo.metrics import masked_token_nll


def _nll_step(model):
    @tf.function(reduce_retracing=True)
    def step(x, y):
        nll, mask = masked_token_nll(y, model(x, training=False))
        return tf.reduce_sum(nll), tf.reduce_sum(mask)

    return step


def evaluate_model(model, tokenizer, ids, corpus_kind: str, seq_len: int, batch_size: int,
                   tokenizer_kind: str | None = None) -> dict:
    """Corpus-level loss / perplexity of ``model`` on encoded ``ids`` (see ``zoo.data.encode``)."""
    step = _nll_step(model)
    total_nll, total_tokens = 0.0, 0.0
    for x, y in zdata.evaluation_dataset(ids, corpus_kind, seq_len, batch_size):
        nll, count = step(x, y)
        total_nll += float(np.float64(nll.numpy()))
        total_tokens += float(count.numpy())
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
                 batch_size: int | None = None) -> dict:
    """Evaluate a loaded run on ``split`` of ``data`` (default: the data it was trained on).

    Runs of other tasks (masked LM, translation, classification) report their own metrics."""
    from zoo.tasks import get_task, task_of

    task = task_of(run.config)
    if task != "causal_lm":
        return get_task(task).evaluate(run, data=data, split=split, batch_size=batch_size)
    source = data or run.config["data"]
    if zdata.is_prepared(source):  # already tokenized shards (zoo prepare)
        prepared = zdata.open_prepared(source)
        ids, kind = prepared.ids(split), prepared.kind
    else:
        corpus = zdata.load_corpus(source)
        ids, kind = zdata.encode(run.tokenizer, corpus, split), corpus.kind
    seq_len = run.config["seq_len"]
    batch = batch_size or run.config["train"]["batch_size"]
    result = evaluate_model(run.model, run.tokenizer, ids, kind, seq_len, batch)
    result.update(data=source, split=split, model=run.config["model"])
    return result


def evaluate(run_or_dir, data: str | None = None, split: str = "validation",
             batch_size: int | None = None) -> dict:
    """``zoo.evaluate(run_dir_or_loaded_run, data=None, split="validation")`` -> metrics dict."""
    from zoo.run import LoadedRun, load

    run = run_or_dir if isinstance(run_or_dir, LoadedRun) else load(run_or_dir)
    return evaluate_run(run, data=data, split=split, batch_size=batch_size)


def score_texts(model, tokenizer, texts, line_corpus: bool) -> list[tuple[float, int]]:
    """Log-likelihood of each text under ``model``: ``[(sum of log p, tokens scored), ...]``.

    The sequence is the text's tokens (``line_corpus=False``: the first token has no context and
    is not scored) or ``<bos> tokens <eos>`` (``line_corpus=True``: every token after ``<bos>``,
    ``<eos>`` included, is scored). A model with a finite context (``model.max_length``) scores
    a longer text in consecutive windows of ``max_length`` predictions, as ``evaluate`` walks a
    split. Computed text by text, window by window, with a float64 log-softmax; the reference for
    the ``score`` signature of ``export.saved_model``.
    """
    from zoo.tokenizers.base import BOS_ID, EOS_ID

    if isinstance(texts, str):
        texts = [texts]
    window = getattr(model, "max_length", None)
    results = []
    for text in texts:
        ids = tokenizer.tokenize(tf.constant([text]))
        ids = ids.merge_dims(1, -1) if ids.ragged_rank > 1 else ids
        seq = [int(t) for t in ids[0].numpy()]
        if line_corpus:
            seq = [BOS_ID, *seq, EOS_ID]
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
