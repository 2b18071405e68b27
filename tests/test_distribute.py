"""Training under tf.distribute: mirrored, two multi-worker processes on loopback, resume, errors.

Tolerances. With more than one replica every replica computes its rows' gradient and the
all-reduce sums them: the same arithmetic as one device, in another float32 summation order. For
parameters whose gradient is a small difference of large terms (layer-norm offsets, biases) that
changes low-order bits, and Adam's per-parameter normalisation turns them into visibly different
updates, so after 6 steps the losses differ by about 1e-6 relative and the weights by about 2e-5
absolute (measured on this CPU: 8e-7 / 5e-6 on the two segments' losses, 1.6e-5 on the weights).
The tests allow rtol 1e-4 on losses and atol 1e-4 on weights: ten times the rounding drift, and
below what a real mistake gives (a wrong batch moves the loss by ~1e-2; clipping each replica's
gradient instead of their sum moved the weights by 2.7e-4). Replicas of one computation (the two
workers) must agree exactly, and one replica must match no strategy exactly.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.distribute import parse_tf_config
from zoo.errors import ZooError

FAST = dict(max_steps=6, batch_size=4, seq_len=32, checkpoint_every=3, eval_batches=2)
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
WORKER_TIMEOUT_S = 240

WORKER = """
import json, sys
import numpy as np
import zoo
data, out, weights, settings = sys.argv[1:5]
run = zoo.train("transformer_lm", data, out, verbose=0, distribute="multiworker",
                **json.loads(settings))
optimizer = getattr(run.model, "optimizer", None)  # the chief returns the saved model.keras
if optimizer is not None:
    step = int(optimizer.iterations.numpy())
else:
    step = json.load(open(out + "/metrics.json"))["steps"]
np.savez(weights, *run.model.get_weights())
print("ZOO-STEP", step)
"""

TWO_REPLICAS = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
import zoo
from zoo.errors import ZooError
data, out, weights, settings = sys.argv[1:5]
settings = json.loads(settings)
try:
    zoo.train("transformer_lm", data, out + "-odd", verbose=0, distribute="mirrored",
              **{**settings, "batch_size": 3})
except ZooError as err:
    print("ZOO-ODD", err)
try:
    zoo.train("transformer_lm", data, out + "-xla", verbose=0, distribute="mirrored",
              jit_compile=True, **settings)
except ZooError as err:
    print("ZOO-XLA", err)
run = zoo.train("transformer_lm", data, out, verbose=0, distribute="mirrored", **settings)
np.savez(weights, *run.model.get_weights())
"""


def _metrics(run_dir) -> dict:
    with open(os.path.join(run_dir, "metrics.json")) as f:
        return json.load(f)


def _weights(path) -> list[np.ndarray]:
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def _assert_close_runs(metrics, reference, weights, reference_weights):
    for key in ("loss", "token_nll", "val_loss", "val_token_nll"):
        np.testing.assert_allclose(metrics["history"][key], reference["history"][key], rtol=1e-4,
                                   err_msg=key)
    assert metrics["validation"]["loss"] == pytest.approx(reference["validation"]["loss"], rel=1e-4)
    assert len(weights) == len(reference_weights)
    for w, r in zip(weights, reference_weights, strict=True):
        np.testing.assert_allclose(w, r, rtol=0, atol=1e-4)


