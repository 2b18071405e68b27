"""TF Serving's gRPC API (``PredictionService`` and ``ModelService``) over the stock protos.

Services and methods (``tensorflow_serving/apis/prediction_service.proto``, ``model_service.proto``):

* ``PredictionService.Predict``: ``TensorProto`` inputs by alias -> ``TensorProto`` outputs
  (written field by field, like TF Serving's ``Tensor::AsProtoField``, so ``float_val`` etc.
  are filled); ``output_filter`` picks outputs.  The response's ``model_spec`` names the model,
  the version that answered and the signature (``serving_default`` when none was given).
* ``PredictionService.GetModelMetadata``: ``metadata["signature_def"]`` is an ``Any`` holding a
  ``SignatureDefMap`` of every signature (get_model_metadata_impl.cc).
* ``PredictionService.Classify`` / ``Regress`` / ``MultiInference``: ``tf.Example`` inputs on
  classify/regress signatures (classifier.cc, regressor.cc, multi_inference.cc).
* ``ModelService.GetModelStatus`` (get_model_status_impl.cc) and ``HandleReloadConfigRequest``
  (model_service_impl.cc: applies a ``ModelServerConfig`` and waits for newly added models).

Beside them, the project's own ``zoo.serving.GenerationService.GenerateStream`` (server
streaming, stock ``PredictRequest`` in, one ``PredictResponse`` per token out; see
:mod:`serving.grpc_streaming` and ``serving/protos/zoo_generation.proto``).  ``limits`` (a
:class:`serving.predict.RequestLimits`) bounds requests to zoo LM exports in Predict and
GenerateStream (prompt bytes, ``max_new_tokens``, rows, rows x new tokens, sampling settings),
before any model work.  An RPC past its deadline, or cancelled by its client, cancels the
model call it runs (:mod:`serving.cancellation`): the signature stops at its next step, a
decoding loop included, and the worker thread is free again.  Each RPC is reported to
``GrpcServer.observers`` (:class:`serving.grpc_common.GrpcRequestRecord`; the metrics).

Errors carry TF Serving's canonical codes and texts (shared with the REST front end through
:mod:`serving.predict` and :class:`serving.manager.ServableManager`); a message longer than 1024
characters is cut and ends in ``...TRUNCATED`` (grpc_status_util.cc).  Messages may be up to
INT32_MAX bytes each way (server.cc).  Unlike TF Serving, an input ``TensorProto`` whose shape asks
for far more elements than it carries (TF fills the rest with the last value) is refused once the
filled tensor would pass :data:`serving.grpc_common.MAX_FILLED_TENSOR_BYTES`, so a tiny request
cannot make the server allocate gigabytes.  The codec, the error texts and the servicers' base
class are in :mod:`serving.grpc_common`.

Only ``ModelServer`` (:mod:`serving.server`) starts this normally; in-process::

    server = GrpcServer(manager, host="127.0.0.1", port=0).start()
    server.port  # the bound port
    server.stop()
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from typing import Any

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from zoo.export_contract import (
    CLASSIFY_METHOD,
    DEFAULT_SERVING_SIGNATURE,
    MAX_MESSAGE_LENGTH,
    REGRESS_METHOD,
    SIGNATURE_DEF_FIELD,
)

from .cancellation import scope as cancellation_scope
from .config import ConfigError, ModelConfig, parse_model_server_config
from .errors import Code, ServingError, from_exception, invalid_argument
from .grpc_common import (
    Observer,
    ServicerBase,
    ndarray_to_tensor_proto,
    require_spec,
    rpc_cancellation,
    tensor_proto_to_ndarray,
    truncate_message,
)
from .grpc_streaming import GenerationServicer
from .manager import ServableManager
from .predict import (
    RequestLimits,
    classify,
    examples_from_input_proto,
    predict,
    regress,
    resolve_signature,
)

__all__ = [
    "GrpcServer",
    "ModelServicer",
    "PredictionServicer",
]

log = logging.getLogger("serving")

DEFAULT_RELOAD_WAIT_S = 300.0


def _input_value(proto, alias: str):
    """An input for :func:`serving.predict.predict`: numpy, or a tf.Tensor where numpy loses the dtype."""
    import tensorflow as tf

    arr = tensor_proto_to_ndarray(proto, alias)
    want = tf.dtypes.as_dtype(proto.dtype)
    if want == tf.string:
        return arr
    try:
        same = tf.as_dtype(arr.dtype) == want
    except TypeError:
        same = False
    return arr if same else tf.constant(arr, dtype=want)


# ----------------------------------------------------------------------------------------------
# servicers


def _model_name_of(request) -> str:
    if hasattr(request, "model_spec"):
        return request.model_spec.name
    if hasattr(request, "tasks") and len(request.tasks):
        return request.tasks[0].model_spec.name
    return ""


def _rpc(api: str):
    """Run a handler; turn ServingError (and anything else) into a gRPC status, report to observers.

    The handler's model calls stop when the RPC passes its deadline or is cancelled
    (:func:`serving.grpc_common.rpc_cancellation`)."""

    def wrap(fn):
        @functools.wraps(fn)
        def handler(self, request, context):
            started = time.monotonic()
            error: ServingError | None = None
            response = None
            try:
                with cancellation_scope(rpc_cancellation(context)):
                    response = fn(self, request, context)
            except ServingError as exc:
                error = exc
            except RecursionError:
                error = ServingError(Code.INVALID_ARGUMENT, "Request is nested too deeply")
            except MemoryError:
                error = ServingError(Code.RESOURCE_EXHAUSTED, "Out of memory while processing the request")
            except Exception as exc:  # never leak a Python traceback through gRPC
                log.exception("gRPC %s failed", api)
                error = from_exception(exc)
            self._observe(api, _model_name_of(request), error.code if error else Code.OK, time.monotonic() - started)
            if error is not None:
                context.abort(grpc.StatusCode[error.code.name], truncate_message(error.message))
            return response

        return handler

    return wrap


def _response_spec(out, name: str, version: int, signature_name: str | None) -> None:
    """util.cc MakeModelSpec: name, version, and the signature ('' -> serving_default)."""
    out.Clear()
    out.name = name
    if signature_name is not None:
        out.signature_name = signature_name or DEFAULT_SERVING_SIGNATURE
    out.version.value = int(version)


def _fill_classification(result, rows) -> None:
    for row in rows:
        entry = result.classifications.add()
        for label, score in row:
            cls = entry.classes.add()
            cls.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            cls.score = float(score)


def _fill_regression(result, values) -> None:
    for value in values:
        result.regressions.add().value = float(value)


class PredictionServicer(ServicerBase, prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService`` on a :class:`ServableManager`."""

    @_rpc("Predict")
    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        """predict_util.cc: run the named signature on the request's tensors."""
        require_spec(request)
        servable = self.servable_for(request.model_spec)
        sig = resolve_signature(servable, request.model_spec.signature_name)
        if set(request.inputs) == set(sig.inputs):
            inputs = {alias: _input_value(proto, alias) for alias, proto in request.inputs.items()}
            if self.limits is not None:
                inputs = self.limits.check_inputs(servable, inputs)
        else:  # predict() reports the mismatch before any tensor is parsed, as TF Serving does
            inputs = dict.fromkeys(request.inputs)
        outputs = predict(servable, sig.key, inputs, list(request.output_filter) or None)
        response = predict_pb2.PredictResponse()
        _response_spec(response.model_spec, request.model_spec.name, servable.version, sig.key)
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(ndarray_to_tensor_proto(value))
        return response

    @_rpc("GetModelMetadata")
    def GetModelMetadata(self, request, context):  # noqa: N802
        """get_model_metadata_impl.cc: the servable's SignatureDefMap."""
        require_spec(request)
        if not request.metadata_field:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise invalid_argument(f"Metadata field {field} is not supported")
            servable = self.servable_for(request.model_spec)
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = servable.version
            response.metadata[SIGNATURE_DEF_FIELD].Pack(servable.signature_def_map())
        return response

    def _on_examples(self, request: Any, run: Callable[..., Any], response: Any,
                     fill: Callable[[Any, Any], None]) -> Any:
        """Classify and Regress: run ``run`` on the request's tf.Examples, ``fill`` the response's result."""
        require_spec(request)
        servable = self.servable_for(request.model_spec)
        examples, ctx = examples_from_input_proto(request.input)
        result = run(servable, request.model_spec.signature_name, examples, ctx)
        _response_spec(response.model_spec, request.model_spec.name, servable.version,
                       request.model_spec.signature_name)
        fill(response.result, result)
        return response

    @_rpc("Classify")
    def Classify(self, request, context):  # noqa: N802
        """classifier.cc: (label, score) rows for the request's tf.Examples."""
        return self._on_examples(request, classify, classification_pb2.ClassificationResponse(),
                                 _fill_classification)

    @_rpc("Regress")
    def Regress(self, request, context):  # noqa: N802
        """regressor.cc: one value per tf.Example of the request."""
        return self._on_examples(request, regress, regression_pb2.RegressionResponse(), _fill_regression)

    @_rpc("MultiInference")
    def MultiInference(self, request, context):  # noqa: N802
        """multi_inference_helper.cc + multi_inference.cc: classify/regress tasks on one input."""
        if not request.tasks:
            raise invalid_argument("Expected at least one task")
        servable = self.servable_for(request.tasks[0].model_spec)
        model_name = ""
        seen: set[str] = set()
        input_names: set[str] = set()
        plan = []
        for task in request.tasks:
            if not task.model_spec.name:
                raise invalid_argument("Found ModelSpec with an empty model name.")
            if not model_name:
                model_name = task.model_spec.name
            elif model_name != task.model_spec.name:
                raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
            key = task.model_spec.signature_name or DEFAULT_SERVING_SIGNATURE
            if key in seen:
                raise invalid_argument(f"Duplicate evaluation of signature: {key}")
            seen.add(key)
            sig = servable.signature(key)
            if sig is None:
                raise invalid_argument(f"Requested signature not found in model graph: {key}")
            if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
                raise ServingError(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}")
            if "inputs" in sig.inputs:
                input_names.add(sig.inputs["inputs"].tensor_name)
            plan.append((task, key))
        if len(input_names) > 1:
            raise invalid_argument("Input tensor must be the same for all Signatures.")
        examples, ctx = examples_from_input_proto(request.input)
        response = inference_pb2.MultiInferenceResponse()
        for task, key in plan:
            result = response.results.add()
            _response_spec(result.model_spec, model_name, servable.version, key)
            if task.method_name == CLASSIFY_METHOD:
                _fill_classification(result.classification_result, classify(servable, key, examples, ctx))
            else:
                _fill_regression(result.regression_result, regress(servable, key, examples, ctx))
        return response


