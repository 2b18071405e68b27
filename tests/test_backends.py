"""The Keras core on JAX: every family builds, runs and trains there; its logits equal
TensorFlow's for the same weights; cached decoding equals a full pass; the core imports without
TensorFlow; a run trained on JAX reloads, evaluates, generates and exports under TensorFlow; the
batches are the same on every backend; a JAX run resumes from its checkpoints.

JAX runs in subprocesses (``KERAS_BACKEND=jax``): Keras fixes its backend at import, and this
process runs TensorFlow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from decode_cases import decode_outputs

import export
import zoo
from zoo.data import pipelines, prepared, windows
from zoo.models import build_model, get_spec, list_models

pytest.importorskip("jax")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VOCAB = 40
CAUSAL = ["gcnn_lm", "gpt2", "gru_lm", "lstm_lm", "mlp_lm", "rnn_lm", "transformer_lm"]
SEQ2SEQ_TASKS = ("seq2seq", "summarization")  # models called on (source, target)
FAST = ["--max-steps", "30", "--batch-size", "4", "--seq-len", "32", "--quiet",
        "--set", "checkpoint_every=10", "--set", "eval_batches=2"]


def _env(backend: str) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_python(code_or_args, backend: str = "jax", timeout: int = 600):
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else list(code_or_args)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env=_env(backend), timeout=timeout, cwd=ROOT)


def zoo_cli(*args, backend: str = "tensorflow", timeout: int = 600):
    return run_python(["-m", "zoo", *args], backend=backend, timeout=timeout)


def _inputs(name: str, rng: np.random.Generator) -> dict:
    ids = rng.integers(4, VOCAB, size=(2, 10)).astype("int32")
    ids[1, 7:] = 0  # a padded row: padding masks (encoders) must agree too
    data = {"ids": ids, "labels": np.roll(ids, -1, axis=1)}
    task = get_spec(name).task
    if task in SEQ2SEQ_TASKS:
        data.update(source=ids, target=rng.integers(4, VOCAB, size=(2, 8)).astype("int32"))
        data["labels"] = np.roll(data["target"], -1, axis=1)
    if task == "classification":
        data["labels"] = np.array([0, 1], "int32")
    if task == "question_answering":
        data["labels"] = np.array([[1, 3], [2, 2]], "int32")  # answer span [start, end]
    if task == "word_vectors" and name == "glove":  # (rows, cols) -> labels [log X, f(X)]
        data.update(source=ids[:, 0], target=ids[:, 1])
        data["labels"] = np.array([[0.5, 0.2], [1.5, 1.0]], "float32")
    elif task == "word_vectors":  # word2vec: (inputs (B, C), [positive, negatives] (B, 1 + K))
        data.update(source=ids[:, :4], target=ids[:, 4:8])
        data["labels"] = np.eye(1, 4, dtype="float32").repeat(2, axis=0)
    return data


@pytest.fixture(scope="module")
def jax_families(tmp_path_factory):
    """TensorFlow logits and weights of every tiny family, and the JAX worker's report."""
    in_dir, out_dir = tmp_path_factory.mktemp("tf_side"), tmp_path_factory.mktemp("jax_side")
    rng = np.random.default_rng(0)
    tf_logits, tf_decoded = {}, {}
    for name in list_models():
        data = _inputs(name, rng)
        np.savez(in_dir / f"{name}.inputs.npz", **data)
        model = build_model(name, vocab_size=VOCAB, preset="tiny")
        model.save_weights(str(in_dir / f"{name}.weights.h5"))
        x = (data["source"], data["target"]) if "source" in data else data["ids"]
        tf_logits[name] = np.asarray(model(x, training=False))
        if hasattr(model, "call_with_cache"):
            tf_decoded[name] = decode_outputs(model)
    result = run_python([os.path.join(HERE, "jax_worker.py"), "families", str(in_dir), str(out_dir)])
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out_dir / "report.json") as f:
        report = json.load(f)
    jax_outputs = {name: dict(np.load(out_dir / f"{name}.npz")) for name in list_models()}
    jax_logits = {name: outputs["logits"] for name, outputs in jax_outputs.items()}
    return report, tf_logits, jax_logits, tf_decoded, jax_outputs


