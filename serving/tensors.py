"""TF Serving's JSON <-> tensor rules for the REST API (``util/json_tensor.cc``).

Requests: ``{"signature_name": ..., "instances": [...]}`` (row format: one element per batch
item, objects for named inputs) or ``{"inputs": ...}`` (columnar: a value, or an object keyed by
input name); strings may be ``{"b64": "..."}``; int dtypes reject ``1.0``, float dtypes accept
integers that they hold exactly; ``NaN``/``Infinity`` are accepted.

Responses: ``{"predictions": [...]}`` for row requests (every output needs the same batch size),
``{"outputs": ...}`` for columnar ones; a string output whose name ends in ``_bytes`` is written
as ``{"b64": ...}``; floats as TF Serving writes them.

Every error message is TF Serving's text (see tests/test_serving_rest.py for the cases).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .errors import Code, ServingError, invalid_argument
from .json_util import (
    encode_text,
    format_float,
    format_floats,
    json_string,
    json_type_name,
    parse_json,
    value_to_string,
)
from .servable import dtype_string

__all__ = [
    "COLUMNAR",
    "ROW",
    "ClassifyRegressRequest",
    "PredictJsonRequest",
    "classify_response_json",
    "error_json",
    "examples_from_json",
    "parse_classify_regress_request",
    "parse_predict_request",
    "predict_response_json",
    "regress_response_json",
    "tensor_to_json",
]

ROW = "row"
COLUMNAR = "columnar"
MAX_TENSOR_RANK = 254  # TensorShape::MaxDimensions()

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT64_MAX = 2**64 - 1
_FLT_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass
class PredictJsonRequest:
    signature_name: str
    inputs: dict[str, np.ndarray]
    format: str  # ROW or COLUMNAR


# ---------------------------------------------------------------------------------------------
# values


def _type_error(value, dtype) -> ServingError:
    return invalid_argument(
        f"JSON Value: {value_to_string(value)} Type: {json_type_name(value)} is not of expected type: "
        f"{dtype_string(dtype)}"
    )


def _lossy(value, target: str) -> ServingError:
    return invalid_argument(
        f"Cannot convert JSON value: {value_to_string(value)} to {target} without loss of precision."
    )


def _is_json_int(value) -> bool:
    """rapidjson stores integers within [int64 min, uint64 max] as integers, others as doubles."""
    return type(value) is int and _INT64_MIN <= value <= _UINT64_MAX


def _is_number(value) -> bool:
    return type(value) is int or type(value) is float


def _lossless(value, mantissa_bits: int, limit: float) -> bool:
    if _is_json_int(value):
        return abs(value) <= (1 << mantissa_bits) - 1
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        return True
    return -limit <= v <= limit


def _decode_b64(value) -> bytes:
    if not _is_b64_object(value):
        raise invalid_argument(f"JSON Value: {value_to_string(value)} not formatted correctly for base64 data")
    text = value["b64"]
    try:
        raw = text.encode("ascii")
        if len(raw) % 4:
            raw += b"=" * (-len(raw) % 4)
        return base64.b64decode(raw, validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _utf8(text: str) -> bytes:
    """Bytes of a JSON string: invalid UTF-8 that arrived in the body comes back unchanged."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone \\uD800-style escape
        raise invalid_argument("JSON Parse error: The surrogate pair in string is invalid.") from None


