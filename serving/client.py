"""Clients for a model server speaking TF Serving's APIs: :class:`RestClient` and :class:`GrpcClient`.

Both have the same methods and return the same values, so a notebook or a test can switch
protocols by switching the class::

    from serving.client import GrpcClient, RestClient
    rest = RestClient("http://127.0.0.1:8501")
    grpc = GrpcClient("127.0.0.1:8500")
    rest.generate("shakespeare", "ROMEO:", max_new_tokens=16)        # -> str
    grpc.generate("shakespeare", ["ROMEO:", "JULIET:"])                # -> list[str]
    grpc.score("shakespeare", ["To be, or not to be"])                 # -> [{"log_likelihood": ...}]
    rest.predict("half_plus_two", {"x": [1.0, 2.0]})                    # -> {"y": array([2.5, 3.])}
    rest.metadata("half_plus_two"); grpc.status("half_plus_two")        # REST's JSON, as dicts

* ``predict(model, inputs, signature_name=None, version=None)`` -> ``{alias: np.ndarray}``;
  strings come back as ``bytes`` in ``object`` arrays. Inputs that are not numpy arrays are
  converted to the signature's dtypes (read once from the model's metadata).
* ``generate`` and ``score`` call the ``generate`` and ``score`` signatures of a zoo export
  (``export.saved_model``); ``generate_stream(model, prompt, max_new_tokens=None, ...)`` yields
  the continuation's text pieces as the server produces them (REST: ``:generate_stream`` SSE;
  gRPC: ``zoo.serving.GenerationService/GenerateStream``).
* ``metadata`` and ``status`` return TF Serving's REST JSON as dicts; the gRPC client converts
  its protos to the same JSON, so both clients give equal dicts.

Every failure reported by the server raises :class:`ServingClientError` with the HTTP status
(REST) or the gRPC status code, and the server's message. The REST client uses only the
standard library; the gRPC client needs ``grpcio``, ``tensorflow`` and ``tensorflow-serving-api``.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from zoo.export_contract import (
    DEFAULT_SERVING_SIGNATURE,
    GENERATE_SIGNATURE,
    GENERATE_STREAM_METHOD,
    MAX_MESSAGE_LENGTH,
    SCORE_SIGNATURE,
    SIGNATURE_DEF_FIELD,
)

__all__ = ["GrpcClient", "RestClient", "ServingClientError"]

_NUMPY_DTYPES = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_HALF": np.float16,
    "DT_INT8": np.int8,
    "DT_INT16": np.int16,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_UINT8": np.uint8,
    "DT_UINT16": np.uint16,
    "DT_UINT32": np.uint32,
    "DT_UINT64": np.uint64,
    "DT_BOOL": np.bool_,
    "DT_STRING": object,
}
_INT32_MAX = 2**31 - 1


class ServingClientError(Exception):
    """The server answered with an error.

    Attributes: ``message`` (the server's text), ``http_status`` (REST, else None),
    ``grpc_code`` (a ``grpc.StatusCode`` for gRPC, else None) and ``code`` (the code's name for
    gRPC, e.g. ``"NOT_FOUND"``; None for REST).
    """

    def __init__(self, message: str, *, http_status: int | None = None, grpc_code=None):
        self.message = message
        self.http_status = http_status
        self.grpc_code = grpc_code
        self.code = grpc_code.name if grpc_code is not None else None
        where = f"HTTP {http_status}" if http_status is not None else f"gRPC {self.code}"
        super().__init__(f"{where}: {message}")


def _as_bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return bytes(value)


def _string_array(value) -> np.ndarray:
    arr = np.asarray(value, dtype=object)
    flat = [_as_bytes(v) for v in arr.reshape(-1).tolist()]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(arr.shape)


def _coerce_input(value, dtype_name: str | None):
    """Non-numpy inputs become arrays of the signature's dtype; numpy arrays are sent as they are."""
    if isinstance(value, np.ndarray) or dtype_name is None:
        return value
    if dtype_name == "DT_STRING":
        return _string_array(value)
    np_dtype = _NUMPY_DTYPES.get(dtype_name)
    return value if np_dtype is None else np.asarray(value, dtype=np_dtype)


class _Client:
    """What both clients share: the signature cache, ``generate`` and ``score``."""

    def __init__(self):
        self._signatures: dict[tuple[str, int | None], dict] = {}
        self._lock = threading.Lock()

    # subclasses implement these
    def predict(self, model: str, inputs: Mapping[str, object], signature_name: str | None = None,
                version: int | None = None) -> dict[str, np.ndarray]:
        """Run a signature on named inputs; returns the outputs by alias as numpy arrays."""
        raise NotImplementedError

    def metadata(self, model: str, version: int | None = None) -> dict:
        """The model's metadata as TF Serving's REST JSON (a dict)."""
        raise NotImplementedError

    def status(self, model: str, version: int | None = None) -> dict:
        """The model's version status as TF Serving's REST JSON (a dict)."""
        raise NotImplementedError

    def signature(self, model: str, signature_name: str | None = None, version: int | None = None,
                  refresh: bool = False) -> dict:
        """The signature's JSON (``inputs``/``outputs`` with ``dtype``...) from the model's metadata."""
        key = (model, version)
        with self._lock:
            sigs = None if refresh else self._signatures.get(key)
        if sigs is None:
            meta = self.metadata(model, version)
            sigs = meta["metadata"][SIGNATURE_DEF_FIELD]["signature_def"]
            with self._lock:
                self._signatures[key] = sigs
        name = signature_name or DEFAULT_SERVING_SIGNATURE
        if name not in sigs and not refresh:
            return self.signature(model, signature_name, version, refresh=True)
        return sigs.get(name, {})

    def _input_dtypes(self, model, signature_name, version) -> dict[str, str]:
        try:
            sig = self.signature(model, signature_name, version)
        except ServingClientError:
            return {}  # the predict call itself reports the problem
        return {alias: info.get("dtype") for alias, info in sig.get("inputs", {}).items()}

    def generate(self, model: str, text_or_list, max_new_tokens: int | None = None, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int = 0, version: int | None = None):
        """Continuations from a zoo export's ``generate`` signature (greedy by default).

        ``max_new_tokens=None`` uses the export's bound. Every row gets the same settings and
        ``seed``. Returns a ``str`` for a ``str`` prompt, else a list.
        """
        single = isinstance(text_or_list, (str, bytes))
        prompts = [text_or_list] if single else list(text_or_list)
        n = len(prompts)
        budget = _INT32_MAX if max_new_tokens is None else int(max_new_tokens)
        inputs = {
            "prompt": _string_array(prompts) if n else np.empty([0], dtype=object),
            "max_new_tokens": np.full([n], budget, np.int32),
            "temperature": np.full([n], temperature, np.float32),
            "top_k": np.full([n], top_k, np.int32),
            "top_p": np.full([n], top_p, np.float32),
            "seed": np.full([n], seed, np.int64),
        }
        out = self.predict(model, inputs, signature_name=GENERATE_SIGNATURE, version=version)
        texts = [_as_bytes(t).decode("utf-8", "replace") for t in out["text"].reshape(-1).tolist()]
        return texts[0] if single else texts

    def score(self, model: str, texts, version: int | None = None):
        """Log-likelihoods from a zoo export's ``score`` signature.

        Returns ``{"log_likelihood", "num_tokens", "perplexity"}`` per text (a single dict for a
        ``str``).
        """
        single = isinstance(texts, (str, bytes))
        rows = [texts] if single else list(texts)
        out = self.predict(model, {"text": _string_array(rows) if rows else np.empty([0], dtype=object)},
                           signature_name=SCORE_SIGNATURE, version=version)
        result = [
            {
                "log_likelihood": float(out["log_likelihood"][i]),
                "num_tokens": int(out["num_tokens"][i]),
                "perplexity": float(out["perplexity"][i]),
            }
            for i in range(len(rows))
        ]
        return result[0] if single else result


# ----------------------------------------------------------------------------------------------
# REST


def _to_json_value(arr):
    if isinstance(arr, np.ndarray):
        if arr.dtype.kind in ("O", "S", "U"):
            return _to_json_value(arr.tolist())
        return arr.tolist()
    if isinstance(arr, (list, tuple)):
        return [_to_json_value(v) for v in arr]
    if isinstance(arr, bytes):
        return {"b64": base64.b64encode(arr).decode("ascii")}
    if isinstance(arr, np.generic):
        return arr.item()
    return arr


def _from_json_value(value, dtype_name: str | None) -> np.ndarray:
    if dtype_name == "DT_STRING":
        return _string_array(_map_strings(value))
    np_dtype = _NUMPY_DTYPES.get(dtype_name or "")
    return np.asarray(value, dtype=np_dtype) if np_dtype is not None else np.asarray(value)


def _map_strings(value):
    if isinstance(value, list):
        return [_map_strings(v) for v in value]
    if isinstance(value, dict) and "b64" in value:
        return base64.b64decode(value["b64"])
    return _as_bytes(value)


def _http_error(exc: urllib.error.HTTPError) -> ServingClientError:
    """The server's error answer as a ServingClientError: the ``error`` of its JSON body, else the body."""
    raw = exc.read()
    try:
        message = json.loads(raw.decode("utf-8", "surrogateescape"))["error"]
    except (ValueError, KeyError, TypeError):
        message = raw.decode("utf-8", "replace") or exc.reason
    return ServingClientError(str(message), http_status=exc.code)


class RestClient(_Client):
    """TF Serving's REST API over HTTP (``urllib``); ``url`` like ``http://127.0.0.1:8501``."""

    def __init__(self, url: str, timeout: float = 60.0):
        super().__init__()
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _path(self, model: str, version: int | None) -> str:
        path = "/v1/models/" + urllib.parse.quote(model, safe="")
        if version is not None:
            path += f"/versions/{int(version)}"
        return path

    def request(self, method: str, path: str, body: dict | None = None):
        """One call to the server; returns the parsed JSON or raises ServingClientError."""
        data = None
        headers = {}
        if body is not None:
            data = json.dumps(body, allow_nan=True).encode("utf-8", "surrogateescape")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:  # noqa: S310 - http(s) URL
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        return json.loads(raw.decode("utf-8", "surrogateescape"))

    def predict(self, model, inputs, signature_name=None, version=None):
        """``POST .../:predict`` (columnar ``inputs``); see :meth:`_Client.predict`."""
        dtypes = self._input_dtypes(model, signature_name, version)
        body: dict = {"inputs": {k: _to_json_value(_coerce_input(v, dtypes.get(k))) for k, v in inputs.items()}}
        if signature_name:
            body["signature_name"] = signature_name
        reply = self.request("POST", self._path(model, version) + ":predict", body)
        outputs = reply["outputs"]
        sig = self.signature(model, signature_name, version)
        out_info = sig.get("outputs", {})
        if len(out_info) == 1:
            alias = next(iter(out_info))
            return {alias: _from_json_value(outputs, out_info[alias].get("dtype"))}
        return {k: _from_json_value(v, out_info.get(k, {}).get("dtype")) for k, v in outputs.items()}

    def metadata(self, model, version=None):
        """``GET .../metadata``."""
        return self.request("GET", self._path(model, version) + "/metadata")

    def generate_stream(self, model: str, prompt: str, max_new_tokens: int | None = None,
                        temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                        version: int | None = None) -> Iterator[str]:
        """Text pieces from ``:generate_stream`` (Server-Sent Events), yielded as they arrive.

        The pieces join into ``generate``'s continuation. An error before the stream starts
        raises :class:`ServingClientError` with its HTTP status; one in the middle of the
        stream (an ``error`` event) raises it with ``http_status=500``.
        """
        body: dict = {"prompt": prompt, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                      "seed": seed}
        if max_new_tokens is not None:
            body["max_new_tokens"] = int(max_new_tokens)
        req = urllib.request.Request(
            self.url + self._path(model, version) + ":generate_stream",
            data=json.dumps(body).encode("utf-8", "surrogateescape"), method="POST",
            headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
        )
        try:
            response = urllib.request.urlopen(req, timeout=self.timeout)  # noqa: S310 - http(s) URL
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        with response:
            event, data = "message", []
            for raw_line in response:
                line = raw_line.decode("utf-8").rstrip("\r\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
                elif line == "" and data:
                    payload = json.loads("\n".join(data))
                    if event == "error":
                        raise ServingClientError(str(payload.get("error", "")), http_status=500)
                    if event == "done":
                        return
                    yield payload.get("text", "")
                    event, data = "message", []

    def status(self, model, version=None):
        """``GET /v1/models/{model}[/versions/{version}]``."""
        return self.request("GET", self._path(model, version))


# ----------------------------------------------------------------------------------------------
# gRPC


class GrpcClient(_Client):
    """TF Serving's gRPC API with the stock stubs; ``target`` like ``127.0.0.1:8500``."""

    def __init__(self, target: str, timeout: float = 60.0, channel=None):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        super().__init__()
        self.target = target
        self.timeout = timeout
        self._own_channel = channel is None
        self.channel = channel or grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_LENGTH),
                ("grpc.max_receive_message_length", MAX_MESSAGE_LENGTH),
            ],
        )
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        """Close the channel if this client opened it."""
        if self._own_channel:
            self.channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request):
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise ServingClientError(exc.details() or "", grpc_code=exc.code()) from None

    @staticmethod
    def _spec(spec, model: str, version: int | None, signature_name: str | None = None) -> None:
        spec.name = model
        if version is not None:
            spec.version.value = int(version)
        if signature_name:
            spec.signature_name = signature_name

    def predict(self, model, inputs, signature_name=None, version=None, output_filter: Sequence[str] = ()):
        """``PredictionService.Predict``; see :meth:`_Client.predict` (``output_filter`` picks outputs)."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        dtypes = self._input_dtypes(model, signature_name, version)
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, model, version, signature_name)
        for alias, value in inputs.items():
            value = _coerce_input(value, dtypes.get(alias))
            if isinstance(value, np.ndarray) and value.dtype.kind == "O":
                request.inputs[alias].CopyFrom(tf.make_tensor_proto(value, dtype=tf.string))
            else:
                request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
        request.output_filter.extend(output_filter)
        response = self._call(self.prediction.Predict, request)
        return {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}

    def metadata(self, model, version=None):
        """``GetModelMetadata`` converted to the REST API's JSON."""
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[SIGNATURE_DEF_FIELD])
        self._spec(request.model_spec, model, version)
        response = self._call(self.prediction.GetModelMetadata, request)
        sigs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(sigs)
        opts = {"preserving_proto_field_name": True, "always_print_fields_with_no_presence": True}
        return {
            "model_spec": json_format.MessageToDict(response.model_spec, **opts),
            "metadata": {SIGNATURE_DEF_FIELD: json_format.MessageToDict(sigs, **opts)},
        }

    def status(self, model, version=None):
        """``ModelService.GetModelStatus`` converted to the REST API's JSON."""
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model, version)
        response = self._call(self.models.GetModelStatus, request)
        return json.loads(json_format.MessageToJson(response, always_print_fields_with_no_presence=True))

    def generate_stream(self, model: str, prompt: str, max_new_tokens: int | None = None,
                        temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                        version: int | None = None) -> Iterator[str]:
        """Text pieces from ``zoo.serving.GenerationService/GenerateStream``, one per token (and
        maybe a last token-less one), yielded as they arrive; they join into ``generate``'s
        continuation. Errors raise :class:`ServingClientError` with the gRPC code."""
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, model, version)
        request.inputs["prompt"].CopyFrom(tf.make_tensor_proto([_as_bytes(prompt)], dtype=tf.string))
        if max_new_tokens is not None:
            request.inputs["max_new_tokens"].CopyFrom(tf.make_tensor_proto([int(max_new_tokens)], dtype=tf.int64))
        request.inputs["temperature"].CopyFrom(tf.make_tensor_proto([temperature], dtype=tf.float32))
        request.inputs["top_k"].CopyFrom(tf.make_tensor_proto([top_k], dtype=tf.int32))
        request.inputs["top_p"].CopyFrom(tf.make_tensor_proto([top_p], dtype=tf.float32))
        request.inputs["seed"].CopyFrom(tf.make_tensor_proto([seed], dtype=tf.int64))
        method = self.channel.unary_stream(
            GENERATE_STREAM_METHOD,
            request_serializer=predict_pb2.PredictRequest.SerializeToString,
            response_deserializer=predict_pb2.PredictResponse.FromString,
        )
        call = method(request, timeout=self.timeout)
        try:
            for response in call:
                yield _as_bytes(response.outputs["text"].string_val[0]).decode("utf-8", "replace")
        except grpc.RpcError as exc:
            raise ServingClientError(exc.details() or "", grpc_code=exc.code()) from None
        finally:
            call.cancel()

    def reload_config(self, config_text: str) -> None:
        """HandleReloadConfigRequest with a text-format ``ModelServerConfig``."""
        from google.protobuf import text_format
        from tensorflow_serving.apis import model_management_pb2

        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(config_text, request.config)
        self._call(self.models.HandleReloadConfigRequest, request)
