"""Tests of zoo.layers: formulas against numpy, cached decoding, serialization."""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from zoo.layers import (  # noqa: E402
    MultiHeadAttention,
    PositionalEncoding,
    PositionEmbedding,
    RNNStack,
    TokenAndPositionEmbedding,
    TransformerBlock,
)

B, T, D_MODEL, HEADS = 2, 7, 16, 4


@pytest.fixture(autouse=True, scope="module")
def _full_precision_matmuls():
    """Exact float32 matmuls on GPUs too (TF uses TF32 there by default), so atol=1e-5 holds."""
    previous = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    yield
    tf.config.experimental.enable_tensor_float_32_execution(previous)


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def randomize(layer, seed=1):
    """Give every weight (biases and norm parameters included) random values."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
    return layer


def make_mha(d_model=D_MODEL, heads=HEADS, query_dim=None, value_dim=None, **kwargs):
    mha = MultiHeadAttention(d_model, heads, **kwargs)
    qd = query_dim or d_model
    mha.build((None, None, qd), (None, None, value_dim or qd))
    return randomize(mha)


# ------------------------------------------------------------------------------------------
# numpy references
# ------------------------------------------------------------------------------------------
def np_dense(layer, x):
    y = x.astype("float64") @ layer.kernel.numpy().astype("float64")
    if layer.use_bias:
        y = y + layer.bias.numpy()
    return y


def np_softmax(s):
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


def np_mha(layer, query, value=None, key=None, mask=None):
    """softmax(Q K^T / sqrt(d_k)) V per head, concat, W^O, in float64."""
    value = query if value is None else value
    key = value if key is None else key
    h, d = layer.num_heads, layer.head_dim

    def heads(x):  # (B, T, h*d) -> (B, h, T, d)
        return x.reshape(x.shape[0], x.shape[1], h, d).transpose(0, 2, 1, 3)

    q = heads(np_dense(layer.query_dense, query))
    k = heads(np_dense(layer.key_dense, key))
    v = heads(np_dense(layer.value_dense, value))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)  # (B, h, Tq, Tk)
    if mask is not None:
        scores = np.where(
            np.broadcast_to(mask, (len(q),) + scores.shape[2:])[:, None], scores, -np.inf
        )
    weights = np_softmax(scores)
    concat = (weights @ v).transpose(0, 2, 1, 3).reshape(query.shape[0], query.shape[1], h * d)
    return np_dense(layer.output_dense, concat), weights


def causal_mask(tq, tk):
    return np.tril(np.ones((tq, tk), bool))


# ------------------------------------------------------------------------------------------
# MultiHeadAttention
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("masking", ["none", "causal", "padding", "causal+padding"])
def test_mha_matches_numpy_formula(masking):
    mha = make_mha()
    x = randn(B, T, D_MODEL)
    padding = np.ones((B, 1, T), bool)
    padding[0, 0, 5:] = False
    padding[1, 0, 2:4] = False
    mask = None
    kwargs = {}
    if "padding" in masking:
        kwargs["attention_mask"] = padding
        mask = padding
    if "causal" in masking:
        kwargs["use_causal_mask"] = True
        mask = causal_mask(T, T) if mask is None else mask & causal_mask(T, T)
    out, weights = mha(x, return_attention_scores=True, **kwargs)
    expected, expected_weights = np_mha(mha, x, mask=mask)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(weights, expected_weights, atol=1e-5)
    assert weights.shape == (B, HEADS, T, T)


def test_mha_cross_attention_matches_numpy_and_kv_cache():
    mha = make_mha(query_dim=12, value_dim=10)
    query, value = randn(B, 3, 12, seed=2), randn(B, 5, 10, seed=3)
    expected, _ = np_mha(mha, query, value)
    np.testing.assert_allclose(mha(query, value), expected, atol=1e-5)
    kv = mha.compute_kv_cache(value)
    assert kv.shape == (B, 2, 5, HEADS, D_MODEL // HEADS)
    out, same = mha(query, cache=kv)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_array_equal(same, kv)
    # A fresh layer can precompute the cache before its first call.
    fresh = MultiHeadAttention(D_MODEL, HEADS)
    out, _ = fresh(query, cache=fresh.compute_kv_cache(value))
    assert out.shape == (B, 3, D_MODEL) and len(fresh.weights) == 8


def test_mha_matches_keras_multi_head_attention():
    mha = make_mha()
    ref = keras.layers.MultiHeadAttention(HEADS, key_dim=D_MODEL // HEADS)
    x = randn(B, T, D_MODEL)
    ref(x, x)
    hd = (HEADS, D_MODEL // HEADS)
    for name in ("query", "key", "value"):
        ours, theirs = getattr(mha, f"{name}_dense"), getattr(ref, f"_{name}_dense")
        theirs.kernel.assign(ours.kernel.numpy().reshape((D_MODEL,) + hd))
        theirs.bias.assign(ours.bias.numpy().reshape(hd))
    ref._output_dense.kernel.assign(mha.output_dense.kernel.numpy().reshape(hd + (D_MODEL,)))
    ref._output_dense.bias.assign(mha.output_dense.bias.numpy())
    for causal in (False, True):
        np.testing.assert_allclose(
            mha(x, use_causal_mask=causal), ref(x, x, use_causal_mask=causal), atol=1e-5
        )


def run_incremental(fn, x, cache, prefill):
    """Prefill ``prefill`` tokens, then one token at a time; return all outputs concatenated."""
    out, cache = fn(x[:, :prefill], cache, tf.constant(0, tf.int32))
    outs = [out]
    for i in range(prefill, x.shape[1]):
        out, cache = fn(x[:, i : i + 1], cache, tf.constant(i, tf.int32))
        outs.append(out)
    return np.concatenate(outs, axis=1), cache


def test_mha_cached_incremental_equals_full_sequence():
    mha = make_mha()
    x = randn(B, T, D_MODEL)
    full = mha(x, use_causal_mask=True)
    cache = mha.init_cache(B, 10)  # longer than T: unwritten slots must be masked out

    def step(x_new, cache, index):
        return mha(x_new, cache=cache, cache_update_index=index, use_causal_mask=True)

    out, cache = run_incremental(step, x, cache, prefill=3)
    np.testing.assert_allclose(out, full, atol=1e-5)
    assert cache.shape == (B, 2, 10, HEADS, D_MODEL // HEADS)
    # The cache holds the projected keys/values of the T tokens, zeros after.
    keys = mha.key_dense(x).numpy().reshape(B, T, HEADS, -1)
    np.testing.assert_allclose(cache[:, 0, :T], keys, atol=1e-6)
    np.testing.assert_array_equal(cache[:, :, T:], 0.0)


def test_mha_cache_without_causal_mask_ignores_unwritten_slots():
    mha = make_mha()
    x = randn(B, T, D_MODEL)
    out, _, weights = mha(
        x, cache=mha.init_cache(B, 12), cache_update_index=0, return_attention_scores=True
    )
    np.testing.assert_allclose(out, mha(x), atol=1e-5)
    assert weights.shape == (B, HEADS, T, 12)
    np.testing.assert_array_equal(weights[..., T:], 0.0)


def test_transformer_block_cached_incremental_equals_full_sequence():
    for norm_first in (False, True):
        block = TransformerBlock(D_MODEL, HEADS, 32, causal=True, norm_first=norm_first)
        block.build((None, None, D_MODEL))
        randomize(block)
        x = randn(B, T, D_MODEL)
        full = block(x)

        def step(x_new, cache, index, block=block):
            return block(x_new, cache=cache, cache_update_index=index)

        out, _ = run_incremental(step, x, block.init_cache(B, 9), prefill=2)
        np.testing.assert_allclose(out, full, atol=1e-5)


def graph_decode(block, max_length, prefill):
    """Prefill, then decode the rest one token at a time in a tf.while_loop (fixed-shape cache)."""

    def decode(x):
        batch, length = tf.shape(x)[0], x.shape[1]
        cache = block.init_cache(batch, max_length)
        first, cache = block(x[:, :prefill], cache=cache, cache_update_index=tf.constant(0))
        outs = tf.TensorArray(first.dtype, size=length, element_shape=(None, D_MODEL))
        for i in range(prefill):
            outs = outs.write(i, first[:, i])

        def body(i, cache, outs):
            x_i = tf.gather(x, [i], axis=1)  # (B, 1, d)
            y, cache = block(x_i, cache=cache, cache_update_index=i)
            return i + 1, cache, outs.write(i, y[:, 0])

        _, _, outs = tf.while_loop(
            lambda i, *_: i < length, body, (tf.constant(prefill), cache, outs)
        )
        return tf.transpose(outs.stack(), (1, 0, 2))  # (B, T, d)

    return decode


@pytest.mark.parametrize("jit_compile", [False, True])
def test_cached_decoding_traces_in_tf_function_and_xla(jit_compile):
    block = TransformerBlock(D_MODEL, HEADS, 32, causal=True, activation="gelu_tanh")
    block.build((None, None, D_MODEL))
    randomize(block)
    x = randn(B, T, D_MODEL)
    decode = tf.function(graph_decode(block, max_length=8, prefill=3), jit_compile=jit_compile)
    np.testing.assert_allclose(decode(tf.constant(x)), block(x), atol=1e-5)


def test_cache_update_uses_no_xla_only_ops():
    mha = make_mha()

    @tf.function
    def step(x, cache, index):
        return mha(x, cache=cache, cache_update_index=index, use_causal_mask=True)

    graph = step.get_concrete_function(
        tf.TensorSpec((None, 1, D_MODEL)),
        tf.TensorSpec((None, 2, 8, HEADS, D_MODEL // HEADS)),
        tf.TensorSpec((), tf.int32),
    ).graph
    op_types = {op.type for op in graph.get_operations()}
    bad = {t for t in op_types if t.startswith("Xla") or "DynamicUpdateSlice" in t}
    assert not bad, bad
    assert {"GatherV2", "SelectV2"} <= op_types


def test_mha_mixed_precision():
    x = randn(B, T, D_MODEL)
    ref = make_mha()
    mixed = MultiHeadAttention(D_MODEL, HEADS, dtype="mixed_bfloat16")
    mixed.build((None, None, D_MODEL))
    mixed.set_weights(ref.get_weights())
    assert mixed.query_dense.compute_dtype == "bfloat16"
    assert mixed.query_dense.kernel.dtype == "float32"
    out, weights = mixed(x, use_causal_mask=True, return_attention_scores=True)
    assert out.dtype == "bfloat16" and weights.dtype == "bfloat16"
    np.testing.assert_allclose(tf.reduce_sum(tf.cast(weights, tf.float32), -1), 1.0, atol=2e-2)
    np.testing.assert_allclose(
        tf.cast(out, tf.float32), ref(x, use_causal_mask=True), atol=0.15, rtol=0.05
    )
    step_out, cache = mixed(x, cache=mixed.init_cache(B, 8), cache_update_index=0)
    assert cache.dtype == "bfloat16" and step_out.dtype == "bfloat16"


def test_transformer_block_mixed_precision_decoding():
    block = TransformerBlock(D_MODEL, HEADS, 32, causal=True, dtype="mixed_bfloat16")
    x = randn(B, T, D_MODEL)
    full = block(x)
    assert full.dtype == "bfloat16"
    decode = tf.function(graph_decode(block, max_length=T, prefill=2))
    out = decode(tf.constant(x))
    assert out.dtype == "bfloat16"
    np.testing.assert_allclose(tf.cast(out, tf.float32), tf.cast(full, tf.float32), atol=0.1)


# ------------------------------------------------------------------------------------------
# Positions and embeddings
# ------------------------------------------------------------------------------------------
def np_positional_encoding(positions, d):
    pe = np.zeros((len(positions), d))
    for row, pos in enumerate(positions):
        for i in range((d + 1) // 2):
            angle = pos / 10000 ** (2 * i / d)
            pe[row, 2 * i] = np.sin(angle)
            if 2 * i + 1 < d:
                pe[row, 2 * i + 1] = np.cos(angle)
    return pe


@pytest.mark.parametrize("d", [8, 7])
def test_positional_encoding_matches_formula(d):
    layer = PositionalEncoding(max_length=40)
    x = randn(B, 6, d)
    np.testing.assert_allclose(layer(x)[0], np_positional_encoding(range(6), d), atol=1e-6)
    np.testing.assert_allclose(
        layer(x, start_index=30)[0], np_positional_encoding(range(30, 36), d), atol=1e-6
    )
    assert layer(x).shape == (1, 6, d)
    assert not layer.weights


def test_position_offset_accepts_tensor_index_in_tf_function():
    layer = PositionEmbedding(max_length=12)
    x = randn(B, 3, D_MODEL)
    layer(x)
    table = layer.embeddings.numpy()
    fn = tf.function(lambda x, start: layer(x, start_index=start))
    np.testing.assert_array_equal(fn(x, tf.constant(4, tf.int32))[0], table[4:7])
    np.testing.assert_array_equal(layer(x, start_index=9)[0], table[9:12])


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_token_and_position_embedding(position):
    layer = TokenAndPositionEmbedding(20, 10, 8, position=position)
    ids = np.array([[1, 5, 7], [0, 19, 3]], "int32")
    out = layer(ids, start_index=2)
    token_table = layer.token_embedding.embeddings.numpy()
    assert isinstance(layer.token_embedding, keras.layers.Embedding)
    if position == "learned":
        pos = layer.position_embedding.embeddings.numpy()[2:5]
    else:
        pos = np_positional_encoding(range(2, 5), 8)
    np.testing.assert_allclose(out, token_table[ids] + pos, atol=1e-6)
    h = randn(2, 3, 8)
    np.testing.assert_allclose(layer.compute_logits(h), h @ token_table.T, atol=1e-5)


# ------------------------------------------------------------------------------------------
# TransformerBlock
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_block_matches_recomputation(norm_first):
    block = TransformerBlock(D_MODEL, HEADS, 24, activation="gelu", norm_first=norm_first)
    block.build((None, None, D_MODEL))
    randomize(block)
    x = randn(B, T, D_MODEL)
    padding = np.ones((B, T), bool)
    padding[1, 5:] = False
    mask = padding[:, None, :]

    def ln(layer, v):
        gamma, beta = (w.numpy() for w in layer.weights)
        mean, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
        return (v - mean) / np.sqrt(var + 1e-5) * gamma + beta

    def ffn(v):
        hidden = np_dense(block.ffn_inner, v)
        hidden = 0.5 * hidden * (1 + np.vectorize(math.erf)(hidden / np.sqrt(2)))
        return np_dense(block.ffn_outer, hidden)

    def attn(v):
        return np_mha(block.attention, v, mask=mask)[0]

    if norm_first:
        h = x + attn(ln(block.attention_norm, x))
        expected = h + ffn(ln(block.ffn_norm, h))
    else:
        h = ln(block.attention_norm, x + attn(x))
        expected = ln(block.ffn_norm, h + ffn(h))
    np.testing.assert_allclose(block(x, padding_mask=padding), expected, atol=1e-5)


def test_causal_block_ignores_future_tokens():
    block = TransformerBlock(D_MODEL, HEADS, 24, causal=True)
    x = randn(B, T, D_MODEL)
    changed = x.copy()
    changed[:, 4] += 3.0
    a, b = block(x).numpy(), block(changed).numpy()
    np.testing.assert_array_equal(a[:, :4], b[:, :4])
    assert np.abs(a[:, 4:] - b[:, 4:]).max() > 1e-3
    # Non-causal: the change reaches earlier positions.
    free = TransformerBlock(D_MODEL, HEADS, 24)
    assert np.abs(free(x).numpy()[:, :4] - free(changed).numpy()[:, :4]).max() > 1e-3


def test_gelu_tanh_activation():
    block = TransformerBlock(D_MODEL, HEADS, 24, activation="GELU_TANH")
    v = np.linspace(-3, 3, 13).astype("float32")
    expected = 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3)))
    np.testing.assert_allclose(block.ffn_inner.activation(v), expected, atol=1e-6)


# ------------------------------------------------------------------------------------------
# RNNStack
# ------------------------------------------------------------------------------------------
def test_simple_rnn_matches_numpy():
    stack = RNNStack("simple", 5)
    x = randn(B, T, 3)
    out, (h_last,) = stack(x, return_state=True)
    cell = stack.rnn_layers[0].cell
    w, u, b = cell.kernel.numpy(), cell.recurrent_kernel.numpy(), cell.bias.numpy()
    h = np.zeros((B, 5))
    expected = []
    for t in range(T):
        h = np.tanh(x[:, t] @ w + h @ u + b)
        expected.append(h)
    np.testing.assert_allclose(out, np.stack(expected, 1), atol=1e-5)
    np.testing.assert_allclose(h_last, h, atol=1e-5)


@pytest.mark.parametrize("cell", ["simple", "LSTM", "gru"])
def test_rnn_stepping_equals_full_pass(cell):
    stack = RNNStack(cell, 6, num_layers=2, dropout=0.5)
    x = randn(B, 5, 4)
    full, full_states = stack(x, return_state=True)
    states = stack.get_initial_state(B)
    assert len(states) == (4 if cell == "LSTM" else 2)
    outs = []
    for t in range(5):
        out, states = stack(x[:, t : t + 1], initial_state=states, return_state=True)
        outs.append(out)
    np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=1e-5)
    for got, want in zip(states, full_states, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_rnn_rejects_bad_state_count():
    stack = RNNStack("lstm", 4, num_layers=2)
    with pytest.raises(ValueError, match="flat list of 4"):
        stack(randn(B, 3, 4), initial_state=stack.get_initial_state(B)[:2])


# ------------------------------------------------------------------------------------------
# Argument checks, config and saving
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: MultiHeadAttention(10, 3), "d_model=10, num_heads=3"),
        (lambda: MultiHeadAttention(8, 2, dropout=1.5), "dropout=1.5"),
        (lambda: PositionalEncoding(0), "max_length=0"),
        (lambda: TokenAndPositionEmbedding(10, 5, 4, position="rotary"), "position='rotary'"),
        (lambda: TransformerBlock(8, 2, 16, activation="swish"), "activation='swish'"),
        (lambda: RNNStack("transformer", 4), "cell='transformer'"),
        (lambda: RNNStack("gru", -1), "units=-1"),
    ],
)
def test_bad_arguments_raise(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def _mha_model():
    inputs = keras.Input((5, D_MODEL))
    return keras.Model(inputs, MultiHeadAttention(D_MODEL, HEADS)(inputs, use_causal_mask=True))


def _pe_model():
    inputs = keras.Input((5, 6))
    return keras.Model(inputs, inputs + PositionalEncoding(16)(inputs, start_index=3))


def _pos_model():
    inputs = keras.Input((5, 6))
    return keras.Model(inputs, inputs + PositionEmbedding(16)(inputs))


def _embedding_model():
    inputs = keras.Input((5,), dtype="int32")
    return keras.Model(inputs, TokenAndPositionEmbedding(30, 8, 6, position="learned")(inputs))


def _block_model():
    inputs = keras.Input((5, D_MODEL))
    block = TransformerBlock(D_MODEL, HEADS, 24, causal=True, norm_first=True)
    return keras.Model(inputs, block(inputs))


def _rnn_model():
    inputs = keras.Input((5, 3))
    seq, states = RNNStack("lstm", 4, num_layers=2)(inputs, return_state=True)
    return keras.Model(inputs, [seq, *states])


MODEL_CASES = {
    "mha": (_mha_model, lambda: randn(B, 5, D_MODEL)),
    "positional_encoding": (_pe_model, lambda: randn(B, 5, 6)),
    "position_embedding": (_pos_model, lambda: randn(B, 5, 6)),
    "token_and_position": (
        _embedding_model,
        lambda: np.random.default_rng(0).integers(0, 30, (B, 5)).astype("int32"),
    ),
    "transformer_block": (_block_model, lambda: randn(B, 5, D_MODEL)),
    "rnn_stack": (_rnn_model, lambda: randn(B, 5, 3)),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_config_round_trip_and_keras_file(case, tmp_path):
    make_model, make_inputs = MODEL_CASES[case]
    model = make_model()
    (layer,) = [lay for lay in model.layers if type(lay).__module__.startswith("zoo.")]
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    for weight in model.weights:  # non-default values so that a missed load would show
        weight.assign(np.random.default_rng(1).normal(0, 0.3, weight.shape))
    inputs = make_inputs()
    path = tmp_path / f"{case}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.get_layer(layer.name)) is type(layer)
    for got, want in zip(
        keras.tree.flatten(loaded(inputs)), keras.tree.flatten(model(inputs)), strict=True
    ):
        np.testing.assert_allclose(got, want, atol=1e-6)
