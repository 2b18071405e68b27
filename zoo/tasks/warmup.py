"""Warm-up requests: the ``PredictionLog`` records of ``assets.extra/tf_serving_warmup_requests``
that a server (TF Serving or ``zoo serve``) replays on a model before it answers, and the
in-vocabulary text they carry.

Each task's ``warmup_records`` says which signatures to call with which inputs; this module
builds the records and the sample token rows they are made of.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zoo.special_tokens import NUM_SPECIAL

__all__ = ["predict_logs", "sample_rows", "text_array"]


def sample_rows(vocab_size: int) -> list[list[int]]:
    """Two rows of ordinary token ids of different lengths (3 and 9), every id in the vocabulary
    past the reserved ones: ``s + i mod (V - s)`` and ``s + (7i + 1) mod (V - s)``, ``s`` =
    ``NUM_SPECIAL``."""
    span = max(vocab_size - NUM_SPECIAL, 1)
    return [[NUM_SPECIAL + i % span for i in range(3)],
            [NUM_SPECIAL + (7 * i + 1) % span for i in range(9)]]


def text_array(texts) -> np.ndarray:
    """``texts`` (str or bytes) as the object array of UTF-8 bytes that a string tensor takes."""
    return np.array([t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in texts],
                    dtype=object)


def predict_logs(requests: dict[str, dict[str, np.ndarray]]) -> list[bytes]:
    """One serialized ``PredictionLog`` (a ``PredictRequest``) per ``{signature: {input name:
    value}}`` entry, in order."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    records = []
    for signature, inputs in requests.items():
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(signature_name=signature))
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(log.SerializeToString())
    return records
