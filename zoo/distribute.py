"""Where ``zoo.train`` runs: one device, every local GPU, a cluster of workers, or a TPU.

``zoo.train(..., distribute=KIND)`` / ``zoo train --distribute KIND``:

* ``none`` (default): no ``tf.distribute`` strategy, the default device.
* ``mirrored``: ``tf.distribute.MirroredStrategy`` over every local GPU. On a machine without a
  GPU it runs on the CPU: one replica, unless the process split the CPU into several logical
  devices with ``tf.config.set_logical_device_configuration`` (the tests do, to get two replicas).
* ``multiworker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the cluster described by the
  ``TF_CONFIG`` environment variable, one process per worker, each running the same command::

      TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]},
                  "task": {"type": "worker", "index": 0}}'

  The chief is the ``chief`` task if the cluster has one, else worker 0. TensorFlow must not have
  run anything in the process before the strategy is made (``zoo.train`` makes it first).
* ``tpu``: ``tf.distribute.TPUStrategy`` on the TPU named by ``$TPU_NAME``, or the TPU attached to
  this machine (a TPU VM); a ``ZooError`` when none is found.

Batches. ``batch_size`` is the **global** batch: every step trains on the same ``batch_size``
windows as without a strategy (batch *s* is still a pure function of (seed, *s*)); replica *r* of
*R* takes rows ``r*b .. (r+1)*b - 1`` of it, ``b = batch_size / R`` (``batch_size`` must be a
multiple of ``R``). Each replica's mean token loss is weighted ``1/R``, the gradients are summed
across replicas, the global-norm clip applies to that sum and the update is applied once: the mean
of the replicas' mean token losses, which for a stream corpus (every window is ``seq_len`` real
labels) is exactly the global batch's mean token loss, so training matches one device up to
float32 summation order. For a line corpus, replicas whose rows hold more padding weigh their
tokens a little more than one device would. Dropout masks are drawn per replica, so with dropout
the runs are statistically, not numerically, the same. XLA (``jit_compile``) is off by default
with several local replicas (it compiles a step for one device).

Learning rate. It is **not** rescaled with the number of replicas: the global batch is the same,
so the same settings mean the same optimisation (up to floating-point summation order), whatever
the strategy. To train faster with more replicas, raise ``batch_size`` (and, if you choose, the
learning rate) yourself; the run's settings then say what was done.

Writes. Under ``multiworker`` only the chief writes the run directory (``config.json``,
``tokenizer/``, ``checkpoints/``, ``logs/``, ``model.keras``, ``metrics.json``). Every worker takes
part in each save (reading synchronised variables is a collective operation), the others into a
temporary directory of their own that is deleted at once. On resume every worker restores the
chief's latest checkpoint, so the run directory must be on a file system all workers see; the
workers check that they agree on the step, the data and the vocabulary before training.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading

import numpy as np

from zoo.backends import lazy_tensorflow as tf
from zoo.config import DISTRIBUTE_CHOICES
from zoo.errors import ZooError

log = logging.getLogger("zoo.distribute")

TF_CONFIG_ENV = "TF_CONFIG"

_lock = threading.Lock()
_strategies: dict[tuple, tf.distribute.Strategy] = {}


# --------------------------------------------------------------------------------------------------
# TF_CONFIG
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """This process's place in the cluster (one worker, index 0, when not multi-worker)."""

    task_type: str = "worker"
    task_index: int = 0
    num_workers: int = 1
    has_chief_task: bool = False

    @property
    def is_chief(self) -> bool:
        if self.has_chief_task:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0


SINGLE = WorkerInfo()

_TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, '
    '"task": {"type": "worker", "index": 0}}'
)


