"""Convolutional models: ``text_cnn`` (Kim 2014) and ``gcnn_lm`` (Dauphin et al. 2017).

TextCNN's pooled features against a NumPy convolution + max-over-time, and its SavedModel's
``classify``/``predict`` against ``run.classify``; the gated CNN LM's GLU against NumPy, its
causality, cached decoding against a full pass, and its SavedModel and LiteRT greedy generation
against ``zoo generate`` / ``run.generate``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

import export
import zoo
from zoo import cli
from zoo.errors import ZooError
from zoo.models import build_model
from zoo.tasks import classification

VOCAB = 50
TEXTS = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés",
         "bad"]
PROMPTS = ["ROMEO:", "First Citizen:\nWe are", "a", "To be, or not " * 5]
MAX_NEW = 12


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ------------------------------------------------------------------------------------------------
# text_cnn


def numpy_text_cnn_features(model, ids: np.ndarray) -> np.ndarray:
    """Kim's features by hand: zero vectors at and after the padding, a "valid" convolution of
    every width from each real position, ReLU, max over the real positions."""
    table = model.token_embedding_layer().get_weights()[0]  # (V, d)
    mask = ids != 0
    e = table[ids] * mask[..., None]  # (B, T, d)
    batch, steps, dim = e.shape
    rows = []
    for b in range(batch):
        pooled = []
        for k, conv in zip(model.kernel_sizes, model.convs, strict=True):
            kernel, bias = conv.get_weights()  # (k, d, F), (F,)
            padded = np.concatenate([e[b], np.zeros((k - 1, dim))])  # (T + k - 1, d)
            c = np.stack([np.einsum("kd,kdf->f", padded[t:t + k], kernel) + bias
                          for t in range(steps)])
            c = np.maximum(c, 0.0)  # (T, F)
            pooled.append(c[mask[b]].max(axis=0))
        rows.append(np.concatenate(pooled))
    return np.stack(rows)


def test_text_cnn_pooled_features_equal_numpy_convolution_and_max_pool():
    model = build_model("text_cnn", VOCAB, "tiny")
    assert model.kernel_sizes == (3, 4, 5)
    rng = np.random.default_rng(0)
    ids = rng.integers(4, VOCAB, size=(3, 9)).astype("int32")
    ids[1, 6:] = 0  # padded
    ids[2, 2:] = 0  # two tokens: shorter than every kernel
    got = np.asarray(model.features(ids))
    assert got.shape == (3, 3 * model.filters)
    np.testing.assert_allclose(got, numpy_text_cnn_features(model, ids), atol=1e-5)
    # more padding after a row changes nothing; a row of two tokens alone gives the same features
    wider = np.pad(ids, [[0, 0], [0, 7]])
    np.testing.assert_allclose(np.asarray(model.features(wider)), got, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model.features(ids[2:, :2]))[0], got[2], atol=1e-6)
    logits = model(ids)
    assert logits.shape == (3, 2) and logits.dtype == "float32"


def test_text_cnn_refuses_a_bert_mlm_encoder_run():
    with pytest.raises(ZooError, match="text_cnn has none"):
        zoo.train("text_cnn", "dataset:sst2", "/nonexistent/run",
                  model_overrides={"pretrained": "/some/bert_mlm/run"}, verbose=0)


@pytest.fixture(scope="module")
def cnn_run(data_dir, tmp_path_factory):
    """A tiny text_cnn trained a few steps on 1,000 SST-2 training rows (word tokenizer) and its
    SavedModel."""
    root = tmp_path_factory.mktemp("text_cnn")
    with open(os.path.join(data_dir, "sst2", "train.tsv"), encoding="utf-8") as f:
        rows = f.read().split("\n")[:1001]
    (root / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    run = zoo.train("text_cnn", str(root / "train.tsv"), str(root / "run"), tokenizer="word",
                    verbose=0, max_steps=6, batch_size=16, seq_len=32, checkpoint_every=6,
                    eval_batches=2)
    path = export.saved_model(run, str(root / "models" / "sst"))
    return run, tf.saved_model.load(path)


def test_text_cnn_trains_and_its_saved_model_classifies_like_the_run(cnn_run):
    run, loaded = cnn_run
    assert run.config["model"] == "text_cnn" and run.config["tokenizer"] == "word"
    assert run.model.embedding.input_dim == run.tokenizer.vocab_size
    expected = run.classify(TEXTS)
    examples = tf.constant([classification.example_proto(t) for t in TEXTS])
    out = loaded.signatures["classify"](inputs=examples)
    names = run.config["model_config"]["class_names"]
    assert len(names) == 2
    classes = [[c.decode() for c in row] for row in out["classes"].numpy()]
    assert classes == [names] * len(TEXTS)
    for row, result in zip(out["scores"].numpy(), expected, strict=True):
        np.testing.assert_allclose(row, [result["scores"][name] for name in names], atol=1e-5)
    predicted = loaded.signatures["predict"](text=tf.constant(TEXTS))
    assert [label.decode() for label in predicted["label"].numpy()] == [r["label"] for r in expected]
    assert zoo.load(run.path).classify(TEXTS) == expected  # the saved .keras model reloads
    metrics = run.evaluate()
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["examples"] == 100  # the 10% held out


# ------------------------------------------------------------------------------------------------
# gcnn_lm


def test_gated_linear_unit_of_one_layer_equals_numpy():
    model = build_model("gcnn_lm", VOCAB, "tiny")
    conv = model.convs[0]
    kernel, bias = conv.get_weights()  # (k, d, 2F), (2F,)
    k, dim, filters = conv.kernel_size, kernel.shape[1], conv.filters
    x = np.random.default_rng(1).normal(size=(2, 7 + k - 1, dim)).astype("float32")
    w, v = kernel[..., :filters], kernel[..., filters:]
    expected = np.stack([
        (np.einsum("bkd,kdf->bf", x[:, t:t + k], w) + bias[:filters])
        * _sigmoid(np.einsum("bkd,kdf->bf", x[:, t:t + k], v) + bias[filters:])
        for t in range(7)], axis=1)  # (B, 7, F)
    np.testing.assert_allclose(np.asarray(conv(x)), expected, atol=1e-5)


def test_gcnn_lm_is_causal_and_cached_decoding_equals_a_full_pass():
    model = build_model("gcnn_lm", VOCAB, "tiny")
    rng = np.random.default_rng(2)
    ids = rng.integers(4, VOCAB, size=(2, 16)).astype("int32")
    full = np.asarray(model(ids))
    changed = ids.copy()
    changed[:, 9] = (ids[:, 9] - 3) % (VOCAB - 4) + 4  # another token at position 9
    other = np.asarray(model(changed))
    np.testing.assert_array_equal(other[:, :9], full[:, :9])  # no earlier logit moves
    assert np.abs(other[:, 9] - full[:, 9]).max() > 1e-4
    # receptive field: num_layers * (k - 1) + 1 = 5 positions, so position 14 no longer sees 9
    np.testing.assert_allclose(other[:, 14:], full[:, 14:], atol=1e-6)
    for prefill in (1, 5):
        cache = model.init_cache(2, None)
        logits, cache = model.call_with_cache(ids[:, :prefill], cache, 0)
        pieces = [np.asarray(logits)]
        index = prefill
        while index < ids.shape[1]:
            n = 1 if index < 12 else 2  # single steps, then a chunk of two
            logits, cache = model.call_with_cache(ids[:, index:index + n], cache, index)
            pieces.append(np.asarray(logits))
            index += n
        np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5)
    assert model.max_length is None


@pytest.fixture(scope="module")
def gcnn_run(shakespeare_file, tmp_path_factory):
    """A tiny gcnn_lm trained a few steps on the start of tinyshakespeare (characters)."""
    out = tmp_path_factory.mktemp("gcnn") / "run"
    return zoo.train("gcnn_lm", shakespeare_file, str(out), verbose=0, max_steps=8,
                     batch_size=8, seq_len=32, checkpoint_every=8, eval_batches=2)


def test_gcnn_saved_model_greedy_equals_zoo_generate(gcnn_run, tmp_path, capsys):
    path = export.saved_model(gcnn_run, str(tmp_path / "models" / "gcnn"), max_new_tokens=MAX_NEW)
    loaded = tf.saved_model.load(path)
    expected = gcnn_run.generate(PROMPTS, strategy="greedy", max_new_tokens=MAX_NEW)
    assert any(expected)
    out = loaded.signatures["serving_default"](prompt=tf.constant(PROMPTS))
    assert [t.decode("utf-8") for t in out["text"].numpy()] == expected
    capsys.readouterr()
    assert cli.main(["generate", gcnn_run.path, "--prompt", PROMPTS[0], "--max-new-tokens",
                     str(MAX_NEW)]) == 0
    assert capsys.readouterr().out == expected[0] + "\n"


def test_gcnn_litert_greedy_equals_run_generate(gcnn_run):
    """The LiteRT export's ``generate`` and ``score`` signatures (converted alone, as
    ``export_tflite`` converts all four: the other two are model-independent and half the
    conversion time; tests/test_export_tflite.py covers them)."""
    pytest.importorskip("ai_edge_litert")
    from export import tflite as litert

    module = litert.build_module(gcnn_run, max_new_tokens=8)

    class GenerateAndScore(tf.Module):
        def signatures(self):
            return {name: getattr(module, name).get_concrete_function()
                    for name in ("generate", "score")}

    flatbuffer = litert._convert(GenerateAndScore(), "none", None)
    ops = litert._check_ops(flatbuffer)  # builtins and the TF Text ops only
    assert "WHILE" in ops and not any("Flex" in op for op in ops)
    lm = litert.LiteRTModel(flatbuffer)
    prompts = PROMPTS[:3]
    assert lm.generate(prompts) == gcnn_run.generate(prompts, strategy="greedy", max_new_tokens=8)
    # score: sum of log p(t_i | t_<i) from the Keras model's logits (no context limit)
    log_likelihood, num_tokens = lm.score(prompts[:2])
    for text, got, n in zip(prompts[:2], log_likelihood, num_tokens, strict=True):
        ids = gcnn_run.tokenizer.tokenize_to_numpy(text).astype("int32")
        logits = np.asarray(gcnn_run.model(ids[None, :-1]))[0].astype(np.float64)
        log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        want = log_probs[np.arange(len(ids) - 1), ids[1:]].sum()
        assert n == len(ids) - 1 and got == pytest.approx(want, rel=1e-4)
