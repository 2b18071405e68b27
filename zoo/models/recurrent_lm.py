"""Recurrent language models: ``rnn_lm`` (SimpleRNN), ``lstm_lm`` and ``gru_lm``.

    e_t = E[w_t]                               token embedding
    h_t = tanh(W·e_t + U·h_{t-1} + b)          SimpleRNN (LSTM / GRU gate the same recurrence)
    P(w_{t+1} | w_{<=t}) = softmax(V·h_t + c)  next-token distribution

The decoding cache is the recurrent state itself, so a new token costs one cell step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
from keras import ops

from zoo.layers import RNNStack
from zoo.models.base import CausalLM
from zoo.models.registry import ModelSpec, register


@dataclass(frozen=True)
class RecurrentLMConfig:
    """Sizes of a recurrent LM. ``cell`` is fixed by the model name."""

    cell: str = "lstm"
    embedding_dim: int = 128
    units: int = 256
    num_layers: int = 2
    dropout: float = 0.0  # between stacked layers and before the output projection

    def __post_init__(self):
        if self.cell not in ("simple", "lstm", "gru"):
            raise ValueError(f"cell must be simple, lstm or gru. Received: cell={self.cell!r}")
        for field in ("embedding_dim", "units", "num_layers"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1. Received: {getattr(self, field)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: {self.dropout}")


@keras.saving.register_keras_serializable(package="zoo")
class RecurrentLM(CausalLM):
    """Embedding -> ``RNNStack`` -> dense output projection to vocabulary logits.

    Args:
        vocab_size: number of token ids.
        cell: "simple", "lstm" or "gru".
        embedding_dim, units, num_layers, dropout: see ``RecurrentLMConfig``.
    """

    def __init__(
        self,
        vocab_size: int,
        cell: str = "lstm",
        embedding_dim: int = 128,
        units: int = 256,
        num_layers: int = 2,
        dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.cell = cell
        self.embedding_dim = embedding_dim
        self.units = units
        self.num_layers = num_layers
        self.dropout = dropout
        self.max_length = None
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding", dtype=self.dtype_policy)
        self.rnn = RNNStack(cell=cell, units=units, num_layers=num_layers, dropout=dropout, name="rnn",
                            dtype=self.dtype_policy)
        self.output_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.lm_head = keras.layers.Dense(vocab_size, dtype="float32", name="lm_head")
        self(ops.zeros((1, 1), "int32"))  # create the weights now

    def token_embedding_layer(self) -> keras.layers.Embedding:
        """The ``(vocab_size, embedding_dim)`` token embedding (``zoo.pretrained_vectors``)."""
        return self.embedding

    def call(self, token_ids, training=None):
        x = self.embedding(token_ids)  # (B, T, E)
        h = self.rnn(x, training=training)  # (B, T, U)
        return self.lm_head(self.output_dropout(h, training=training))  # (B, T, V) float32

    def init_cache(self, batch_size, max_length=None):
        return tuple(self.rnn.get_initial_state(batch_size))

    def call_with_cache(self, token_ids, cache, index=None):
        x = self.embedding(token_ids)
        h, states = self.rnn(x, initial_state=list(cache), return_state=True)
        return self.lm_head(h), tuple(states)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            cell=self.cell,
            embedding_dim=self.embedding_dim,
            units=self.units,
            num_layers=self.num_layers,
            dropout=self.dropout,
        )
        return config


def _build(vocab_size: int, config: RecurrentLMConfig) -> RecurrentLM:
    return RecurrentLM(vocab_size=vocab_size, **asdict(config))


def _presets(cell: str) -> dict[str, dict]:
    return {
        "tiny": dict(cell=cell, embedding_dim=32, units=64, num_layers=1),
        # about the parameter count of transformer_lm "small" (nanoGPT's CPU configuration)
        "small": dict(cell=cell, embedding_dim=128, units=256, num_layers=2),
        "base": dict(cell=cell, embedding_dim=256, units=512, num_layers=2, dropout=0.2),
    }


for _name, _cell, _what in (
    ("rnn_lm", "simple", "SimpleRNN (Elman) stack"),
    ("lstm_lm", "lstm", "LSTM stack"),
    ("gru_lm", "gru", "GRU stack"),
):
    register(
        ModelSpec(
            name=_name,
            description=f"{_what} language model",
            config_class=RecurrentLMConfig,
            presets=_presets(_cell),
            builder=_build,
        )
    )