def parse_tf_config(text: str | None) -> WorkerInfo:
    """Check a ``TF_CONFIG`` value for multi-worker training and say where this process stands.

    Accepted: ``cluster`` with a ``worker`` list of ``host:port`` (and at most one ``chief``),
    ``task`` with ``type`` ``worker`` or ``chief`` and an ``index`` inside its list.
    """
    if text is None or not text.strip():
        raise ZooError(
            f"distribute='multiworker' needs the {TF_CONFIG_ENV} environment variable, set in each "
            f"worker process, e.g. {TF_CONFIG_ENV}='{_TF_CONFIG_EXAMPLE}'"
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise ZooError(f"{TF_CONFIG_ENV} is not valid JSON ({err}): {text[:200]!r}") from None

    def bad(why: str) -> ZooError:
        return ZooError(f"malformed {TF_CONFIG_ENV}: {why}; expected e.g. {_TF_CONFIG_EXAMPLE}")

    if not isinstance(config, dict):
        raise bad("not a JSON object")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise bad("no 'cluster' object")
    unknown = sorted(set(cluster) - {"worker", "chief"})
    if unknown:
        raise bad(f"job(s) {', '.join(unknown)} are not used by multi-worker mirrored training")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise bad(f"cluster[{job!r}] must be a non-empty list of 'host:port'")
        for address in addresses:
            host, sep, port = str(address).rpartition(":")
            if not isinstance(address, str) or not sep or not host or not port.isdigit():
                raise bad(f"address {address!r} in cluster[{job!r}] is not 'host:port'")
    if len(cluster.get("chief", [])) > 1:
        raise bad("a cluster has at most one chief")
    if "worker" not in cluster and "chief" not in cluster:
        raise bad("the cluster has no worker")
    if not isinstance(task, dict):
        raise bad("no 'task' object")
    task_type, index = task.get("type"), task.get("index")
    if task_type not in cluster:
        raise bad(f"task type {task_type!r} is not a job of the cluster ({', '.join(cluster)})")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[task_type]):
        raise bad(f"task index {index!r} is not in 0..{len(cluster[task_type]) - 1}")
    return WorkerInfo(
        task_type=task_type,
        task_index=index,
        num_workers=sum(len(addresses) for addresses in cluster.values()),
        has_chief_task="chief" in cluster,
    )


# --------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------


def make_strategy(kind: str) -> tuple[tf.distribute.Strategy | None, WorkerInfo]:
    """``(strategy, worker)`` for ``kind``; the strategy is ``None`` for ``"none"``.

    One strategy of each kind is made per process and reused (a multi-worker strategy can only be
    set up once, before TensorFlow runs anything).
    """
    if kind not in DISTRIBUTE_CHOICES:
        raise ZooError(f"unknown distribute {kind!r}; choose one of: {', '.join(DISTRIBUTE_CHOICES)}")
    if kind == "none":
        return None, SINGLE
    worker = SINGLE
    key: tuple = (kind,)
    if kind == "multiworker":
        text = os.environ.get(TF_CONFIG_ENV)
        worker = parse_tf_config(text)
        key = (kind, text)
    elif kind == "tpu":
        key = (kind, os.environ.get("TPU_NAME"))
    with _lock:
        strategy = _strategies.get(key)
        if strategy is None:
            if kind == "multiworker" and any(k[0] == "multiworker" for k in _strategies):
                raise ZooError(
                    f"this process already joined a cluster with another {TF_CONFIG_ENV}; "
                    "start a new process for another cluster"
                )
            strategy = {"mirrored": _mirrored, "multiworker": _multiworker, "tpu": _tpu}[kind]()
            _install_keras_fixes()
            _strategies[key] = strategy
    log.info("distribute=%s: %d replica(s), worker %s/%d", kind, strategy.num_replicas_in_sync,
             worker.task_index, worker.num_workers)
    return strategy, worker


def _mirrored() -> tf.distribute.Strategy:
    devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    if not devices:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) > 1 and not tf.config.list_logical_devices("GPU"):
        # Several logical CPU devices: NCCL does not apply, reduce on one device.
        return tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    return tf.distribute.MirroredStrategy(devices)


def _multiworker() -> tf.distribute.Strategy:
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as err:
        raise ZooError(
            f"cannot start multi-worker training ({err}); TensorFlow must not have run anything in "
            "this process before: start each worker as a fresh process (e.g. `zoo train ... "
            "--distribute multiworker`)"
        ) from err