def _free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))  # the OS picks a free port
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_cluster(script: str, args_of, tmp_path, tag: str, workers: int = 2) -> list[str]:
    """Run ``workers`` processes of ``script`` as one MultiWorkerMirroredStrategy cluster on
    127.0.0.1; kill them all if one fails or the time runs out. Returns each worker's output."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(workers)]}
    scratch = tmp_path / f"{tag}-tmp"
    scratch.mkdir()
    procs, logs = [], []
    try:
        for index in range(workers):
            env = dict(ENV, TMPDIR=str(scratch), TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}))
            log = open(tmp_path / f"{tag}-worker{index}.log", "w+")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, "-c", script, *args_of(index)], env=env,
                                          stdout=log, stderr=subprocess.STDOUT))
        deadline = time.time() + WORKER_TIMEOUT_S
        while time.time() < deadline and any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                break  # one failed: the others would wait for it forever
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    for index, p in enumerate(procs):
        assert p.returncode == 0, f"worker {index} exited {p.returncode}:\n{outputs[index][-4000:]}"
    assert not os.listdir(scratch), f"a worker left files behind: {os.listdir(scratch)}"
    return outputs


def _interrupt(run_dir, keep_step: int) -> None:
    """What a kill after checkpoint ``keep_step`` leaves: no model.keras / metrics.json, no
    later checkpoint."""
    os.remove(os.path.join(run_dir, "model.keras"))
    os.remove(os.path.join(run_dir, "metrics.json"))
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    for path in glob.glob(os.path.join(ckpt_dir, "ckpt-*")):
        if int(os.path.basename(path).split(".")[0].split("-")[1]) > keep_step:
            os.remove(path)
    kept = os.path.join(ckpt_dir, f"ckpt-{keep_step}")
    tf.compat.v1.train.update_checkpoint_state(ckpt_dir, kept, all_model_checkpoint_paths=[kept])


@pytest.fixture(scope="module")
def reference(shakespeare_file, tmp_path_factory):
    """One device, no strategy: what every strategy must reproduce."""
    out = str(tmp_path_factory.mktemp("dist") / "none")
    run = zoo.train("transformer_lm", shakespeare_file, out, verbose=0, distribute="none", **FAST)
    return _metrics(out), run.model.get_weights()


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "needs the TF_CONFIG"),
        ("", "needs the TF_CONFIG"),
        ("{not json", "not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', "no 'cluster'"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "no 'task'"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}',
         "task index 1"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "ps", "index": 0}}',
         "task type 'ps'"),
        ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
         "not 'host:port'"),
        ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
         "not used by multi-worker"),
    ],
)
def test_missing_or_malformed_tf_config_is_a_clear_error(text, message):
    with pytest.raises(ZooError, match=message):
        parse_tf_config(text)


def test_tf_config_roles():
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    first = parse_tf_config(json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    second = parse_tf_config(json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert first.is_chief and not second.is_chief and first.num_workers == 2
    with_chief = {**cluster, "chief": ["127.0.0.1:3"]}
    chief = parse_tf_config(json.dumps({"cluster": with_chief, "task": {"type": "chief", "index": 0}}))
    worker0 = parse_tf_config(json.dumps({"cluster": with_chief, "task": {"type": "worker", "index": 0}}))
    assert chief.is_chief and not worker0.is_chief and chief.num_workers == 3


def test_train_multiworker_without_tf_config_or_unknown_strategy(shakespeare_file, tmp_path,
                                                                 monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ZooError, match="needs the TF_CONFIG"):
        zoo.train("transformer_lm", shakespeare_file, str(tmp_path / "mw"), verbose=0,
                  distribute="multiworker", **FAST)
    with pytest.raises(ZooError, match="unknown distribute"):
        zoo.train("transformer_lm", shakespeare_file, str(tmp_path / "x"), verbose=0,
                  distribute="horovod", **FAST)


def test_tpu_without_a_tpu_is_a_clear_error_from_the_cli(shakespeare_file, tmp_path):
    env = {k: v for k, v in ENV.items() if k != "TPU_NAME"}
    result = subprocess.run(
        [sys.executable, "-m", "zoo", "train", "transformer_lm", "--data", shakespeare_file,
         "--out", str(tmp_path / "tpu"), "--max-steps", "2", "--distribute", "tpu", "--quiet"],
        capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "no TPU found" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------------------------------
# Mirrored
# --------------------------------------------------------------------------------------------------


def test_mirrored_on_one_cpu_replica_matches_no_strategy(reference, shakespeare_file, tmp_path):
    out = str(tmp_path / "mirrored")
    run = zoo.train("transformer_lm", shakespeare_file, out, verbose=0, distribute="mirrored", **FAST)
    metrics = _metrics(out)
    assert metrics["distribute"] == "mirrored" and metrics["replicas"] == 1
    assert metrics["steps"] == 6
    ref_metrics, ref_weights = reference
    np.testing.assert_allclose(metrics["history"]["loss"], ref_metrics["history"]["loss"], rtol=1e-6)
    for w, r in zip(run.model.get_weights(), ref_weights, strict=True):
        np.testing.assert_allclose(w, r, rtol=0, atol=1e-6)


def test_mirrored_over_two_cpu_replicas_matches_no_strategy(reference, shakespeare_file, tmp_path):
    """Two logical CPU devices stand in for two GPUs: each replica takes half of every global
    batch, the gradients are summed, clipped and applied once."""
    out, weights = str(tmp_path / "two"), str(tmp_path / "two.npz")
    result = subprocess.run(
        [sys.executable, "-c", TWO_REPLICAS, shakespeare_file, out, weights, json.dumps(FAST)],
        capture_output=True, text=True, env=ENV, timeout=WORKER_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "ZOO-ODD batch_size 3 (the global batch) is not a multiple of the 2 replicas" in result.stdout
    assert "ZOO-XLA jit_compile=True does not work with 2 local replicas" in result.stdout
    metrics = _metrics(out)
    assert metrics["replicas"] == 2 and metrics["steps"] == 6
    _assert_close_runs(metrics, reference[0], _weights(weights), reference[1])


def test_resume_under_mirrored_continues_from_the_checkpoint(shakespeare_file, tmp_path):
    settings = dict(max_steps=4, batch_size=4, seq_len=32, checkpoint_every=2, eval_batches=1)
    out = str(tmp_path / "resume")
    first = zoo.train("transformer_lm", shakespeare_file, out, verbose=0, distribute="mirrored",
                      **settings)
    uninterrupted = first.model.get_weights()
    _interrupt(out, keep_step=2)
    again = zoo.train("transformer_lm", shakespeare_file, out, verbose=0, distribute="mirrored",
                      **settings)
    metrics = _metrics(out)
    assert metrics["resumed_from_step"] == 2 and metrics["steps"] == 4
    assert len(metrics["history"]["loss"]) == 1  # only the second segment ran again
    # the same batches and optimiser state: the same model as without the interruption
    for w, r in zip(again.model.get_weights(), uninterrupted, strict=True):
        np.testing.assert_allclose(w, r, rtol=0, atol=1e-6)
    # where a run trains is not part of its identity: the finished run loads without a strategy
    done = zoo.train("transformer_lm", shakespeare_file, out, verbose=0, distribute="none", **settings)
    np.testing.assert_array_equal(done.model.get_weights()[0], again.model.get_weights()[0])


# --------------------------------------------------------------------------------------------------
# Multi-worker
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_run(shakespeare_file, tmp_path_factory):
    """Two MultiWorkerMirroredStrategy worker processes on 127.0.0.1 train FAST."""
    root = tmp_path_factory.mktemp("cluster")
    out = str(root / "run")
    outputs = _run_cluster(
        WORKER,
        lambda i: [shakespeare_file, out, str(root / f"w{i}.npz"), json.dumps(FAST)],
        root,
        "run",
    )
    return out, outputs, [_weights(root / f"w{i}.npz") for i in range(2)]


def _steps(outputs) -> list[str]:
    return [o.split("ZOO-STEP")[1].split()[0] for o in outputs]


def test_two_workers_train_in_lockstep_like_one_worker(reference, cluster_run):
    out, outputs, weights = cluster_run
    assert _steps(outputs) == ["6", "6"]  # both workers ended at the same step
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)  # all-reduced updates: bitwise the same model
    # only the chief wrote the run directory (and the other worker left no scratch files)
    assert sorted(os.listdir(out)) == sorted(
        ["checkpoints", "config.json", "logs", "metrics.json", "model.keras", "tokenizer"])
    metrics = _metrics(out)
    assert metrics["workers"] == 2 and metrics["replicas"] == 2 and metrics["steps"] == 6
    # the same global batches as one worker: the same training, up to summation order
    _assert_close_runs(metrics, reference[0], weights[0], reference[1])


@pytest.mark.slow
def test_two_workers_resume_from_the_chief_checkpoint(cluster_run, shakespeare_file, tmp_path):
    """Killed after the checkpoint at step 3: both workers restore the chief's checkpoint and
    end with the model the uninterrupted run ended with."""
    first_out, _, weights = cluster_run
    out = str(tmp_path / "run")
    shutil.copytree(first_out, out)
    _interrupt(out, keep_step=3)
    outputs = _run_cluster(
        WORKER,
        lambda i: [shakespeare_file, out, str(tmp_path / f"r{i}.npz"), json.dumps(FAST)],
        tmp_path,
        "resume",
    )
    assert _steps(outputs) == ["6", "6"]
    assert all("resuming from checkpoint at step 3 of 6" in o for o in outputs)
    assert _metrics(out)["resumed_from_step"] == 3
    resumed = [_weights(tmp_path / f"r{i}.npz") for i in range(2)]
    for a, b, first in zip(*resumed, weights[0], strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, first, rtol=0, atol=1e-6)


SEQ2SEQ_TWO_REPLICAS = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import zoo
data, out = sys.argv[1:3]
zoo.train("transformer_seq2seq", data, out, verbose=0, distribute="mirrored", max_steps=2,
          batch_size=4, checkpoint_every=2, eval_batches=1)
print("ZOO-METRICS", open(out + "/metrics.json").read().replace("\\n", " "))
"""


def test_nested_variable_width_batches_train_over_two_replicas(data_dir, tmp_path):
    """Translation batches ((source, target_in), target_out), padded per batch, split by rows."""
    paths = []
    for lang in ("en", "de"):
        with open(os.path.join(data_dir, "multi30k", f"train.{lang}"), encoding="utf-8") as f:
            lines = [next(f) for _ in range(120)]
        path = tmp_path / f"pairs.{lang}"
        path.write_text("".join(lines), encoding="utf-8")
        paths.append(str(path))
    out = str(tmp_path / "s2s")
    result = subprocess.run(
        [sys.executable, "-c", SEQ2SEQ_TWO_REPLICAS, ":".join(paths), out],
        capture_output=True, text=True, env=ENV, timeout=WORKER_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads(result.stdout.split("ZOO-METRICS", 1)[1])
    assert metrics["replicas"] == 2 and metrics["steps"] == 2
