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
from keras import ops

from zoo.special_tokens import PAD_ID


def masked_token_nll(labels, logits, mask=None):
    """Per-token negative log-likelihood ``(B, T)`` and the float mask of real labels ``(B, T)``
    (default: the labels that are not ``<pad>``; a vocabulary without a pad id passes its own).

        nll_t = logsumexp(z_t) - z_t[y_t]          in float32, whatever the compute dtype
    """
    labels = ops.cast(labels, "int32")
    logits = ops.cast(logits, "float32")
    nll = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    mask = ops.not_equal(labels, PAD_ID) if mask is None else mask
    mask = ops.cast(mask, "float32")
    return nll * mask, mask


@keras.saving.register_keras_serializable(package="zoo")
def masked_lm_loss(y_true, y_pred):
    """Mean cross-entropy (from logits) over the non-padding labels of the batch."""
    nll, mask = masked_token_nll(y_true, y_pred)
    return ops.sum(nll) / ops.maximum(ops.sum(mask), 1.0)


@keras.saving.register_keras_serializable(package="zoo")
class TokenNLL(keras.metrics.Metric):
    """Corpus-level mean negative log-likelihood per token (nats): sum NLL / sum tokens."""

    def __init__(self, name="token_nll", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total_nll = self.add_variable(shape=(), initializer="zeros", name="total_nll")
        self.total_tokens = self.add_variable(shape=(), initializer="zeros", name="total_tokens")

    def update_state(self, y_true, y_pred, sample_weight=None):
        nll, mask = masked_token_nll(y_true, y_pred)
        self.total_nll.assign_add(ops.sum(nll))
        self.total_tokens.assign_add(ops.sum(mask))

    def result(self):
        return self.total_nll / ops.maximum(self.total_tokens, 1.0)


@keras.saving.register_keras_serializable(package="zoo")
class Perplexity(TokenNLL):
    """Corpus-level perplexity: exp(sum NLL / sum tokens)."""

    def __init__(self, name="perplexity", **kwargs):
        super().__init__(name=name, **kwargs)

    def result(self):
        return ops.exp(super().result())


@keras.saving.register_keras_serializable(package="zoo")
class MaskedAccuracy(keras.metrics.Metric):
    """Corpus-level accuracy over the non-padding labels (a masked LM's selected positions):
    sum [argmax logits == label] / sum tokens."""

    def __init__(self, name="masked_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total_tokens = self.add_variable(shape=(), initializer="zeros", name="total_tokens")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.cast(y_true, "int32")
        mask = ops.cast(ops.not_equal(labels, PAD_ID), "float32")
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        hits = ops.cast(ops.equal(predicted, labels), "float32")
        self.correct.assign_add(ops.sum(hits * mask))
        self.total_tokens.assign_add(ops.sum(mask))

    def result(self):
        return self.correct / ops.maximum(self.total_tokens, 1.0)


def classification_scores(labels, predictions, num_classes: int) -> dict:
    """Accuracy, per-class precision/recall/F1 and macro F1 from integer labels and predictions.

        P_c = TP_c / (TP_c + FP_c),  R_c = TP_c / (TP_c + FN_c),  F1_c = 2 P_c R_c / (P_c + R_c)
        macro F1 = mean_c F1_c        (a class's P, R or F1 with a zero denominator is 0)
    """
    import numpy as np

    labels = np.asarray(labels, np.int64).ravel()
    predictions = np.asarray(predictions, np.int64).ravel()
    confusion = np.zeros([num_classes, num_classes], np.int64)  # [true, predicted]
    np.add.at(confusion, (labels, predictions), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    actual = confusion.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(tp),
                   where=denominator > 0)
    return {
        "accuracy": float(tp.sum() / max(labels.size, 1)),
        "macro_f1": float(f1.mean()),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "confusion": confusion.tolist(),
    }
