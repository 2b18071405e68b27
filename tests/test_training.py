"""Training, evaluation, resume after kill -9, and generation from a trained run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.errors import ZooError

CAUSAL_MODELS = ["gru_lm", "lstm_lm", "mlp_lm", "rnn_lm", "transformer_lm"]
FAST = dict(max_steps=6, batch_size=4, seq_len=32, checkpoint_every=3, eval_batches=2)


@pytest.fixture(scope="module")
def trained_runs(shakespeare_file, tmp_path_factory):
    """Every causal model trained for a few steps on a small Shakespeare file."""
    root = tmp_path_factory.mktemp("runs")
    return {
        name: zoo.train(name, shakespeare_file, str(root / name), verbose=0, **FAST)
        for name in CAUSAL_MODELS
    }


@pytest.mark.parametrize("name", CAUSAL_MODELS)
def test_every_model_trains_evaluates_saves_and_generates(name, trained_runs):
    run = trained_runs[name]
    with open(os.path.join(run.path, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["completed"] and metrics["steps"] == 6
    for entry in ("config.json", "model.keras", "tokenizer/tokenizer.json", "checkpoints", "logs"):
        assert os.path.exists(os.path.join(run.path, entry)), entry
    assert len(metrics["history"]["loss"]) == 2  # two segments of 3 steps
    # loss after a few steps on a character vocabulary of ~60 is below the uniform ln(V)
    result = run.evaluate()
    assert result["loss"] < math.log(run.tokenizer.vocab_size)
    assert result["bits_per_char"] == pytest.approx(result["loss"] / math.log(2))
    # reload with safe_mode=True: identical logits
    reloaded = zoo.load(run.path)
    ids = tf.constant([[5, 6, 7, 8, 9, 10]], tf.int32)
    np.testing.assert_array_equal(reloaded.model(ids).numpy(), run.model(ids).numpy())
    for strategy, extra in (
        ("greedy", {}),
        ("sample", dict(temperature=0.8, seed=1)),
        ("sample", dict(top_k=5, seed=2)),
        ("sample", dict(top_p=0.9, seed=3)),
        ("beam", dict(num_beams=3)),
    ):
        text = reloaded.generate("ROMEO:", max_new_tokens=8, strategy=strategy, **extra)
        assert isinstance(text, str) and len(text) > 0, (strategy, extra)
    # the same seed gives the same sample
    a = reloaded.generate("To be", max_new_tokens=10, strategy="sample", seed=7)
    b = reloaded.generate("To be", max_new_tokens=10, strategy="sample", seed=7)
    assert a == b


def test_cached_and_uncached_greedy_decoding_agree(trained_runs):
    from zoo.generation import generate_ids, generate_ids_uncached

    for name in CAUSAL_MODELS:
        run = trained_runs[name]
        prompts = tf.constant([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]], tf.int32)
        lengths = tf.constant([4, 6], tf.int32)
        cached, n1 = generate_ids(run.model, prompts, lengths, 12)
        uncached, n2 = generate_ids_uncached(run.model, prompts, lengths, 12)
        np.testing.assert_array_equal(cached.numpy(), uncached.numpy(), err_msg=name)
        np.testing.assert_array_equal(n1.numpy(), n2.numpy())


def test_perplexity_equals_exp_of_independent_mean_nll(trained_runs, shakespeare_file):
    """Recompute the validation NLL with numpy, window by window, without the data pipeline."""
    run = trained_runs["transformer_lm"]
    with open(shakespeare_file, encoding="utf-8") as f:
        text = f.read()
    valid = text[int(len(text) * 0.9) :]
    ids = run.tokenizer.tokenize(tf.constant([valid]))[0].numpy()
    seq_len = run.config["seq_len"]
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, seq_len):
        chunk = ids[start : start + seq_len + 1]
        x, y = chunk[:-1], chunk[1:]
        logits = run.model(x[None, :]).numpy()[0].astype(np.float64)
        logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        total += float(np.sum(logz - logits[np.arange(len(y)), y]))
        count += len(y)
    result = run.evaluate()
    assert result["tokens"] == count == len(ids) - 1
    assert result["loss"] == pytest.approx(total / count, abs=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)


@pytest.mark.parametrize("name", ["transformer_lm", "lstm_lm"])
def test_load_from_the_last_checkpoint_gives_the_trained_weights(name, trained_runs):
    """zoo.load(checkpoint=True) on a TensorFlow checkpoint (written at the last step here):
    every weight equals model.keras's, including those TensorFlow's object graph of the Keras
    model does not reach (saved through the optimizer's variable list)."""
    run = trained_runs[name]
    restored = zoo.load(run.path, checkpoint=True)
    for a, b in zip(run.model.weights, restored.model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_rerun_of_finished_run_loads_it(trained_runs, shakespeare_file):
    run = trained_runs["gru_lm"]
    again = zoo.train("gru_lm", shakespeare_file, run.path, verbose=0, **FAST)
    ids = tf.constant([[5, 6, 7]], tf.int32)
    np.testing.assert_array_equal(again.model(ids).numpy(), run.model(ids).numpy())


def test_other_settings_on_an_existing_run_are_refused(trained_runs, shakespeare_file):
    run = trained_runs["gru_lm"]
    with pytest.raises(ZooError, match="other settings") as refused:
        zoo.train("gru_lm", shakespeare_file, run.path, verbose=0, **{**FAST, "batch_size": 8})
    assert "first checkpoint" not in str(refused.value)  # trained: no hint to remove it


def _train_cmd(data, out, steps):
    return [
        sys.executable, "-m", "zoo", "train", "transformer_lm", "--data", data, "--out", out,
        "--max-steps", str(steps), "--batch-size", "4", "--seq-len", "32", "--quiet",
        "--set", "checkpoint_every=4", "--set", "eval_batches=1",
    ]


@pytest.mark.slow
def test_kill_minus_nine_then_rerun_resumes_from_checkpoint(shakespeare_file, tmp_path):
    steps = 400
    out = str(tmp_path / "killed")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(_train_cmd(shakespeare_file, out, steps), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpt_dir = os.path.join(out, "checkpoints")
    deadline = time.time() + 300
    reached = 0
    while time.time() < deadline and proc.poll() is None:
        latest = tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None
        reached = int(latest.rsplit("-", 1)[1]) if latest else 0
        if reached >= 12:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert reached >= 12 and not os.path.exists(os.path.join(out, "model.keras"))

    rerun = subprocess.run(_train_cmd(shakespeare_file, out, steps), env=env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming from checkpoint at step" in rerun.stderr
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["steps"] == steps
    assert metrics["resumed_from_step"] >= reached > 0  # not from zero
    assert metrics["resumed_from_step"] % 4 == 0
    # the resumed run used the same batches and schedule: its model loads and is finite
    model = keras.saving.load_model(os.path.join(out, "model.keras"), safe_mode=True)
    assert np.isfinite(model(tf.constant([[5, 6, 7]])).numpy()).all()


def test_transformer_generates_past_its_context_window(trained_runs):
    run = trained_runs["transformer_lm"]  # context 32
    assert run.model.max_length == 32
    text = run.generate("ROMEO:", max_new_tokens=80)
    head = run.generate("ROMEO:", max_new_tokens=16)
    assert text.startswith(head)
    assert len(run.tokenizer.tokenize_to_numpy(text)) == 80


def test_gpu_defaults_bfloat16_and_xla_also_run_on_cpu(shakespeare_file, tmp_path):
    """The GPU defaults (mixed_bfloat16 + XLA) exercised on the CPU: float32 logits, finite loss,
    the global policy restored afterwards, and the saved model reloads and generates."""
    run = zoo.train("transformer_lm", shakespeare_file, str(tmp_path / "bf16"), verbose=0,
                    mixed_precision=True, jit_compile=True, **FAST)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert run.model.blocks[0].attention.compute_dtype == "bfloat16"
    logits = run.model(tf.constant([[5, 6, 7]], tf.int32))
    assert logits.dtype == tf.float32 and np.isfinite(logits.numpy()).all()
    with open(os.path.join(run.path, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["mixed_precision"] and metrics["jit_compile"]
    assert math.isfinite(metrics["validation"]["loss"])
    assert len(run.generate("ROMEO:", max_new_tokens=5)) > 0


def test_word_model_on_ptb_line_corpus(data_dir, tmp_path):
    """A line corpus end to end: sentences framed by <bos>/<eos>, EOS counted in the perplexity,
    generation starting from <bos> (an empty prompt is fine) and ending at <eos>."""
    run = zoo.train("gru_lm", "dataset:ptb", str(tmp_path / "ptb"), tokenizer="word", verbose=0,
                    max_steps=4, batch_size=8, seq_len=24, checkpoint_every=2, eval_batches=2,
                    model_overrides=dict(units=32, embedding_dim=16))
    assert run.line_corpus and run.tokenizer.vocab_size == 10002
    result = run.evaluate(split="test")
    lines = [line for line in open(os.path.join(data_dir, "ptb", "ptb.test.txt")) if line.strip()]
    assert result["tokens"] == sum(len(line.split()) + 1 for line in lines)  # words + <eos>
    assert "bits_per_char" not in result
    assert result["perplexity"] < 10002  # better than uniform after a few steps
    text = run.generate("", max_new_tokens=30, strategy="sample", seed=0)
    assert isinstance(text, str) and len(text.split()) <= 30


def test_sentencepiece_model_trains_and_round_trips_prompt(shakespeare_file, tmp_path):
    run = zoo.train("transformer_lm", shakespeare_file, str(tmp_path / "sp"), verbose=0,
                    tokenizer="sentencepiece", vocab_size=400, **FAST)
    assert run.tokenizer.kind == "sentencepiece" and run.tokenizer.vocab_size == 400
    assert run.tokenizer.decode(run.tokenizer.tokenize_to_numpy("ROMEO: hi")) == "ROMEO: hi"
    assert run.evaluate()["loss"] < math.log(400)
    assert len(run.generate("ROMEO:", max_new_tokens=6, strategy="beam", num_beams=2)) > 0


def test_early_stopping_on_validation_loss(shakespeare_file, tmp_path):
    """A learning rate far too high makes validation loss stop improving: training ends early
    and keeps the best weights."""
    run = zoo.train("transformer_lm", shakespeare_file, str(tmp_path / "early"), verbose=0,
                    max_steps=30, batch_size=4, seq_len=32, checkpoint_every=1, eval_batches=2,
                    learning_rate=5.0, warmup_steps=0, early_stopping_patience=2)
    with open(os.path.join(run.path, "metrics.json")) as f:
        metrics = json.load(f)
    history = metrics["history"]["val_token_nll"]
    assert metrics["steps"] < 30 and len(history) < 30
    best = int(np.nanargmin(history))
    assert len(history) == best + 3  # stopped two checkpoints after the best one
