"""Token streaming over gRPC: ``zoo.serving.GenerationService/GenerateStream`` (beyond TF Serving).

A server-streaming method registered on the same gRPC server as TF Serving's services, with
``grpc.method_handlers_generic_handler``: its messages are TF Serving's stock ones, so nothing
is compiled at install time (``serving/protos/zoo_generation.proto`` describes the service for
client authors in other languages)::

    service GenerationService {
      rpc GenerateStream(tensorflow.serving.PredictRequest) returns (stream tensorflow.serving.PredictResponse);
    }

Request: ``model_spec`` (name, and optionally ``version`` or ``version_label``; its
``signature_name`` is ignored) and ``inputs``: ``prompt`` (DT_STRING, one element, required),
and optionally ``max_new_tokens`` (integer), ``temperature`` (number), ``top_k`` (integer),
``top_p`` (number), ``seed`` (integer), each one element.  They mean what they mean for the
REST ``:generate_stream`` route (:mod:`serving.streaming`), whose decoding loop
(:func:`serving.streaming.stream_events`) this reuses: greedy by default, a missing
``max_new_tokens`` is the export's bound, the same seed gives ``generate``'s tokens.

Responses, one per token as soon as it is chosen: ``model_spec`` (name and version that
answered) and ``outputs``: ``text`` (DT_STRING ``[1]``, the new text; may be empty while a
multi-byte character is incomplete) and ``token_id`` (DT_INT32 ``[1]``).  When text was held
back to the end, one last response carries only ``text``.  The pieces' texts concatenate to
the continuation; the stream then ends with status OK.

Errors (TF Serving's codes): NOT_FOUND for an unknown model or version, INVALID_ARGUMENT for a
missing ``model_spec``/``prompt``, an unknown input, a badly typed or sized one, or a limit
passed (``--max_prompt_bytes``, ``--max_new_tokens_limit``), FAILED_PRECONDITION when the
servable has no streaming signatures (``stream_start``, ``stream_step``, ``detokenize``:
export with ``export.saved_model(..., streaming=True)``).  An error in the middle of a stream
ends it with that error's status.  A client that cancels, or a deadline that passes, cancels
the model step in progress and ends the decoding (:func:`serving.grpc_common.rpc_cancellation`).
Sampling settings out of range (NaN, inf or negative ``temperature``, ``top_p`` outside
``(0, 1]``, negative ``top_k``) and ``--max_tokens_per_request`` are INVALID_ARGUMENT too.
"""

from __future__ import annotations

import logging
import math
import time

import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2

from zoo.export_contract import GENERATE_STREAM, GENERATION_SERVICE

from .errors import Code, ServingError, from_exception, invalid_argument
from .grpc_common import (
    ServicerBase,
    ndarray_to_tensor_proto,
    require_spec,
    rpc_cancellation,
    tensor_proto_to_ndarray,
    truncate_message,
)
from .streaming import check_limits, missing_stream_signature, stream_events

__all__ = ["GenerationServicer", "parse_stream_request"]

log = logging.getLogger("serving")

# alias -> (kind, default): "int" inputs need an integer dtype, "float" ones any number.
_OPTIONAL = {
    "max_new_tokens": ("int", None),
    "temperature": ("float", 0.0),
    "top_k": ("int", 0),
    "top_p": ("float", 1.0),
    "seed": ("int", 0),
}
_RANGES = {
    "max_new_tokens": (-(2**63), 2**63 - 1, "int64"),
    "seed": (-(2**63), 2**63 - 1, "int64"),
    "top_k": (-(2**31), 2**31 - 1, "int32"),
}


def _one(proto, alias: str) -> np.ndarray:
    arr = tensor_proto_to_ndarray(proto, alias)
    if arr.size != 1:
        raise invalid_argument(f"input {alias} must have exactly one element, got shape {list(arr.shape)}")
    return arr.reshape(-1)


