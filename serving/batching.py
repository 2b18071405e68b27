"""Server-side request batching (``--enable_batching``, ``--batching_parameters_file``).

Concurrent Predict calls for the same servable version and signature are merged into one model
call: their input tensors are concatenated along axis 0, the signature runs once, and every
output is split back along axis 0 by each request's row count.  This follows TF Serving's
``BatchingSession`` / ``SharedBatchScheduler`` (parameters from ``session_bundle_config.proto``
``BatchingParameters``, given in text format):

* ``max_batch_size`` (default 1000): the most rows in one model call.  A request with more rows
  fails with INVALID_ARGUMENT "Task size N is larger than maximum input batch size M".
* ``batch_timeout_micros`` (default 0): how long an open batch waits for more requests once its
  first request arrived.  With 0 a batch runs as soon as a batch thread is free; requests that
  arrive while every thread is busy still merge.
* ``max_enqueued_batches`` (default 10): batches (the open one included) waiting per queue.
  A request that needs one more batch than that fails with UNAVAILABLE "The batch scheduling
  queue to which this task was submitted is full" (HTTP 503).
* ``num_batch_threads`` (default: the CPU count): threads running batches, shared by all queues.
* ``allowed_batch_sizes``: when set, a batch is padded up (by repeating its first row) to the
  smallest allowed size that holds it, and the padding is cut from the outputs.  The last
  allowed size must equal ``max_batch_size``.
* ``pad_variable_length_inputs`` is accepted but not implemented: requests whose inputs differ
  in a non-batch dimension (or in dtype) go to different queues and so run in separate model
  calls -- never padded, never an error.

Only signatures whose every input and output has an unknown 0th dimension (``[-1, ...]``) are
batched; anything else (a scalar input or output, a fixed batch of 1 such as the LM's streaming
signatures) runs directly, unbatched, as it would without ``--enable_batching``.  An output whose
0th dimension does not equal the batch's row count fails every request of that batch with
FAILED_PRECONDITION, as TF Serving's ``SplitOutputTensors`` does.

Use: ``BatchingServable(servable, scheduler)`` wraps a loaded :class:`~serving.servable.Servable`
and keeps its interface; :func:`batching_loader` makes a :class:`~serving.manager.ServableManager`
loader that wraps every version it loads.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import cancellation
from . import tfserving_protos as protos
from .cancellation import Cancellation
from .config import ConfigError
from .errors import Code, ServingError, from_exception, invalid_argument
from .observers import notify

__all__ = [
    "BatchScheduler",
    "BatchingParameters",
    "BatchingServable",
    "PER_MODEL_BATCHING_FILE",
    "QUEUE_FULL_MESSAGE",
    "batching_loader",
    "load_batching_parameters",
    "parse_batching_parameters",
    "version_batching_parameters",
]

log = logging.getLogger("serving")

QUEUE_FULL_MESSAGE = "The batch scheduling queue to which this task was submitted is full"


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 0  # 0: the CPU count
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    @property
    def threads(self) -> int:
        return self.num_batch_threads if self.num_batch_threads > 0 else max(1, os.cpu_count() or 1)

    def validate(self) -> BatchingParameters:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be positive")
        if self.batch_timeout_micros < 0:
            raise ValueError("batch_timeout_micros must be non-negative")
        if self.max_enqueued_batches < 1:
            raise ValueError("max_enqueued_batches must be positive")
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)) or sizes[0] < 1:
                raise ValueError("allowed_batch_sizes entries must be positive and monotonically increasing")
            if sizes[-1] != self.max_batch_size:
                raise ValueError("max_batch_size must be equal to the last entry of allowed_batch_sizes")
        return self


# ------------------------------------------------------------------------------------------------
# text format: TF Serving's BatchingParameters message (serving.tfserving_protos), read as TF Serving
# reads --batching_parameters_file (wrapper fields are written ``max_batch_size { value: 8 }``)

# Parsed and valid, but this scheduler has no use for them (it never splits a request).
_UNUSED_FIELDS = ("thread_pool_name", "enable_large_batch_splitting", "max_execution_batch_size")
# --enable_per_model_batching_parameters: the file TF Serving reads from a version directory.
PER_MODEL_BATCHING_FILE = "batching_params.pbtxt"


def _from_message(message) -> BatchingParameters:
    def wrapped(name: str, default: int) -> int:
        return int(getattr(message, name).value) if message.HasField(name) else default

    for name in _UNUSED_FIELDS:
        if message.HasField(name):
            log.warning("batching parameters: field %s is accepted but not used", name)
    params = BatchingParameters(
        max_batch_size=wrapped("max_batch_size", 1000),
        batch_timeout_micros=wrapped("batch_timeout_micros", 0),
        max_enqueued_batches=wrapped("max_enqueued_batches", 10),
        num_batch_threads=wrapped("num_batch_threads", 0),
        allowed_batch_sizes=tuple(int(v) for v in message.allowed_batch_sizes),
        pad_variable_length_inputs=bool(message.pad_variable_length_inputs),
    )
    try:
        return params.validate()
    except ValueError as exc:
        raise ConfigError(f"invalid batching parameters: {exc}") from exc


def parse_batching_parameters(text: str) -> BatchingParameters:
    """Parse a text-format ``tensorflow.serving.BatchingParameters`` message.

    An unknown field, a bad value or a syntax error raises ConfigError (a ValueError) naming the
    line and the field, as TF Serving refuses such a file; so do values the scheduler cannot
    run with (``max_batch_size { value: 0 }``).
    """
    return _from_message(protos.parse_text(text, protos.BatchingParameters()))


def load_batching_parameters(path: str | None) -> BatchingParameters:
    """``--batching_parameters_file``: TF Serving's defaults without a path.

    A file that does not parse raises ConfigError ``Invalid protobuf file: '<path>': ...``.
    """
    if not path:
        return BatchingParameters()
    message = protos.read_text_file(path, protos.BatchingParameters())
    try:
        return _from_message(message)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def version_batching_parameters(version_dir: str) -> BatchingParameters | None:
    """``--enable_per_model_batching_parameters``: the version's ``batching_params.pbtxt``, if any."""
    path = os.path.join(version_dir, PER_MODEL_BATCHING_FILE)
    return load_batching_parameters(path) if os.path.isfile(path) else None