def _tpu() -> tf.distribute.Strategy:
    name = os.environ.get("TPU_NAME") or "local"
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
        if name != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        if not tf.config.list_logical_devices("TPU"):
            raise RuntimeError("TensorFlow lists no TPU device")
        return tf.distribute.TPUStrategy(resolver)
    except ZooError:
        raise
    except Exception as err:  # each TF version fails in its own way when there is no TPU
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ZooError(
            f"distribute='tpu': no TPU found (TPU_NAME={os.environ.get('TPU_NAME')!r}; "
            f"{type(err).__name__}: {first_line[:160]})"
        ) from None


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def per_replica_batch(strategy: tf.distribute.Strategy, global_batch_size: int) -> int:
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ZooError(
            f"batch_size {global_batch_size} (the global batch) is not a multiple of the "
            f"{replicas} replicas; use a multiple of {replicas}"
        )
    return global_batch_size // replicas


def distribute_batches(strategy: tf.distribute.Strategy, make_dataset, global_batch_size: int):
    """A distributed dataset in which each replica gets its rows of every global batch.

    ``make_dataset()`` returns a ``tf.data.Dataset`` of global batches (tuples, possibly nested, of
    tensors with a leading dimension ``global_batch_size``); every worker builds the same one and keeps only its
    replicas' rows: replica ``r`` (numbered worker by worker) gets rows ``r*b .. (r+1)*b - 1``.
    """
    replicas = strategy.num_replicas_in_sync
    per_replica = per_replica_batch(strategy, global_batch_size)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local * per_replica

        def rows(t: tf.Tensor) -> tf.Tensor:
            mine = t[first : first + local * per_replica]
            # Widths may differ from batch to batch (padded per batch): read them at run time.
            return tf.reshape(mine, tf.concat([[local, per_replica], tf.shape(mine)[1:]], 0))

        def split(*batch):
            # A batch may nest, e.g. ((source, target_in), target_out) for translation.
            return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(rows, batch))

        dataset = make_dataset()
        if local == 1 and context.num_input_pipelines == 1:
            return dataset
        return dataset.flat_map(split).prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(dataset_fn)


# --------------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------------


def check_workers_agree(strategy: tf.distribute.Strategy, worker: WorkerInfo, values: dict) -> None:
    """Raise the same ``ZooError`` on every worker when they hold different ``values``.

    ``values`` maps a description to an integer (a step, a token count, a checksum). A worker that
    cannot see the chief's checkpoints, or reads other data, is caught here, not after hours of
    silently different training. Nothing to do on a single worker.
    """
    if worker.num_workers <= 1:
        return
    names = list(values)
    mine = np.array([int(values[n]) % (1 << 62) for n in names], np.int64)
    gathered = strategy.gather(
        strategy.run(lambda: tf.constant(mine[None, :])), axis=0
    ).numpy()  # (replicas, len(names))
    differ = [
        f"{name} ({', '.join(str(v) for v in sorted(set(gathered[:, i].tolist())))})"
        for i, name in enumerate(names)
        if len(set(gathered[:, i].tolist())) > 1
    ]
    if differ:
        raise ZooError(
            "the workers disagree on " + "; ".join(differ) + ". Every worker must read the same "
            "data and the run directory must be on a file system all workers see (the chief "
            "writes the checkpoints every worker resumes from)"
        )


# --------------------------------------------------------------------------------------------------
# Keras 3 under tf.distribute
# --------------------------------------------------------------------------------------------------

_fixes_installed = False


def _fully_built(model) -> bool:
    """The model, its compiled loss and metrics and its optimizer all have their variables."""
    if not all(layer.built for layer in model._flatten_layers()):
        return False
    for part in (getattr(model, "_compile_metrics", None), getattr(model, "_compile_loss", None),
                 getattr(model, "optimizer", None)):
        if part is not None and not getattr(part, "built", True):
            return False
    return True