def _is_b64_object(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_element_object(value) -> bool:
    return isinstance(value, dict) and not _is_b64_object(value)


def _converter(dtype) -> Callable[[object], object]:
    """A function checking one JSON leaf against ``dtype`` (AddValueToTensor)."""
    import tensorflow as tf

    if dtype == tf.float32:
        def conv(v):
            if not _is_number(v):
                raise _type_error(v, dtype)
            if not _lossless(v, 24, _FLT_MAX):
                raise _lossy(v, "float")
            return float(v)
    elif dtype == tf.float64:
        def conv(v):
            if not _is_number(v):
                raise _type_error(v, dtype)
            if not _lossless(v, 53, float("inf")):
                raise _lossy(v, "double")
            return float(v)
    elif dtype in (tf.int32, tf.int16, tf.int8, tf.uint8):
        def conv(v):
            if type(v) is not int or not (-(2**31) <= v <= 2**31 - 1):
                raise _type_error(v, dtype)
            return v
    elif dtype == tf.int64:
        def conv(v):
            if type(v) is not int or not (_INT64_MIN <= v <= _INT64_MAX):
                raise _type_error(v, dtype)
            return v
    elif dtype == tf.uint32:
        def conv(v):
            if type(v) is not int or not (0 <= v <= 2**32 - 1):
                raise _type_error(v, dtype)
            return v
    elif dtype == tf.uint64:
        def conv(v):
            if type(v) is not int or not (0 <= v <= _UINT64_MAX):
                raise _type_error(v, dtype)
            return v
    elif dtype == tf.bool:
        def conv(v):
            if type(v) is not bool:
                raise _type_error(v, dtype)
            return v
    elif dtype == tf.string:
        def conv(v):
            if isinstance(v, dict):
                return _decode_b64(v)
            if type(v) is not str:
                raise _type_error(v, dtype)
            return _utf8(v)
    else:
        def conv(v):
            raise ServingError(
                Code.UNIMPLEMENTED,
                f"Conversion of JSON Value: {value_to_string(v)} to type: {dtype_string(dtype)}",
            )
    if dtype != tf.string:
        inner = conv

        def conv(v, _inner=inner):
            if isinstance(v, dict):
                raise _type_error(v, dtype)
            return _inner(v)
    return conv


def _dense_shape(value) -> list[int]:
    """GetDenseTensorShape: sizes along the first element of each nested list."""
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if len(shape) > MAX_TENSOR_RANK:
            raise invalid_argument(
                f"JSON Value is nested deeper than the maximum tensor rank ({MAX_TENSOR_RANK})"
            )
        if not value:
            break
        value = value[0]
    return shape


def _fill(value, level: int, shape: list[int], conv, out: list) -> None:
    """FillTensorProto: check structure against ``shape`` and convert leaves in DFS order."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {value_to_string(value)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {rank}"
            )
        out.append(conv(value))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: "
            f"{shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, conv, out)


def _shape_string(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _np_dtype(dtype):
    import tensorflow as tf

    return object if dtype == tf.string else dtype.as_numpy_dtype


def _to_array(values: list, shape: list[int], dtype) -> np.ndarray:
    npd = _np_dtype(dtype)
    if npd is object:
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr.reshape(shape)
    if np.issubdtype(npd, np.integer) and np.dtype(npd).itemsize < 4:
        # int8/int16/uint8 values arrive as int32 (like TensorProto int_val) and wrap.
        return np.array(values, dtype=np.int64).astype(npd).reshape(shape)
    return np.array(values, dtype=npd).reshape(shape)


def _tensor_from_value(value, dtype) -> np.ndarray:
    shape = _dense_shape(value)
    leaves: list = []
    _fill(value, 0, shape, _converter(dtype), leaves)
    return _to_array(leaves, shape, dtype)


# ---------------------------------------------------------------------------------------------
# predict requests


def _format_error(doc, *parts: str) -> ServingError:
    return invalid_argument(f"JSON Value: {value_to_string(doc)} " + "".join(parts))


def _parse_object(body: bytes) -> dict:
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise _format_error(doc, "Is not object")
    return doc


def _signature_name(doc: dict) -> str:
    if "signature_name" in doc:
        name = doc["signature_name"]
        if not isinstance(name, str):
            raise invalid_argument(
                f"JSON Value: {value_to_string(doc)} not formatted correctly. 'signature_name' key "
                "must be a string value."
            )
        return name
    return ""


def parse_predict_request(
    body: bytes, get_input_dtypes: Callable[[str], Mapping[str, object]]
) -> PredictJsonRequest:
    """FillPredictRequestFromJson.

    ``get_input_dtypes(signature_name)`` returns ``{alias: tf.DType}`` for the signature's
    inputs; it is called after the JSON parsed and ``signature_name`` checked, and it is where
    the caller looks the servable and signature up (so a bad body to an unknown model is 400).
    """
    doc = _parse_object(body)
    signame = _signature_name(doc)
    infos = dict(get_input_dtypes(signame))
    if not infos:
        raise invalid_argument(f"Failed to get input map for signature: {signame or 'DEFAULT'}")
    if "instances" in doc:
        if "inputs" in doc:
            raise _format_error(
                doc, "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
            )
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise _format_error(doc, "Excepting 'instances' to be an list/array")
        if not instances:
            raise _format_error(doc, "No values in 'instances' array")
        return PredictJsonRequest(signame, _from_instances(instances, infos), ROW)
    if "inputs" in doc:
        return PredictJsonRequest(signame, _from_inputs(doc["inputs"], infos), COLUMNAR)
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _from_instances(instances: list, infos: Mapping[str, object]) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList."""
    names = sorted(infos)
    if not isinstance(instances[0], dict) and len(infos) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    objects = _is_element_object(instances[0])
    converters = {name: _converter(infos[name]) for name in names}
    leaves: dict[str, list] = {}
    shapes: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}

    def add(item, name: str) -> None:
        if name not in infos:
            raise invalid_argument(f"JSON object: does not have named input: {name}")
        shape = _dense_shape(item)
        values: list = []
        _fill(item, 0, shape, converters[name], values)
        if name not in sizes:
            sizes[name] = len(values)
            shapes[name] = shape
        elif sizes[name] != len(values):
            raise invalid_argument(f"Expecting tensor size: {sizes[name]} but got: {len(values)}")
        elif shapes[name] != shape:
            raise invalid_argument(
                f"Expecting shape {_shape_string(shapes[name])} but got: {_shape_string(shape)}"
            )
        leaves.setdefault(name, []).extend(values)

    for index, element in enumerate(instances):
        if objects:
            if not _is_element_object(element):
                raise invalid_argument(f"Expecting object but got list at item {index} of input list")
            for key, item in element.items():
                try:
                    add(item, key)
                except ServingError as exc:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {key} of 'instances' list. Error: "
                        f"{exc.status_string()}"
                    ) from None
            if set(element) != set(names):
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{value_to_string(element)} keys must be equal to: {','.join(names)}"
                )
        else:
            if _is_element_object(element):
                raise invalid_argument(f"Expecting value/list but got object at item {index} of input list")
            try:
                add(element, names[0])
            except ServingError as exc:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: {exc.status_string()}"
                ) from None
    count = len(instances)
    return {
        name: _to_array(leaves[name], [count, *shapes[name]], infos[name]) for name in leaves
    }