def parse_stream_request(request) -> dict:
    """The inputs of a GenerateStream ``PredictRequest`` as the dict :func:`stream_events` takes."""
    unknown = sorted(set(request.inputs) - {"prompt", *_OPTIONAL})
    if unknown:
        raise invalid_argument(
            f"unknown input(s) {{{','.join(unknown)}}}: GenerateStream takes prompt, "
            + ", ".join(_OPTIONAL)
        )
    if "prompt" not in request.inputs:
        raise invalid_argument("Missing input 'prompt' (DT_STRING, one element)")
    prompt = _one(request.inputs["prompt"], "prompt")[0]
    if not isinstance(prompt, bytes):
        raise invalid_argument("input prompt must be DT_STRING")
    try:
        text = prompt.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_argument("input prompt is not valid UTF-8") from None
    out: dict = {"prompt": text}
    for alias, (kind, default) in _OPTIONAL.items():
        if alias not in request.inputs:
            out[alias] = default
            continue
        arr = _one(request.inputs[alias], alias)
        if kind == "int":
            if arr.dtype.kind not in ("i", "u"):
                raise invalid_argument(f"input {alias} must be an integer, got {arr.dtype}")
            value = int(arr[0])
            low, high, name = _RANGES[alias]
            if not low <= value <= high:
                raise invalid_argument(f"input {alias} must fit in {name}")
        else:
            if arr.dtype.kind not in ("i", "u", "f"):
                raise invalid_argument(f"input {alias} must be a number, got {arr.dtype}")
            value = float(arr[0])
            if not math.isfinite(value):
                raise invalid_argument(f"input {alias} must be finite")
        out[alias] = value
    return out


class GenerationServicer(ServicerBase):
    """``zoo.serving.GenerationService`` on a :class:`serving.manager.ServableManager`."""

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to pass to ``server.add_generic_rpc_handlers``."""
        return grpc.method_handlers_generic_handler(GENERATION_SERVICE, {
            GENERATE_STREAM: grpc.unary_stream_rpc_method_handler(
                self.GenerateStream,
                request_deserializer=predict_pb2.PredictRequest.FromString,
                response_serializer=predict_pb2.PredictResponse.SerializeToString,
            ),
        })

    def prepare(self, request):
        """Look the servable up and check the request: (servable, stream request dict)."""
        require_spec(request)
        servable = self.servable_for(request.model_spec)
        key = missing_stream_signature(servable)
        if key is not None:
            raise ServingError(
                Code.FAILED_PRECONDITION,
                f'Serving signature key "{key}" not found: model {request.model_spec.name} cannot stream '
                "(export it with export.saved_model(..., streaming=True))",
            )
        params = parse_stream_request(request)
        check_limits(servable, params, self.limits)
        return servable, params

    @staticmethod
    def _response(name: str, version: int, data: dict):
        response = predict_pb2.PredictResponse()
        response.model_spec.name = name
        response.model_spec.version.value = int(version)
        response.outputs["text"].CopyFrom(
            ndarray_to_tensor_proto(np.array([data["text"].encode("utf-8")], dtype=object)))
        if "token_id" in data:
            response.outputs["token_id"].CopyFrom(ndarray_to_tensor_proto(np.array([data["token_id"]], np.int32)))
        return response

    def GenerateStream(self, request, context):  # noqa: N802 - gRPC method name
        """Yield one ``PredictResponse`` per token; errors end the stream with their status."""
        started = time.monotonic()
        error: ServingError | None = None
        finished = False
        events = None
        try:
            servable, params = self.prepare(request)
            events = stream_events(servable, params, rpc_cancellation(context))
            for event, data in events:
                if event == "done":
                    break
                if context is not None and not context.is_active():
                    return
                yield self._response(request.model_spec.name, servable.version, data)
            finished = True
        except ServingError as exc:
            error = exc
        except RecursionError:
            error = ServingError(Code.INVALID_ARGUMENT, "Request is nested too deeply")
        except Exception as exc:  # never leak a Python traceback through gRPC
            log.exception("gRPC GenerateStream failed")
            error = from_exception(exc)
        finally:
            if events is not None:
                events.close()
            code = error.code if error is not None else (Code.OK if finished else Code.CANCELLED)
            self._observe("GenerateStream", request.model_spec.name, code, time.monotonic() - started)
        if error is not None:
            context.abort(grpc.StatusCode[error.code.name], truncate_message(error.message))