# ------------------------------------------------------------------------------------------------
# the scheduler


class _Task:
    __slots__ = ("feeds", "size", "enqueued", "done", "result", "error", "batch", "abandoned")

    def __init__(self, feeds: dict[str, np.ndarray], size: int):
        self.feeds = feeds
        self.size = size
        self.enqueued = time.monotonic()
        self.done = threading.Event()
        self.result: dict[str, np.ndarray] | None = None
        self.error: ServingError | None = None
        self.batch: _Batch | None = None
        self.abandoned = False  # its request was cancelled (timeout, deadline, client gone)


class _Batch:
    __slots__ = ("tasks", "size", "deadline", "closed", "running", "cancel")

    def __init__(self, deadline: float):
        self.tasks: list[_Task] = []
        self.size = 0
        self.deadline = deadline
        self.closed = False
        self.running: list[_Task] = []  # the tasks of the model call in progress
        self.cancel: Cancellation | None = None  # that call's cancellation


class _Queue:
    def __init__(self, key: tuple, runner: Callable[[dict], Mapping[str, Any]], labels: tuple[str, str]):
        self.key = key
        self.runner = runner
        self.labels = labels  # (model name, signature) for metrics
        self.batches: collections.deque[_Batch] = collections.deque()


BatchObserver = Callable[[str, str, int, int, list[float]], None]


