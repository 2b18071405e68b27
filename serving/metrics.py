"""Prometheus metrics in TF Serving's names, served on the REST port.

TF Serving exports its monitoring metrics when ``--monitoring_config_file`` holds a text-format
``MonitoringConfig`` such as::

    prometheus_config {
      enable: true
      path: "/monitoring/prometheus/metrics"
    }

and so does this server (no file, or ``enable: false``: no metrics page; an empty path means the
default ``/monitoring/prometheus/metrics``).  The page is Prometheus text exposition format 0.0.4
(``text/plain; version=0.0.4``).  As in TF Serving's ``prometheus_exporter.cc``, a metric's name is
its TensorFlow monitoring name with every character outside ``[A-Za-z0-9_]`` turned into ``:``
(``/tensorflow/serving/request_count`` -> ``:tensorflow:serving:request_count``).

Metrics:

``:tensorflow:serving:request_count{model_name, status}`` counter
    Every inference request on either entry point; ``status`` is the canonical code name
    (``OK``, ``INVALID_ARGUMENT``, ``NOT_FOUND``, ``DEADLINE_EXCEEDED``, ``CANCELLED``...).  Over
    REST (predict, classify, regress, generate_stream) it is derived from the HTTP status (400
    is reported as INVALID_ARGUMENT, 500 as INTERNAL); over gRPC it is the RPC's status code
    (Predict, Classify, Regress, MultiInference, GetModelMetadata, GenerateStream).
``:tensorflow:serving:request_latency{model_name, API, entrypoint}`` histogram
    Wall time of successful requests in microseconds (TF Serving's buckets: 10 * 1.8^i,
    33 of them).  ``entrypoint`` is ``REST`` or ``GRPC``.  ``API`` is what TF Serving writes:
    the REST verb (``predict``/``classify``/``regress``, and ``generate_stream``) and the gRPC
    method name (``Predict``/``Classify``/``Regress``, prediction_service_impl.cc).  TF Serving
    records neither MultiInference nor GetModelMetadata; here they are counted and timed too,
    by the same rule (``MultiInference``, ``GetModelMetadata``), and so is ``GenerateStream``
    (the whole stream, successful ones only).  ModelService calls (GetModelStatus, config
    reload) are not inference requests and are not counted, as REST status calls are not.
``:tensorflow:cc:saved_model:load_attempt_count{model_path, status}`` counter
    Every load attempt of a version directory, ``status`` ``success`` or ``fail`` (a retried
    failure counts once per attempt).
``:tensorflow:serving:batching_session:input_batch_size{model_name, signature}`` histogram,
``:tensorflow:serving:batching_session:padding_size{model_name, signature}`` histogram,
``:tensorflow:serving:batching_session:queuing_latency{model_name, signature}`` histogram (us)
    With ``--enable_batching``: rows per model call, padding rows added to reach an allowed
    batch size, and the time each request waited in the queue.
``:zoo:serving:model_version_state{model_name, version, state}`` gauge (not in TF Serving)
    1 for each version's current state (START, LOADING, AVAILABLE, UNLOADING, END), 0 for the
    states it left; ``:zoo:serving:model_version_error{model_name, version, error_code}`` is 1
    while a version is in END with an error.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable

from .errors import Code

__all__ = [
    "DEFAULT_METRICS_PATH",
    "MetricRegistry",
    "MonitoringConfig",
    "ServingMetrics",
    "load_monitoring_config",
    "parse_monitoring_config",
    "prometheus_name",
]

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

# TF Serving's request latency buckets (servables/tensorflow/util.cc: Exponential(10, 1.8, 33)).
LATENCY_BUCKETS_US = tuple(10.0 * 1.8**i for i in range(33))
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_HTTP_TO_CODE = {
    200: Code.OK, 400: Code.INVALID_ARGUMENT, 401: Code.UNAUTHENTICATED, 403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND, 409: Code.ABORTED, 429: Code.RESOURCE_EXHAUSTED, 499: Code.CANCELLED,
    500: Code.INTERNAL, 501: Code.UNIMPLEMENTED, 503: Code.UNAVAILABLE, 504: Code.DEADLINE_EXCEEDED,
}
INFERENCE_APIS = frozenset({"predict", "classify", "regress", "generate_stream", "completions"})
GRPC_INFERENCE_APIS = frozenset({"Predict", "Classify", "Regress", "MultiInference", "GetModelMetadata",
                                 "GenerateStream"})


def prometheus_name(name: str) -> str:
    """TF Serving's rule: every character other than ``[A-Za-z0-9_]`` becomes ``:``."""
    return re.sub(r"[^A-Za-z0-9_]", ":", name)


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]):
        self.name = prometheus_name(name)
        self.help = help_text
        self.label_names = labels
        self.series: dict[tuple[str, ...], object] = {}

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        return tuple(str(labels[n]) for n in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def inc(self, amount: float = 1, **labels) -> None:
        key = self._key(labels)
        self.series[key] = self.series.get(key, 0) + amount

    def lines(self) -> list[str]:
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in sorted(self.series.items())]


