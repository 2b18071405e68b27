"""What the gRPC front ends share: the TensorProto codec, error texts, and the servicer base.

:mod:`serving.grpc_server` (TF Serving's ``PredictionService`` and ``ModelService``) and
:mod:`serving.grpc_streaming` (the zoo's ``GenerationService``) both build on this module;
``grpc_streaming`` never imports ``grpc_server`` (whose ``GrpcServer`` registers the streaming
servicer beside its own).  The names on the wire that the clients use too (the streaming
service's name and method, the message size limit) live in :mod:`zoo.export_contract`.

* :func:`ndarray_to_tensor_proto` / :func:`tensor_proto_to_ndarray`: numpy <-> ``TensorProto``
  as TF Serving writes and parses them; a proto whose shape asks for far more elements than it
  carries is refused once the filled tensor would pass :data:`MAX_FILLED_TENSOR_BYTES`.
* :func:`truncate_message`: an error message cut to :data:`ERROR_MESSAGE_LIMIT` bytes
  (grpc_status_util.cc).
* :class:`ServicerBase`: servable lookup by ``ModelSpec`` and the report of each RPC
  (:class:`GrpcRequestRecord`) to the server's observers.
* :func:`rpc_cancellation`: a request's cancellation, tied to the RPC's deadline and cancel.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .cancellation import Cancellation
from .errors import Code, ServingError, invalid_argument
from .observers import notify

if TYPE_CHECKING:
    from tensorflow.core.framework.tensor_pb2 import TensorProto

    from .manager import ServableManager
    from .predict import RequestLimits
    from .servable import Servable

__all__ = [
    "ERROR_MESSAGE_LIMIT",
    "GrpcRequestRecord",
    "MAX_FILLED_TENSOR_BYTES",
    "Observer",
    "ServicerBase",
    "ndarray_to_tensor_proto",
    "require_spec",
    "rpc_cancellation",
    "tensor_proto_to_ndarray",
    "truncate_message",
]

log = logging.getLogger("serving")

ERROR_MESSAGE_LIMIT = 1024  # grpc_status_util.cc kErrorMessageLimit
MAX_FILLED_TENSOR_BYTES = 256 * 1024 * 1024


def truncate_message(message: str) -> str:
    """grpc_status_util.cc ToGRPCStatus: keep 1024 bytes, then ``...TRUNCATED``."""
    raw = message.encode("utf-8", "surrogateescape")
    if len(raw) <= ERROR_MESSAGE_LIMIT:
        return message
    return raw[:ERROR_MESSAGE_LIMIT].decode("utf-8", "ignore") + "...TRUNCATED"


# ----------------------------------------------------------------------------------------------
# TensorProto <-> numpy

_COMPLEX_FIELDS = ("scomplex_val", "dcomplex_val")  # two values (real, imaginary) per element


@functools.lru_cache(maxsize=1)
def _fields() -> dict[int, str]:
    """The typed value field of a TensorProto for each DataType that has one."""
    from tensorflow.core.framework import types_pb2 as t

    return {
        t.DT_FLOAT: "float_val",
        t.DT_DOUBLE: "double_val",
        t.DT_INT32: "int_val",
        t.DT_INT16: "int_val",
        t.DT_INT8: "int_val",
        t.DT_UINT8: "int_val",
        t.DT_UINT16: "int_val",
        t.DT_INT64: "int64_val",
        t.DT_UINT32: "uint32_val",
        t.DT_UINT64: "uint64_val",
        t.DT_BOOL: "bool_val",
        t.DT_STRING: "string_val",
        t.DT_HALF: "half_val",
        t.DT_BFLOAT16: "half_val",
        t.DT_COMPLEX64: "scomplex_val",
        t.DT_COMPLEX128: "dcomplex_val",
    }


def ndarray_to_tensor_proto(value: Any) -> TensorProto:
    """A numpy array (or anything ``np.asarray`` takes) as a TensorProto with typed value fields.

    Mirrors ``Tensor::AsProtoField`` (what TF Serving's Predict writes): ``float_val``,
    ``int64_val``, ``string_val``... rather than ``tensor_content``; other dtypes fall back to
    ``tf.make_tensor_proto``.
    """
    import tensorflow as tf

    if hasattr(value, "numpy"):
        value = value.numpy()
    arr = np.asarray(value)
    if arr.dtype.kind == "U":
        arr = np.array([s.encode("utf-8") for s in arr.reshape(-1).tolist()], dtype=object).reshape(arr.shape)
    if arr.dtype.kind in ("O", "S"):
        dtype = tf.string
    else:
        try:
            dtype = tf.as_dtype(arr.dtype)
        except TypeError:
            return tf.make_tensor_proto(arr)
    field = _fields().get(dtype.as_datatype_enum)
    if field is None:
        return tf.make_tensor_proto(arr)
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    proto.tensor_shape.CopyFrom(
        tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in arr.shape])
    )
    flat = arr.reshape(-1)
    if flat.size == 0:
        return proto
    if dtype == tf.string:
        proto.string_val.extend(
            v if isinstance(v, bytes) else (v.encode("utf-8") if isinstance(v, str) else bytes(v)) for v in flat.tolist()
        )
    elif field == "half_val":
        proto.half_val.extend(flat.view(np.uint16).astype(np.int32).tolist())
    elif field == "scomplex_val":
        proto.scomplex_val.extend(flat.astype(np.complex64).view(np.float32).tolist())
    elif field == "dcomplex_val":
        proto.dcomplex_val.extend(flat.astype(np.complex128).view(np.float64).tolist())
    else:
        getattr(proto, field).extend(flat.tolist())
    return proto


def _values_sent(proto: TensorProto, dtype: Any) -> int:
    """How many elements ``proto`` carries (in ``tensor_content`` or its typed field)."""
    if proto.tensor_content:
        return len(proto.tensor_content) // max(1, dtype.size)
    field = _fields().get(proto.dtype)
    if field is None:
        return 0
    count = len(getattr(proto, field))
    return count // 2 if field in _COMPLEX_FIELDS else count


def tensor_proto_to_ndarray(proto: TensorProto, alias: str = "",
                            max_filled_bytes: int = MAX_FILLED_TENSOR_BYTES) -> np.ndarray:
    """``tf.make_ndarray`` with TF Serving's error for a proto it cannot parse.

    Raises INVALID_ARGUMENT ``tensor parsing error: ALIAS`` (predict_util.cc) for a bad dtype,
    shape or value count, and refuses (same code) a proto whose missing values would be filled
    into more than ``max_filled_bytes``.
    """
    import tensorflow as tf

    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
        if proto.dtype == 0 or proto.tensor_shape.unknown_rank:
            raise ValueError("no dtype or shape")
        dims = [int(d.size) for d in proto.tensor_shape.dim]
        if any(d < 0 for d in dims):
            raise ValueError("negative dimension")
        n = int(np.prod(dims, dtype=np.float64)) if dims else 1
        sent = _values_sent(proto, dtype)
        if n > sent:
            if dtype == tf.string:
                item = max(8, max((len(s) for s in proto.string_val[-1:]), default=0) + 8)
            else:
                item = max(1, dtype.size)
            if n * item > max_filled_bytes:
                raise invalid_argument(
                    f"tensor parsing error: {alias}: its shape {dims} asks for {n} elements but "
                    f"{sent} were sent; filling the rest would pass {max_filled_bytes} bytes"
                )
        if sent > n and not proto.tensor_content:
            # Tensor::FromProto ignores values past the shape's element count.
            field = _fields()[proto.dtype]
            trimmed = type(proto)()
            trimmed.CopyFrom(proto)
            keep = n * 2 if field in _COMPLEX_FIELDS else n
            del getattr(trimmed, field)[keep:]
            proto = trimmed
        arr = tf.make_ndarray(proto)
    except ServingError:
        raise
    except Exception as exc:
        raise invalid_argument(f"tensor parsing error: {alias}") from exc
    return arr


# ----------------------------------------------------------------------------------------------
# the servicers' base


@dataclasses.dataclass(frozen=True)
class GrpcRequestRecord:
    """What an observer (e.g. metrics) learns about each RPC."""

    api: str  # Predict | Classify | Regress | MultiInference | GetModelMetadata | GetModelStatus | ...
    model_name: str
    code: Code
    latency_s: float


Observer = Callable[[GrpcRequestRecord], None]


def rpc_cancellation(context: Any) -> Cancellation:
    """A :class:`~serving.cancellation.Cancellation` cancelled when the RPC ends early.

    gRPC calls back when the RPC terminates: at the client's deadline (DEADLINE_EXCEEDED),
    when the client cancels or goes away (CANCELLED), and after a normal end (when nothing
    runs any more).  TF Serving passes the deadline to the session run as its timeout; here
    the running signature is cancelled, a decoding loop included, and the thread is free.
    """
    token = Cancellation()
    if context is None:
        return token

    def ended() -> None:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            token.cancel(ServingError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded"))
        else:
            token.cancel(ServingError(Code.CANCELLED, "Cancelled: the RPC ended before the call finished"))

    if not context.add_callback(ended):  # the RPC has ended already
        ended()
    return token


def require_spec(request: Any) -> None:
    """INVALID_ARGUMENT ``Missing ModelSpec`` for a request without a ``model_spec``."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")


class ServicerBase:
    """A servicer on a :class:`~serving.manager.ServableManager` that reports each RPC to observers."""

    limits: RequestLimits | None = None  # --max_prompt_bytes / --max_new_tokens_limit

    def __init__(self, manager: ServableManager, observers: list[Observer]):
        self.manager = manager
        self._observers = observers

    def _observe(self, api: str, model: str, code: Code, latency: float) -> None:
        notify(self._observers, GrpcRequestRecord(api, model, code, latency), what="gRPC request observer")

    def servable_for(self, spec: Any) -> Servable:
        """ServerCore::GetServableRequestFromModelSpec + GetServableHandle."""
        if not spec.name:
            raise invalid_argument("ModelSpec has no name specified.")
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            return self.manager.get_servable(spec.name, version=int(spec.version.value))
        if choice == "version_label":
            return self.manager.get_servable(spec.name, label=spec.version_label)
        return self.manager.get_servable(spec.name)
