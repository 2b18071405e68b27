"""Inference shared by every front end: predict, classify, regress, and warm-up replay.

These functions take a loaded :class:`~serving.servable.Servable` and plain numpy arrays (or
serialized ``tf.Example`` protos), so the REST front end, a gRPC front end and a batching layer
all run a model the same way and report the same errors (TF Serving's
``servables/tensorflow/predict_util.cc``, ``classifier.cc``, ``regressor.cc``,
``saved_model_warmup_util.cc``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from zoo.export_contract import (
    CLASSIFY_METHOD,
    DEFAULT_SERVING_SIGNATURE,
    EXPORT_INFO_PATH,
    PREDICT_METHOD,
    REGRESS_METHOD,
    WARMUP_PATH,
)

from .errors import Code, ServingError, from_exception, invalid_argument
from .servable import Servable, Signature, dtype_string, is_within

__all__ = [
    "DEFAULT_MAX_BATCH_ROWS",
    "DEFAULT_MAX_PROMPT_BYTES",
    "DEFAULT_MAX_TOKENS_PER_REQUEST",
    "MAX_NEW_TOKENS_ANY",
    "MAX_WARMUP_RECORDS",
    "RequestLimits",
    "check_sampling_inputs",
    "classify",
    "examples_from_input_proto",
    "predict",
    "regress",
    "resolve_signature",
    "run_warmup",
    "zoo_export_info",
]

log = logging.getLogger("serving")

MAX_WARMUP_RECORDS = 1000


def resolve_signature(servable: Servable, signature_name: str | None) -> Signature:
    """The signature a request names ('' means ``serving_default``).

    gRPC's Predict reports a missing one as FAILED_PRECONDITION (predict_util.cc); the REST
    handler checks first and answers INVALID_ARGUMENT instead, as TF Serving does.
    """
    key = signature_name or DEFAULT_SERVING_SIGNATURE
    sig = servable.signature(key)
    if sig is None:
        raise ServingError(Code.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.')
    return sig


def _to_tensor(alias: str, index: int, value, dtype):
    import tensorflow as tf

    if isinstance(value, tf.Tensor):
        if value.dtype != dtype:
            raise invalid_argument(
                f"Expects arg[{index}] to be {dtype_string(dtype)} but {dtype_string(value.dtype)} is provided"
            )
        return value
    arr = np.asarray(value)
    if dtype == tf.string:
        if arr.dtype.kind == "U":
            flat = [s.encode("utf-8") for s in arr.reshape(-1).tolist()]
            arr = np.array(flat, dtype=object).reshape(arr.shape)
        elif arr.dtype.kind not in ("O", "S"):
            raise invalid_argument(
                f"Expects arg[{index}] to be string but {dtype_string(tf.as_dtype(arr.dtype))} is provided"
            )
        return tf.constant(arr, dtype=tf.string)
    if arr.dtype.kind in ("O", "S", "U"):
        raise invalid_argument(f"Expects arg[{index}] to be {dtype_string(dtype)} but string is provided")
    try:
        got = tf.as_dtype(arr.dtype)
    except TypeError as exc:
        raise invalid_argument(f"Unsupported numpy dtype {arr.dtype} for input {alias}") from exc
    if got != dtype:
        raise invalid_argument(
            f"Expects arg[{index}] to be {dtype_string(dtype)} but {dtype_string(got)} is provided"
        )
    return tf.constant(arr, dtype=dtype)


def _check_input_names(sig: Signature, inputs: Mapping[str, object]) -> None:
    sent = set(inputs)
    wanted = set(sig.inputs)
    if sent == wanted:
        return
    extra = sorted(sent - wanted)
    missing = sorted(wanted - sent)
    raise invalid_argument(
        f"input size does not match signature: {len(sent)}!={len(wanted)} "
        f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
        f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
    )


def predict(
    servable: Servable,
    signature_name: str | None,
    inputs: Mapping[str, object],
    output_filter: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Run one signature on named input arrays; returns output arrays by alias.

    Errors are TF Serving's: unknown signature (FAILED_PRECONDITION), wrong input names,
    wrong dtype, bad ``output_filter`` (INVALID_ARGUMENT), model runtime errors (their code).
    """
    sig = resolve_signature(servable, signature_name)
    if sig.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
        raise ServingError(
            Code.INTERNAL,
            f"Expected prediction signature method_name to be one of {{{PREDICT_METHOD}, "
            f"{CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: {sig.method_name}",
        )
    _check_input_names(sig, inputs)
    order = sorted(sig.inputs)
    feeds = {
        alias: _to_tensor(alias, order.index(alias), inputs[alias], sig.inputs[alias].dtype)
        for alias in order
    }
    aliases: list[str] = []
    if output_filter:
        seen: set[str] = set()
        for alias in output_filter:
            if alias not in sig.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                    f"the set {{{','.join(sorted(sig.outputs))}}}."
                )
            if alias in seen:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
            aliases.append(alias)
    else:
        aliases = sorted(sig.outputs)
    result = servable.run(sig.key, feeds)
    out: dict[str, np.ndarray] = {}
    for alias in aliases:
        if alias not in result:
            raise ServingError(Code.UNKNOWN, "Predict internal error")
        value = result[alias]
        out[alias] = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    return out