def test_the_core_imports_without_tensorflow():
    code = ("import sys, zoo, zoo.layers, zoo.models, zoo.metrics, zoo.fitting, zoo.training, "
            "zoo.evaluation, zoo.data.windows, zoo.data.prepared, zoo.backends\n"
            "import keras\n"
            "print(keras.backend.backend(), 'tensorflow' in sys.modules)")
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["jax", "False"]


def test_every_family_runs_forward_and_one_fit_step_on_jax(jax_families):
    report, _, jax_logits, _, _ = jax_families
    assert report["backend"] == "jax"
    assert not report["tensorflow_imported"]
    assert set(report["models"]) == set(list_models())
    for name, entry in report["models"].items():
        assert np.isfinite(entry["fit_loss"]), name
        assert entry["weights_changed"], name
        assert np.all(np.isfinite(jax_logits[name])), name


@pytest.mark.parametrize("name", list_models())
def test_jax_logits_equal_tensorflow_logits_for_the_same_weights(jax_families, name):
    _, tf_logits, jax_logits, _, _ = jax_families
    assert jax_logits[name].shape == tf_logits[name].shape
    np.testing.assert_allclose(jax_logits[name], tf_logits[name], atol=1e-4, rtol=0)


def test_cached_decoding_equals_a_full_pass_on_jax(jax_families):
    report, _, _, _, _ = jax_families
    for name in CAUSAL:
        assert report["models"][name]["cached_vs_full"] < 1e-4, name


@pytest.mark.parametrize("name", CAUSAL)
def test_jax_decoding_equals_tensorflow_token_for_token(jax_families, name):
    """The one decoding loop (greedy, seeded sampling with per-row filters, beam) gives the
    same tokens on JAX as on TensorFlow for the same weights and prompts."""
    _, _, _, tf_decoded, jax_outputs = jax_families
    expected, got = tf_decoded[name], jax_outputs[name]
    assert set(expected) == {k for k in got if k != "logits"}
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=f"{name} {key}")
    # the test would notice a loop that always stops: something was generated
    assert expected["greedy_num"].sum() > 0 and expected["sampled_num"].sum() > 0


def test_numpy_batches_equal_the_tf_data_batches():
    rng = np.random.default_rng(1)
    stream = rng.integers(4, 60, size=5000).astype("int32")
    lines = [rng.integers(4, 60, size=int(n)).astype("int32") for n in rng.integers(0, 40, 300)]
    for ids, kind in ((stream, "stream"), (lines, "lines")):
        dataset = pipelines.training_dataset(ids, kind, 16, 4, seed=7, start_step=5, num_steps=11)
        sampler = windows.TrainingWindows(windows.source_of(ids, kind), 16, 4, seed=7)
        for (x, y), (nx, ny) in zip(dataset, sampler.iterate(5, 11), strict=True):
            np.testing.assert_array_equal(x.numpy(), nx)
            np.testing.assert_array_equal(y.numpy(), ny)
        ex = list(pipelines.evaluation_dataset(ids, kind, 16, 4))
        wx, wy = windows.evaluation_windows(windows.source_of(ids, kind), 16, 4)
        np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in ex]), wx)
        np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in ex]), wy)
    # a stream split over shards draws the same windows as the array
    shards = [stream[:1000], stream[1000:1001], stream[1001:]]
    sharded = prepared.sharded_stream_dataset(shards, 16, 4, seed=7, start_step=0, num_steps=6)
    whole = windows.TrainingWindows(windows.StreamIds(stream), 16, 4, seed=7)
    for (x, _), (nx, _) in zip(sharded, whole.iterate(0, 6), strict=True):
        np.testing.assert_array_equal(x.numpy(), nx)