def _install_keras_fixes() -> None:
    """Three work-arounds for ``model.fit`` on the TensorFlow backend under a ``tf.distribute``
    strategy, installed once, only when a strategy is used (keras 3.15; see
    keras-team/keras#20585 and tensorflow/tensorflow#72388). Each leaves Keras unchanged when no
    strategy (or a single replica) is in use:

    1. Before the first step Keras builds the model symbolically from one batch and reduces that
       batch across replicas with ``strategy.reduce("MEAN", (x, y))``, which fails on a tuple of
       per-replica tensors ("Attempt to convert a value (PerReplica ...) to a Tensor"). Only the
       shapes are needed: the first replica's tensors are used.
    2. Each step's logged metrics are reduced across workers with ``strategy.reduce("MEAN", v,
       axis=0)``, which fails for a scalar under MultiWorkerMirroredStrategy ("Invalid reduction
       dimension 0 for input with 0 dimensions"). The mean over replicas is ``axis=None``.

    3. The gradient clip is moved after the cross-replica sum (see
       ``_install_clip_after_all_reduce``).

    Fixes 1 and 2 do not change what is trained; the epoch metrics (history, validation) come from
    the synchronised metric variables, aggregated over all replicas.
    """
    global _fixes_installed
    if _fixes_installed:
        return
    try:
        from keras.src import tree
        from keras.src.backend.tensorflow import trainer as tf_trainer
    except ImportError:  # another Keras layout: nothing to fix here
        _fixes_installed = True
        return

    trainer_cls = getattr(tf_trainer, "TensorFlowTrainer", None)
    original_build = getattr(trainer_cls, "_maybe_symbolic_build", None)
    if original_build is not None:

        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            strategy = getattr(self, "_distribute_strategy", None)
            if strategy is None or iterator is None:
                return original_build(self, iterator=iterator, data_batch=data_batch)
            if _fully_built(self):
                return None  # nothing to build: leave the data alone (it may be spent)
            for _, _, batches in iterator:
                first = next(batches)
                data_batch = tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues)
                    else v,
                    first,
                )
                break
            return original_build(self, data_batch=data_batch)

        trainer_cls._maybe_symbolic_build = _maybe_symbolic_build

    original_reduce = getattr(tf_trainer, "reduce_per_replica", None)
    multi_worker = getattr(tf_trainer, "_collective_all_reduce_multi_worker", None)
    if original_reduce is not None and multi_worker is not None:

        def reduce_per_replica(values, strategy, reduction):
            if reduction in ("auto", "mean") and multi_worker(strategy):
                return tree.map_structure(
                    lambda v: strategy.reduce("MEAN", v, axis=None), values
                )
            return original_reduce(values, strategy, reduction)

        tf_trainer.reduce_per_replica = reduce_per_replica

    _install_clip_after_all_reduce()
    _fixes_installed = True


def _replicated() -> bool:
    context = tf.distribute.get_replica_context()
    return context is not None and context.num_replicas_in_sync > 1


def _install_clip_after_all_reduce() -> None:
    """Fix 3: Keras clips each replica's gradients (``clipnorm`` / ``global_clipnorm``) *before*
    they are summed across replicas, so with R replicas up to R clipped pieces are added up and the
    update differs from one device's whenever clipping is active (as it is early in training).
    Under more than one replica the clip is moved after the all-reduce: it then applies to the
    summed gradient, as on one device."""
    try:
        from keras.src.backend import Variable as KerasVariable
        from keras.src.backend.tensorflow.optimizer import TFOptimizer
        from keras.src.optimizers.base_optimizer import BaseOptimizer
    except ImportError:
        return
    original_clip = getattr(BaseOptimizer, "_clip_gradients", None)
    original_update = getattr(TFOptimizer, "_backend_update_step", None)
    if original_clip is None or original_update is None:
        return
    if not all(hasattr(TFOptimizer, n) for n in ("_all_reduce_sum_gradients", "_distributed_tf_update_step")):
        return

    def _clip_gradients(self, grads):
        if _replicated():
            return list(grads)  # clipped after the all-reduce (below)
        return original_clip(self, grads)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not _replicated():
            return original_update(self, grads, trainable_variables, learning_rate)
        variables = [v.value if isinstance(v, KerasVariable) else v for v in trainable_variables]
        summed = self._all_reduce_sum_gradients(list(zip(grads, variables, strict=True)))
        kept = [(g, v) for g, v in summed if g is not None]
        clipped = original_clip(self, [g for g, _ in kept])
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._distributed_tf_update_step,
            self._distribution_strategy,
            list(zip(clipped, [v for _, v in kept], strict=True)),
            learning_rate,
        )
        return None

    TFOptimizer._clip_gradients = _clip_gradients
    TFOptimizer._backend_update_step = _backend_update_step