# ----------------------------------------------------------------------------------------------
# request limits for zoo LM exports (--max_prompt_bytes, --max_new_tokens_limit, --max_batch_rows,
# --max_tokens_per_request) and the sampling settings' checks

DEFAULT_MAX_PROMPT_BYTES = 16384
MAX_NEW_TOKENS_ANY = 2**31 - 1  # a max_new_tokens of INT32_MAX means "as many as allowed"

_info_cache: dict[tuple[str, int], dict | None] = {}
_info_lock = threading.Lock()


def zoo_export_info(servable) -> dict | None:
    """The servable's ``assets.extra/zoo_export.json`` (None: not a zoo export), cached by mtime."""
    path = os.path.join(getattr(servable, "path", "") or "", EXPORT_INFO_PATH)
    try:
        stamp = os.stat(path).st_mtime_ns
    except (OSError, ValueError):
        return None
    key = (path, stamp)
    with _info_lock:
        if key in _info_cache:
            return _info_cache[key]
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        if not isinstance(info, dict):
            info = None
    except (OSError, ValueError):
        info = None
    with _info_lock:
        if len(_info_cache) > 256:
            _info_cache.clear()
        _info_cache[key] = info
    return info


def _as_array(value) -> np.ndarray:
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# field -> (is the value allowed, what it must be); values are float64 arrays here
_SAMPLING_RULES = {
    "temperature": (lambda v: np.isfinite(v) & (v >= 0), "a finite number >= 0 (0 = greedy)"),
    "top_k": (lambda v: np.isfinite(v) & (v >= 0) & (v == np.floor(v)), "an integer >= 0 (0 = off)"),
    "top_p": (lambda v: (v > 0) & (v <= 1), "in (0, 1] (1 = off)"),
}


def check_sampling_inputs(inputs: Mapping[str, Any]) -> None:
    """Refuse (INVALID_ARGUMENT, naming the field) sampling settings a zoo LM export cannot honour.

    ``inputs`` maps names to scalars, lists, numpy arrays or tensors (a predict request's
    inputs, a stream request); every element is checked.  ``temperature`` must be finite and
    ``>= 0`` (NaN, inf and negatives refused), ``top_p`` in ``(0, 1]``, ``top_k`` an integer
    ``>= 0``, ``seed`` an integer within int64 (negative seeds are accepted: the export hashes
    the seed's 64-bit pattern, and TF Serving would pass any int64 through).  Absent or None
    fields are skipped, and so are values that are not numbers: the signature's dtype check
    reports those with TF Serving's text.
    """
    for name, (allowed, wanted) in _SAMPLING_RULES.items():
        arr = _numeric(inputs.get(name))
        if arr is None or arr.size == 0:
            continue
        bad = ~allowed(arr)
        if bad.any():
            raise invalid_argument(f"{name} must be {wanted}, got {_first(arr, bad)}")
    _check_seed(inputs.get("seed"))


def _check_seed(value) -> None:
    """A seed must be a whole number within int64 (checked exactly, not through float64)."""
    if value is None or isinstance(value, (bool, str, bytes)):
        return
    arr = _as_array(value).reshape(-1)
    if arr.dtype.kind == "f":
        fits = np.isfinite(arr) & (arr == np.floor(arr)) & (arr >= -(2.0**63)) & (arr < 2.0**63)
        bad = [v for v, ok in zip(arr.tolist(), fits.tolist(), strict=True) if not ok]
    elif arr.dtype.kind in ("u", "O"):  # uint64, or Python ints too large for int64
        bad = [v for v in arr.tolist()
               if isinstance(v, int) and not isinstance(v, bool) and not _INT64_MIN <= v <= _INT64_MAX]
    else:  # int arrays fit by their dtype; anything else is the dtype check's job
        return
    if bad:
        shown = bad[0] if not isinstance(bad[0], float) or not bad[0].is_integer() else int(bad[0])
        raise invalid_argument(f"seed must be an integer within int64, got {shown}")