class Gauge(_Metric):
    kind = "gauge"

    def set(self, value: float, **labels) -> None:
        self.series[self._key(labels)] = value

    def lines(self) -> list[str]:
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in sorted(self.series.items())]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...], buckets: Iterable[float]):
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(float(b) for b in buckets))

    def observe(self, value: float, **labels) -> None:
        key = self._key(labels)
        counts, total = self.series.get(key, ([0] * (len(self.buckets) + 1), 0.0))
        index = len(self.buckets)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                index = i
                break
        counts[index] += 1
        self.series[key] = (counts, total + float(value))

    def lines(self) -> list[str]:
        out = []
        for key, (counts, total) in sorted(self.series.items()):
            running = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                running += count
                le = 'le="' + _number(bound if math.isinf(bound) else float(bound)) + '"'
                out.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {running}")
            out.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(total)}")
            out.append(f"{self.name}_count{_labels(self.label_names, key)} {running}")
        return out


class MetricRegistry:
    """A minimal thread-safe registry that renders Prometheus text."""

    def __init__(self):
        self.lock = threading.Lock()
        self.metrics: list[_Metric] = []

    def counter(self, name: str, help_text: str, labels: tuple[str, ...]) -> Counter:
        return self._add(Counter(name, help_text, labels))

    def gauge(self, name: str, help_text: str, labels: tuple[str, ...]) -> Gauge:
        return self._add(Gauge(name, help_text, labels))

    def histogram(self, name: str, help_text: str, labels: tuple[str, ...], buckets) -> Histogram:
        return self._add(Histogram(name, help_text, labels, buckets))

    def _add(self, metric):
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        with self.lock:
            for metric in self.metrics:
                lines.extend(metric.header())
                lines.extend(metric.lines())
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# MonitoringConfig (text format)


class MonitoringConfig:
    """``--monitoring_config_file``'s Prometheus switch and page path (default path when empty)."""

    def __init__(self, enable: bool = False, path: str = DEFAULT_METRICS_PATH):
        self.enable = bool(enable)
        self.path = path or DEFAULT_METRICS_PATH

    def __repr__(self) -> str:
        return f"MonitoringConfig(enable={self.enable}, path={self.path!r})"


def _from_message(message) -> MonitoringConfig:
    from .config import ConfigError

    prometheus = message.prometheus_config
    if prometheus.path and not prometheus.path.startswith("/"):
        raise ConfigError(f"monitoring config: path must start with '/', got {prometheus.path!r}")
    return MonitoringConfig(enable=prometheus.enable, path=prometheus.path or DEFAULT_METRICS_PATH)


def parse_monitoring_config(text: str) -> MonitoringConfig:
    """Parse a text-format ``tensorflow.serving.MonitoringConfig``.

    An unknown field (``enabel: true``), a bad value or a syntax error raises ConfigError (a
    ValueError) naming the line and the field, as TF Serving refuses such a file.
    """
    from . import tfserving_protos as protos

    return _from_message(protos.parse_text(text, protos.MonitoringConfig()))


def load_monitoring_config(path: str | None) -> MonitoringConfig:
    """``--monitoring_config_file``: metrics off without a path; ConfigError for a bad file."""
    from . import tfserving_protos as protos
    from .config import ConfigError

    if not path:
        return MonitoringConfig()
    message = protos.read_text_file(path, protos.MonitoringConfig())
    try:
        return _from_message(message)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


