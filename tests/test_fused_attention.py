"""The fused Q/K/V projection computes the same attention as three projections."""

import keras
import numpy as np
import pytest

from zoo.layers import MultiHeadAttention
from zoo.models import build_model


def _pair(d_model=16, heads=4, seed=0):
    separate = MultiHeadAttention(d_model, heads)
    fused = MultiHeadAttention(d_model, heads, fused_qkv=True)
    x = np.random.default_rng(seed).normal(size=(2, 5, d_model)).astype("float32")
    separate(x)
    fused(x)
    kernel = np.concatenate([separate.query_dense.kernel.numpy(), separate.key_dense.kernel.numpy(),
                             separate.value_dense.kernel.numpy()], axis=1)
    bias = np.concatenate([separate.query_dense.bias.numpy(), separate.key_dense.bias.numpy(),
                           separate.value_dense.bias.numpy()])
    fused.qkv_dense.set_weights([kernel, bias])
    fused.output_dense.set_weights(separate.output_dense.get_weights())
    return separate, fused, x


def test_fused_self_attention_equals_separate_projections():
    separate, fused, x = _pair()
    for causal in (False, True):
        np.testing.assert_allclose(fused(x, use_causal_mask=causal),
                                   separate(x, use_causal_mask=causal), atol=1e-6)
    assert len(fused.trainable_weights) == 4  # qkv kernel + bias, output kernel + bias


def test_fused_cache_and_cross_attention_equal_separate():
    separate, fused, x = _pair()
    outs = []
    for layer in (separate, fused):
        cache = layer.init_cache(2, 8)
        y1, cache = layer(x[:, :3], cache=cache, cache_update_index=0, use_causal_mask=True)
        y2, cache = layer(x[:, 3:4], cache=cache, cache_update_index=3, use_causal_mask=True)
        memory = x[:, ::-1] * 0.5
        cross, _ = layer(x[:, :2], cache=layer.compute_kv_cache(memory), training=False)
        direct = layer(x[:, :2], value=memory)
        outs.append([y1, y2, cache, cross, direct])
    for a, b in zip(*outs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_fused_transformer_lm_saves_and_reloads(tmp_path):
    model = build_model("transformer_lm", 30, "tiny", fused_qkv=True)
    ids = np.random.default_rng(1).integers(0, 30, size=(2, 10)).astype("int32")
    logits = model(ids)
    assert "qkv_dense" in {w.path.split("/")[-2] for w in model.weights}
    path = str(tmp_path / "fused.keras")
    model.save(path)
    again = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_allclose(again(ids), logits, atol=1e-6)


def test_fused_needs_equal_widths():
    layer = MultiHeadAttention(8, 2, fused_qkv=True)
    with pytest.raises(ValueError, match="same width"):
        layer.build((1, 3, 8), value_shape=(1, 4, 6))