def _numeric(value) -> np.ndarray | None:
    """``value`` as a float64 array, or None when absent or not a number."""
    if value is None or isinstance(value, (bool, str, bytes)):
        return None
    if isinstance(value, int):  # may not fit a numpy integer
        return np.array([float(value)])
    arr = _as_array(value)
    if arr.dtype.kind not in ("i", "u", "f"):
        return None
    return arr.astype(np.float64).reshape(-1)


def _first(arr: np.ndarray, bad: np.ndarray) -> str:
    value = float(arr[int(np.argmax(bad))])
    return str(int(value)) if value.is_integer() else repr(value)


DEFAULT_MAX_BATCH_ROWS = 256
DEFAULT_MAX_TOKENS_PER_REQUEST = 65536


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """Bounds on what one request to a zoo LM export (one with ``assets.extra/zoo_export.json``)
    may ask for; other models are not affected.  A violation is INVALID_ARGUMENT (HTTP 400),
    found before any model work (before a batching queue, before the signature runs).

    * ``max_prompt_bytes`` (``--max_prompt_bytes``; ``<= 0``: none): every string input
      element (``prompt``, ``text``) is at most this many UTF-8 bytes;
    * ``max_new_tokens_limit`` (``--max_new_tokens_limit``; ``<= 0``: the export's own
      ``max_new_tokens`` from ``zoo_export.json``): a ``max_new_tokens`` input above it is refused
      rather than clamped.  ``MAX_NEW_TOKENS_ANY`` (INT32_MAX, what clients send for "the export's
      bound") is accepted and replaced by the limit;
    * ``max_batch_rows`` (``--max_batch_rows``, default 256; ``<= 0``: none): rows (prompts,
      texts) in one request;
    * ``max_tokens_per_request`` (``--max_tokens_per_request``, default 65536; ``<= 0``: none):
      rows x ``max_new_tokens`` of a generating request, where ``max_new_tokens`` is the
      request's largest value (what the batched decoding loop runs), or the export's bound when
      the request leaves it to the export; a streamed request is one row;
    * the sampling settings (:func:`check_sampling_inputs`).
    """

    max_prompt_bytes: int = DEFAULT_MAX_PROMPT_BYTES
    max_new_tokens_limit: int = 0
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS
    max_tokens_per_request: int = DEFAULT_MAX_TOKENS_PER_REQUEST

    def new_tokens_limit(self, servable) -> int | None:
        """The bound for ``servable`` (None: no limit, e.g. not a zoo export)."""
        info = zoo_export_info(servable)
        if info is None:
            return None
        if self.max_new_tokens_limit > 0:
            return int(self.max_new_tokens_limit)
        return self.export_new_tokens(servable)

    @staticmethod
    def export_new_tokens(servable) -> int | None:
        """The export's own ``max_new_tokens`` (its decoding loop's bound; None: unknown)."""
        info = zoo_export_info(servable)
        bound = ((info or {}).get("export") or {}).get("max_new_tokens")
        return int(bound) if isinstance(bound, int) and not isinstance(bound, bool) else None

    def check_prompt(self, alias: str, value) -> None:
        """INVALID_ARGUMENT when ``value`` (str or bytes) is over ``max_prompt_bytes``."""
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
        if 0 < self.max_prompt_bytes < len(raw):
            raise invalid_argument(
                f"{alias} is {len(raw)} bytes; the limit is {self.max_prompt_bytes} (--max_prompt_bytes)"
            )

    def check_new_tokens(self, value: int, limit: int | None) -> int:
        """``value`` if within ``limit``; the limit for ``MAX_NEW_TOKENS_ANY``; else INVALID_ARGUMENT."""
        if limit is None:
            return value
        if value == MAX_NEW_TOKENS_ANY:
            return limit
        if value > limit:
            raise invalid_argument(
                f"max_new_tokens is {value}; the limit is {limit} (--max_new_tokens_limit, default: the "
                "export's max_new_tokens)"
            )
        return value

    def check_work(self, servable, rows: int, new_tokens: int | None) -> None:
        """INVALID_ARGUMENT when ``rows`` or ``rows x new_tokens`` is over its bound.

        ``new_tokens`` None: the request does not generate (only the row bound applies); a
        value above the export's own bound counts as that bound (the export clamps to it).
        """
        if 0 < self.max_batch_rows < rows:
            raise invalid_argument(
                f"the request has {rows} rows; the limit is {self.max_batch_rows} (--max_batch_rows)")
        if new_tokens is None or self.max_tokens_per_request <= 0:
            return
        bound = self.export_new_tokens(servable)
        new_tokens = max(0, new_tokens if bound is None else min(new_tokens, bound))
        if rows * new_tokens > self.max_tokens_per_request:
            raise invalid_argument(
                f"the request asks for {rows} x {new_tokens} = {rows * new_tokens} tokens (rows x max_new_tokens); "
                f"the limit is {self.max_tokens_per_request} (--max_tokens_per_request)"
            )

    def check_inputs(self, servable, inputs: Mapping[str, object]) -> dict[str, object]:
        """Check predict inputs (by alias) against the limits; returns them (``max_new_tokens``
        with ``MAX_NEW_TOKENS_ANY`` replaced by the limit).  Row and token counts come first, so
        an oversized request is refused before its strings are even looked at."""
        out = dict(inputs)
        if zoo_export_info(servable) is None:
            return out
        arrays = {alias: _as_array(value) for alias, value in inputs.items() if value is not None}
        rows = max((arr.shape[0] for arr in arrays.values() if arr.ndim >= 1), default=1)
        new_tokens = None
        tokens = arrays.get("max_new_tokens")
        if tokens is not None and tokens.dtype.kind in ("i", "u") and tokens.size:
            limit = self.new_tokens_limit(servable)
            # the limit first, so that "the export's bound" (INT32_MAX) counts as the bound
            checked = np.array([self.check_new_tokens(int(v), limit) for v in tokens.reshape(-1).tolist()],
                               dtype=tokens.dtype).reshape(tokens.shape)
            new_tokens = int(checked.max())
            if not np.array_equal(checked, tokens):
                value = inputs["max_new_tokens"]
                if hasattr(value, "numpy"):
                    import tensorflow as tf

                    checked = tf.constant(checked, dtype=value.dtype)
                out["max_new_tokens"] = checked
        self.check_work(servable, rows, new_tokens)
        check_sampling_inputs(arrays)
        for alias, arr in arrays.items():
            if arr.dtype.kind in ("O", "S", "U"):
                for item in arr.reshape(-1).tolist():
                    if isinstance(item, (str, bytes)):
                        self.check_prompt(alias, item)
        return out