def test_batch_draws_are_a_pure_function_of_seed_and_step():
    a = windows.batch_draws(3, 10, 64, 1000)
    assert np.array_equal(a, windows.batch_draws(3, 10, 64, 1000))
    assert not np.array_equal(a, windows.batch_draws(3, 11, 64, 1000))
    assert not np.array_equal(a, windows.batch_draws(4, 10, 64, 1000))
    assert a.min() >= 0 and a.max() < 1000
    draws = np.concatenate([windows.batch_draws(0, s, 100, 10) for s in range(200)])
    counts = np.bincount(draws, minlength=10)
    assert counts.min() > 1700 and counts.max() < 2300  # uniform: 2000 each, +-15%
    # consecutive steps draw independent offsets: 12 of 1,000,000 shared is chance (~1e-4 each)
    for step in range(50):
        a, b = windows.batch_draws(1337, step, 12, 10**6), windows.batch_draws(1337, step + 1, 12, 10**6)
        assert len(set(a) & set(b)) <= 1


def test_unsupported_backend_is_one_line_and_exit_2(tmp_path):
    result = zoo_cli("train", "transformer_lm", "--data", "x", "--out", str(tmp_path / "r"),
                     "--backend", "torch")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "zoo: error: unsupported backend 'torch'; the zoo trains on: tensorflow, jax"]
    result = zoo_cli("train", "transformer_lm", "--data", "x", "--out", str(tmp_path / "r"),
                     backend="numpy")
    assert result.returncode == 2 and "unsupported backend 'numpy'" in result.stderr


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory, data_dir):
    """A tiny transformer trained 30 steps on JAX through `zoo train --backend jax`."""
    out = str(tmp_path_factory.mktemp("jax_run") / "run")
    result = zoo_cli("train", "transformer_lm", "--data", "dataset:tinyshakespeare", "--out", out,
                     "--backend", "jax", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_a_jax_run_generates_and_exports_under_tensorflow(jax_run, tmp_path):
    with open(os.path.join(jax_run, "config.json")) as f:
        assert json.load(f)["train"]["backend"] == "jax"
    with open(os.path.join(jax_run, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["steps"] == 30 and metrics["jit_compile"] is True
    assert sorted(os.listdir(os.path.join(jax_run, "checkpoints"))) == [
        "ckpt-10.weights.h5", "ckpt-20.weights.h5", "ckpt-30.weights.h5"]

    prompts = ["ROMEO:", "First Citizen:\nWe"]
    run = zoo.load(jax_run)
    cli = [zoo_cli("generate", jax_run, "--prompt", p, "--max-new-tokens", "12",
                   "--strategy", "greedy") for p in prompts]
    assert all(r.returncode == 0 for r in cli), cli[0].stderr[-2000:]
    expected = [r.stdout.rstrip("\n") for r in cli]
    assert run.generate(prompts, max_new_tokens=12, strategy="greedy") == expected

    path = export.saved_model(run, str(tmp_path / "export"), max_new_tokens=12)
    loaded = tf.saved_model.load(path)
    texts = loaded.signatures["serving_default"](prompt=tf.constant(prompts))["text"].numpy()
    assert [t.decode("utf-8") for t in texts] == expected

    # the same weights: the JAX-written checkpoint and model.keras agree under TensorFlow
    from_checkpoint = zoo.load(jax_run, checkpoint=True)
    for a, b in zip(run.model.weights, from_checkpoint.model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # evaluation under TensorFlow equals the one written on JAX (float32 vs float64 sums)
    assert abs(run.evaluate()["loss"] - metrics["validation"]["loss"]) < 1e-5


def test_a_jax_run_resumes_exactly_and_refuses_tensorflow(jax_run, tmp_path):
    resumed = str(tmp_path / "resumed")
    shutil.copytree(jax_run, resumed)
    for name in ("model.keras", "metrics.json", "checkpoints/ckpt-30.weights.h5",
                 "checkpoints/ckpt-20.weights.h5"):
        os.remove(os.path.join(resumed, name))  # as if killed after step 10

    refused = zoo_cli("train", "transformer_lm", "--data", "dataset:tinyshakespeare", "--out",
                      resumed, *FAST)
    assert refused.returncode == 2
    assert "holds checkpoints written on JAX: resume it with --backend jax" in refused.stderr

    result = zoo_cli("train", "transformer_lm", "--data", "dataset:tinyshakespeare", "--out",
                     resumed, "--backend", "jax", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from checkpoint at step 10 of 30" in result.stderr
    a, b = zoo.load(jax_run).model, zoo.load(resumed).model
    for x, y in zip(a.weights, b.weights, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6, rtol=0)