# ------------------------------------------------------------------------------------------------
# the server's metrics


class ServingMetrics:
    """Collects the server's metrics from both front ends, the manager and the batch scheduler.

    Wire it with ``app.observers.append(m.observe_request)``,
    ``grpc_server.observers.append(m.observe_grpc)``, ``manager.add_listener(m.on_state)`` and
    ``scheduler.observers.append(m.on_batch)``; serve ``m.render()`` (or ``m.route``).
    """

    def __init__(self, model_path=None):
        self._model_path = model_path or (lambda name, version: f"{name}/{version}")
        r = self.registry = MetricRegistry()
        self.request_count = r.counter(
            "/tensorflow/serving/request_count", "The total number of requests.", ("model_name", "status")
        )
        self.request_latency = r.histogram(
            "/tensorflow/serving/request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"),
            LATENCY_BUCKETS_US,
        )
        self.load_attempts = r.counter(
            "/tensorflow/cc/saved_model/load_attempt_count",
            "The number of times a SavedModel was successfully loaded.",
            ("model_path", "status"),
        )
        self.input_batch_size = r.histogram(
            "/tensorflow/serving/batching_session/input_batch_size",
            "Tracks the batch size distribution on the inputs by model_name (if available).",
            ("model_name", "signature"),
            BATCH_SIZE_BUCKETS,
        )
        self.padding_size = r.histogram(
            "/tensorflow/serving/batching_session/padding_size",
            "Tracks the padding size distribution on batches by model_name (if available).",
            ("model_name", "signature"),
            (0,) + BATCH_SIZE_BUCKETS,
        )
        self.queuing_latency = r.histogram(
            "/tensorflow/serving/batching_session/queuing_latency",
            "Tracks the latency (in microseconds) each request waited in the batching queue.",
            ("model_name", "signature"),
            LATENCY_BUCKETS_US,
        )
        self.version_state = r.gauge(
            "/zoo/serving/model_version_state",
            "1 for the current state of each model version, 0 for the states it left.",
            ("model_name", "version", "state"),
        )
        self.version_error = r.gauge(
            "/zoo/serving/model_version_error",
            "1 while a model version ended with a load error (its canonical code).",
            ("model_name", "version", "error_code"),
        )
        self._states: dict[tuple[str, int], str] = {}

    # observers ---------------------------------------------------------------------------

    def observe_request(self, record) -> None:
        """A ``serving.rest.RequestRecord``: count inference requests, time the successful ones."""
        if record.api not in INFERENCE_APIS:
            return
        code = _HTTP_TO_CODE.get(int(record.http_status), Code.UNKNOWN)
        with self.registry.lock:
            self.request_count.inc(model_name=record.model_name, status=code.name)
            if code == Code.OK:
                self.request_latency.observe(
                    record.latency_s * 1e6, model_name=record.model_name, API=record.api, entrypoint="REST"
                )

    def observe_grpc(self, record) -> None:
        """A ``serving.grpc_common.GrpcRequestRecord``: count inference RPCs, time the successful ones."""
        if record.api not in GRPC_INFERENCE_APIS:
            return
        code = Code(record.code)
        with self.registry.lock:
            self.request_count.inc(model_name=record.model_name, status=code.name)
            if code == Code.OK:
                self.request_latency.observe(
                    record.latency_s * 1e6, model_name=record.model_name, API=record.api, entrypoint="GRPC"
                )

    def on_state(self, name: str, version: int, state, error) -> None:
        """``ServableManager.add_listener`` callback."""
        state_name = getattr(state, "value", str(state))
        key = (name, int(version))
        path = self._model_path(name, int(version))
        with self.registry.lock:
            previous = self._states.get(key)
            if state_name == "LOADING" and previous == "LOADING":
                self.load_attempts.inc(model_path=path, status="fail")  # a retried failure
            elif state_name == "AVAILABLE" and previous == "LOADING":
                self.load_attempts.inc(model_path=path, status="success")
            elif state_name == "END" and previous == "LOADING" and error is not None:
                self.load_attempts.inc(model_path=path, status="fail")
            if previous is not None:
                self.version_state.set(0, model_name=name, version=str(version), state=previous)
            self.version_state.set(1, model_name=name, version=str(version), state=state_name)
            if error is not None and state_name == "END":
                self.version_error.set(1, model_name=name, version=str(version), error_code=error.code.name)
            self._states[key] = state_name

    def on_batch(self, model_name: str, signature: str, size: int, padded: int, queuing_s: list[float]) -> None:
        """``BatchScheduler.observers`` callback."""
        with self.registry.lock:
            self.input_batch_size.observe(size, model_name=model_name, signature=signature)
            self.padding_size.observe(padded - size, model_name=model_name, signature=signature)
            for wait in queuing_s:
                self.queuing_latency.observe(wait * 1e6, model_name=model_name, signature=signature)

    # output ------------------------------------------------------------------------------

    def render(self) -> str:
        return self.registry.render()

    async def route(self, scope, body: bytes) -> tuple[int, list, bytes]:
        """A ``RestApp.add_route`` handler: GET only."""
        if scope.get("method") not in ("GET", "HEAD"):
            return 405, [(b"content-type", b"text/plain"), (b"allow", b"GET")], b"Method Not Allowed\n"
        text = self.render().encode("utf-8")
        return 200, [(b"content-type", CONTENT_TYPE)], text if scope.get("method") == "GET" else b""