def _from_inputs(value, infos: Mapping[str, object]) -> dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap."""
    names = sorted(infos)
    if not isinstance(value, dict) or _is_b64_object(value):
        if len(infos) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        return {names[0]: _tensor_from_value(value, infos[names[0]])}
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        out[name] = _tensor_from_value(value[name], infos[name])
    return out


# ---------------------------------------------------------------------------------------------
# predict responses


def _scalar_tokens(arr: np.ndarray, as_bytes: bool, name: str) -> list[str]:
    kind = arr.dtype.kind
    flat = arr.reshape(-1)
    if kind == "f" and arr.dtype.itemsize in (2, 4, 8):
        return format_floats(flat)
    if kind in ("i", "u"):
        return [str(v) for v in flat.tolist()]
    if kind == "b":
        return ["true" if v else "false" for v in flat.tolist()]
    if kind in ("O", "S", "U"):
        out = []
        for v in flat.tolist():
            raw = v if isinstance(v, bytes) else str(v).encode("utf-8")
            if as_bytes:
                out.append('{"b64": "' + base64.b64encode(raw).decode("ascii") + '"}')
            else:
                out.append(json_string(raw.decode("utf-8", "surrogateescape")))
        return out
    raise invalid_argument(f"Failed to write JSON value for tensor type: {arr.dtype}")


def _nest(tokens: Sequence[str], shape: Sequence[int]) -> str:
    """Group a flat list of JSON tokens into nested arrays of ``shape`` (one line)."""
    if len(shape) == 0:
        return tokens[0]
    items = list(tokens)
    for k in range(len(shape) - 1, 0, -1):
        d = shape[k]
        groups = int(np.prod(shape[:k], dtype=np.int64))
        if d == 0:
            items = ["[]"] * groups
        else:
            items = ["[" + ", ".join(items[i * d:(i + 1) * d]) + "]" for i in range(groups)]
    return "[" + ", ".join(items) + "]"


def _is_bytes_output(name: str, arr: np.ndarray) -> bool:
    return arr.dtype.kind in ("O", "S") and name.endswith("_bytes")


def tensor_to_json(name: str, arr: np.ndarray) -> str:
    """One output tensor as JSON text (AddTensorValues)."""
    arr = np.asarray(arr)
    return _nest(_scalar_tokens(arr, _is_bytes_output(name, arr), name), arr.shape)


def predict_response_json(outputs: Mapping[str, np.ndarray], fmt: str) -> str:
    """MakeJsonFromTensors for ``predictions`` (row) or ``outputs`` (columnar)."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    arrays = {n: np.asarray(outputs[n]) for n in names}
    if fmt == COLUMNAR:
        if len(names) == 1:
            body = tensor_to_json(names[0], arrays[names[0]])
            return '{\n    "outputs": ' + body + "\n}"
        parts = [f"        {json_string(n)}: {tensor_to_json(n, arrays[n])}" for n in names]
        return '{\n    "outputs": {\n' + ",\n".join(parts) + "\n    }\n}"
    batch = -1
    for n in names:
        arr = arrays[n]
        if arr.ndim == 0:
            raise invalid_argument(f"Tensor name: {n} has no shape information ")
        if batch >= 0 and arr.shape[0] != batch:
            raise invalid_argument(
                f"Tensor name: {n} has inconsistent batch size: {arr.shape[0]} expecting: {batch}"
            )
        batch = arr.shape[0]
    rows_by_name = {}
    for n in names:
        arr = arrays[n]
        tokens = _scalar_tokens(arr, _is_bytes_output(n, arr), n)
        row_shape = arr.shape[1:]
        size = int(np.prod(row_shape, dtype=np.int64))
        rows_by_name[n] = [_nest(tokens[i * size:(i + 1) * size], row_shape) for i in range(batch)]
    if len(names) == 1:
        rows = rows_by_name[names[0]]
    else:
        rows = [
            "{" + ", ".join(f"{json_string(n)}: {rows_by_name[n][i]}" for n in names) + "}"
            for i in range(batch)
        ]
    return '{\n    "predictions": [' + ", ".join(rows) + "]\n}"