# ----------------------------------------------------------------------------------------------
# classify / regress: signatures whose single input "inputs" takes serialized tf.Examples.


def _examples_tensor(examples: Sequence[bytes], context: bytes | None):
    import tensorflow as tf

    if context:
        # Proto merge by concatenation: the example's features override the context's.
        serialized = [context + e for e in examples]
    else:
        serialized = list(examples)
    return tf.constant(serialized, dtype=tf.string, shape=[len(serialized)])


def _signature_for(servable: Servable, signature_name: str | None, method: str, what: str) -> Signature:
    key = signature_name or DEFAULT_SERVING_SIGNATURE
    sig = servable.signature(key)
    if sig is None:
        raise invalid_argument(f"No signature was found with the name: {key}")
    if sig.method_name != method:
        raise invalid_argument(f"Expected {what} signature method_name to be {method}. Was: {sig.method_name}")
    if len(sig.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if "inputs" not in sig.inputs:
        raise ServingError(Code.FAILED_PRECONDITION, f"No {what} inputs found in SignatureDef: {key}")
    return sig


def classify(
    servable: Servable,
    signature_name: str | None,
    examples: Sequence[bytes],
    context: bytes | None = None,
) -> list[list[tuple[bytes, float]]]:
    """TF Serving's Classify: one list of (label, score) per serialized example."""
    sig = _signature_for(servable, signature_name, CLASSIFY_METHOD, "classification")
    if len(sig.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(sig.outputs)}")
    if "classes" not in sig.outputs and "scores" not in sig.outputs:
        raise ServingError(
            Code.FAILED_PRECONDITION,
            'Expected classification signature outputs to contain at least one of "classes" or '
            f'"scores". Signature was: {sig.key}',
        )
    n = len(examples)
    if n == 0:
        raise invalid_argument("ClassificationRequest::input is empty.")
    result = servable.run(sig.key, {"inputs": _examples_tensor(examples, context)})
    classes = result.get("classes") if "classes" in sig.outputs else None
    scores = result.get("scores") if "scores" in sig.outputs else None
    classes = None if classes is None else classes.numpy()
    scores = None if scores is None else scores.numpy()
    for label, arr, kind in (("classes", classes, "S"), ("scores", scores, "f")):
        if arr is None:
            continue
        if arr.ndim != 2:
            raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {list(arr.shape)}")
        if kind == "S" and arr.dtype.kind not in ("O", "S"):
            raise invalid_argument(f"Expected classes Tensor of DT_STRING. Got: {arr.dtype}")
        if kind == "f" and arr.dtype != np.float32:
            raise invalid_argument(f"Expected scores Tensor of DT_FLOAT. Got: {arr.dtype}")
        if arr.shape[0] != n:
            raise invalid_argument(f"Expected {label} output batch size of {n}. Got: {arr.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    num_classes = (classes if classes is not None else scores).shape[1]
    out: list[list[tuple[bytes, float]]] = []
    for i in range(n):
        row = []
        for c in range(num_classes):
            label = bytes(classes[i, c]) if classes is not None else b""
            score = float(scores[i, c]) if scores is not None else 0.0
            row.append((label, score))
        out.append(row)
    return out


def regress(
    servable: Servable,
    signature_name: str | None,
    examples: Sequence[bytes],
    context: bytes | None = None,
) -> list[float]:
    """TF Serving's Regress: one float per serialized example."""
    sig = _signature_for(servable, signature_name, REGRESS_METHOD, "regression")
    if len(sig.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if "outputs" not in sig.outputs:
        raise ServingError(Code.FAILED_PRECONDITION, f"No regression outputs found in SignatureDef: {sig.key}")
    n = len(examples)
    if n == 0:
        raise invalid_argument("RegressionRequest::input is empty.")
    result = servable.run(sig.key, {"inputs": _examples_tensor(examples, context)})
    arr = result["outputs"].numpy()
    if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1)):
        raise invalid_argument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {list(arr.shape)}"
        )
    if arr.shape[0] != n:
        raise invalid_argument(f"Input batch size did not match output batch size: {n} vs. {arr.shape[0]}")
    if arr.dtype != np.float32:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {arr.dtype}")
    return [float(v) for v in arr.reshape(-1)]