# ------------------------------------------------------------------------------------------------
# wiring into ModelServer


class ServingExtras:
    """What ``ModelServer`` adds to the REST core: batching, metrics and the streaming route.

    * ``--enable_batching``: every loaded version is wrapped in
      :class:`serving.batching.BatchingServable` sharing one :class:`~serving.batching.BatchScheduler`
      (parameters from ``--batching_parameters_file``; TF Serving's defaults without one);
    * ``--monitoring_config_file`` with ``prometheus_config { enable: true }``: the metrics page;
    * always: ``POST /v1/models/{name}...:generate_stream`` (:mod:`serving.streaming`).

    Bad batching or monitoring files raise ``ConfigError`` when the server starts.
    """

    def __init__(self, config):
        from .config import ConfigError

        self.config = config
        self.scheduler = None
        self.metrics = ServingMetrics()
        self.streaming = None
        try:
            self.monitoring = load_monitoring_config(config.monitoring_config_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot use --monitoring_config_file: {exc}") from exc
        self.batching_parameters = None
        if config.enable_batching:
            from .batching import load_batching_parameters

            try:
                self.batching_parameters = load_batching_parameters(config.batching_parameters_file)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot use --batching_parameters_file: {exc}") from exc

    def loader(self):
        """The ServableManager loader (None: the manager's default)."""
        if self.batching_parameters is None:
            return None
        from .batching import BatchScheduler, batching_loader

        if self.scheduler is None:
            self.scheduler = BatchScheduler(self.batching_parameters)
            self.scheduler.observers.append(self.metrics.on_batch)
        return batching_loader(self.scheduler)

    def attach_manager(self, manager) -> None:
        import os

        def model_path(name: str, version: int) -> str:
            cfg = manager.model_config(name)
            return os.path.join(cfg.base_path, str(version)) if cfg is not None else f"{name}/{version}"

        self.metrics._model_path = model_path
        manager.add_listener(self.metrics.on_state)

    def attach_app(self, app, manager) -> None:
        from .streaming import install

        app.observers.append(self.metrics.observe_request)
        if self.monitoring.enable:
            app.add_route(self.monitoring.path, self.metrics.route)
        self.streaming = install(app, manager, num_threads=max(2, min(8, self.config.rest_threads)))

    def attach_grpc(self, grpc_server) -> None:
        """Count and time the RPCs of a :class:`serving.grpc_server.GrpcServer` (before it starts)."""
        grpc_server.observers.append(self.metrics.observe_grpc)

    def close(self) -> None:
        if self.streaming is not None:
            self.streaming.close()
            self.streaming = None
        if self.scheduler is not None:
            self.scheduler.close()
            self.scheduler = None
