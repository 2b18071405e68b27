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
    """Evaluate a loaded run on ``split`` of ``data`` (default: the data it was trained on)."""
    source = data or run.config["data"]
    corpus = zdata.load_corpus(source)
    ids = zdata.encode(run.tokenizer, corpus, split)
    seq_len = run.config["seq_len"]
    batch = batch_size or run.config["train"]["batch_size"]
    result = evaluate_model(run.model, run.tokenizer, ids, corpus.kind, seq_len, batch)
    result.update(data=source, split=split, model=run.config["model"])
    return result


def evaluate(run_or_dir, data: str | None = None, split: str = "validation",
             batch_size: int | None = None) -> dict:
    """``zoo.evaluate(run_dir_or_loaded_run, data=None, split="validation")`` -> metrics dict."""
    from zoo.run import LoadedRun, load

    run = run_or_dir if isinstance(run_or_dir, LoadedRun) else load(run_or_dir)
    return evaluate_run(run, data=data, split=split, batch_size=batch_size)