def examples_from_input_proto(input_proto) -> tuple[list[bytes], bytes | None]:
    """Serialized examples (and context) from a ``tensorflow.serving.Input`` proto."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in input_proto.example_list.examples], None
    if kind == "example_list_with_context":
        lst = input_proto.example_list_with_context
        return [e.SerializeToString() for e in lst.examples], lst.context.SerializeToString()
    raise invalid_argument("Input is empty")


# ----------------------------------------------------------------------------------------------
# warm-up


def _iter_records(path: str) -> Iterable[bytes]:
    import tensorflow as tf

    for record in tf.data.TFRecordDataset(path):
        yield record.numpy()


def run_warmup(servable: Servable, base_path: str, num_request_iterations: int = 1) -> int:
    """Replay ``assets.extra/tf_serving_warmup_requests`` (TFRecord of PredictionLog protos).

    Returns the number of records replayed (0 when there is no file).  Any failure raises, and
    the version then fails to load, as in TF Serving.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(servable.path, WARMUP_PATH)
    if not os.path.exists(path):
        return 0
    if not is_within(path, base_path):
        raise ServingError(Code.PERMISSION_DENIED, f"{path} resolves outside the model base path")
    count = 0
    try:
        for record in _iter_records(path):
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise invalid_argument(
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
                )
            log_entry = prediction_log_pb2.PredictionLog()
            try:
                log_entry.ParseFromString(record)
            except Exception as exc:
                raise invalid_argument(f"Failed to parse warmup record from {path}") from exc
            for _ in range(max(1, num_request_iterations)):
                _replay(servable, log_entry)
    except tf.errors.DataLossError as exc:
        raise ServingError(
            Code.DATA_LOSS, f"{exc.message}. Please verify your warmup data is in TFRecord format."
        ) from exc
    except tf.errors.OpError as exc:
        raise from_exception(exc) from exc
    log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d.", path, count)
    return count


def _replay(servable: Servable, entry) -> None:
    import tensorflow as tf

    kind = entry.WhichOneof("log_type")
    if kind == "predict_log":
        request = entry.predict_log.request
        inputs = {alias: tf.make_ndarray(proto) for alias, proto in request.inputs.items()}
        predict(servable, request.model_spec.signature_name, inputs, list(request.output_filter) or None)
    elif kind == "classify_log":
        request = entry.classify_log.request
        examples, context = examples_from_input_proto(request.input)
        classify(servable, request.model_spec.signature_name, examples, context)
    elif kind == "regress_log":
        request = entry.regress_log.request
        examples, context = examples_from_input_proto(request.input)
        regress(servable, request.model_spec.signature_name, examples, context)
    else:
        raise ServingError(Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")
