"""Position encodings (sinusoidal and learned) and a token + position embedding."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from zoo.layers.attention import _check_positive_int


def sinusoidal_table(max_length: int, dim: int) -> np.ndarray:
    """The (max_length, dim) sinusoidal table of Vaswani et al. (2017), float32.

    ``PE[pos, 2i] = sin(pos / 10000^(2i/dim))`` and ``PE[pos, 2i+1] = cos(pos / 10000^(2i/dim))``,
    computed in float64 and rounded once.
    """
    positions = np.arange(max_length, dtype=np.float64)[:, None]  # (L, 1)
    two_i = (np.arange(dim) // 2 * 2).astype(np.float64)  # (d,) 0, 0, 2, 2, 4, 4, ...
    angles = positions / np.power(10000.0, two_i / dim)  # (L, d)
    table = np.where(np.arange(dim) % 2 == 0, np.sin(angles), np.cos(angles))
    return table.astype(np.float32)


def _positions(length, start_index):
    """int32 positions start_index .. start_index + length - 1."""
    return ops.arange(length, dtype="int32") + ops.cast(start_index, "int32")  # (T,)


@keras.saving.register_keras_serializable(package="zoo")
class PositionalEncoding(keras.layers.Layer):
    """Fixed sinusoidal position encoding (Vaswani et al., 2017).

    For width ``d`` (the last axis of the inputs)::

        PE(pos, 2i)   = sin(pos / 10000^(2i / d))
        PE(pos, 2i+1) = cos(pos / 10000^(2i / d))

    ``call(inputs, start_index)`` returns ``PE[start_index : start_index + T]`` with shape
    ``(1, T, d)`` (broadcastable to the inputs ``(B, T, d)``; add it yourself). The layer has no
    weights; the table is computed once in float64 in ``build``.

    Args:
        max_length: Number of positions in the table (largest position + 1).
        **kwargs: Base ``keras.layers.Layer`` arguments.
    """

    def __init__(self, max_length: int, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("max_length", max_length)
        self.max_length = max_length
        self._table = None

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError(
                f"PositionalEncoding needs a known last dimension. Received: input_shape={input_shape}"
            )
        self._table = sinusoidal_table(self.max_length, int(dim))

    def call(self, inputs, start_index=0):
        """Encoding of positions ``start_index .. start_index + T - 1`` -> ``(1, T, d)``.

        ``start_index`` may be a Python int or a scalar int32 tensor. Positions must be below
        ``max_length`` (out of range: an error on CPU, clamped or zeros elsewhere).
        """
        table = ops.convert_to_tensor(self._table)  # (L, d) float32
        length = ops.shape(inputs)[1]
        encoding = ops.take(table, _positions(length, start_index), axis=0)  # (T, d)
        return ops.cast(ops.expand_dims(encoding, 0), self.compute_dtype)  # (1, T, d)

    def compute_output_shape(self, input_shape):
        return (1, input_shape[1], input_shape[-1])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"max_length": self.max_length})
        return config


@keras.saving.register_keras_serializable(package="zoo")
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute position embedding (as in GPT / BERT).

    A trainable table ``P`` of shape ``(max_length, d)``; ``call(inputs, start_index)`` returns
    ``P[start_index : start_index + T]`` with shape ``(1, T, d)`` for inputs ``(B, T, d)``.

    Args:
        max_length: Number of positions (rows of the table).
        embeddings_initializer: Initializer of the table.
        **kwargs: Base ``keras.layers.Layer`` arguments.
    """

    def __init__(self, max_length: int, embeddings_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("max_length", max_length)
        self.max_length = max_length
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError(
                f"PositionEmbedding needs a known last dimension. Received: input_shape={input_shape}"
            )
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.max_length, int(dim)),
            initializer=self.embeddings_initializer,
            trainable=True,
        )

    def call(self, inputs, start_index=0):
        """Embedding of positions ``start_index .. start_index + T - 1`` -> ``(1, T, d)``."""
        length = ops.shape(inputs)[1]
        table = ops.convert_to_tensor(self.embeddings)  # (L, d)
        embedding = ops.take(table, _positions(length, start_index), axis=0)  # (T, d)
        return ops.cast(ops.expand_dims(embedding, 0), self.compute_dtype)  # (1, T, d)

    def compute_output_shape(self, input_shape):
        return (1, input_shape[1], input_shape[-1])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "max_length": self.max_length,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            }
        )
        return config


