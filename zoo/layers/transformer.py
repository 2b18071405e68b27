"""Transformer block (self-attention + position-wise feed-forward), post- or pre-norm."""

from __future__ import annotations

import keras
from keras import ops

from zoo.layers.attention import MultiHeadAttention, _check_positive_int, _check_rate


def check_block_args(d_model, num_heads, ffn_dim, rate, attention_dropout,
                     layer_norm_epsilon) -> None:
    """Validate the sizes and rates shared by the encoder and decoder blocks (ValueError)."""
    _check_positive_int("d_model", d_model)
    _check_positive_int("num_heads", num_heads)
    _check_positive_int("ffn_dim", ffn_dim)
    _check_rate("rate", rate)
    _check_rate("attention_dropout", attention_dropout)
    if not isinstance(layer_norm_epsilon, (int, float)) or layer_norm_epsilon <= 0:
        raise ValueError(
            "layer_norm_epsilon must be a positive number. "
            f"Received: layer_norm_epsilon={layer_norm_epsilon!r}"
        )


@keras.saving.register_keras_serializable(package="zoo")
def gelu_tanh(x):
    """GELU, tanh approximation (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return keras.activations.gelu(x, approximate=True)


@keras.saving.register_keras_serializable(package="zoo")
def gelu_erf(x):
    """GELU, exact form: x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))."""
    return keras.activations.gelu(x, approximate=False)


_ACTIVATIONS = {
    "relu": keras.activations.relu,
    "gelu": gelu_erf,
    "gelu_tanh": gelu_tanh,
}


def get_activation(name: str):
    """Return the FFN activation called ``name`` ("relu", "gelu" (erf) or "gelu_tanh")."""
    key = name.lower() if isinstance(name, str) else name
    if key not in _ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {tuple(_ACTIVATIONS)}. Received: activation={name!r}"
        )
    return _ACTIVATIONS[key]


@keras.saving.register_keras_serializable(package="zoo")
class TransformerBlock(keras.layers.Layer):
    """One Transformer layer: multi-head self-attention and a position-wise feed-forward net.

    ``FFN(x) = act(x W_1 + b_1) W_2 + b_2`` (``ffn_inner``: Dense(ffn_dim, act), ``ffn_outer``:
    Dense(d_model)). Post-norm (``norm_first=False``, Vaswani et al., 2017)::

        x = LN(x + Dropout(MHA(x)))
        x = LN(x + Dropout(FFN(x)))

    Pre-norm (``norm_first=True``, GPT-2 style; the final LN after the last block is the
    model's job)::

        x = x + Dropout(MHA(LN(x)))
        x = x + Dropout(FFN(LN(x)))

    Sublayers: ``attention`` (``MultiHeadAttention``), ``attention_norm``,
    ``attention_output_dropout``, ``ffn_inner``, ``ffn_outer``, ``ffn_norm``,
    ``ffn_output_dropout``.

    Args:
        d_model: Width of the block's inputs and outputs.
        num_heads: Attention heads (must divide ``d_model``).
        ffn_dim: Hidden width of the feed-forward net.
        rate: Dropout rate on each sublayer's output (before the residual add).
        activation: ``"relu"``, ``"gelu"`` (exact, erf) or ``"gelu_tanh"`` (GPT-2).
        norm_first: Pre-norm if True, post-norm (original paper) if False.
        causal: Apply the causal mask (decoder / language model).
        layer_norm_epsilon: Epsilon of both layer norms.
        fused_qkv: One fused Q/K/V projection (see ``MultiHeadAttention``).
        attention_dropout: Dropout rate on the attention weights.
        **kwargs: Base ``keras.layers.Layer`` arguments.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ffn_dim: int,
        rate: float = 0.1,
        activation: str = "relu",
        norm_first: bool = False,
        causal: bool = False,
        layer_norm_epsilon: float = 1e-5,
        attention_dropout: float = 0.0,
        fused_qkv: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_block_args(d_model, num_heads, ffn_dim, rate, attention_dropout, layer_norm_epsilon)
        activation_fn = get_activation(activation)
        self.d_model = d_model
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.rate = rate
        self.activation = activation.lower()
        self.norm_first = bool(norm_first)
        self.causal = bool(causal)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.attention_dropout = attention_dropout
        self.fused_qkv = bool(fused_qkv)

        policy = self.dtype_policy
        self.attention = MultiHeadAttention(
            d_model, num_heads, dropout=attention_dropout, fused_qkv=self.fused_qkv,
            dtype=policy, name="attention",
        )
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="attention_norm"
        )
        self.attention_output_dropout = keras.layers.Dropout(
            rate, dtype=policy, name="attention_output_dropout"
        )
        self.ffn_inner = keras.layers.Dense(
            ffn_dim, activation=activation_fn, dtype=policy, name="ffn_inner"
        )
        self.ffn_outer = keras.layers.Dense(d_model, dtype=policy, name="ffn_outer")
        self.ffn_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="ffn_norm"
        )
        self.ffn_output_dropout = keras.layers.Dropout(
            rate, dtype=policy, name="ffn_output_dropout"
        )

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.d_model:
            raise ValueError(
                "The last dimension of the input must equal d_model. "
                f"Received: input_shape={tuple(input_shape)}, d_model={self.d_model}"
            )
        input_shape = tuple(input_shape)
        self.attention.build(input_shape)
        self.attention_norm.build(input_shape)
        self.attention_output_dropout.build(input_shape)
        self.ffn_inner.build(input_shape)
        self.ffn_outer.build(input_shape[:-1] + (self.ffn_dim,))
        self.ffn_norm.build(input_shape)
        self.ffn_output_dropout.build(input_shape)

    def init_cache(self, batch_size, max_length: int, dtype: str | None = None):
        """All-zero self-attention cache ``(batch_size, 2, max_length, num_heads, head_dim)``."""
        return self.attention.init_cache(batch_size, max_length, dtype=dtype)

    def _attend(self, x, attention_mask, cache, cache_update_index, training):
        if cache is None:
            out = self.attention(
                x, attention_mask=attention_mask, use_causal_mask=self.causal, training=training
            )
            return out, None
        return self.attention(
            x,
            attention_mask=attention_mask,
            use_causal_mask=self.causal,
            cache=cache,
            cache_update_index=cache_update_index,
            training=training,
        )

    def call(
        self,
        x,
        padding_mask=None,
        cache=None,
        cache_update_index=None,
        training: bool | None = None,
    ):
        """Apply the block to ``x`` (B, T, d_model).

        Args:
            x: Inputs ``(B, T, d_model)``.
            padding_mask: Bool/int ``(B, T_k)``, True/1 for real keys, 0 for padding. ``T_k`` is
                ``T``, or the cache length ``max_length`` when decoding with a cache.
            cache: Self-attention cache ``(B, 2, max_length, num_heads, head_dim)``.
            cache_update_index: Scalar int (tensor) position of ``x[:, 0]``; required with a
                cache.
            training: Enables dropout.

        Returns:
            ``(B, T, d_model)``, or ``(outputs, new_cache)`` with a cache.
        """
        if cache is not None and cache_update_index is None:
            raise ValueError(
                "TransformerBlock is self-attention: a cache needs cache_update_index. "
                "Received: cache_update_index=None"
            )
        attention_mask = None
        if padding_mask is not None:
            attention_mask = ops.expand_dims(ops.cast(padding_mask, "bool"), 1)  # (B, 1, T_k)

        if self.norm_first:
            h, new_cache = self._attend(
                self.attention_norm(x), attention_mask, cache, cache_update_index, training
            )
            x = x + self.attention_output_dropout(h, training=training)  # (B, T, d)
            h = self.ffn_outer(self.ffn_inner(self.ffn_norm(x)))  # (B, T, d)
            x = x + self.ffn_output_dropout(h, training=training)  # (B, T, d)
        else:
            h, new_cache = self._attend(x, attention_mask, cache, cache_update_index, training)
            x = self.attention_norm(x + self.attention_output_dropout(h, training=training))
            h = self.ffn_outer(self.ffn_inner(x))  # (B, T, d)
            x = self.ffn_norm(x + self.ffn_output_dropout(h, training=training))  # (B, T, d)

        if cache is None:
            return x
        return x, new_cache

    def compute_output_shape(self, x_shape):
        return tuple(x_shape)

    def compute_output_spec(
        self, x, padding_mask=None, cache=None, cache_update_index=None, training=None
    ):
        output = keras.KerasTensor(tuple(x.shape), self.compute_dtype)
        if cache is None:
            return output
        return output, keras.KerasTensor(tuple(cache.shape), self.compute_dtype)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "d_model": self.d_model,
                "num_heads": self.num_heads,
                "ffn_dim": self.ffn_dim,
                "rate": self.rate,
                "activation": self.activation,
                "norm_first": self.norm_first,
                "causal": self.causal,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "fused_qkv": self.fused_qkv,
                "attention_dropout": self.attention_dropout,
            }
        )
        return config
