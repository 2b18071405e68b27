"""``mlp_lm``: the neural probabilistic language model of Bengio et al. (2003).

    x = concat(e_{i-n+1}, ..., e_i)                 the last n tokens' embeddings (n = context_size)
    h = tanh(H·x + d)                               hidden layer(s)
    P(w_{i+1} | w_{i-n+1..i}) = softmax(U·h + W·x + b)   (W·x: the optional direct connections)

Positions before the start of the text see the padding id (``PAD_ID``, 0). The decoding cache is
the window of the last ``context_size - 1`` token ids.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
from keras import ops

from zoo.models.base import CausalLM
from zoo.models.registry import ModelSpec, register
from zoo.special_tokens import PAD_ID


@dataclass(frozen=True)
class MLPLMConfig:
    """Sizes of the n-gram MLP language model."""

    context_size: int = 8  # n: tokens the model sees to predict the next one
    embedding_dim: int = 64
    hidden_dim: int = 512
    num_hidden_layers: int = 1
    direct_connection: bool = False  # Bengio's optional W·x term
    dropout: float = 0.0

    def __post_init__(self):
        for field in ("context_size", "embedding_dim", "hidden_dim", "num_hidden_layers"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1. Received: {getattr(self, field)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: {self.dropout}")


@keras.saving.register_keras_serializable(package="zoo")
class MLPLM(CausalLM):
    """Bengio-style feed-forward n-gram language model applied at every position.

    Args:
        vocab_size: number of token ids.
        context_size: n, the number of previous tokens (including the current one) seen.
        embedding_dim, hidden_dim, num_hidden_layers, direct_connection, dropout:
            see ``MLPLMConfig``.
    """

    # XLA speeds this model's training step up on a CPU (zoo.fitting picks jit_compile by it)
    xla_on_cpu = True

    def __init__(
        self,
        vocab_size: int,
        context_size: int = 8,
        embedding_dim: int = 64,
        hidden_dim: int = 512,
        num_hidden_layers: int = 1,
        direct_connection: bool = False,
        dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.context_size = context_size
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.num_hidden_layers = num_hidden_layers
        self.direct_connection = direct_connection
        self.dropout = dropout
        self.max_length = None
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding", dtype=self.dtype_policy)
        self.hidden_layers = [
            keras.layers.Dense(hidden_dim, activation="tanh", name=f"hidden_{i}", dtype=self.dtype_policy)
            for i in range(num_hidden_layers)
        ]
        self.hidden_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.lm_head = keras.layers.Dense(vocab_size, dtype="float32", name="lm_head")
        self.direct = (
            keras.layers.Dense(vocab_size, use_bias=False, dtype="float32", name="direct")
            if direct_connection
            else None
        )
        self(ops.zeros((1, 1), "int32"))

    def _logits_from_padded(self, padded_ids, training=None):
        """``padded_ids`` (B, n-1+T): the T targets' contexts are its sliding windows of size n."""
        n = self.context_size
        steps = ops.shape(padded_ids)[1] - (n - 1)
        windows = ops.stack([padded_ids[:, i : i + steps] for i in range(n)], axis=-1)  # (B, T, n)
        e = self.embedding(windows)  # (B, T, n, E)
        x = ops.reshape(e, (ops.shape(e)[0], -1, n * self.embedding_dim))  # (B, T, n E)
        h = x
        for layer in self.hidden_layers:
            h = self.hidden_dropout(layer(h), training=training)  # (B, T, H)
        logits = self.lm_head(h)  # (B, T, V)
        if self.direct is not None:
            logits = logits + self.direct(x)
        return logits

    def token_embedding_layer(self) -> keras.layers.Embedding:
        """The ``(vocab_size, embedding_dim)`` token embedding (``zoo.pretrained_vectors``)."""
        return self.embedding

    def call(self, token_ids, training=None):
        token_ids = ops.cast(token_ids, "int32")
        pad = ops.full((ops.shape(token_ids)[0], self.context_size - 1), PAD_ID, "int32")
        return self._logits_from_padded(ops.concatenate([pad, token_ids], axis=1), training=training)

    def init_cache(self, batch_size, max_length=None):
        return ops.full((batch_size, self.context_size - 1), PAD_ID, "int32")

    def call_with_cache(self, token_ids, cache, index=None):
        padded = ops.concatenate([cache, ops.cast(token_ids, "int32")], axis=1)
        logits = self._logits_from_padded(padded)
        new_cache = padded[:, ops.shape(padded)[1] - (self.context_size - 1) :]
        return logits, new_cache

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            context_size=self.context_size,
            embedding_dim=self.embedding_dim,
            hidden_dim=self.hidden_dim,
            num_hidden_layers=self.num_hidden_layers,
            direct_connection=self.direct_connection,
            dropout=self.dropout,
        )
        return config


def _build(vocab_size: int, config: MLPLMConfig) -> MLPLM:
    return MLPLM(vocab_size=vocab_size, **asdict(config))


register(
    ModelSpec(
        name="mlp_lm",
        description="Bengio et al. (2003) feed-forward n-gram language model",
        config_class=MLPLMConfig,
        presets={
            "tiny": dict(context_size=4, embedding_dim=16, hidden_dim=64),
            "small": dict(context_size=8, embedding_dim=64, hidden_dim=512),
            "base": dict(context_size=16, embedding_dim=128, hidden_dim=1024, num_hidden_layers=2),
        },
        builder=_build,
    )
)
