"""Export a trained zoo run as a TensorFlow SavedModel for TF Serving.

    import export
    path = export.saved_model("runs/shakespeare", "serving/models/shakespeare")   # -> .../1

``BASE/<version>/`` is the layout TF Serving watches (``--model_base_path=BASE``). The export is
written into a temporary directory inside ``BASE`` whose name (``.tmp-export-XXXX``) TF Serving
ignores, and renamed to the version number only once it is complete, so a poller never sees a
half-written version. Versions count up from 1 (the next integer after the largest numeric
version present) unless one is given.

Everything runs in-graph with stock TensorFlow kernels plus the tensorflow-text ops of the
run's tokenizer (``import tensorflow_text`` before loading): tokenization, the zoo's cached
decoding loop (``zoo.generation.decode.generate_ids``), per-row sampling and detokenization. No
function is compiled with XLA (stock TF Serving runs with XLA off). Signatures, all batched over
a dynamic batch dimension:

``serving_default``
    ``prompt`` string ``[B]`` -> ``text`` string ``[B]``: the continuation only, decoded with the
    export's settings (``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``; greedy by
    default). With ``temperature > 0`` every request draws fresh random seeds.

``generate``
    ``prompt`` string ``[B]``, ``max_new_tokens`` int32 ``[B]``, ``temperature`` float32 ``[B]``,
    ``top_k`` int32 ``[B]``, ``top_p`` float32 ``[B]``, ``seed`` int64 ``[B]`` ->
    ``text`` string ``[B]``, ``token_ids`` int32 ``[B, N]`` (right-padded with 0, ``N`` the
    longest continuation of the batch), ``num_tokens`` int32 ``[B]``. Per row: ``temperature
    <= 0`` is greedy; ``top_k <= 0`` and ``top_p >= 1`` switch those filters off; ``seed`` fixes
    the row's sample (the same seed, prompt and settings give the same text whatever else is in
    the batch). To reproduce ``run.generate(..., strategy="sample", seed=s)`` pass row ``b`` the
    seed ``zoo.generation.api._row_seed(s, b)``. ``max_new_tokens`` is clamped to
    ``[0, M]`` where ``M`` is the export's ``max_new_tokens`` (the static bound of the loop);
    ``0`` or less gives an empty continuation.

``score``
    ``text`` string ``[B]`` -> ``log_likelihood`` float32 ``[B]``, ``num_tokens`` int32 ``[B]``,
    ``perplexity`` float32 ``[B]`` (``exp(-log_likelihood / num_tokens)``, 1.0 when no token is
    scored). Stream model: the sum of ``log p(t_i | t_<i)`` over the text's tokens but the first
    (which has no context). Line model: the sequence ``<bos> text <eos>``, every token after
    ``<bos>`` (``<eos>`` included) scored. A transformer scores a text longer than its context
    in consecutive windows of ``max_length`` predictions, exactly as ``zoo eval`` walks a split
    (a window's first prediction sees only that window's first token). Same numbers as
    ``zoo.evaluation.score_texts``.

``tokenize``
    ``text`` string ``[B]`` -> ``token_ids`` int32 ``[B, N]`` (right-padded with 0; no
    ``<bos>``/``<eos>`` added), ``num_tokens`` int32 ``[B]``.

``detokenize``
    ``token_ids`` int32 ``[B, N]`` (0 = padding) -> ``text`` string ``[B]``. ``<pad>``,
    ``<bos>`` and ``<eos>`` are dropped; ids outside the vocabulary render as ``<unk>``.

By default (``streaming=False`` turns it off) two more signatures expose the decoding loop one
token at a time, with the model's cache as explicit state (``init_cache`` / ``call_with_cache``;
the nested cache flattened with ``tf.nest`` into ``cache_0 .. cache_K``). They take one prompt
(batch dimension 1) and give, token for token, what ``generate`` gives for that prompt with the
same settings and seed (same prompt handling, same cache length, same per-step choice):

``stream_start``
    ``prompt`` string ``[1]``, ``temperature`` float32 ``[1]``, ``top_k`` int32 ``[1]``,
    ``top_p`` float32 ``[1]``, ``seed`` int64 ``[1]`` -> ``token_id`` int32 ``[1]`` (the first new
    token), ``position`` int32 ``[1]`` (its position in the sequence), ``done`` bool ``[1]``
    (``token_id`` is a stop token, or the prompt was empty: nothing to emit), ``budget`` int32
    ``[1]`` (how many tokens may be generated in all: the export's ``max_new_tokens``, 0 for
    an empty prompt) and the cache tensors.

``stream_step``
    ``token_id``, ``position`` (as returned by the previous call), the sampling settings and the
    cache tensors -> the next ``token_id``, ``position``, ``done`` and the updated cache. Each
    step feeds one token (flat cost per token). ``budget - 1`` steps at most.

Prompt handling mirrors ``zoo.generation.generate`` (``run.generate``):

* line models (``corpus_kind == "lines"``) get ``<bos>`` prepended and stop at ``<eos>``;
* a transformer's prompt keeps its last ``max_length - M`` tokens (left truncation), ``M``
  being the export's ``max_new_tokens`` -- the same tokens ``run.generate(...,
  max_new_tokens=M)`` keeps, whatever a row's own ``max_new_tokens``. The Python API's sliding
  window for continuations longer than the context is not exported: ``M`` must be smaller
  than the transformer's ``max_length`` (checked at export time);
* an empty prompt of a stream model (no token to condition on) gives an empty continuation
  (``text == ""``, ``num_tokens == 0``) for that row instead of an error; the other rows of
  the batch are unaffected. A line model's empty prompt is just ``<bos>``;
* characters a character tokenizer has never seen become ``<unk>`` (the Python API refuses
  such prompts; a server cannot ask back). ``<unk>`` detokenizes to U+FFFD.

Files: ``saved_model.pb``, ``variables/``, ``assets/`` (the tokenizer's files, for reference:
the tokenizer's tables are built from constants inside the graph),
``assets.extra/tf_serving_warmup_requests`` (``PredictionLog`` records TF Serving replays at
load time: ``serving_default``, ``generate`` and ``score`` on a batch of two prompts) and
``assets.extra/zoo_export.json`` (the run's config and the export settings).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import secrets
import shutil
import sys
import tempfile
import types

import numpy as np
import tensorflow as tf

from zoo.errors import ZooError
from zoo.generation.decode import PROMPT_BUCKET, _next_logits, generate_ids
from zoo.generation.sampling import next_token
from zoo.tasks import task_of
from zoo.tokenizers.base import BOS_ID, EOS_ID, UNK_ID

__all__ = [
    "SIGNATURES",
    "STREAM_SIGNATURES",
    "WARMUP_FILE",
    "EXPORT_INFO_FILE",
    "next_version",
    "saved_model",
    "build_serving_module",
]

WARMUP_FILE = "tf_serving_warmup_requests"
EXPORT_INFO_FILE = "zoo_export.json"
TEMP_PREFIX = ".tmp-export-"
SIGNATURES = ("serving_default", "generate", "score", "tokenize", "detokenize")
STREAM_SIGNATURES = ("stream_start", "stream_step")

_REQUIRED_RUN_FILES = ("config.json", os.path.join("tokenizer", "tokenizer.json"), "model.keras")


# ------------------------------------------------------------------------------------------------
# the in-graph serving module


def _as_ragged_rows(ids) -> tf.RaggedTensor:
    """Tokenizer output -> int32 ``RaggedTensor`` ``(B, None)``."""
    if not isinstance(ids, tf.RaggedTensor):
        ids = tf.RaggedTensor.from_tensor(ids)
    if ids.ragged_rank > 1:
        ids = ids.merge_dims(1, -1)
    return tf.cast(ids, tf.int32)


def _with_bos(ids: tf.RaggedTensor, bos_id: int = BOS_ID,
              eos_id: int | None = None) -> tf.RaggedTensor:
    batch = ids.nrows(out_type=tf.int32)
    parts = [tf.RaggedTensor.from_tensor(tf.fill([batch, 1], bos_id)), ids]
    if eos_id is not None:
        parts.append(tf.RaggedTensor.from_tensor(tf.fill([batch, 1], eos_id)))
    return tf.concat(parts, axis=1)


def _keep_last(ids: tf.RaggedTensor, keep: int) -> tf.RaggedTensor:
    """Left-truncate every row to its last ``keep`` tokens (as ``zoo.generation.api``)."""
    lengths = ids.row_lengths()
    first = tf.maximum(lengths - keep, 0)
    return tf.ragged.boolean_mask(ids, tf.ragged.range(lengths) >= first[:, None])


def _batch_size(tensor) -> tf.Tensor:
    return tf.shape(tensor, out_type=tf.int32)[0]


class _ServingModule(tf.Module):
    """Holds the model's variables, the tokenizer (its tables) and the signature functions.

    The Keras model itself is kept out of the object graph (only its variables are tracked), so
    the SavedModel has no Keras objects and loads with plain TensorFlow.
    """

    def __init__(self, model, tokenizer, *, line_corpus: bool, max_new_tokens: int,
                 temperature: float, top_k: int, top_p: float, asset_paths=(),
                 streaming: bool = True, stop_token_ids=None):
        super().__init__(name="zoo_serving")
        self.model_variables = list(model.variables)
        self.tokenizer = tokenizer
        self.tokenizer_assets = [tf.saved_model.Asset(path) for path in asset_paths]
        # plain Python state, not tracked
        self._model_ref = types.SimpleNamespace(model=model)
        self._line = bool(line_corpus)
        self._max_new = int(max_new_tokens)
        self._defaults = (float(temperature), int(top_k), float(top_p))
        self._max_length = getattr(model, "max_length", None)
        # the tokenizer's special ids (GPT-2: <|endoftext|> as bos/eos, nothing suppressed)
        self._bos = getattr(tokenizer, "bos_id", BOS_ID)
        self._eos = getattr(tokenizer, "eos_id", EOS_ID)
        self._suppressed = getattr(tokenizer, "suppressed_ids", None)
        if stop_token_ids is None:
            stop_token_ids = (self._eos,) if self._line else ()
        self._stop_ids = tuple(int(t) for t in stop_token_ids)

        string_batch = tf.TensorSpec([None], tf.string)
        int_batch = tf.TensorSpec([None], tf.int32)
        float_batch = tf.TensorSpec([None], tf.float32)
        self.serving_default = tf.function(
            self._serving_default, input_signature=[string_batch], autograph=False
        )
        self.generate = tf.function(
            self._generate,
            input_signature=[
                string_batch, int_batch, float_batch, int_batch, float_batch,
                tf.TensorSpec([None], tf.int64),
            ],
            autograph=False,
        )
        self.score = tf.function(self._score, input_signature=[string_batch], autograph=False)
        self.tokenize = tf.function(
            self._tokenize, input_signature=[string_batch], autograph=False
        )
        self.detokenize = tf.function(
            self._detokenize, input_signature=[tf.TensorSpec([None, None], tf.int32)],
            autograph=False,
        )
        self._streaming = bool(streaming)
        if self._streaming:
            self._build_streaming()

    @property
    def _model(self):
        return self._model_ref.model

    def signatures(self) -> dict:
        return {
            "serving_default": self.serving_default.get_concrete_function(),
            "generate": self.generate.get_concrete_function(),
            "score": self.score.get_concrete_function(),
            "tokenize": self.tokenize.get_concrete_function(),
            "detokenize": self.detokenize.get_concrete_function(),
            **(
                {
                    "stream_start": self.stream_start.get_concrete_function(),
                    "stream_step": self.stream_step.get_concrete_function(),
                }
                if self._streaming
                else {}
            ),
        }

    # -- pieces ---------------------------------------------------------------------------------

    def _token_ids(self, texts) -> tf.RaggedTensor:
        return _as_ragged_rows(self.tokenizer.tokenize(texts))

    def _prompts(self, prompt):
        """Prompt strings -> ``(prompt_ids (B, P) right-padded, lengths (B,), empty (B,))``.

        Mirrors ``zoo.generation.generate``: ``<bos>`` for line models, left truncation to
        ``max_length - M`` tokens, and the width padded to the next multiple of
        ``PROMPT_BUCKET`` (capped by the context), so the loop runs on the same shapes.
        Empty rows get a placeholder token (and no budget: see ``_decode``).
        """
        ids = self._token_ids(prompt)
        if self._line:
            ids = _with_bos(ids, self._bos)
        if self._max_length is not None:
            ids = _keep_last(ids, self._max_length - self._max_new)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        empty = lengths <= 0
        dense = ids.to_tensor(default_value=0)
        width = tf.maximum(tf.shape(dense, out_type=tf.int32)[1], 1)
        padded = (width + PROMPT_BUCKET - 1) // PROMPT_BUCKET * PROMPT_BUCKET
        if self._max_length is not None:
            padded = tf.minimum(padded, self._max_length - self._max_new)
        padded = tf.maximum(padded, width)
        dense = tf.pad(dense, [[0, 0], [0, padded - tf.shape(dense, out_type=tf.int32)[1]]])
        first_column = tf.range(padded)[None, :] == 0
        dense = tf.where(tf.logical_and(empty[:, None], first_column), UNK_ID, dense)
        lengths = tf.where(empty, 1, lengths)
        return dense, lengths, empty

    def _decode(self, prompt, row_max, temperature=None, top_k=None, top_p=None, seeds=None):
        prompt_ids, lengths, empty = self._prompts(prompt)
        row_max = tf.where(empty, 0, tf.clip_by_value(row_max, 0, self._max_new))
        new_ids, num_new = generate_ids(
            self._model,
            prompt_ids,
            lengths,
            self._max_new,
            row_max_new_tokens=row_max,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seeds=seeds,
            stop_token_ids=self._stop_ids,
            jit_compile=False,
            prefill_length=None,
            suppressed_token_ids=self._suppressed,
        )
        text = self.tokenizer.detokenize(tf.RaggedTensor.from_tensor(new_ids, lengths=num_new))
        return text, new_ids, num_new

    # -- streaming: the decoding loop one step per call, the cache as explicit state ---------

    def _build_streaming(self) -> None:
        """Signatures ``stream_start`` / ``stream_step`` (see the module docstring).

        The cache's structure and shapes come from ``init_cache``: dimensions that change with
        the cache length (a transformer's time axis) are left unknown in the signature, the
        others are static.
        """
        model = self._model
        short = model.init_cache(1, 2 * PROMPT_BUCKET)
        long = model.init_cache(1, 3 * PROMPT_BUCKET)
        self._cache_structure = short
        leaves = tf.nest.flatten(short)
        shapes = []
        for a, b in zip(leaves, tf.nest.flatten(long), strict=True):
            dims = [x if x == y else None for x, y in zip(a.shape.as_list(), b.shape.as_list(),
                                                          strict=True)]
            dims[0] = 1
            shapes.append((dims, a.dtype))
        self._num_cache = len(leaves)
        cache_specs = [
            tf.TensorSpec(dims, dtype, name=f"cache_{i}") for i, (dims, dtype) in enumerate(shapes)
        ]
        settings = [
            tf.TensorSpec([1], tf.float32, name="temperature"),
            tf.TensorSpec([1], tf.int32, name="top_k"),
            tf.TensorSpec([1], tf.float32, name="top_p"),
            tf.TensorSpec([1], tf.int64, name="seed"),
        ]
        self.stream_start = tf.function(
            self._stream_start,
            input_signature=[tf.TensorSpec([1], tf.string, name="prompt"), *settings],
            autograph=False,
        )
        self.stream_step = tf.function(
            self._stream_step,
            input_signature=[
                tf.TensorSpec([1], tf.int32, name="token_id"),
                tf.TensorSpec([1], tf.int32, name="position"),
                *settings,
                *cache_specs,
            ],
            autograph=False,
        )

    def _cache_outputs(self, cache) -> dict:
        return {f"cache_{i}": leaf for i, leaf in enumerate(tf.nest.flatten(cache))}

    def _choose_next(self, logits, temperature, top_k, top_p, seed, step):
        """The choice ``generate`` makes at position ``step`` (same masking, same noise)."""
        last = _next_logits(logits[:, -1, :], self._suppressed)
        return next_token(last, temperature, top_k, top_p, seed, step)

    def _is_stop(self, token):
        if not self._stop_ids:
            return tf.zeros_like(token, tf.bool)
        stops = tf.constant(self._stop_ids, tf.int32)
        return tf.reduce_any(tf.equal(token[:, None], stops[None, :]), axis=-1)

    def _stream_start(self, prompt, temperature, top_k, top_p, seed):
        prompt_ids, lengths, empty = self._prompts(prompt)
        length = lengths[0]
        total = tf.shape(prompt_ids, out_type=tf.int32)[1] + self._max_new
        cache = self._model.init_cache(1, total)
        logits, cache = self._model.call_with_cache(
            prompt_ids[:, :length], cache, tf.constant(0, tf.int32)
        )
        token = self._choose_next(logits, temperature, top_k, top_p, seed, length)
        done = tf.logical_or(empty, self._is_stop(token))
        budget = tf.where(empty, 0, self._max_new)
        return {
            "token_id": token,
            "position": tf.reshape(length, [1]),
            "done": done,
            "budget": budget,
            **self._cache_outputs(cache),
        }

    def _stream_step(self, token_id, position, temperature, top_k, top_p, seed, *cache_leaves):
        cache = tf.nest.pack_sequence_as(self._cache_structure, list(cache_leaves))
        index = position[0]
        logits, cache = self._model.call_with_cache(token_id[:, None], cache, index)
        token = self._choose_next(logits, temperature, top_k, top_p, seed, index + 1)
        return {
            "token_id": token,
            "position": position + 1,
            "done": self._is_stop(token),
            **self._cache_outputs(cache),
        }

    # -- signatures -----------------------------------------------------------------------------

    def _serving_default(self, prompt):
        batch = _batch_size(prompt)
        row_max = tf.fill([batch], self._max_new)
        temperature, top_k, top_p = self._defaults
        if temperature > 0:
            seeds = tf.random.uniform([batch], 0, tf.int64.max, dtype=tf.int64)
            text, _, _ = self._decode(
                prompt, row_max, tf.fill([batch], temperature), tf.fill([batch], top_k),
                tf.fill([batch], top_p), seeds,
            )
        else:
            text, _, _ = self._decode(prompt, row_max)
        return {"text": text}

    def _generate(self, prompt, max_new_tokens, temperature, top_k, top_p, seed):
        batch = tf.shape(prompt)
        checks = [
            tf.debugging.assert_equal(
                tf.shape(value), batch,
                message=f"generate: '{name}' must have one value per prompt",
            )
            for name, value in (
                ("max_new_tokens", max_new_tokens), ("temperature", temperature),
                ("top_k", top_k), ("top_p", top_p), ("seed", seed),
            )
        ]
        with tf.control_dependencies(checks):
            prompt = tf.identity(prompt)
        text, new_ids, num_new = self._decode(
            prompt, max_new_tokens, temperature, top_k, top_p, seed
        )
        longest = tf.reduce_max(tf.concat([num_new, [0]], axis=0))
        return {"text": text, "token_ids": new_ids[:, :longest], "num_tokens": num_new}

    def _score(self, text):
        ids = self._token_ids(text)
        if self._line:
            ids = _with_bos(ids, self._bos, self._eos)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        seq = ids.to_tensor(default_value=0)
        batch = _batch_size(seq)
        total = tf.shape(seq, out_type=tf.int32)[1]
        width = tf.maximum(total - 1, 1)  # prediction positions
        window = self._max_length
        if window is not None:
            width = (width + window - 1) // window * window
        seq = tf.pad(seq, [[0, 0], [0, width + 1 - total]])
        inputs, labels = seq[:, :-1], seq[:, 1:]
        if window is not None:  # consecutive windows of `window` predictions, as zoo eval
            inputs = tf.reshape(inputs, [-1, window])
        logits = self._model(inputs, training=False)
        logits = tf.cast(logits, tf.float32)
        logits = tf.reshape(logits, tf.concat([[batch, width], tf.shape(logits)[-1:]], axis=0))
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        picked = tf.gather(log_probs, labels, batch_dims=2)
        scored = tf.range(width)[None, :] + 1 < lengths[:, None]
        picked = tf.where(scored, tf.cast(picked, tf.float64), tf.constant(0.0, tf.float64))
        log_likelihood = tf.reduce_sum(picked, axis=1)
        num_tokens = tf.reduce_sum(tf.cast(scored, tf.int32), axis=1)
        nll = -log_likelihood / tf.cast(tf.maximum(num_tokens, 1), tf.float64)
        return {
            "log_likelihood": tf.cast(log_likelihood, tf.float32),
            "num_tokens": num_tokens,
            "perplexity": tf.cast(tf.exp(nll), tf.float32),
        }

    def _tokenize(self, text):
        ids = self._token_ids(text)
        return {
            "token_ids": ids.to_tensor(default_value=0),
            "num_tokens": tf.cast(ids.row_lengths(), tf.int32),
        }

    def _detokenize(self, token_ids):
        return {"text": self.tokenizer.detokenize(token_ids)}


def build_serving_module(model, tokenizer, *, line_corpus: bool, max_new_tokens: int = 64,
                         temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                         asset_paths=(), streaming: bool = True,
                         stop_token_ids=None) -> _ServingModule:
    """The ``tf.Module`` that ``saved_model`` saves (also usable eagerly, e.g. in tests).
    ``stop_token_ids``: default ``<eos>`` for a line corpus, none for a stream."""
    return _ServingModule(
        model, tokenizer, line_corpus=line_corpus, max_new_tokens=max_new_tokens,
        temperature=temperature, top_k=top_k, top_p=top_p, asset_paths=asset_paths,
        streaming=streaming, stop_token_ids=stop_token_ids,
    )


# ------------------------------------------------------------------------------------------------
# warm-up requests


def _warmup_prompts(tokenizer) -> list[bytes]:
    """Two prompts of different lengths made of in-vocabulary tokens."""
    size = tokenizer.vocab_size
    first = [4 + i % max(size - 4, 1) for i in range(3)]
    second = [4 + (i * 7 + 1) % max(size - 4, 1) for i in range(9)]
    texts = tokenizer.detokenize(tf.constant([first + [0] * 6, second], tf.int32)).numpy()
    return [bytes(t) for t in texts]


def _warmup_records(tokenizer, max_new_tokens: int) -> list[bytes]:
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    prompts = np.array(_warmup_prompts(tokenizer), dtype=object)
    batch = len(prompts)
    budget = min(max_new_tokens, 8)
    requests = {
        "serving_default": {"prompt": prompts},
        "generate": {
            "prompt": prompts,
            "max_new_tokens": np.full([batch], budget, np.int32),
            "temperature": np.array([0.0, 0.8], np.float32),
            "top_k": np.array([0, 10], np.int32),
            "top_p": np.array([1.0, 0.9], np.float32),
            "seed": np.array([0, 1], np.int64),
        },
        "score": {"text": prompts},
    }
    records = []
    for signature, inputs in requests.items():
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(signature_name=signature)
        )
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        records.append(log.SerializeToString())
    return records


def write_warmup_file(path: str, tokenizer, max_new_tokens: int) -> None:
    """Write ``tf_serving_warmup_requests`` (a TFRecord of ``PredictionLog`` protos)."""
    with tf.io.TFRecordWriter(path) as writer:
        for record in _warmup_records(tokenizer, max_new_tokens):
            writer.write(record)


# ------------------------------------------------------------------------------------------------
# versions and argument checks


def _numeric_versions(base: str) -> list[int]:
    if not os.path.isdir(base):
        return []
    return [int(name) for name in os.listdir(base) if name.isdigit() and name.isascii()]


def next_version(base: str) -> int:
    """One more than the largest numeric version directory in ``base`` (1 when there is none)."""
    versions = _numeric_versions(base)
    return max(versions) + 1 if versions else 1


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_settings(max_new_tokens, temperature, top_k, top_p, version) -> None:
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise ZooError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if (not isinstance(temperature, numbers.Real) or isinstance(temperature, bool)
            or not math.isfinite(temperature) or temperature < 0):
        raise ZooError(f"temperature must be a number >= 0, got {temperature!r}")
    if not _is_int(top_k) or top_k < 0:
        raise ZooError(f"top_k must be an integer >= 0 (0 = off), got {top_k!r}")
    if (not isinstance(top_p, numbers.Real) or isinstance(top_p, bool)
            or not 0 < top_p <= 1):
        raise ZooError(f"top_p must be in (0, 1], got {top_p!r}")
    if version is not None and (not _is_int(version) or version < 0):
        raise ZooError(f"version must be an integer >= 0, got {version!r}")


def _load_run(run_or_model):
    from zoo.run import LoadedRun, load

    if isinstance(run_or_model, LoadedRun):
        return run_or_model
    if not isinstance(run_or_model, (str, os.PathLike)):
        raise ZooError(
            f"expected a run directory or a LoadedRun, got {type(run_or_model).__name__}"
        )
    path = os.fspath(run_or_model)
    if not os.path.isdir(path):
        raise ZooError(f"run directory {path!r} does not exist")
    for entry in _REQUIRED_RUN_FILES:
        if not os.path.isfile(os.path.join(path, entry)):
            raise ZooError(
                f"{path} is not a finished run: {entry} is missing (train it to the end first)"
            )
    return load(path)


# ------------------------------------------------------------------------------------------------
# the export


def saved_model(run_or_model, base: str, version: int | None = None, *, max_new_tokens: int = 64,
                temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                streaming: bool = True) -> str:
    """Export a run (directory or ``LoadedRun``) as SavedModel ``BASE/<version>/``; returns its path.

    Args:
      run_or_model: a finished run directory (``config.json``, ``tokenizer/``, ``model.keras``)
        or a ``zoo.LoadedRun``.
      base: the model's base directory (TF Serving's ``--model_base_path``); created if needed.
      version: the version number; default: the next one after the largest present.
      max_new_tokens: the static bound of the decoding loop (``M``) and ``serving_default``'s
        budget. For a transformer it must be smaller than ``max_length``.
      temperature, top_k, top_p: ``serving_default``'s decoding (greedy when
        ``temperature == 0``).
      streaming: also export ``stream_start`` / ``stream_step`` (token-by-token decoding with
        the cache as explicit state; what ``zoo serve``'s ``:generate_stream`` route uses).

    Raises ``ZooError`` for a missing or unfinished run, bad settings, or an existing version.
    Nothing is left in ``base`` when the export fails.
    """
    _check_settings(max_new_tokens, temperature, top_k, top_p, version)
    run = _load_run(run_or_model)
    max_length = getattr(run.model, "max_length", None)
    causal = task_of(run.config) == "causal_lm"
    if causal and max_length is not None and max_new_tokens >= max_length:
        raise ZooError(
            f"max_new_tokens={max_new_tokens} must be smaller than the model's context "
            f"max_length={max_length}: the export does not slide the window like "
            "run.generate() does"
        )
    base = os.path.abspath(os.fspath(base))
    if os.path.exists(base) and not os.path.isdir(base):
        raise ZooError(f"{base} exists and is not a directory")
    if version is not None and os.path.exists(os.path.join(base, str(version))):
        raise ZooError(f"version {version} already exists in {base}")

    created_base = not os.path.exists(base)
    os.makedirs(base, exist_ok=True)
    tmp = _make_temp_dir(base)
    try:
        settings = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p)
        if streaming:
            settings["streaming"] = True
        _write(run, tmp, **settings)
        final = _publish(tmp, base, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_base:
            try:
                os.rmdir(base)
            except OSError:
                pass
        raise
    return final


def _make_temp_dir(base: str) -> str:
    """A new hidden directory in ``base``, with the umask's usual permissions (``mkdtemp``'s
    0700 would hide the version from a server running as another user)."""
    for _ in range(100):
        path = os.path.join(base, TEMP_PREFIX + secrets.token_hex(4))
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise ZooError(f"cannot create a temporary directory in {base}")


def _publish(tmp: str, base: str, version: int | None) -> str:
    """Rename the finished export to its version (retrying the next number when another
    exporter took an automatic one first)."""
    for _ in range(100):
        number = next_version(base) if version is None else version
        final = os.path.join(base, str(number))
        if os.path.exists(final):
            if version is not None:
                raise ZooError(f"version {version} already exists in {base}")
            continue
        try:
            os.rename(tmp, final)
        except OSError as err:
            if version is not None or not os.path.exists(final):
                raise ZooError(f"cannot move the export to {final}: {err}") from err
            continue
        return final
    raise ZooError(f"could not find a free version number in {base}")


def _write(run, directory: str, **settings) -> None:
    task = task_of(run.config)
    if task != "causal_lm":
        _write_task(run, task, directory, **settings)
        return
    line_corpus = run.config.get("corpus_kind") == "lines"
    with tempfile.TemporaryDirectory(prefix="zoo-tokenizer-") as tok_dir:
        run.tokenizer.save(tok_dir)
        asset_paths = sorted(os.path.join(tok_dir, name) for name in os.listdir(tok_dir))
        module = build_serving_module(
            run.model, run.tokenizer, line_corpus=line_corpus, asset_paths=asset_paths,
            stop_token_ids=getattr(run, "stop_token_ids", None), **settings,
        )
        tf.saved_model.save(module, directory, signatures=module.signatures())
    extra = os.path.join(directory, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    write_warmup_file(os.path.join(extra, WARMUP_FILE), run.tokenizer,
                      settings["max_new_tokens"])
    info = {
        "format": "zoo-saved-model/1",
        "signatures": list(SIGNATURES) + (list(STREAM_SIGNATURES) if settings.get("streaming")
                                           else []),
        "export": dict(settings, line_corpus=line_corpus,
                       max_length=getattr(run.model, "max_length", None)),
        "tokenizer": {"kind": run.tokenizer.kind, "vocab_size": run.tokenizer.vocab_size},
        "run": run.config,
        "run_path": os.path.abspath(run.path) if run.path else None,
        "versions": _versions(),
    }
    with open(os.path.join(extra, EXPORT_INFO_FILE), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, default=str)


def _write_task(run, task: str, directory: str, **settings) -> None:
    """Masked LM, translation, classification: the task module builds the signatures."""
    from zoo.tasks import get_task

    task_module = get_task(task)
    module, signatures, export_settings = task_module.serving_module(run, **settings)
    tf.saved_model.save(module, directory, signatures=signatures)
    if export_settings.get("method_names"):  # e.g. a classify signature for TF Serving's Classify
        from export._signature_method import set_method_names

        set_method_names(directory, export_settings["method_names"])
    extra = os.path.join(directory, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    records = task_module.warmup_records(run)
    if records:
        with tf.io.TFRecordWriter(os.path.join(extra, WARMUP_FILE)) as writer:
            for record in records:
                writer.write(record)
    info = {
        "format": "zoo-saved-model/1",
        "task": task,
        "signatures": sorted(signatures),
        "export": export_settings,
        "tokenizer": {"kind": run.tokenizer.kind, "vocab_size": run.tokenizer.vocab_size},
        "run": run.config,
        "run_path": os.path.abspath(run.path) if run.path else None,
        "versions": _versions(),
    }
    with open(os.path.join(extra, EXPORT_INFO_FILE), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, default=str)


def _versions() -> dict:
    versions = {"tensorflow": tf.__version__}
    try:
        import tensorflow_text

        versions["tensorflow_text"] = tensorflow_text.__version__
    except ImportError:  # pragma: no cover - the zoo depends on it
        pass
    return versions


# ``export.saved_model`` is this module (Python binds a package attribute to its submodule on
# import); making the module callable lets ``export.saved_model(run, base)`` work whichever way
# it was imported.
class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return saved_model(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