ReloadFn = Callable[[list[ModelConfig]], None]


class ModelServicer(ServicerBase, model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``: status and config reload."""

    def __init__(self, manager: ServableManager, observers: list[Observer], reload_config: ReloadFn | None = None,
                 reload_wait_s: float = DEFAULT_RELOAD_WAIT_S):
        super().__init__(manager, observers)
        self._reload = reload_config or manager.reload_config
        self._reload_wait_s = reload_wait_s
        self._reload_lock = threading.Lock()

    @_rpc("GetModelStatus")
    def GetModelStatus(self, request, context):  # noqa: N802
        """get_model_status_impl.cc: the state of each version of the model (or of one)."""
        require_spec(request)
        spec = request.model_spec
        version = int(spec.version.value) if spec.WhichOneof("version_choice") == "version" else None
        statuses = self.manager.model_status(spec.name, version)
        response = get_model_status_pb2.GetModelStatusResponse()
        state_enum = get_model_status_pb2.ModelVersionStatus.State
        for st in statuses:
            entry = response.model_version_status.add()
            entry.version = st.version
            entry.state = state_enum.Value(st.state.value)
            entry.status.error_code = int(st.error_code)
            entry.status.error_message = st.error_message
        return response

    @_rpc("HandleReloadConfigRequest")
    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        """model_service_impl.cc + ServerCore::ReloadConfig: apply, then wait for added models."""
        from google.protobuf import text_format

        config = request.config
        if config.WhichOneof("config") != "model_config_list":
            raise invalid_argument("ServerConfig is not of type ModelConfigList.")
        try:
            models = parse_model_server_config(text_format.MessageToString(config))
        except ConfigError as exc:
            raise invalid_argument(str(exc)) from None
        with self._reload_lock:
            before = set(self.manager.model_names())
            self._reload(models)
            added = {m.name for m in models} - before
            budget = self._reload_wait_s
            remaining = context.time_remaining() if context is not None else None
            if remaining is not None:
                budget = min(budget, max(0.0, remaining - 0.5))
            self._await_models(added, budget)
        log.info("ReloadConfig successful")
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response

    def _await_models(self, names: Iterable[str], budget_s: float) -> None:
        names = set(names)
        if not names:
            return
        deadline = time.monotonic() + budget_s
        while True:
            unsettled, failed = self.manager.readiness()
            failed = {k: v for k, v in failed.items() if k in names}
            if failed:
                detail = ", ".join(f"{k}: {v}" for k, v in sorted(failed.items()))
                raise ServingError(Code.UNKNOWN, f"{len(failed)} servable(s) did not become available: {{{detail}}}")
            waiting = sorted(set(unsettled) & names)
            if not waiting:
                return
            if time.monotonic() >= deadline:
                raise ServingError(
                    Code.DEADLINE_EXCEEDED,
                    f"{len(waiting)} servable(s) did not become available in time: {{{', '.join(waiting)}}}; "
                    "the new config stays applied and loading continues",
                )
            self.manager.wait_for_change(min(0.5, max(0.01, deadline - time.monotonic())))


# ----------------------------------------------------------------------------------------------
# the server


def default_max_threads() -> int:
    """TF Serving's --grpc_max_threads default: 4 x the schedulable CPUs."""
    return max(4, 4 * (os.cpu_count() or 1))


class GrpcServer:
    """A ``grpc.server`` with both services, bound to ``host:port`` (0 picks a free port).

    ``port=None`` binds no TCP port (gRPC then only on ``socket_path``, a UNIX socket, as
    ``--grpc_socket_path``); ``credentials`` (``grpc.ssl_server_credentials``) serves both over
    TLS; ``health_check`` adds the standard ``grpc.health.v1.Health`` service, answering SERVING
    for the server ("") and each service; ``options`` are extra channel arguments.
    """

    def __init__(
        self,
        manager: ServableManager,
        *,
        host: str = "127.0.0.1",
        port: int | None = 0,
        max_threads: int = 0,
        reload_config: ReloadFn | None = None,
        reload_wait_s: float = DEFAULT_RELOAD_WAIT_S,
        options: Sequence[tuple[str, object]] = (),
        limits: RequestLimits | None = None,
        socket_path: str = "",
        credentials: grpc.ServerCredentials | None = None,
        health_check: bool = False,
    ):
        if port is None and not socket_path:
            raise ValueError("GrpcServer needs a port or a socket_path")
        self.manager = manager
        self.host = host
        self.requested_port = None if port is None else int(port)
        self.socket_path = socket_path
        self.credentials = credentials
        self.health_check = health_check
        self.health = None  # grpc_health.v1.health.HealthServicer once started with health_check
        self.max_threads = max_threads if max_threads and max_threads > 0 else default_max_threads()
        self.observers: list[Observer] = []
        self.prediction = PredictionServicer(manager, self.observers)
        self.model = ModelServicer(manager, self.observers, reload_config, reload_wait_s)
        self.generation = GenerationServicer(manager, self.observers)
        self.limits = limits
        self.prediction.limits = self.generation.limits = limits
        self._options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_LENGTH),
            ("grpc.max_receive_message_length", MAX_MESSAGE_LENGTH),
            ("grpc.so_reuseport", 0),  # two servers must never share a port
            *options,
        ]
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self.port: int | None = None

    @property
    def target(self) -> str:
        """``host:port`` of the started server (IPv6 hosts in brackets), else ``unix:<path>``."""
        if self._server is None:
            raise RuntimeError("the gRPC server is not started")
        if self.port is None:
            return f"unix:{self.socket_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self) -> GrpcServer:
        """Bind and serve; raises OSError when the address cannot be bound."""
        self._executor = futures.ThreadPoolExecutor(max_workers=self.max_threads, thread_name_prefix="serving-grpc")
        server = grpc.server(self._executor, options=self._options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self.prediction, server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(self.model, server)
        server.add_generic_rpc_handlers((self.generation.handler(),))
        if self.health_check:
            self.health = _add_health_service(server)
        host = f"[{self.host}]" if ":" in self.host else self.host
        addresses = [] if self.requested_port is None else [f"{host}:{self.requested_port}"]
        if self.socket_path:
            addresses.append(f"unix:{self.socket_path}")
        ports = []
        for address in addresses:
            try:
                if self.credentials is not None:
                    port = server.add_secure_port(address, self.credentials)
                else:
                    port = server.add_insecure_port(address)
            except RuntimeError as exc:
                port, reason = 0, str(exc)
            else:
                reason = "address in use or not available"
            if not port:
                server.stop(None)
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
                raise OSError(f"cannot bind the gRPC server to {address}: {reason}")
            ports.append(port)
        server.start()
        self._server = server
        self.port = ports[0] if self.requested_port is not None else None
        log.info("gRPC API at %s%s", self.target,
                 f" and unix:{self.socket_path}" if self.socket_path and self.port is not None else "")
        return self

    def stop(self, grace: float | None = 2.0) -> None:
        """Stop accepting RPCs; let running ones finish for up to ``grace`` seconds. Safe twice."""
        if self._server is not None:
            if self.health is not None:
                self.health.enter_graceful_shutdown()  # health checks answer NOT_SERVING from now
            self._server.stop(grace).wait(timeout=(grace or 0) + 5)
            self._server = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _add_health_service(server: grpc.Server):
    """``--enable_grpc_healthcheck_service``: grpc.health.v1.Health, SERVING for "" and each service."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
        servicer.set(service, serving)
    return servicer
