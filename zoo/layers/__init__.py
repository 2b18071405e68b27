"""Reusable Keras 3 layers of the zoo (attention, position encodings, Transformer and RNN blocks)."""

from zoo.layers.attention import MultiHeadAttention
from zoo.layers.decoder import TransformerDecoderBlock
from zoo.layers.positional import (
    PositionalEncoding,
    PositionEmbedding,
    TokenAndPositionEmbedding,
    sinusoidal_table,
)
from zoo.layers.rnn import RNNStack
from zoo.layers.transformer import TransformerBlock, gelu_erf, gelu_tanh, get_activation

__all__ = [
    "MultiHeadAttention",
    "PositionEmbedding",
    "PositionalEncoding",
    "RNNStack",
    "TokenAndPositionEmbedding",
    "TransformerBlock",
    "TransformerDecoderBlock",
    "gelu_erf",
    "gelu_tanh",
    "get_activation",
    "sinusoidal_table",
]