class BatchScheduler:
    """Shared batch threads serving any number of queues (one per servable/signature/shape)."""

    def __init__(self, params: BatchingParameters | None = None):
        self.params = (params or BatchingParameters()).validate()
        self._cond = threading.Condition()
        self._queues: dict[tuple, _Queue] = {}
        self._turn = 0
        self._stop = False
        self._threads = [
            threading.Thread(target=self._work, name=f"serving-batch-{i}", daemon=True)
            for i in range(self.params.threads)
        ]
        for t in self._threads:
            t.start()
        self.model_calls = 0  # model calls made (for tests and benchmarks)
        self.observers: list[BatchObserver] = []

    def close(self) -> None:
        with self._cond:
            self._stop = True
            pending = [t for q in self._queues.values() for b in q.batches for t in b.tasks]
            self._queues.clear()
            self._cond.notify_all()
        for task in pending:
            task.error = ServingError(Code.UNAVAILABLE, "The batch scheduler is shutting down")
            task.done.set()
        for t in self._threads:
            t.join(timeout=5)

    def submit(self, key: tuple, runner, labels: tuple[str, str], feeds: dict[str, np.ndarray],
               size: int) -> dict[str, np.ndarray]:
        """Queue one request of ``size`` rows and block until its batch ran; returns its outputs.

        When the calling request is cancelled (:func:`serving.cancellation.current`) the wait
        ends at once with its error: a queued task is dropped from its batch, and a running
        model call is cancelled once every request in it was.
        """
        params = self.params
        if size > params.max_batch_size:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size {params.max_batch_size}"
            )
        token = cancellation.current()
        if token is not None:
            token.check()
        task = _Task(feeds, size)
        with self._cond:
            if self._stop:
                raise ServingError(Code.UNAVAILABLE, "The batch scheduler is shutting down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(key, runner, labels)
            queue.runner = runner
            open_batch = queue.batches[-1] if queue.batches and not queue.batches[-1].closed else None
            if open_batch is not None and open_batch.size + size > params.max_batch_size:
                open_batch.closed = True
                open_batch = None
            if open_batch is None:
                if len(queue.batches) >= params.max_enqueued_batches:
                    raise ServingError(Code.UNAVAILABLE, QUEUE_FULL_MESSAGE)
                open_batch = _Batch(time.monotonic() + params.batch_timeout_micros / 1e6)
                queue.batches.append(open_batch)
            open_batch.tasks.append(task)
            open_batch.size += size
            task.batch = open_batch
            if open_batch.size >= params.max_batch_size:
                open_batch.closed = True
            self._cond.notify_all()
        remove = token.on_cancel(lambda: self._abandon(task, token)) if token is not None else None
        try:
            task.done.wait()
        finally:
            if remove is not None:
                remove()
        if task.abandoned and token is not None and token.error is not None:
            raise token.error
        if task.error is not None:
            raise task.error
        return task.result or {}

    def _abandon(self, task: _Task, token: Cancellation) -> None:
        """A request gave up: free its thread; cancel its batch's model call if nobody waits for it."""
        with self._cond:
            task.abandoned = True
            batch = task.batch
            stop = (batch is not None and batch.cancel is not None and task in batch.running
                    and all(t.abandoned for t in batch.running))
        if stop and token.error is not None:
            batch.cancel.cancel(token.error)
        task.done.set()

    # ---------------------------------------------------------------- batch threads

    def _next_batch(self) -> tuple[_Queue, _Batch] | None:
        """Pop the next ready batch (closed, or past its timeout), round-robin over queues."""
        now = time.monotonic()
        queues = list(self._queues.values())
        if not queues:
            return None
        start = self._turn % len(queues)
        self._turn += 1
        for queue in queues[start:] + queues[:start]:
            if not queue.batches:
                continue
            batch = queue.batches[0]
            if batch.closed or batch.deadline <= now:
                queue.batches.popleft()
                if not queue.batches:
                    del self._queues[queue.key]
                return queue, batch
        return None

    def _earliest_deadline(self) -> float | None:
        deadlines = [q.batches[0].deadline for q in self._queues.values() if q.batches]
        return min(deadlines) if deadlines else None

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stop:
                        return
                    picked = self._next_batch()
                    if picked is not None:
                        break
                    earliest = self._earliest_deadline()
                    timeout = None if earliest is None else max(0.0, earliest - time.monotonic())
                    self._cond.wait(timeout=timeout if timeout is None else min(timeout, 1.0))
            queue, batch = picked
            self._run(queue, batch)

    def _run(self, queue: _Queue, batch: _Batch) -> None:
        with self._cond:  # requests cancelled while queued are left out
            tasks = batch.running = [t for t in batch.tasks if not t.abandoned]
            batch.cancel = Cancellation()
        if not tasks:
            return
        size = sum(t.size for t in tasks)
        started = time.monotonic()
        padded = size
        for allowed in self.params.allowed_batch_sizes:
            if allowed >= size:
                padded = allowed
                break
        try:
            feeds = {}
            for alias in tasks[0].feeds:
                parts = [t.feeds[alias] for t in tasks]
                if padded > size:
                    first = parts[0][:1]
                    parts.append(np.repeat(first, padded - size, axis=0))
                feeds[alias] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
            with self._cond:
                self.model_calls += 1
            with cancellation.scope(batch.cancel):
                outputs = queue.runner(feeds)
            arrays = {}
            for alias, value in outputs.items():
                arr = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
                if arr.ndim == 0:
                    raise ServingError(Code.FAILED_PRECONDITION, "Batched output tensor has 0 dimensions")
                if arr.shape[0] != padded:
                    raise ServingError(
                        Code.FAILED_PRECONDITION,
                        "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                        "dimension sizes of the input tensors",
                    )
                arrays[alias] = arr
            offset = 0
            for task in tasks:
                task.result = {alias: arr[offset:offset + task.size] for alias, arr in arrays.items()}
                offset += task.size
        except Exception as exc:  # every task of the batch gets the error
            error = from_exception(exc)
            for task in tasks:
                task.error = error
        finally:
            for task in tasks:
                task.done.set()
        queuing = [started - t.enqueued for t in tasks]
        notify(self.observers, queue.labels[0], queue.labels[1], size, padded, queuing, what="batch observer")


# ------------------------------------------------------------------------------------------------
# the servable wrapper


def _batchable(sig) -> bool:
    for info in list(sig.inputs.values()) + list(sig.outputs.values()):
        if info.shape is None or len(info.shape) == 0 or info.shape[0] != -1:
            return False
    return bool(sig.inputs)


class BatchingServable:
    """A :class:`~serving.servable.Servable` whose batchable signatures run through a scheduler.

    Everything but ``run`` is the wrapped servable's (attributes are forwarded).
    """

    def __init__(self, servable, scheduler: BatchScheduler):
        self._servable = servable
        self._scheduler = scheduler
        self._batchable = {key: _batchable(sig) for key, sig in servable.signatures.items()}

    def __getattr__(self, name):
        return getattr(self._servable, name)

    def __repr__(self) -> str:
        return f"BatchingServable({self._servable!r})"

    @property
    def unbatched(self):
        return self._servable

    def run(self, key: str, feeds: dict[str, Any]) -> dict[str, Any]:
        if not self._batchable.get(key, False):
            return self._servable.run(key, feeds)
        arrays = {}
        for alias, value in feeds.items():
            arr = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
            if arr.ndim == 0:
                return self._servable.run(key, feeds)
            arrays[alias] = arr
        sizes = {arr.shape[0] for arr in arrays.values()}
        if len(sizes) != 1:
            # inconsistent batch sizes: let the model report it, unbatched
            return self._servable.run(key, feeds)
        size = sizes.pop()
        if size == 0:
            return self._servable.run(key, feeds)
        shape_key = tuple(sorted((a, arr.dtype.str, arr.shape[1:]) for a, arr in arrays.items()))
        queue_key = (id(self), key, shape_key)
        return self._scheduler.submit(
            queue_key, lambda batch_feeds: self._call(key, batch_feeds), (self._servable.name, key),
            arrays, size,
        )

    def _call(self, key: str, feeds: dict[str, np.ndarray]) -> Mapping[str, Any]:
        import tensorflow as tf

        sig = self._servable.signatures[key]
        tensors = {alias: tf.constant(arr, dtype=sig.inputs[alias].dtype) for alias, arr in feeds.items()}
        return self._servable.run(key, tensors)


def batching_loader(scheduler: BatchScheduler, loader=None):
    """A ServableManager loader that wraps each loaded version in :class:`BatchingServable`."""
    from .servable import load_servable

    inner = loader or load_servable

    def load(name: str, version: int, path: str, base_path: str):
        return BatchingServable(inner(name, version, path, base_path), scheduler)

    return load
