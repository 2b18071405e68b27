"""Mixed precision: which Keras dtype policy a run trains under, per GPU compute capability.

``mixed_bfloat16`` from compute capability 8.0 on, ``mixed_float16`` with a loss-scaling optimizer
on 7.x, ``float32`` elsewhere; the policy is recorded in the run's ``config.json`` and a resumed
run keeps it. The device is faked by monkeypatching ``zoo.backends.gpu_compute_capability``; the
float16 run itself trains on the CPU.
"""

from __future__ import annotations

import json
import math
import os

import keras
import pytest
import tensorflow as tf

import zoo
from zoo import backends, fitting
from zoo.config import TrainConfig
from zoo.errors import ZooError

FAST = dict(max_steps=4, batch_size=4, seq_len=32, checkpoint_every=2, eval_batches=2)
CAPABILITIES = [  # (compute capability, default policy, policy with mixed_precision=True)
    (9.0, "mixed_bfloat16", "mixed_bfloat16"),  # H100
    (8.0, "mixed_bfloat16", "mixed_bfloat16"),  # A100
    (7.5, "mixed_float16", "mixed_float16"),  # T4, RTX 20xx
    (7.0, "mixed_float16", "mixed_float16"),  # V100
    (6.1, "float32", "mixed_bfloat16"),  # GTX 10xx
    (None, "float32", "mixed_bfloat16"),  # no GPU
]


def _fake_gpu(monkeypatch, capability: float | None) -> None:
    monkeypatch.setattr(backends, "gpu_compute_capability", lambda: capability)


@pytest.mark.parametrize("capability, default, forced", CAPABILITIES)
def test_policy_follows_the_compute_capability(monkeypatch, capability, default, forced):
    _fake_gpu(monkeypatch, capability)
    assert backends.default_mixed_precision() == default
    assert backends.mixed_precision_policy(None) == default
    assert backends.mixed_precision_policy(True) == forced
    assert backends.mixed_precision_policy(False) == "float32"
    for name in backends.PRECISION_POLICIES:  # a policy name is taken as it is
        assert backends.mixed_precision_policy(name) == name
    settings = TrainConfig(model="transformer_lm", data="x")
    assert fitting._mixed_precision(settings) == default


def test_device_is_not_asked_when_the_setting_decides(monkeypatch):
    def no_device():
        raise AssertionError("the device was asked")

    monkeypatch.setattr(backends, "gpu_compute_capability", no_device)
    assert backends.mixed_precision_policy(False) == "float32"
    assert backends.mixed_precision_policy("mixed_float16") == "mixed_float16"


def test_unknown_policy_names_are_refused():
    with pytest.raises(ZooError, match="unknown mixed_precision 'float8'"):
        backends.mixed_precision_policy("float8")
    with pytest.raises(ZooError, match="mixed_bfloat16, mixed_float16, float32"):
        TrainConfig(model="transformer_lm", data="x", mixed_precision="bf16")
    assert TrainConfig(model="transformer_lm", data="x",
                       mixed_precision="mixed_float16").mixed_precision == "mixed_float16"


def test_only_float16_wraps_the_optimizer_in_a_loss_scale():
    for policy in backends.PRECISION_POLICIES:
        optimizer = keras.optimizers.AdamW(learning_rate=1e-3)
        wrapped = fitting._loss_scaled(optimizer, policy)
        if policy == "mixed_float16":
            assert isinstance(wrapped, keras.optimizers.LossScaleOptimizer)
            assert wrapped.inner_optimizer is optimizer
        else:
            assert wrapped is optimizer


def test_the_run_records_its_policy_and_keeps_it(monkeypatch, tmp_path):
    settings = TrainConfig(model="transformer_lm", data="x")
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model": "transformer_lm"}))
    _fake_gpu(monkeypatch, 7.5)
    assert fitting._mixed_precision(settings, str(out)) == "mixed_float16"
    record = json.loads((out / "config.json").read_text())
    assert record == {"model": "transformer_lm", "mixed_precision": "mixed_float16"}
    _fake_gpu(monkeypatch, 9.0)  # resumed on another GPU: the recorded policy wins
    assert fitting._mixed_precision(settings, str(out)) == "mixed_float16"
    _fake_gpu(monkeypatch, None)
    other = tmp_path / "other"  # a worker that is not the chief writes nothing
    other.mkdir()
    (other / "config.json").write_text("{}")
    worker = type("Worker", (), {"is_chief": False})()
    assert fitting._mixed_precision(settings, str(other), worker) == "float32"
    assert json.loads((other / "config.json").read_text()) == {}


def test_float16_run_on_a_compute_capability_7_gpu(monkeypatch, shakespeare_file, tmp_path):
    """A run on a (faked) T4 trains under mixed_float16 with a LossScaleOptimizer, says so in
    config.json, restores the policy afterwards, reloads, and resumes from its float16
    checkpoints (loss scale included) even when the device now says otherwise."""
    _fake_gpu(monkeypatch, 7.5)
    out = tmp_path / "fp16"
    run = zoo.train("transformer_lm", shakespeare_file, str(out), verbose=0, **FAST)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert run.config["mixed_precision"] == "mixed_float16"
    assert json.loads((out / "config.json").read_text())["mixed_precision"] == "mixed_float16"
    assert run.model.blocks[0].attention.compute_dtype == "float16"
    checkpoint = tf.train.latest_checkpoint(str(out / "checkpoints"))
    saved = dict(tf.train.list_variables(checkpoint))  # the loss scale is saved with the optimizer
    assert "optimizer/dynamic_scale/.ATTRIBUTES/VARIABLE_VALUE" in saved
    assert "optimizer/inner_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE" in saved
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mixed_precision"] is True
    assert math.isfinite(metrics["validation"]["loss"])
    assert run.generate("ROMEO:", max_new_tokens=4) is not None

    # unfinished again: the same call resumes from the last checkpoint under the recorded policy
    _fake_gpu(monkeypatch, None)
    for name in ("model.keras", "metrics.json"):
        os.remove(out / name)
    again = zoo.train("transformer_lm", shakespeare_file, str(out), verbose=0, **FAST)
    assert again.model.blocks[0].attention.compute_dtype == "float16"
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] > 0
