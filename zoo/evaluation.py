"""Corpus-level token negative log-likelihood, shared by the tasks that score tokens.

    loss       = (sum over every counted label of -log p(label | context)) / (number of labels)
    perplexity = exp(loss)

A batch's sums are computed in the compiled step (``zoo.backends.model_function``: any Keras
backend, no TensorFlow needed on JAX); the totals are accumulated in float64 across batches.
Padding labels (id 0) are not counted unless a batch brings its own mask. The causal LM
(``zoo.tasks.causal_lm``) and translation (``zoo.tasks.seq2seq``) build on these.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
from keras import ops

from zoo.backends import model_function
from zoo.metrics import masked_token_nll

__all__ = ["nll_metrics", "sum_nll", "token_nll_step"]


def token_nll_step(model, remap: Callable | None = None) -> Callable:
    """``(inputs, labels) -> (sum of NLL, number of labels)`` of one batch, compiled.

    ``remap(inputs, labels) -> (inputs, labels, mask)``, when given, rewrites the batch inside
    the compiled step first (``keras.ops``); its ``mask`` picks the counted labels.
    """

    def totals(call, inputs, labels):
        mask = None
        if remap is not None:
            inputs, labels, mask = remap(inputs, labels)
        nll, mask = masked_token_nll(labels, call(inputs), mask)
        return ops.sum(nll), ops.sum(mask)

    return model_function(model, totals)


def sum_nll(step: Callable, batches: Iterable) -> tuple[float, float]:
    """``(total NLL, number of labels)`` of ``step`` (``token_nll_step``) over ``(inputs,
    labels)`` batches, accumulated in float64."""
    total_nll, total_tokens = 0.0, 0.0
    for inputs, labels in batches:
        nll, count = step(inputs, labels)
        total_nll += float(np.float64(np.asarray(nll)))
        total_tokens += float(np.asarray(count))
    return total_nll, total_tokens


def nll_metrics(total_nll: float, total_tokens: float) -> dict:
    """``{"loss", "perplexity", "tokens"}`` of the totals (``loss`` 0 when nothing was
    counted)."""
    loss = total_nll / max(total_tokens, 1.0)
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": int(total_tokens)}
