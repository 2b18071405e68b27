"""Text -> unit vector with a trained encoder run: what semantic search indexes and queries with.

``embedder(run)`` returns an ``Embedder``: an in-graph function (string ``[B]`` -> float32
``[B, d]``) and the tokenizers it uses, so the same function runs eagerly for ``zoo index`` /
``zoo search`` and inside the ``search`` SavedModel signature (``export.search_index``):

    masked_lm        mean of the final hidden states over ``[CLS] ids [SEP]`` (as ``embed``)
    classification   the classifier's pooled vector (``TextClassifier.pool``)
    any other task   the task's ``embedder(run)`` if it has one, else a model with
                     ``encode(ids)`` or an ``encoder`` layer giving (B, T, d) (the QA model's
                     BERT encoder): its mean over the non-padding positions

Vectors are L2-normalised: a dot product of two of them is their cosine similarity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from zoo.errors import ZooError

__all__ = ["Embedder", "embed_texts", "embedder"]


@dataclasses.dataclass
class Embedder:
    """An encoder run's text embedding.

    ``function`` maps a string tensor ``[B]`` to float32 unit vectors ``[B, dimension]``
    in-graph; ``tokenizers`` are the trackable tokenizers it calls (an export tracks them).
    """

    function: Callable[[tf.Tensor], tf.Tensor]
    tokenizers: dict
    dimension: int


def _unit(vectors) -> tf.Tensor:
    return tf.math.l2_normalize(tf.cast(vectors, tf.float32), axis=-1)


def _masked_lm(run) -> Embedder:
    from zoo.data.masking import with_cls_sep
    from zoo.models.bert_mlm import masked_mean
    from zoo.tasks.masked_lm import masked_tokenizer

    tok, model = masked_tokenizer(run), run.model

    def function(text):
        ids = with_cls_sep(tok.tokenize(text), model.max_length)
        return _unit(masked_mean(model.encode(ids, training=False), ids))

    return Embedder(function, {"tokenizer": tok}, int(run.config["model_config"]["d_model"]))


def _classifier(run) -> Embedder:
    from zoo.data.masking import with_cls_sep

    tok, model, seq_len = run.tokenizer, run.model, int(run.config["seq_len"])

    def function(text):
        return _unit(model.pool(with_cls_sep(tok.tokenize(text), seq_len), training=False))

    return Embedder(function, {"tokenizer": tok}, int(run.config["model_config"]["d_model"]))


def _encoder(run) -> Embedder:
    from zoo.data.masking import with_cls_sep
    from zoo.models.bert_mlm import masked_mean

    tok, model = run.tokenizer, run.model
    max_length = int(getattr(model, "max_length", None) or run.config["seq_len"])

    encode = getattr(model, "encode", None) or model.encoder

    def function(text):
        ids = with_cls_sep(tok.tokenize(text), max_length)
        return _unit(masked_mean(encode(ids, training=False), ids))

    dimension = int(run.config.get("model_config", {}).get("d_model", 0))
    return Embedder(function, {"tokenizer": tok}, dimension)


_BY_TASK = {"masked_lm": _masked_lm, "classification": _classifier}


def embedder(run) -> Embedder:
    """The ``Embedder`` of an encoder run (``ZooError`` for a run without an encoder)."""
    from zoo.tasks.base import get_task

    if run.task in _BY_TASK:
        return _BY_TASK[run.task](run)
    own = getattr(get_task(run.task), "embedder", None)
    if own is not None:
        return own(run)
    has_encoder = callable(getattr(run.model, "encode", None)) or callable(
        getattr(run.model, "encoder", None))
    if has_encoder and run.task != "causal_lm":
        return _encoder(run)
    raise ZooError(f"{run.path} holds a {run.task} model ({run.config.get('model')}), which has "
                   f"no text encoder to search with: use a bert_mlm or text_classifier run")


def _compiled(run) -> Callable[[tf.Tensor], tf.Tensor]:
    """The run's embedding as a ``tf.function`` over string batches, cached on the run."""
    cached = getattr(run, "_zoo_embedding_fn", None)
    if cached is None:
        cached = tf.function(embedder(run).function, autograph=False,
                             input_signature=[tf.TensorSpec([None], tf.string)])
        run._zoo_embedding_fn = cached
    return cached


def embed_texts(run, texts, batch_size: int = 64) -> np.ndarray:
    """Unit vectors ``(N, d)`` float32 of ``texts`` (a list of strings), embedded in batches of
    similar length (less padding) and returned in the order given."""
    texts = list(texts)
    if not texts:
        raise ZooError("nothing to embed")
    function = _compiled(run)
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = None
    for start in range(0, len(texts), batch_size):
        rows = order[start:start + batch_size]
        vectors = function(tf.constant([texts[i] for i in rows], tf.string)).numpy()
        if out is None:
            out = np.zeros([len(texts), vectors.shape[1]], np.float32)
        out[rows] = vectors
    return out
