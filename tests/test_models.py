"""Every named model: shapes, cached == full logits, config and .keras round trips."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.errors import ZooError
from zoo.models import build_model, get_spec, list_models

VOCAB = 40
CAUSAL_MODELS = ["gru_lm", "lstm_lm", "mlp_lm", "rnn_lm", "transformer_lm"]


def _ids(batch=2, time=12, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(4, VOCAB, size=(batch, time)), tf.int32)


def test_registry_lists_every_causal_model():
    assert set(CAUSAL_MODELS) <= set(list_models())
    assert zoo.list_models() == list_models()
    for name in CAUSAL_MODELS:
        assert set(get_spec(name).presets) >= {"tiny", "small", "base"}


def test_unknown_model_and_preset_and_setting_are_clear_errors():
    with pytest.raises(ZooError, match="unknown model 'nope'.*transformer_lm"):
        build_model("nope", vocab_size=VOCAB)
    with pytest.raises(ZooError, match="unknown preset 'huge'"):
        build_model("lstm_lm", vocab_size=VOCAB, preset="huge")
    with pytest.raises(ZooError, match="unknown setting"):
        build_model("lstm_lm", vocab_size=VOCAB, num_heads=3)
    with pytest.raises(ZooError, match="divisible"):
        build_model("transformer_lm", vocab_size=VOCAB, d_model=30, num_heads=4)


@pytest.mark.parametrize("name", CAUSAL_MODELS)
def test_logits_shape_and_dtype(name):
    model = build_model(name, vocab_size=VOCAB, preset="tiny")
    logits = model(_ids())
    assert tuple(logits.shape) == (2, 12, VOCAB)
    assert logits.dtype == tf.float32
    assert np.isfinite(logits.numpy()).all()


@pytest.mark.parametrize("name", CAUSAL_MODELS)
def test_incremental_decoding_equals_full_pass(name):
    model = build_model(name, vocab_size=VOCAB, preset="tiny")
    ids = _ids(time=10)
    full = model(ids).numpy()
    cache = model.init_cache(2, 16)
    prefix = 4
    logits, cache = model.call_with_cache(ids[:, :prefix], cache, tf.constant(0))
    steps = [logits.numpy()]
    for t in range(prefix, 10):
        logits, cache = model.call_with_cache(ids[:, t : t + 1], cache, tf.constant(t))
        steps.append(logits.numpy())
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5, rtol=1e-5)


def test_transformer_is_causal():
    model = build_model("transformer_lm", vocab_size=VOCAB, preset="tiny")
    ids = _ids(time=10).numpy()
    changed = ids.copy()
    changed[:, 7] = (changed[:, 7] + 1 - 4) % (VOCAB - 4) + 4
    a, b = model(ids).numpy(), model(changed).numpy()
    np.testing.assert_allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert np.abs(a[:, 7:] - b[:, 7:]).max() > 1e-4


def test_transformer_ties_output_to_input_embedding():
    tied = build_model("transformer_lm", vocab_size=VOCAB, preset="tiny")
    untied = build_model("transformer_lm", vocab_size=VOCAB, preset="tiny", tie_embeddings=False)
    assert untied.count_params() - tied.count_params() == 32 * VOCAB + VOCAB


def test_mlp_lm_sees_only_its_context_window():
    model = build_model("mlp_lm", vocab_size=VOCAB, preset="tiny")  # context_size 4
    ids = _ids(time=10).numpy()
    changed = ids.copy()
    changed[:, 2] = 5 if changed[0, 2] != 5 else 6
    a, b = model(ids).numpy(), model(changed).numpy()
    # position t sees tokens t-3..t: changing token 2 affects positions 2..5 only
    np.testing.assert_allclose(a[:, 6:], b[:, 6:], atol=1e-6)
    np.testing.assert_allclose(a[:, :2], b[:, :2], atol=1e-6)
    assert np.abs(a[:, 2:6] - b[:, 2:6]).max() > 1e-5


@pytest.mark.parametrize("name", CAUSAL_MODELS)
def test_keras_round_trip_safe_mode(name, tmp_path):
    model = build_model(name, vocab_size=VOCAB, preset="tiny")
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert type(restored) is type(model)
    assert restored.get_config() == model.get_config()
    np.testing.assert_array_equal(restored(_ids()).numpy(), model(_ids()).numpy())


@pytest.mark.parametrize("name", CAUSAL_MODELS)
def test_config_round_trip(name):
    model = build_model(name, vocab_size=VOCAB, preset="tiny")
    clone = type(model).from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.count_params() == model.count_params()
