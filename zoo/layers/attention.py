"""Multi-head scaled dot-product attention with a fixed-shape key/value cache."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

# Added to the float32 logits of masked-out keys before the softmax. Finite, so that a row whose
# keys are all masked gives uniform weights instead of NaN.
_MASK_VALUE = -1e9


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")


def _check_rate(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1). Received: {name}={value!r}")


@keras.saving.register_keras_serializable(package="zoo")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head scaled dot-product attention (Vaswani et al., 2017).

    With ``h = num_heads`` and ``d_k = d_model / h``::

        head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)
        Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V
        MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O

    where ``M`` is 0 where a query may attend to a key and a large negative number elsewhere
    (padding mask, causal mask, unwritten cache slots). ``W^Q, W^K, W^V, W^O`` are the kernels
    of the ``query_dense``, ``key_dense``, ``value_dense`` and ``output_dense`` sublayers
    (``Dense(d_model)``; the ``W_i`` are their column blocks of width ``d_k``). Dropout with rate
    ``dropout`` is applied to the attention weights during training. Logits and softmax are
    computed in float32 whatever the compute dtype. On the JAX backend, calls that need neither
    dropout nor the weights go through ``keras.ops.dot_product_attention`` (cuDNN flash
    attention on a GPU).

    Incremental decoding uses a fixed-shape cache ``(batch, 2, max_length, num_heads, head_dim)``
    (keys at ``[:, 0]``, values at ``[:, 1]``): see ``call`` and ``init_cache``. The cache is
    written with a gather + select (``tf.gather`` / ``tf.where``), which runs on plain TF CPU/GPU
    kernels, in XLA, in TF Serving and in TFLite (no ``XlaDynamicUpdateSlice``).

    Args:
        d_model: Model (and output) width; must be divisible by ``num_heads``.
        num_heads: Number of attention heads ``h``.
        dropout: Dropout rate on the attention weights.
        use_bias: Whether the four projections have a bias.
        fused_qkv: One ``qkv_dense`` projection ``Dense(3 * d_model)`` whose kernel is
            ``[W^Q | W^K | W^V]`` instead of three: self-attention then runs one matmul of three
            times the width (fewer, larger kernels: faster on accelerators). Cross-attention
            uses the kernel's column blocks.
        **kwargs: Base ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).

    Example:
        >>> mha = MultiHeadAttention(d_model=64, num_heads=4)
        >>> y = mha(x, use_causal_mask=True)                 # self-attention, (B, T, 64)
        >>> cache = mha.init_cache(batch_size=2, max_length=32)
        >>> y, cache = mha(x_prompt, cache=cache, cache_update_index=0, use_causal_mask=True)
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        use_bias: bool = True,
        fused_qkv: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int("d_model", d_model)
        _check_positive_int("num_heads", num_heads)
        if d_model % num_heads:
            raise ValueError(
                "d_model must be divisible by num_heads. "
                f"Received: d_model={d_model}, num_heads={num_heads}"
            )
        _check_rate("dropout", dropout)
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.use_bias = bool(use_bias)
        self.fused_qkv = bool(fused_qkv)

        def dense(name: str, width: int = d_model) -> keras.layers.Dense:
            return keras.layers.Dense(
                width, use_bias=self.use_bias, dtype=self.dtype_policy, name=name
            )

        if self.fused_qkv:
            self.qkv_dense = dense("qkv_dense", 3 * d_model)
        else:
            self.query_dense = dense("query_dense")
            self.key_dense = dense("key_dense")
            self.value_dense = dense("value_dense")
        self.output_dense = dense("output_dense")
        self.dropout_layer = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy, name="attention_dropout"
        )

    def build(self, query_shape, value_shape=None, key_shape=None):
        if value_shape is None:
            value_shape = query_shape
        if key_shape is None:
            key_shape = value_shape
        if self.fused_qkv:
            if tuple(key_shape[-1:]) != tuple(query_shape[-1:]) or tuple(
                value_shape[-1:]
            ) != tuple(query_shape[-1:]):
                raise ValueError(
                    "fused_qkv needs queries, keys and values of the same width. Received: "
                    f"{query_shape[-1]}, {key_shape[-1]}, {value_shape[-1]}"
                )
            if not self.qkv_dense.built:
                self.qkv_dense.build(query_shape)
            if not self.output_dense.built:
                self.output_dense.build(tuple(query_shape[:-1]) + (self.d_model,))
            return
        for layer, shape in (
            (self.query_dense, query_shape),
            (self.key_dense, key_shape),
            (self.value_dense, value_shape),
            (self.output_dense, tuple(query_shape[:-1]) + (self.d_model,)),
        ):
            if not layer.built:  # key/value may be built already by compute_kv_cache
                layer.build(shape)

    # ----------------------------------------------------------------------------------------
    # Helpers
    # ----------------------------------------------------------------------------------------
    def _split_heads(self, x):
        """(B, T, d_model) -> (B, T, H, D)."""
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], shape[1], self.num_heads, self.head_dim))

    def _fused_block(self, x, block: int):
        """``x W_block + b_block``: one column block (0 Q, 1 K, 2 V) of the fused kernel."""
        dense = self.qkv_dense
        if not dense.built:
            dense.build(tuple(x.shape))
        start, stop = block * self.d_model, (block + 1) * self.d_model
        kernel = ops.cast(dense.kernel[:, start:stop], self.compute_dtype)
        y = ops.matmul(ops.cast(x, self.compute_dtype), kernel)
        if self.use_bias:
            y = y + ops.cast(dense.bias[start:stop], self.compute_dtype)
        return y

    def _project(self, x, block: int):
        """Q (0), K (1) or V (2) projection of ``x`` split into heads: (B, T, H, D)."""
        if self.fused_qkv:
            return self._split_heads(self._fused_block(x, block))
        dense = (self.query_dense, self.key_dense, self.value_dense)[block]
        return self._split_heads(dense(x))

    def _project_qkv(self, query, key, value):
        """(q, k, v), each (B, T, H, D); one matmul for fused self-attention."""
        if self.fused_qkv and key is query and value is query:
            qkv = self.qkv_dense(query)  # (B, T, 3 d_model)
            shape = ops.shape(qkv)
            qkv = ops.reshape(qkv, (shape[0], shape[1], 3, self.num_heads, self.head_dim))
            return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        return self._project(query, 0), self._project(key, 1), self._project(value, 2)

    def init_cache(self, batch_size, max_length: int, dtype: str | None = None):
        """Return an all-zero self-attention cache ``(batch_size, 2, max_length, H, D)``.

        ``dtype`` defaults to the layer's compute dtype (the dtype the cache has after a call).
        """
        return ops.zeros(
            (batch_size, 2, max_length, self.num_heads, self.head_dim),
            dtype=dtype or self.compute_dtype,
        )

    def compute_kv_cache(self, value, key=None):
        """Project ``value`` (and ``key``, default ``value``) into a cross-attention cache.

        Returns a tensor ``(B, 2, T_k, num_heads, head_dim)`` to pass as ``cache`` (with
        ``cache_update_index=None``) so the encoder keys/values are projected only once.
        """
        if key is None:
            key = value
        k = self._project(key, 1)  # (B, T_k, H, D)
        v = self._project(value, 2)  # (B, T_k, H, D)
        return ops.stack([k, v], axis=1)  # (B, 2, T_k, H, D)

    @staticmethod
    def _write_cache(cache, key, value, index):
        """Write ``key``/``value`` (B, n, H, D) into ``cache`` at positions index..index+n-1.

        Gather + select instead of ``dynamic_update_slice`` so that it runs on plain TF kernels
        as well as in XLA.
        """
        max_length = ops.shape(cache)[2]
        n = ops.shape(key)[1]
        positions = ops.arange(max_length, dtype="int32")  # (L,)
        # Source row of the new entries for each cache slot (clamped; only used where written).
        source = ops.minimum(ops.maximum(positions - index, 0), n - 1)  # (L,)
        new = ops.stack([key, value], axis=1)  # (B, 2, n, H, D)
        spread = ops.take(new, source, axis=2)  # (B, 2, L, H, D)
        written = ops.logical_and(positions >= index, positions < index + n)  # (L,)
        written = ops.reshape(written, (1, 1, -1, 1, 1))  # (1, 1, L, 1, 1)
        return ops.where(written, spread, ops.cast(cache, spread.dtype))  # (B, 2, L, H, D)

    @staticmethod
    def _normalize_mask(attention_mask):
        """Bool/int mask broadcastable to (B, T_q, T_k) -> bool (B|1, 1, T_q|1, T_k)."""
        mask = ops.cast(attention_mask, "bool")
        rank = len(mask.shape)
        if rank > 3:
            raise ValueError(
                "attention_mask must be broadcastable to (batch, query_length, key_length). "
                f"Received: attention_mask.shape={tuple(mask.shape)}"
            )
        for _ in range(3 - rank):
            mask = ops.expand_dims(mask, 0)
        return ops.expand_dims(mask, 1)  # (B|1, 1, T_q|1, T_k)

    def _fused_kernel_applies(self, training, return_attention_scores: bool) -> bool:
        """Whether ``keras.ops.dot_product_attention`` computes this call.

        On JAX it is ``jax.nn.dot_product_attention``: cuDNN's flash attention on a GPU (bf16 or
        fp16, compute capability >= 8.0), XLA's fused softmax elsewhere; both keep the logits
        and the softmax in float32. It has no dropout on the weights and returns no weights, so
        the explicit path runs when either is needed. On TensorFlow Keras's op is the same
        einsum/softmax as the explicit path (in the compute dtype), so the explicit path stays.
        """
        if keras.backend.backend() != "jax" or return_attention_scores:
            return False
        return not (training and self.dropout > 0.0)

    @staticmethod
    def _with_causal(mask, q_len, k_len, offset, key_positions):
        """``mask`` and-ed with the causal mask of queries at absolute ``offset + i``."""
        query_positions = ops.arange(q_len, dtype="int32") + offset  # (T_q,)
        causal = ops.expand_dims(query_positions, 1) >= ops.expand_dims(key_positions, 0)
        causal = ops.reshape(causal, (1, 1, q_len, k_len))  # (1, 1, T_q, T_k)
        return causal if mask is None else ops.logical_and(mask, causal)

    # ----------------------------------------------------------------------------------------
    # Forward
    # ----------------------------------------------------------------------------------------
    def call(
        self,
        query,
        value=None,
        key=None,
        attention_mask=None,
        use_causal_mask: bool = False,
        cache=None,
        cache_update_index=None,
        return_attention_scores: bool = False,
        training: bool | None = None,
    ):
        """Attend from ``query`` (B, T_q, d_q) to ``key``/``value`` (B, T_k, d_k|d_v).

        Args:
            query: Query sequence ``(B, T_q, d_q)``.
            value: Value sequence ``(B, T_k, d_v)``; defaults to ``query`` (self-attention).
            key: Key sequence ``(B, T_k, d_k)``; defaults to ``value``.
            attention_mask: Bool/int tensor broadcastable to ``(B, T_q, T_k)``; True/1 = may
                attend. A rank-2 mask is read as ``(T_q, T_k)``; pass a key padding mask as
                ``(B, 1, T_k)``. With a cache, ``T_k`` is the cache length.
            use_causal_mask: Query ``i`` attends only to keys ``j <= i`` (with a self-attention
                cache: absolute positions, ``j <= cache_update_index + i``).
            cache: ``(B, 2, L, H, D)`` keys/values. With ``cache_update_index``: self-attention
                decoding cache, updated with this call's keys/values. Without it: precomputed
                cross-attention keys/values (see ``compute_kv_cache``), used as they are.
            cache_update_index: Scalar int (tensor) position of ``query[:, 0]``.
            return_attention_scores: Also return the attention weights ``(B, H, T_q, T_k)``.
            training: Enables dropout.

        Returns:
            ``output`` (B, T_q, d_model); with a cache ``(output, new_cache)``; with
            ``return_attention_scores`` the weights are appended as the last element.
        """
        if cache_update_index is not None and cache is None:
            raise ValueError(
                "cache_update_index requires a cache. "
                f"Received: cache=None, cache_update_index={cache_update_index}"
            )
        offset = 0  # absolute position of query[:, 0] (for the causal mask)
        key_limit = None  # keys at positions >= key_limit are not written yet

        if cache is not None and cache_update_index is None:
            # Cross-attention with precomputed keys/values.
            q = self._project(query, 0)  # (B, T_q, H, D)
            new_cache = cache
            k = cache[:, 0]  # (B, T_k, H, D)
            v = cache[:, 1]  # (B, T_k, H, D)
        else:
            if value is None:
                value = query
            if key is None:
                key = value
            q, k, v = self._project_qkv(query, key, value)  # (B, T, H, D) each
            if cache is not None:
                index = ops.cast(cache_update_index, "int32")
                new_cache = self._write_cache(cache, k, v, index)  # (B, 2, L, H, D)
                k = new_cache[:, 0]  # (B, L, H, D)
                v = new_cache[:, 1]  # (B, L, H, D)
                offset = index
                key_limit = index + ops.shape(key)[1]
            else:
                new_cache = None

        q_len = ops.shape(q)[1]
        k_len = ops.shape(k)[1]
        mask = None  # bool, broadcastable to (B, H, T_q, T_k)
        if attention_mask is not None:
            mask = self._normalize_mask(attention_mask)
        key_positions = ops.arange(k_len, dtype="int32")  # (T_k,)
        if key_limit is not None:
            written = ops.reshape(key_positions < key_limit, (1, 1, 1, -1))  # (1, 1, 1, T_k)
            mask = written if mask is None else ops.logical_and(mask, written)
        if self._fused_kernel_applies(training, return_attention_scores):
            # Without a cache queries and keys are the same positions: the kernel's own causal
            # mask (which a flash kernel never materialises) is the zoo's.
            kernel_causal = use_causal_mask and cache is None
            if use_causal_mask and not kernel_causal:
                mask = self._with_causal(mask, q_len, k_len, offset, key_positions)
            heads = ops.dot_product_attention(
                q, k, v, mask=mask, scale=1.0 / math.sqrt(self.head_dim), is_causal=kernel_causal
            )  # (B, T_q, H, D)
            shape = ops.shape(heads)
            output = self.output_dense(ops.reshape(heads, (shape[0], shape[1], self.d_model)))
            return output if cache is None else (output, new_cache)
        if use_causal_mask:
            mask = self._with_causal(mask, q_len, k_len, offset, key_positions)

        q = q * ops.cast(1.0 / math.sqrt(self.head_dim), q.dtype)
        scores = ops.einsum("bqhd,bkhd->bhqk", q, k)  # (B, H, T_q, T_k)
        scores = ops.cast(scores, "float32")
        if mask is not None:
            scores = ops.where(mask, scores, _MASK_VALUE)
        weights = ops.softmax(scores, axis=-1)  # float32 (B, H, T_q, T_k)
        weights = ops.cast(weights, self.compute_dtype)
        dropped = self.dropout_layer(weights, training=training)
        heads = ops.einsum("bhqk,bkhd->bqhd", dropped, v)  # (B, T_q, H, D)
        shape = ops.shape(heads)
        concat = ops.reshape(heads, (shape[0], shape[1], self.d_model))  # (B, T_q, d_model)
        output = self.output_dense(concat)  # (B, T_q, d_model)

        outputs = [output]
        if cache is not None:
            outputs.append(new_cache)
        if return_attention_scores:
            outputs.append(weights)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    # ----------------------------------------------------------------------------------------
    # Shapes and config
    # ----------------------------------------------------------------------------------------
    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        return tuple(query_shape[:-1]) + (self.d_model,)

    def compute_output_spec(
        self,
        query,
        value=None,
        key=None,
        attention_mask=None,
        use_causal_mask=False,
        cache=None,
        cache_update_index=None,
        return_attention_scores=False,
        training=None,
    ):
        outputs = [keras.KerasTensor(self.compute_output_shape(query.shape), self.compute_dtype)]
        if cache is not None:
            outputs.append(keras.KerasTensor(cache.shape, self.compute_dtype))
        if return_attention_scores:
            if cache is not None:
                k_len = cache.shape[2]
            else:
                k_len = (key if key is not None else value if value is not None else query).shape[1]
            scores_shape = (query.shape[0], self.num_heads, query.shape[1], k_len)
            outputs.append(keras.KerasTensor(scores_shape, self.compute_dtype))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "d_model": self.d_model,
                "num_heads": self.num_heads,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "fused_qkv": self.fused_qkv,
            }
        )
        return config
