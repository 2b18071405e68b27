"""``glove``: Global Vectors (Pennington et al., 2014), a weighted least-squares fit of the
log co-occurrence counts.

    J = sum_{i,j: X_ij > 0} f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2
    f(x) = (x / x_max)^alpha  if x < x_max  else 1

``w`` and ``w~`` are two embedding tables (word and context vectors), ``b`` and ``b~`` their
biases. A training example is a non-zero cell ``(i, j)`` of X (``zoo.data.cooccurrence``):

    (rows (B,), cols (B,)) -> prediction w_i . w~_j + b_i + b~_j           (B,)
    labels (B, 2): [log X_ij, f(X_ij)]  ->  ``glove_loss`` = (1/B) sum_b f (pred - log X)^2

so the batch loss is J over the batch's cells divided by B. The final vectors are
``W + W~`` (the paper's choice; ``word_vectors``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np
from keras import ops

from zoo.models.registry import ModelSpec, register


@dataclass(frozen=True)
class GloVeConfig:
    """Sizes, the weighting's ``x_max`` and ``alpha``, and the co-occurrence ``window`` and
    ``min_count`` its data pipeline reads."""

    dim: int = 100
    window: int = 10
    x_max: float = 100.0
    alpha: float = 0.75
    min_count: int = 5

    def __post_init__(self):
        for name in ("dim", "window", "min_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Received: {getattr(self, name)}")
        if self.x_max <= 0 or self.alpha <= 0:
            raise ValueError(f"x_max and alpha must be > 0. Received: {self.x_max}, {self.alpha}")


def weighting(x, x_max: float = 100.0, alpha: float = 0.75):
    """f(x) = (x / x_max)^alpha for x < x_max, else 1 (elementwise; any array -> backend tensor)."""
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    return ops.where(x < x_max, ops.power(x / x_max, alpha), ops.ones_like(x))


@keras.saving.register_keras_serializable(package="zoo")
def glove_loss(y_true, y_pred):
    """(1/B) sum_b f_b (pred_b - log X_b)^2 with ``y_true[:, 0] = log X``, ``y_true[:, 1] = f``."""
    y = ops.cast(y_true, "float32")
    diff = ops.cast(y_pred, "float32") - y[:, 0]
    return ops.mean(y[:, 1] * ops.square(diff))


@keras.saving.register_keras_serializable(package="zoo")
class GloVe(keras.Model):
    """``(rows (B,), cols (B,))`` -> ``w_i . w~_j + b_i + b~_j`` (B,); see the module docstring."""

    @property
    def xla_on_cpu(self) -> bool:
        """XLA speeds the training step up on a CPU too (word2vec on PTB: 1.3x)."""
        return True

    def __init__(self, vocab_size: int, dim: int = 100, window: int = 10, x_max: float = 100.0,
                 alpha: float = 0.75, min_count: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.dim = int(vocab_size), int(dim)
        self.window, self.min_count = int(window), int(min_count)
        self.x_max, self.alpha = float(x_max), float(alpha)
        bound = 0.5 / self.dim  # the reference code's uniform(-0.5, 0.5) / dim
        init = keras.initializers.RandomUniform(-bound, bound)
        self.word_embedding = keras.layers.Embedding(
            self.vocab_size, self.dim, name="word_embedding", embeddings_initializer=init)
        self.context_embedding = keras.layers.Embedding(
            self.vocab_size, self.dim, name="context_embedding", embeddings_initializer=init)
        self.word_bias = keras.layers.Embedding(self.vocab_size, 1, name="word_bias",
                                                embeddings_initializer="zeros")
        self.context_bias = keras.layers.Embedding(self.vocab_size, 1, name="context_bias",
                                                   embeddings_initializer="zeros")
        self((ops.ones((1,), "int32"), ops.ones((1,), "int32")))

    def token_embedding_layer(self) -> keras.layers.Embedding:
        """The word vectors ``W`` (vocab_size, dim)."""
        return self.word_embedding

    def word_vectors(self) -> np.ndarray:
        """The final word vectors ``W + W~``, float32 (V, d)."""
        w = ops.convert_to_numpy(self.word_embedding.embeddings)
        w_context = ops.convert_to_numpy(self.context_embedding.embeddings)
        return np.asarray(w + w_context, np.float32)

    def loss_function(self):
        """The training loss (``glove_loss``)."""
        return glove_loss

    def call(self, data, training=None):
        rows, cols = (ops.cast(ops.reshape(t, (-1,)), "int32") for t in data)
        w, w_context = self.word_embedding(rows), self.context_embedding(cols)  # (B, d)
        bias = self.word_bias(rows)[:, 0] + self.context_bias(cols)[:, 0]  # (B,)
        return ops.cast(ops.sum(w * w_context, axis=-1) + bias, "float32")

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, dim=self.dim, window=self.window,
                      x_max=self.x_max, alpha=self.alpha, min_count=self.min_count)
        return config


def _build(vocab_size: int, config: GloVeConfig) -> GloVe:
    return GloVe(vocab_size=vocab_size, **asdict(config))


register(
    ModelSpec(
        name="glove",
        description="GloVe word vectors: weighted least squares on log co-occurrence counts",
        config_class=GloVeConfig,
        presets={
            "tiny": dict(dim=16, window=2, min_count=1),
            "small": dict(dim=100, window=10),
            "base": dict(dim=300, window=10),
        },
        builder=_build,
        task="word_vectors",
    )
)
