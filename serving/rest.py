"""TF Serving's REST API as an ASGI application (served by uvicorn in :mod:`serving.server`).

Routes (``model_servers/http_rest_api_util.cc``; case-insensitive; name and label URL-decoded):

* ``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:(predict|classify|regress)``
* ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}][/metadata]``

Any other ``/v1/...`` request is 400 "Malformed request: METHOD PATH"; a path outside ``/v1/``
is a plain (non-JSON) 404.  Errors are ``{"error": "..."}`` with the HTTP status TF Serving maps
the error's canonical code to.  Parsing, inference and JSON writing run in a thread pool so the
event loop never blocks; each call is bounded by ``--rest_api_timeout_in_ms`` (504 past it),
and request bodies by ``--max_request_bytes`` (400 past it, gzip bodies measured decoded).
Past the timeout the request's model call is cancelled (:mod:`serving.cancellation`): it stops
at its next step and its worker thread is free again.  Requests to a zoo LM export are also
held to ``--max_prompt_bytes``, ``--max_new_tokens_limit``, ``--max_batch_rows`` and
``--max_tokens_per_request`` and their sampling settings are checked
(:class:`serving.predict.RequestLimits`; 400 past them, before any model work).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

from zoo.export_contract import DEFAULT_SERVING_SIGNATURE

from .cancellation import Cancellation, deadline_exceeded
from .cancellation import scope as cancellation_scope
from .errors import ServingError, invalid_argument
from .json_util import encode_text
from .manager import ServableManager, VersionStatus
from .observers import notify
from .openai_api import COMPLETIONS_PATH, serve_completions
from .predict import RequestLimits, classify, predict, regress
from .tensors import (
    classify_response_json,
    error_json,
    parse_classify_regress_request,
    parse_predict_request,
    predict_response_json,
    regress_response_json,
)

__all__ = ["RequestRecord", "RestApp", "model_status_json", "model_metadata_json"]

log = logging.getLogger("serving")

_V1_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_PREDICTION_API = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_MODEL_STATUS_API = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_ORIGIN = re.compile(r"https?://.*", re.IGNORECASE)
_INT64_MAX = 2**63 - 1

_NOT_FOUND_BODY = (
    b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n</BODY></HTML>\n"
)
_CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, GET"),
    (b"access-control-allow-headers", b"Content-Type"),
]


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """What an observer (e.g. a metrics exporter) learns about each /v1 request."""

    api: str  # predict | classify | regress | status | metadata | "" (malformed)
    model_name: str
    http_status: int
    latency_s: float


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


def _decode_arg(text: str) -> str:
    """curl_easy_unescape: %XX decoding, '+' left alone."""
    return unquote(text, encoding="utf-8", errors="surrogateescape")


def model_status_json(statuses: list[VersionStatus]) -> str:
    """GetModelStatusResponse as JSON (protobuf JSON, every field printed)."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_status_pb2

    response = get_model_status_pb2.GetModelStatusResponse()
    for st in statuses:
        entry = response.model_version_status.add()
        entry.version = st.version
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(st.state.value)
        entry.status.SetInParent()
        entry.status.error_code = int(st.error_code)
        entry.status.error_message = st.error_message
    return json_format.MessageToJson(response, indent=2, always_print_fields_with_no_presence=True)


