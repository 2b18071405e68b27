"""``word2vec``: skip-gram (or CBOW) with negative sampling (Mikolov et al., 2013).

Two embedding tables, ``W_in`` (the input vectors v, the word vectors kept at the end) and
``W_out`` (the output vectors u). A training example is the ids of the input words and of the
output words, the positive one first and then the ``K`` negatives drawn from unigram^0.75
(``zoo.data.skipgrams``):

    inputs   (B, C)       skip-gram: C = 1, the centre word c;
                          CBOW: C = 2 * window, the context words (0 = padding)
    targets  (B, 1 + K)   the positive word o (skip-gram: a context word; CBOW: the centre),
                          then K noise words
    v        = mean_{inputs != 0} W_in[inputs]                  (B, d)
    logits   = u_t . v,  u_t = W_out[targets_t]                 (B, 1 + K)

and the loss per example (``negative_sampling_loss``, labels 1 for the positive, 0 for noise):

    L = -log sigma(u_o . v) - sum_k log sigma(-u_k . v)

Initialisation as word2vec.c: ``W_in`` uniform in [-0.5/d, 0.5/d], ``W_out`` zeros.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np
from keras import ops

from zoo.models.registry import ModelSpec, register

ARCHITECTURES = ("skipgram", "cbow")


@dataclass(frozen=True)
class Word2VecConfig:
    """Sizes of the model and the sampling settings its data pipeline reads.

    ``window``: the largest distance of a context word (word2vec.c reduces it per centre word,
    uniformly in 1..window); ``negatives``: K; ``sample``: the subsampling threshold t (0: off);
    ``min_count``: words seen fewer times are left out of the vocabulary (as gensim's).
    """

    architecture: str = "skipgram"
    dim: int = 100
    window: int = 5
    negatives: int = 5
    sample: float = 1e-3
    min_count: int = 5

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be skipgram or cbow. Received: {self.architecture!r}")
        for name in ("dim", "window", "negatives", "min_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Received: {getattr(self, name)}")
        if self.sample < 0:
            raise ValueError(f"sample must be >= 0. Received: {self.sample}")


@keras.saving.register_keras_serializable(package="zoo")
def negative_sampling_loss(y_true, y_pred):
    """Mean over the batch of sum_t BCE(y_t, z_t): with labels (1, 0, ..., 0) that is
    -log sigma(z_0) - sum_{k>=1} log sigma(-z_k)  (log sigma(-z) = -softplus(z))."""
    y = ops.cast(y_true, "float32")
    z = ops.cast(y_pred, "float32")
    per_word = y * ops.softplus(-z) + (1.0 - y) * ops.softplus(z)  # (B, 1 + K)
    return ops.mean(ops.sum(per_word, axis=-1))


@keras.saving.register_keras_serializable(package="zoo")
class Word2Vec(keras.Model):
    """``(inputs (B, C), targets (B, 1 + K))`` -> logits ``(B, 1 + K)``; see the module docstring."""

    @property
    def xla_on_cpu(self) -> bool:
        """XLA speeds the training step up on a CPU too (word2vec on PTB: 1.3x)."""
        return True

    def __init__(self, vocab_size: int, dim: int = 100, architecture: str = "skipgram",
                 window: int = 5, negatives: int = 5, sample: float = 1e-3, min_count: int = 5,
                 **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.dim = int(dim)
        self.architecture = architecture
        self.window, self.negatives = int(window), int(negatives)
        self.sample, self.min_count = float(sample), int(min_count)
        bound = 0.5 / self.dim
        self.input_embedding = keras.layers.Embedding(
            self.vocab_size, self.dim, name="input_embedding",
            embeddings_initializer=keras.initializers.RandomUniform(-bound, bound))
        self.output_embedding = keras.layers.Embedding(
            self.vocab_size, self.dim, name="output_embedding", embeddings_initializer="zeros")
        self((ops.ones((1, 1), "int32"), ops.ones((1, 1 + self.negatives), "int32")))

    def token_embedding_layer(self) -> keras.layers.Embedding:
        """The input vectors ``W_in`` (vocab_size, dim)."""
        return self.input_embedding

    def word_vectors(self) -> np.ndarray:
        """The final word vectors: ``W_in`` (as word2vec.c and gensim's ``wv``), float32 (V, d)."""
        return np.asarray(ops.convert_to_numpy(self.input_embedding.embeddings), np.float32)

    def loss_function(self):
        """The training loss (``negative_sampling_loss``)."""
        return negative_sampling_loss

    def input_vector(self, inputs):
        """v: the mean of ``W_in`` over the non-padding input ids, (B, C) -> (B, d)."""
        inputs = ops.cast(inputs, "int32")
        mask = ops.cast(ops.not_equal(inputs, 0), "float32")[..., None]  # (B, C, 1)
        summed = ops.sum(self.input_embedding(inputs) * mask, axis=1)  # (B, d)
        return summed / ops.maximum(ops.sum(mask, axis=1), 1.0)

    def call(self, data, training=None):
        inputs, targets = data
        v = self.input_vector(inputs)  # (B, d)
        u = self.output_embedding(ops.cast(targets, "int32"))  # (B, 1 + K, d)
        return ops.cast(ops.einsum("bd,btd->bt", v, u), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, dim=self.dim, architecture=self.architecture,
                      window=self.window, negatives=self.negatives, sample=self.sample,
                      min_count=self.min_count)
        return config


def _build(vocab_size: int, config: Word2VecConfig) -> Word2Vec:
    return Word2Vec(vocab_size=vocab_size, **asdict(config))


register(
    ModelSpec(
        name="word2vec",
        description="word2vec word vectors: skip-gram (or CBOW) with negative sampling",
        config_class=Word2VecConfig,
        presets={
            "tiny": dict(dim=16, window=2, negatives=3, min_count=1),
            "small": dict(dim=100, window=5, negatives=5),
            "base": dict(dim=300, window=5, negatives=5),
        },
        builder=_build,
        task="word_vectors",
    )
)