def error_json(message: str) -> str:
    """MakeJsonFromStatus: ``{"error": "..."}`` pretty-printed."""
    return '{\n    "error": ' + json_string(message) + "\n}"


def encode_json(text: str) -> bytes:
    return encode_text(text)


# ---------------------------------------------------------------------------------------------
# classify / regress


@dataclasses.dataclass
class ClassifyRegressRequest:
    signature_name: str
    examples: list[bytes]  # serialized tf.Example
    context: bytes | None  # serialized tf.Example, or None


def _feature_kind_error(name: str, feature) -> ServingError:
    kind = feature.WhichOneof("kind")
    kind_str = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(kind, "UNKNOWN")
    return invalid_argument(f"Unexpected element type in feature: {name} expecting type: {kind_str}")


def _add_feature_value(value, name: str, feature) -> None:
    """AddValueToFeature."""
    kind = feature.WhichOneof("kind")

    def need(k: str) -> None:
        if kind is not None and kind != k:
            raise _feature_kind_error(name, feature)

    if value is None or isinstance(value, list):
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {json_type_name(value)}")
    if isinstance(value, bool):
        need("int64_list")
        feature.int64_list.value.append(1 if value else 0)
    elif isinstance(value, dict):
        if not _is_b64_object(value):
            raise invalid_argument(
                f"Feature: {name} has element with unexpected JSON type: {json_type_name(value)}"
            )
        need("bytes_list")
        feature.bytes_list.value.append(_decode_b64(value))
    elif isinstance(value, str):
        need("bytes_list")
        feature.bytes_list.value.append(_utf8(value))
    elif _is_json_int(value):
        need("int64_list")
        if value > _INT64_MAX:
            raise invalid_argument(f"Feature: {name} has uint64 element. Only int64_t is supported.")
        feature.int64_list.value.append(value)
    else:  # a double
        need("float_list")
        if not _lossless(value, 24, _FLT_MAX):
            raise _lossy(value, "float")
        feature.float_list.value.append(float(value))


def examples_from_json(value):
    """MakeExampleFromJsonObject: a ``tf.train.Example`` from ``{"feature": value(s), ...}``."""
    import tensorflow as tf

    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type_name(value)}")
    example = tf.train.Example()
    for name, content in value.items():
        feature = tf.train.Feature()
        if isinstance(content, list):
            for item in content:
                _add_feature_value(item, name, feature)
        else:
            _add_feature_value(content, name, feature)
        example.features.feature[name].CopyFrom(feature)
    return example


def parse_classify_regress_request(body: bytes) -> ClassifyRegressRequest:
    """FillClassifyRegressRequestFromJson (the same for both methods, message included)."""
    doc = _parse_object(body)
    signame = _signature_name(doc)
    context = None
    if "context" in doc:
        context = examples_from_json(doc["context"]).SerializeToString()
    if "examples" not in doc:
        raise _format_error(doc, "When method is classify, key 'examples' is expected and was not found")
    items = doc["examples"]
    if not isinstance(items, list):
        raise _format_error(doc, "Expecting 'examples' value to be an list/array")
    if not items:
        raise _format_error(doc, "'examples' value is an empty array")
    examples = [examples_from_json(item).SerializeToString() for item in items]
    return ClassifyRegressRequest(signame, examples, context)


def classify_response_json(results: Sequence[Sequence[tuple[bytes, float]]]) -> str:
    if not results:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    rows = []
    for classes in results:
        pairs = [
            "[" + json_string(label.decode("utf-8", "surrogateescape")) + ", " + format_float(score, True) + "]"
            for label, score in classes
        ]
        rows.append("[" + ", ".join(pairs) + "]")
    return '{\n    "results": [' + ", ".join(rows) + "]\n}"


def regress_response_json(results: Sequence[float]) -> str:
    if not results:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    return '{\n    "results": [' + ", ".join(format_float(v, True) for v in results) + "]\n}"