def model_metadata_json(servable) -> str:
    """GetModelMetadataResponse as TF Serving writes it (http_rest_api_util.cc ToJsonString)."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=servable.name)
    spec.version.value = servable.version
    opts = {"indent": 1, "preserving_proto_field_name": True, "always_print_fields_with_no_presence": True}
    spec_json = json_format.MessageToJson(spec, **opts)
    sig_json = json_format.MessageToJson(servable.signature_def_map(), **opts)
    return '{\n"model_spec":' + spec_json + ',\n"metadata": {"signature_def": ' + sig_json + "}\n}\n"


class RestApp:
    """The ASGI callable. ``manager`` answers every servable lookup."""

    def __init__(
        self,
        manager: ServableManager,
        *,
        timeout_ms: int = 30000,
        max_request_bytes: int = 16 * 1024 * 1024,
        num_threads: int = 8,
        enable_cors: bool = False,
        limits: RequestLimits | None = None,
    ):
        self.manager = manager
        self.limits = limits  # --max_prompt_bytes / --max_new_tokens_limit (None: no limits)
        self.timeout_s = timeout_ms / 1000.0 if timeout_ms and timeout_ms > 0 else None
        self.max_request_bytes = int(max_request_bytes)
        self.enable_cors = bool(enable_cors)
        self._executor = ThreadPoolExecutor(max_workers=max(1, num_threads), thread_name_prefix="serving-rest")
        self._routes: dict[str, Callable[[dict, bytes], Awaitable[tuple[int, list, bytes]]]] = {}
        self.observers: list[Callable[[RequestRecord], None]] = []
        self._stream_routes: list[tuple[re.Pattern, Callable[..., Awaitable[None]]]] = []

    def add_route(self, path: str, handler: Callable[[dict, bytes], Awaitable[tuple[int, list, bytes]]]) -> None:
        """Serve an exact path outside the /v1 API (e.g. a metrics page): handler(scope, body)."""
        self._routes[path] = handler

    def add_stream_route(self, pattern: re.Pattern, handler: Callable[..., Awaitable[None]]) -> None:
        """Serve POSTs whose path fullmatches ``pattern`` with a handler that sends the response
        itself (e.g. Server-Sent Events): ``handler(scope, receive, send, match, body)``."""
        self._stream_routes.append((pattern, handler))

    def record(self, api: str, model: str, status: int, latency_s: float) -> None:
        """Tell every observer about one finished request."""
        notify(self.observers, RequestRecord(api, model, status, latency_s), what="request observer")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method = scope["method"]
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        path = raw_path.decode("latin-1")
        if path in self._routes:
            try:
                body = await self._read_body(scope, receive)
            except (_TooLarge, _Disconnected):
                return
            status, headers, payload = await self._routes[path](scope, body)
            await self._send(send, status, headers, payload)
            return
        if method == "POST" and path == COMPLETIONS_PATH:  # zoo extension: OpenAI's completions API
            await serve_completions(self, scope, receive, send)
            return
        if not _V1_PATH.fullmatch(path):
            await self._send(send, 404, [(b"content-type", b"text/html")], _NOT_FOUND_BODY)
            return
        if method == "POST":
            for pattern, handler in self._stream_routes:
                match = pattern.fullmatch(path)
                if match is not None:
                    try:
                        body = await self._read_body(scope, receive)
                    except _Disconnected:
                        return
                    except _TooLarge:
                        text = error_json(f"Request body is larger than the limit of {self.max_request_bytes} "
                                          "bytes (--max_request_bytes)")
                        await self._send(send, 400, [(b"content-type", b"application/json")], encode_text(text))
                        return
                    await handler(scope, receive, send, match, body)
                    return
        if method == "OPTIONS":
            origin = _header(scope, b"origin")
            status = 200 if origin is not None and _ORIGIN.fullmatch(origin) else 400
            await self._send(send, status, self._cors(), b"")
            return
        started = time.monotonic()
        api, model = "", ""
        token = Cancellation()
        try:
            body = await self._read_body(scope, receive)
            gzip = (_header(scope, b"content-encoding") or "").strip().lower() == "gzip"
            future = self._executor.submit(self._handle_cancellable, token, method, path, body, gzip)
            wrapped = asyncio.wrap_future(future)
            if self.timeout_s is None:
                status, text, api, model = await wrapped
            else:
                status, text, api, model = await asyncio.wait_for(wrapped, self.timeout_s)
        except _Disconnected:
            return
        except _TooLarge:
            status, text = 400, error_json(
                f"Request body is larger than the limit of {self.max_request_bytes} bytes (--max_request_bytes)"
            )
        except asyncio.TimeoutError:
            ms = int(self.timeout_s * 1000) if self.timeout_s else 0
            error = deadline_exceeded(
                f"Deadline Exceeded: the request did not finish within {ms} ms (--rest_api_timeout_in_ms)")
            token.cancel(error)  # the model call stops at its next step and frees its thread
            status, text = 504, error_json(error.message)
        # counted before the answer goes out, so a client that scrapes the metrics right after
        # its answer sees its own request
        self.record(api, model, status, time.monotonic() - started)
        headers = [(b"content-type", b"application/json"), *self._cors()]
        await self._send(send, status, headers, encode_text(text))

    def _cors(self) -> list[tuple[bytes, bytes]]:
        return list(_CORS_HEADERS) if self.enable_cors else []

    async def _read_body(self, scope, receive) -> bytes:
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_request_bytes:
            raise _TooLarge()
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected()
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_request_bytes:
                raise _TooLarge()
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _send(send, status: int, headers: list, body: bytes) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode("ascii"))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # ------------------------------------------------------------------ handlers (worker thread)

    def _handle_cancellable(self, token: Cancellation, method: str, path: str, body: bytes,
                            gzip: bool) -> tuple[int, str, str, str]:
        with cancellation_scope(token):
            return self._handle(method, path, body, gzip)

    def _handle(self, method: str, path: str, body: bytes, gzip: bool) -> tuple[int, str, str, str]:
        api, model = "", ""
        try:
            m = _PREDICTION_API.fullmatch(path) if method == "POST" else None
            if m is not None:  # so that a failed request is still attributed (metrics)
                api, model = m.group(4).lower(), _decode_arg(m.group(1))
            if gzip:
                body = self._gunzip(body)
            api, model, text = self.dispatch(method, path, body)
            return 200, text, api, model
        except ServingError as exc:
            return exc.http_status, error_json(exc.message), api, model
        except _TooLarge:
            return 400, error_json(
                f"Request body is larger than the limit of {self.max_request_bytes} bytes (--max_request_bytes)"
            ), api, model
        except RecursionError:
            return 400, error_json("JSON value is nested too deeply"), api, model
        except MemoryError:
            return 429, error_json("Out of memory while processing the request"), api, model
        except Exception as exc:
            log.exception("internal error on %s %s", method, path)
            return 500, error_json(f"Internal error: {type(exc).__name__}: {exc}"), api, model

    def _gunzip(self, body: bytes) -> bytes:
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = decoder.decompress(body, self.max_request_bytes + 1)
        except zlib.error as exc:
            raise invalid_argument(f"Failed to decompress gzip request body: {exc}") from None
        if len(out) > self.max_request_bytes or decoder.unconsumed_tail:
            raise _TooLarge()
        return out

    def dispatch(self, method: str, path: str, body: bytes) -> tuple[str, str, str]:
        """Route one /v1 request; returns (api, model name, JSON text) or raises ServingError."""
        malformed = invalid_argument(f"Malformed request: {method} {path}")
        if method == "POST":
            m = _PREDICTION_API.fullmatch(path)
            if m is None:
                raise malformed
            name, version, label = self._model_info(m)
            verb = m.group(4)
            if verb == "predict":
                return "predict", name, self._predict(name, version, label, body)
            if verb in ("classify", "regress"):
                return verb, name, self._classify_regress(verb, name, version, label, body)
            raise malformed
        if method == "GET":
            m = _MODEL_STATUS_API.fullmatch(path)
            if m is None:
                raise malformed
            name, version, label = self._model_info(m)
            if not name:
                raise invalid_argument("Missing model name in request.")
            if m.group(4) == "metadata":
                servable = self.manager.get_servable(name, version, label)
                return "metadata", name, model_metadata_json(servable)
            # TF Serving's GetModelStatus ignores a label: every version is listed.
            return "status", name, model_status_json(self.manager.model_status(name, version))
        raise malformed

    @staticmethod
    def _model_info(m: re.Match) -> tuple[str, int | None, str | None]:
        name = _decode_arg(m.group(1)) if m.group(1) else ""
        version = None
        if m.group(2):
            value = int(m.group(2))
            if value > _INT64_MAX:
                raise invalid_argument(f"Failed to convert version: {m.group(2)} to numeric.")
            version = value
        label = _decode_arg(m.group(3)) if m.group(3) else None
        return name, version, label

    def _predict(self, name: str, version: int | None, label: str | None, body: bytes) -> str:
        found = {}

        def input_dtypes(signature_name: str):
            servable = self.manager.get_servable(name, version, label)
            key = signature_name or DEFAULT_SERVING_SIGNATURE
            sig = servable.signature(key)
            if sig is None:
                raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
            found["servable"] = servable
            return {alias: info.dtype for alias, info in sig.inputs.items()}

        request = parse_predict_request(body, input_dtypes)
        inputs = request.inputs
        if self.limits is not None:
            inputs = self.limits.check_inputs(found["servable"], inputs)
        outputs = predict(found["servable"], request.signature_name, inputs)
        return predict_response_json(outputs, request.format)

    def _classify_regress(self, verb: str, name: str, version: int | None, label: str | None, body: bytes) -> str:
        request = parse_classify_regress_request(body)
        servable = self.manager.get_servable(name, version, label)
        if verb == "classify":
            results = classify(servable, request.signature_name, request.examples, request.context)
            return classify_response_json(results)
        values = regress(servable, request.signature_name, request.examples, request.context)
        return regress_response_json(values)


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None

