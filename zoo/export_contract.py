"""The names a zoo SavedModel export shares with the server that loads it and the clients that call it.

One home for every name that ``export/`` writes and ``serving/`` (or ``serving.client``)
reads, so a rename happens in one place.  Standard library only: importing this module must
not pull in TensorFlow, Keras or gRPC (the REST client imports it, and it must load in
milliseconds).

* SavedModel: the tag the server loads (:data:`SERVE_TAG`), the SignatureDef method names
  (:data:`PREDICT_METHOD`, :data:`CLASSIFY_METHOD`, :data:`REGRESS_METHOD`), and the signature
  keys of a causal LM export (:data:`LM_SIGNATURES`, :data:`STREAM_SIGNATURES`).
* ``assets.extra``: the warm-up records TF Serving replays (:data:`WARMUP_FILE`) and the zoo's
  export info (:data:`EXPORT_INFO_FILE`, whose ``format`` is :data:`EXPORT_FORMAT`);
  :data:`WARMUP_PATH` and :data:`EXPORT_INFO_PATH` are their paths inside a version directory.
* gRPC wire: the metadata field of ``GetModelMetadata`` (:data:`SIGNATURE_DEF_FIELD`), the
  message size limit both ends set (:data:`MAX_MESSAGE_LENGTH`) and the zoo's token-streaming
  service (:data:`GENERATION_SERVICE`, :data:`GENERATE_STREAM_METHOD`).
"""

from __future__ import annotations

import os

__all__ = [
    "CLASSIFY_METHOD",
    "DEFAULT_SERVING_SIGNATURE",
    "DETOKENIZE_SIGNATURE",
    "EXPORT_FORMAT",
    "EXPORT_INFO_FILE",
    "EXPORT_INFO_PATH",
    "EXTRA_ASSETS_DIR",
    "GENERATE_SIGNATURE",
    "GENERATE_STREAM",
    "GENERATE_STREAM_METHOD",
    "GENERATION_SERVICE",
    "LM_SIGNATURES",
    "MAX_MESSAGE_LENGTH",
    "PREDICT_METHOD",
    "REGRESS_METHOD",
    "SCORE_SIGNATURE",
    "SERVE_TAG",
    "SIGNATURE_DEF_FIELD",
    "STREAM_REQUIRED_SIGNATURES",
    "STREAM_SIGNATURES",
    "STREAM_START_SIGNATURE",
    "STREAM_STEP_SIGNATURE",
    "TOKENIZE_SIGNATURE",
    "WARMUP_FILE",
    "WARMUP_PATH",
]

# ----------------------------------------------------------------------------------------------
# SavedModel tag and SignatureDef method names (tensorflow/cc/saved_model/signature_constants.h)

SERVE_TAG = "serve"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

# ----------------------------------------------------------------------------------------------
# signature keys

DEFAULT_SERVING_SIGNATURE = "serving_default"  # what a request without a signature name runs
GENERATE_SIGNATURE = "generate"
SCORE_SIGNATURE = "score"
TOKENIZE_SIGNATURE = "tokenize"
DETOKENIZE_SIGNATURE = "detokenize"
STREAM_START_SIGNATURE = "stream_start"
STREAM_STEP_SIGNATURE = "stream_step"

# every causal LM export has these
LM_SIGNATURES = (
    DEFAULT_SERVING_SIGNATURE,
    GENERATE_SIGNATURE,
    SCORE_SIGNATURE,
    TOKENIZE_SIGNATURE,
    DETOKENIZE_SIGNATURE,
)
# what ``export.saved_model(..., streaming=True)`` adds to them
STREAM_SIGNATURES = (STREAM_START_SIGNATURE, STREAM_STEP_SIGNATURE)
# what the server needs to stream tokens from a servable (the decoding loop detokenizes too)
STREAM_REQUIRED_SIGNATURES = (*STREAM_SIGNATURES, DETOKENIZE_SIGNATURE)

# ----------------------------------------------------------------------------------------------
# files beside the SavedModel

EXTRA_ASSETS_DIR = "assets.extra"  # TF Serving's folder for files that are not graph assets
WARMUP_FILE = "tf_serving_warmup_requests"  # TFRecord of PredictionLog protos
EXPORT_INFO_FILE = "zoo_export.json"  # the run's config and the export settings
EXPORT_FORMAT = "zoo-saved-model/1"  # the export info's "format"
WARMUP_PATH = os.path.join(EXTRA_ASSETS_DIR, WARMUP_FILE)  # relative to a version directory
EXPORT_INFO_PATH = os.path.join(EXTRA_ASSETS_DIR, EXPORT_INFO_FILE)  # relative to a version directory

# ----------------------------------------------------------------------------------------------
# gRPC wire (server <-> client)

SIGNATURE_DEF_FIELD = "signature_def"  # GetModelMetadata's metadata field (kSignatureDef)
MAX_MESSAGE_LENGTH = 2**31 - 1  # tensorflow::kint32max, TF Serving's SetMaxMessageSize
GENERATION_SERVICE = "zoo.serving.GenerationService"
GENERATE_STREAM = "GenerateStream"
GENERATE_STREAM_METHOD = f"/{GENERATION_SERVICE}/{GENERATE_STREAM}"