_POSITION_KINDS = ("learned", "sinusoidal")


@keras.saving.register_keras_serializable(package="zoo")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding plus absolute position embedding.

    For token ids ``x`` (B, T) placed at positions ``s .. s+T-1``::

        h = E[x] * scale + P[s : s+T]

    with ``E`` the ``(vocab_size, embedding_dim)`` token table (``self.token_embedding``, a
    ``keras.layers.Embedding``), ``scale = sqrt(embedding_dim)`` if ``scale_embeddings`` else 1
    (the original Transformer scales, GPT-2 does not) and ``P`` a learned table
    (``position="learned"``, ``self.position_embedding`` is a ``PositionEmbedding``) or the
    sinusoidal encoding (``position="sinusoidal"``, a ``PositionalEncoding``).

    Tie the output projection to the input embedding with ``logits = h @ E^T``, i.e.
    ``self.compute_logits(h)``.

    Args:
        vocab_size: Number of token ids.
        max_length: Number of positions.
        embedding_dim: Embedding width ``d``.
        position: ``"learned"`` or ``"sinusoidal"``.
        embeddings_initializer: Initializer of the token table and the learned position table.
        scale_embeddings: Multiply token embeddings by ``sqrt(embedding_dim)``.
        **kwargs: Base ``keras.layers.Layer`` arguments.
    """

    def __init__(
        self,
        vocab_size: int,
        max_length: int,
        embedding_dim: int,
        position: str = "learned",
        embeddings_initializer="uniform",
        scale_embeddings: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int("vocab_size", vocab_size)
        _check_positive_int("max_length", max_length)
        _check_positive_int("embedding_dim", embedding_dim)
        kind = position.lower() if isinstance(position, str) else position
        if kind not in _POSITION_KINDS:
            raise ValueError(
                f"position must be one of {_POSITION_KINDS}. Received: position={position!r}"
            )
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.embedding_dim = embedding_dim
        self.position = kind
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.scale_embeddings = bool(scale_embeddings)
        self.token_embedding = keras.layers.Embedding(
            vocab_size,
            embedding_dim,
            embeddings_initializer=keras.initializers.get(
                keras.initializers.serialize(self.embeddings_initializer)
            ),
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        if kind == "learned":
            self.position_embedding = PositionEmbedding(
                max_length,
                embeddings_initializer=keras.initializers.get(
                    keras.initializers.serialize(self.embeddings_initializer)
                ),
                dtype=self.dtype_policy,
                name="position_embedding",
            )
        else:
            self.position_embedding = PositionalEncoding(
                max_length, dtype=self.dtype_policy, name="position_embedding"
            )

    def build(self, input_shape):
        self.token_embedding.build(input_shape)
        self.position_embedding.build(tuple(input_shape) + (self.embedding_dim,))

    def call(self, token_ids, start_index=0):
        """Embed ``token_ids`` (B, T) at positions ``start_index..`` -> ``(B, T, d)``."""
        tokens = self.token_embedding(token_ids)  # (B, T, d)
        if self.scale_embeddings:
            tokens = tokens * ops.cast(math.sqrt(self.embedding_dim), tokens.dtype)
        return tokens + self.position_embedding(tokens, start_index=start_index)  # (B, T, d)

    def compute_logits(self, hidden):
        """Tied output projection ``hidden @ E^T`` -> float32 logits ``(..., vocab_size)``."""
        table = ops.cast(self.token_embedding.embeddings, hidden.dtype)  # (V, d)
        logits = ops.matmul(hidden, ops.transpose(table))  # (..., V)
        return ops.cast(logits, "float32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.embedding_dim,)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "max_length": self.max_length,
                "embedding_dim": self.embedding_dim,
                "position": self.position,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
                "scale_embeddings": self.scale_embeddings,
            }
        )
        return config
