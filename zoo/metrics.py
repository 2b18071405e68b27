"""Masked next-token loss and corpus-level metrics.

Padding (label id 0) never counts. Corpus-level means: total NLL over total tokens, accumulated
across batches, never a mean of per-batch means (the two differ whenever batches hold different
numbers of real tokens).

    NLL        = -sum_t log p(w_t | w_<t)            over non-padding labels
    loss       = NLL / N                             nats per token
    perplexity = exp(NLL / N)
    bits/char  = NLL / (N · ln 2)                    (character tokenizers: a token is a character)
"""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.tokenizers.base import PAD_ID


def masked_token_nll(labels, logits):
    """Per-token negative log-likelihood ``(B, T)`` and the float mask of real labels ``(B, T)``."""
    labels = tf.cast(labels, tf.int32)
    logits = tf.cast(logits, tf.float32)
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    mask = tf.cast(tf.not_equal(labels, PAD_ID), tf.float32)
    return nll * mask, mask


@keras.saving.register_keras_serializable(package="zoo")
def masked_lm_loss(y_true, y_pred):
    """Mean cross-entropy (from logits) over the non-padding labels of the batch."""
    nll, mask = masked_token_nll(y_true, y_pred)
    return tf.reduce_sum(nll) / tf.maximum(tf.reduce_sum(mask), 1.0)


@keras.saving.register_keras_serializable(package="zoo")
class TokenNLL(keras.metrics.Metric):
    """Corpus-level mean negative log-likelihood per token (nats): sum NLL / sum tokens."""

    def __init__(self, name="token_nll", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total_nll = self.add_variable(shape=(), initializer="zeros", name="total_nll")
        self.total_tokens = self.add_variable(shape=(), initializer="zeros", name="total_tokens")

    def update_state(self, y_true, y_pred, sample_weight=None):
        nll, mask = masked_token_nll(y_true, y_pred)
        self.total_nll.assign_add(tf.reduce_sum(nll))
        self.total_tokens.assign_add(tf.reduce_sum(mask))

    def result(self):
        return self.total_nll / tf.maximum(self.total_tokens, 1.0)


@keras.saving.register_keras_serializable(package="zoo")
class Perplexity(TokenNLL):
    """Corpus-level perplexity: exp(sum NLL / sum tokens)."""

    def __init__(self, name="perplexity", **kwargs):
        super().__init__(name=name, **kwargs)

    def result(self):
        return tf.exp(super().result())
