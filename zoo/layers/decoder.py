"""Transformer decoder block: causal self-attention, cross-attention over the encoder, FFN."""

from __future__ import annotations

import keras
from keras import ops

from zoo.layers.attention import MultiHeadAttention
from zoo.layers.transformer import check_block_args, get_activation


@keras.saving.register_keras_serializable(package="zoo")
class TransformerDecoderBlock(keras.layers.Layer):
    """One decoder layer of the original Transformer (Vaswani et al., 2017).

    With ``y`` the target states (B, T, d) and ``m`` the encoder output (B, S, d), post-norm
    (``norm_first=False``, the paper)::

        y = LN(y + Dropout(SelfMHA(y, causal)))
        y = LN(y + Dropout(CrossMHA(query=y, key=value=m, source padding mask)))
        y = LN(y + Dropout(FFN(y)))          FFN(y) = act(y W_1 + b_1) W_2 + b_2

    Pre-norm (``norm_first=True``) applies each LN to the sublayer's input instead
    (``y = y + Dropout(Sublayer(LN(y)))``); the final LN after the last block is the model's job.

    Decoding keeps two caches per block: the self-attention cache ``(B, 2, L, H, D)``, written
    one position at a time, and the cross-attention keys/values ``(B, 2, S, H, D)`` of the
    encoder output, computed once per source by ``compute_cross_cache``.

    Sublayers: ``self_attention``, ``self_attention_norm``, ``cross_attention``,
    ``cross_attention_norm``, ``ffn_inner``, ``ffn_outer``, ``ffn_norm`` and their output
    dropouts.

    Args:
        d_model: Width of the block's inputs, outputs and of the encoder output.
        num_heads: Attention heads of both attentions (must divide ``d_model``).
        ffn_dim: Hidden width of the feed-forward net.
        rate: Dropout rate on each sublayer's output (before the residual add).
        activation: ``"relu"`` (the paper), ``"gelu"`` or ``"gelu_tanh"``.
        norm_first: Pre-norm if True, post-norm (the paper) if False.
        layer_norm_epsilon: Epsilon of the three layer norms.
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
        layer_norm_epsilon: float = 1e-5,
        attention_dropout: float = 0.0,
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
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.attention_dropout = attention_dropout

        policy = self.dtype_policy

        def norm(name: str) -> keras.layers.LayerNormalization:
            return keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon, dtype=policy, name=name
            )

        def dropout(name: str) -> keras.layers.Dropout:
            return keras.layers.Dropout(rate, dtype=policy, name=name)

        self.self_attention = MultiHeadAttention(
            d_model, num_heads, dropout=attention_dropout, dtype=policy, name="self_attention"
        )
        self.self_attention_norm = norm("self_attention_norm")
        self.self_attention_dropout = dropout("self_attention_output_dropout")
        self.cross_attention = MultiHeadAttention(
            d_model, num_heads, dropout=attention_dropout, dtype=policy, name="cross_attention"
        )
        self.cross_attention_norm = norm("cross_attention_norm")
        self.cross_attention_dropout = dropout("cross_attention_output_dropout")
        self.ffn_inner = keras.layers.Dense(
            ffn_dim, activation=activation_fn, dtype=policy, name="ffn_inner"
        )
        self.ffn_outer = keras.layers.Dense(d_model, dtype=policy, name="ffn_outer")
        self.ffn_norm = norm("ffn_norm")
        self.ffn_dropout = dropout("ffn_output_dropout")

    def build(self, input_shape):
        # The encoder output has the same width d_model as the target states.
        if input_shape[-1] is not None and input_shape[-1] != self.d_model:
            raise ValueError(
                "The last dimension of the input must equal d_model. "
                f"Received: input_shape={tuple(input_shape)}, d_model={self.d_model}"
            )
        input_shape = tuple(input_shape)
        self.self_attention.build(input_shape)
        self.cross_attention.build(input_shape, input_shape)
        for layer in (self.self_attention_norm, self.cross_attention_norm, self.ffn_norm):
            layer.build(input_shape)
        self.ffn_inner.build(input_shape)
        self.ffn_outer.build(input_shape[:-1] + (self.ffn_dim,))

    def init_cache(self, batch_size, max_length: int, dtype: str | None = None):
        """All-zero self-attention cache ``(batch_size, 2, max_length, num_heads, head_dim)``."""
        return self.self_attention.init_cache(batch_size, max_length, dtype=dtype)

    def compute_cross_cache(self, memory):
        """Cross-attention keys/values of the encoder output ``(B, S, d)`` -> ``(B, 2, S, H, D)``."""
        return self.cross_attention.compute_kv_cache(memory)

    def _self_attend(self, x, cache, cache_update_index, training):
        if cache is None:
            return self.self_attention(x, use_causal_mask=True, training=training), None
        return self.self_attention(
            x, use_causal_mask=True, cache=cache, cache_update_index=cache_update_index,
            training=training,
        )

    def _cross_attend(self, x, memory, memory_mask, cross_cache, training):
        mask = None
        if memory_mask is not None:
            mask = ops.expand_dims(ops.cast(memory_mask, "bool"), 1)  # (B, 1, S)
        if cross_cache is not None:
            out, _ = self.cross_attention(
                x, attention_mask=mask, cache=cross_cache, training=training
            )
            return out
        return self.cross_attention(x, memory, attention_mask=mask, training=training)

    def call(
        self,
        x,
        memory=None,
        memory_mask=None,
        cache=None,
        cache_update_index=None,
        cross_cache=None,
        training: bool | None = None,
    ):
        """Apply the block to the target states ``x`` (B, T, d_model).

        Args:
            x: Target states ``(B, T, d_model)``; attention over them is causal.
            memory: Encoder output ``(B, S, d_model)`` (not needed with ``cross_cache``).
            memory_mask: Bool/int ``(B, S)``: True/1 for real source tokens, 0 for padding.
            cache: Self-attention cache ``(B, 2, L, num_heads, head_dim)``.
            cache_update_index: Scalar int (tensor) position of ``x[:, 0]``; required with a
                cache.
            cross_cache: ``compute_cross_cache(memory)``, used instead of ``memory``.
            training: Enables dropout.

        Returns:
            ``(B, T, d_model)``, or ``(outputs, new_cache)`` with a self-attention cache.
        """
        if cache is not None and cache_update_index is None:
            raise ValueError("a self-attention cache needs cache_update_index")
        if memory is None and cross_cache is None:
            raise ValueError("TransformerDecoderBlock needs memory or cross_cache")

        if self.norm_first:
            h, new_cache = self._self_attend(
                self.self_attention_norm(x), cache, cache_update_index, training
            )
            x = x + self.self_attention_dropout(h, training=training)
            h = self._cross_attend(
                self.cross_attention_norm(x), memory, memory_mask, cross_cache, training
            )
            x = x + self.cross_attention_dropout(h, training=training)
            h = self.ffn_outer(self.ffn_inner(self.ffn_norm(x)))
            x = x + self.ffn_dropout(h, training=training)
        else:
            h, new_cache = self._self_attend(x, cache, cache_update_index, training)
            x = self.self_attention_norm(x + self.self_attention_dropout(h, training=training))
            h = self._cross_attend(x, memory, memory_mask, cross_cache, training)
            x = self.cross_attention_norm(x + self.cross_attention_dropout(h, training=training))
            h = self.ffn_outer(self.ffn_inner(x))
            x = self.ffn_norm(x + self.ffn_dropout(h, training=training))

        if cache is None:
            return x
        return x, new_cache

    def compute_output_shape(self, x_shape, *args, **kwargs):
        return tuple(x_shape)

    def compute_output_spec(self, x, memory=None, memory_mask=None, cache=None,
                            cache_update_index=None, cross_cache=None, training=None):
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
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "attention_dropout": self.attention_dropout,
            }
        )
        return config
