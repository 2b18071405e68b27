"""Export a trained zoo run as a LiteRT (TensorFlow Lite) flatbuffer, tokenizer inside.

    from export.tflite import LiteRTModel, export_tflite
    info = export_tflite("runs/shakespeare", "shakespeare.tflite", quantize="dynamic")
    lm = LiteRTModel(info["path"])
    lm.generate("ROMEO:")                 # the greedy continuation, like run.generate(...)
    lm.score(["To be, or not to be"])     # (log_likelihood, num_tokens)

The flatbuffer holds only LiteRT builtin ops plus three tensorflow-text ops with LiteRT kernels
(``TFText>ByteSplitWithOffsets``, ``RaggedTensorToTensor``, ``TFText>NgramsStringJoin``); no
Flex (``SELECT_TF_OPS``) op. Run it with the LiteRT interpreter and tensorflow-text's
registrars: ``load_interpreter(path)`` does

    ai_edge_litert.interpreter.InterpreterWithCustomOps(
        model_path=path, custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS)

(``ai_edge_litert.interpreter.Interpreter`` itself takes no ``custom_op_registerers``.)

Signatures (every input and output batched over a dynamic batch dimension ``B``):

``generate``
    ``prompt`` string ``[B]`` -> ``text`` string ``[B]`` (the continuation only),
    ``token_ids`` int32 ``[B, M]`` (0 after ``num_tokens``), ``num_tokens`` int32 ``[B]``.
    Greedy, ``M`` = the export's ``max_new_tokens``: the same text as
    ``run.generate(prompt, strategy="greedy", max_new_tokens=M)``.
``sample``
    ``prompt`` string ``[B]``, ``temperature`` float32 ``[B]``, ``top_k`` int32 ``[B]``,
    ``top_p`` float32 ``[B]``, ``seed`` int64 ``[B]`` -> as ``generate``. Per row:
    ``temperature <= 0`` is greedy; ``top_k <= 0`` / ``top_p >= 1`` switch the filters off; the
    draw is the zoo's counter-based Gumbel-max draw, so row ``b`` of
    ``run.generate(prompts, strategy="sample", seed=s, ...)`` is reproduced with the seed
    ``zoo.generation.api._row_seed(s, b)``.
``score``
    ``text`` string ``[B]`` -> ``log_likelihood`` float32 ``[B]``, ``num_tokens`` int32 ``[B]``:
    ``sum log p(t_i | t_<i)`` over the text's tokens but the first (line models: over
    ``<bos> text <eos>``, every token after ``<bos>``); a transformer scores a text longer than
    its context in consecutive windows of ``max_length`` predictions. Same numbers as the
    SavedModel export's ``score`` (summed in float32 here).
``tokenize``
    ``text`` string ``[B]`` -> ``token_ids`` int32 ``[B, N]`` (0-padded), ``num_tokens`` int32
    ``[B]``: the zoo tokenizer's ids (no ``<bos>``/``<eos>``).

Prompts are handled as ``zoo.generation.generate`` does: line models (``corpus_kind ==
"lines"``) get ``<bos>`` and stop at ``<eos>``; a transformer keeps the last ``max_length - M``
prompt tokens. Unlike the Python API: an empty prompt of a stream model gives an empty
continuation (``text == ""``, ``num_tokens == 0``) instead of an error (a line model's empty
prompt is just ``<bos>``), and characters a character tokenizer does not know become ``<unk>``
instead of an error. Prompts must be valid UTF-8 for ids identical to the zoo tokenizer's.

Supported: the ``char`` and ``sentencepiece`` (BPE, as the zoo trains it) tokenizers and GPT-2's
``byte_bpe`` (``export/_tflite_byte_bpe.py``), with every zoo model (``transformer_lm``,
``gpt2``, ``lstm_lm``, ``gru_lm``, ``rnn_lm``, ``mlp_lm``). The ``word`` and
``wordpiece`` tokenizers and SentencePiece unigram models raise ``ZooError`` (see
``export/_tflite_text.py``).

Quantization (``quantize``): ``"none"`` (float32), ``"float16"`` (float16 weights,
``supported_types=[tf.float16]``), ``"dynamic"`` (int8 weights, dynamic-range activations:
``Optimize.DEFAULT``), ``"int8"`` (``Optimize.DEFAULT`` with a representative dataset: the
``score`` signature run on real text windows of the training split; inputs and outputs keep
their types, ops without an int8 kernel stay float).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import types

import numpy as np
import tensorflow as tf

from export._tflite_byte_bpe import ByteBPECodec
from export._tflite_decode import decode, log_likelihood, make_stepper
from export._tflite_text import build_codec
from zoo.errors import ZooError
from zoo.generation.decode import SUPPRESSED_TOKEN_IDS
from zoo.tokenizers.base import BOS_ID, EOS_ID, PAD_ID, UNK_ID

__all__ = [
    "QUANTIZE_MODES",
    "SIGNATURES",
    "TFTEXT_CUSTOM_OPS",
    "LiteRTModel",
    "corpus_windows",
    "export_tflite",
    "load_interpreter",
    "model_ops",
]

QUANTIZE_MODES = ("none", "float16", "dynamic", "int8")
SIGNATURES = ("generate", "sample", "score", "tokenize")
# LiteRT custom op names registered by tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS
TFTEXT_CUSTOM_OPS = frozenset(
    {
        "TFText>ByteSplitWithOffsets",
        "TFText>ByteSplitByOffsets",
        "TFText>FastBertNormalize",
        "TFText>FastSentencepieceTokenize",
        "TFText>FastSentencepieceDetokenize",
        "TFText>FastWordpieceTokenize",
        "TFText>FastWordpieceDetokenize",
        "TFText>NgramsStringJoin",
        "RaggedTensorToTensor",
        "TFText>RoundRobinGenerateMasks",
        "TFText>RoundRobinTrim",
        "TFText>SentenceFragmenterV2",
        "TFText>Utf8Binarize",
        "TFText>WhitespaceTokenizeWithOffsetsV2",
    }
)
DEFAULT_CALIBRATION_WINDOWS = 64


# ------------------------------------------------------------------------------------------------
# the in-graph module


def _batch(tensor):
    return tf.shape(tensor)[0]


class _LiteRTModule(tf.Module):
    """The model's variables, the tokenizer tables and the signature functions."""

    def __init__(self, model, codec, *, line_corpus: bool, max_new_tokens: int,
                 stop_ids=None, suppressed_ids=SUPPRESSED_TOKEN_IDS):
        super().__init__(name="zoo_litert")
        self.model_variables = list(model.variables)
        self._ref = types.SimpleNamespace(model=model, codec=codec)
        self._stepper = make_stepper(model)
        self._line = bool(line_corpus)
        self._max_new = int(max_new_tokens)
        self._max_length = getattr(model, "max_length", None)
        self._vocab_size = int(model.vocab_size)
        self._stop_ids = ((EOS_ID,) if self._line else ()) if stop_ids is None else tuple(stop_ids)
        self._suppressed = tuple(suppressed_ids)
        strings = tf.TensorSpec([None], tf.string)
        self.generate = tf.function(
            self._generate, input_signature=[strings], autograph=False
        )
        self.sample = tf.function(
            self._sample,
            input_signature=[
                strings,
                tf.TensorSpec([None], tf.float32),
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None], tf.float32),
                tf.TensorSpec([None], tf.int64),
            ],
            autograph=False,
        )
        self.score = tf.function(self._score, input_signature=[strings], autograph=False)
        self.tokenize = tf.function(self._tokenize, input_signature=[strings], autograph=False)

    def signatures(self) -> dict:
        return {name: getattr(self, name).get_concrete_function() for name in SIGNATURES}

    @property
    def _codec(self):
        return self._ref.codec

    def _prompts(self, prompt):
        """Prompt strings -> ``(ids (B, P), lengths (B,), empty (B,))`` as ``generate`` sees them."""
        ids, lengths = self._codec.encode(prompt)
        batch = _batch(ids)
        if self._line:
            ids = tf.concat([tf.fill(tf.stack([batch, 1]), BOS_ID), ids], axis=1)
            lengths = lengths + 1
        if self._max_length is not None:  # keep the last max_length - M tokens
            keep = self._max_length - self._max_new
            width = tf.shape(ids)[1]
            first = tf.maximum(lengths - keep, 0)
            columns = tf.range(width)[None, :]
            source = tf.minimum(first[:, None] + columns, width - 1)
            lengths = lengths - first
            ids = tf.where(columns < lengths[:, None], tf.gather(ids, source, batch_dims=1), 0)
            ids = ids[:, : tf.minimum(width, keep)]
        empty = lengths <= 0
        first_column = tf.range(tf.shape(ids)[1])[None, :] == 0
        ids = tf.where(tf.logical_and(empty[:, None], first_column), UNK_ID, ids)
        return ids, tf.maximum(lengths, 1), empty

    def _continue(self, prompt, sampling=None):
        ids, lengths, empty = self._prompts(prompt)
        row_max = tf.where(empty, 0, self._max_new)
        new_ids, num_new = decode(
            self._stepper,
            ids,
            lengths,
            row_max,
            max_new_tokens=self._max_new,
            vocab_size=self._vocab_size,
            stop_ids=self._stop_ids,
            sampling=sampling,
            suppressed=self._suppressed,
        )
        text = self._codec.decode(new_ids, num_new)
        return {"text": text, "token_ids": new_ids, "num_tokens": num_new}

    def _generate(self, prompt):
        return self._continue(prompt)

    def _sample(self, prompt, temperature, top_k, top_p, seed):
        return self._continue(prompt, (temperature, top_k, top_p, seed))

    def _score(self, text):
        ids, lengths = self._codec.encode(text)
        if self._line:
            batch = _batch(ids)
            ids = tf.concat(
                [tf.fill(tf.stack([batch, 1]), BOS_ID), ids, tf.fill(tf.stack([batch, 1]), PAD_ID)],
                axis=1,
            )
            columns = tf.range(tf.shape(ids)[1])[None, :]
            ids = tf.where(columns == lengths[:, None] + 1, EOS_ID, ids)
            lengths = lengths + 2
        total, num_tokens = log_likelihood(self._stepper, ids, lengths, self._max_length)
        return {"log_likelihood": total, "num_tokens": num_tokens}

    def _tokenize(self, text):
        ids, lengths = self._codec.encode(text)
        return {"token_ids": ids, "num_tokens": lengths}


def build_module(run, max_new_tokens: int = 32) -> _LiteRTModule:
    """The ``tf.Module`` whose signatures are converted (it also runs in TensorFlow)."""
    model = run.model
    if model.compute_dtype != "float32":
        raise ZooError(
            f"LiteRT export: the model computes in {model.compute_dtype}; export a float32 "
            "model (quantize='float16' gives a smaller file)"
        )
    max_length = getattr(model, "max_length", None)
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ZooError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if max_length is not None and max_new_tokens >= max_length:
        raise ZooError(
            f"max_new_tokens={max_new_tokens} must be smaller than the model's context "
            f"max_length={max_length} (the sliding window of the Python API is not exported)"
        )
    tokenizer = run.tokenizer
    byte_bpe = getattr(tokenizer, "kind", "") == "byte_bpe"
    codec = ByteBPECodec(tokenizer) if byte_bpe else build_codec(tokenizer)
    return _LiteRTModule(
        model, codec, line_corpus=run.line_corpus, max_new_tokens=max_new_tokens,
        stop_ids=run.stop_token_ids,
        suppressed_ids=getattr(tokenizer, "suppressed_ids", SUPPRESSED_TOKEN_IDS),
    )


# ------------------------------------------------------------------------------------------------
# conversion


def _schema():
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def model_ops(model) -> list[str]:
    """Sorted op names of a flatbuffer (path or bytes); custom ops as ``"CUSTOM:<name>"``."""
    if isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as f:
            model = f.read()
    schema = _schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    root = schema.Model.GetRootAs(model, 0)
    ops = set()
    for i in range(root.OperatorCodesLength()):
        code = root.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            ops.add("CUSTOM:" + code.CustomCode().decode("utf-8"))
        else:
            ops.add(names.get(builtin, str(builtin)))
    return sorted(ops)


def _check_ops(flatbuffer: bytes) -> list[str]:
    ops = model_ops(flatbuffer)
    custom = {op[len("CUSTOM:") :] for op in ops if op.startswith("CUSTOM:")}
    foreign = sorted(op for op in custom if op not in TFTEXT_CUSTOM_OPS)
    if foreign:
        raise ZooError(f"LiteRT export produced ops outside builtins + TF Text: {foreign}")
    return ops


class _FrozenSignatures(tf.Module):
    """The signatures with every weight folded into a constant.

    The converter does not freeze variables that a ``WHILE`` body reads (they stay resource
    variables: ``VAR_HANDLE``/``READ_VARIABLE`` with nothing to initialise them), so each
    signature is frozen with ``convert_variables_to_constants_v2`` (which rewrites the loop
    bodies too) and re-wrapped in a ``tf.function`` that restores the output names.
    """

    def __init__(self, concrete_functions: dict):
        super().__init__(name="zoo_litert_frozen")
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        self._functions = {}
        for name, concrete in concrete_functions.items():
            frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False)
            keys = sorted(concrete.structured_outputs)
            specs = concrete.structured_input_signature[0]
            self._functions[name] = tf.function(
                self._wrap(frozen, keys), input_signature=list(specs), autograph=False
            )

    @staticmethod
    def _wrap(frozen, keys):
        def call(*args):
            outputs = tf.nest.flatten(frozen(*args))
            return {key: tf.identity(value) for key, value in zip(keys, outputs, strict=True)}

        return call

    def signatures(self) -> dict:
        return {name: fn.get_concrete_function() for name, fn in self._functions.items()}


# Left in float by "int8": LiteRT's int8 LOG_SOFTMAX has a fixed [-16, 0] output range and int8
# sums of log-probabilities saturate, so a fully int8 ``score`` returns nonsense (measured on a
# tiny transformer: the same -29.4 for every 65-token window, perplexity 2.5 instead of 55.9).
INT8_FLOAT_OPS = ("LOG_SOFTMAX", "SUM", "ADD")


def _int8_quantize(converter, calibration_texts) -> bytes:
    """Calibrate (``score`` on real texts, TF Text kernels registered) and quantize to int8.

    The public converter calibrates without the tensorflow-text kernels ("Encountered unresolved
    custom op: TFText>ByteSplitWithOffsets") and cannot keep chosen ops in float, so this uses
    the converter's own two steps: ``_experimental_calibrate_only`` and ``mlir_quantize`` with
    ``denylisted_ops`` (private TensorFlow APIs, checked by the tests).
    """
    from tensorflow.lite.python import convert as tflite_convert
    from tensorflow_text import tflite_registrar

    texts = list(calibration_texts)

    def representative_dataset():
        for text in texts:
            yield "score", {"text": np.array([text.encode("utf-8")], dtype=object)}

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec._experimental_custom_op_registerers = list(
        tflite_registrar.SELECT_TFTEXT_OPS
    )
    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    return tflite_convert.mlir_quantize(calibrated, denylisted_ops=list(INT8_FLOAT_OPS))


def _convert(module, quantize: str, calibration_texts) -> bytes:
    frozen = _FrozenSignatures(module.signatures())
    signatures = frozen.signatures()
    with tempfile.TemporaryDirectory(prefix="zoo-litert-") as tmp:
        tf.saved_model.save(frozen, tmp, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(signatures))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.allow_custom_ops = True  # only the TF Text ops: checked by _check_ops
        if quantize in ("float16", "dynamic"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        try:
            if quantize == "int8":
                return _int8_quantize(converter, calibration_texts)
            return converter.convert()
        except Exception as err:  # the converter raises many types; keep the first lines
            message = "\n".join(str(err).strip().splitlines()[:6])
            raise ZooError(f"LiteRT conversion failed ({quantize}): {message}") from err


def _load_run(run_or_dir):
    from zoo.run import LoadedRun, load

    if isinstance(run_or_dir, LoadedRun):
        return run_or_dir
    if isinstance(run_or_dir, (str, os.PathLike)):
        return load(os.fspath(run_or_dir))
    raise ZooError(f"expected a run directory or a LoadedRun, got {type(run_or_dir).__name__}")


def corpus_windows(run, split: str = "validation", count: int = 200, tokens: int | None = None,
                   data: str | None = None) -> list[str]:
    """``count`` real texts of ``split`` of the run's corpus, evenly spread over the split.

    Stream corpus: windows of ``tokens`` (default: the run's ``seq_len``) + 1 token ids,
    detokenized. Line corpus: lines. An empty list for a run that records no corpus (an
    imported checkpoint) when no ``data`` is given.
    """
    from zoo import data as zdata

    if not (data or run.config.get("data")):
        return []
    corpus = zdata.load_corpus(data or run.config["data"])
    if corpus.kind != "stream":
        lines = corpus.lines(split)
        step = max(1, len(lines) // max(count, 1))
        return lines[::step][:count]
    ids = zdata.encode(run.tokenizer, corpus, split)
    size = int(tokens or run.config.get("seq_len") or 64) + 1
    if ids.size < size:
        return [run.tokenizer.decode(ids.tolist())] if ids.size else []
    starts = np.linspace(0, ids.size - size, num=min(count, ids.size - size + 1)).astype(int)
    windows = tf.constant(np.stack([ids[s : s + size] for s in starts]), tf.int32)
    return [t.decode("utf-8", errors="replace") for t in run.tokenizer.detokenize(windows).numpy()]


def _write_atomic(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".tflite")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def export_tflite(run_or_dir, path, *, quantize: str = "none", max_new_tokens: int = 32,
                  calibration_texts=None, validation_texts=None) -> dict:
    """Write the run as a LiteRT flatbuffer at ``path``; see the module docstring.

    Args:
      run_or_dir: a run directory or a ``LoadedRun``.
      path: the ``.tflite`` file to write (written atomically).
      quantize: ``"none"``, ``"float16"``, ``"dynamic"`` or ``"int8"``.
      max_new_tokens: the continuation length of ``generate`` / ``sample`` (static).
      calibration_texts: texts for ``"int8"`` calibration (default: windows of the training
        split, ``corpus_windows(run, "train", 64)``).
      validation_texts: when given, the written model scores them and the result has
        ``perplexity`` (corpus level: ``exp(-sum log_likelihood / sum num_tokens)``).

    Returns ``{"path", "bytes", "quantize", "ops"}`` (+ ``"perplexity"``).
    Raises ``ZooError`` for bad arguments, unsupported tokenizers and failed conversions.
    """
    if quantize not in QUANTIZE_MODES:
        raise ZooError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, got {quantize!r}")
    run = _load_run(run_or_dir)
    module = build_module(run, max_new_tokens)
    if quantize == "int8" and calibration_texts is None:
        calibration_texts = corpus_windows(run, "train", DEFAULT_CALIBRATION_WINDOWS)
    if quantize == "int8" and not calibration_texts:
        raise ZooError("int8 quantization needs calibration texts")
    flatbuffer = _convert(module, quantize, calibration_texts)
    ops = _check_ops(flatbuffer)
    path = os.fspath(path)
    _write_atomic(path, flatbuffer)
    result = {"path": path, "bytes": len(flatbuffer), "quantize": quantize, "ops": ops}
    if validation_texts is not None:
        texts = list(validation_texts)  # none (a run without a corpus): the perplexity is NaN
        result["perplexity"] = LiteRTModel(flatbuffer).perplexity(texts) if texts else math.nan
    return result


# ------------------------------------------------------------------------------------------------
# running


def load_interpreter(model, num_threads: int | None = None):
    """A LiteRT interpreter (``ai_edge_litert``) with the tensorflow-text custom ops registered.

    ``model``: a path or the flatbuffer bytes.
    """
    try:
        from ai_edge_litert.interpreter import InterpreterWithCustomOps
    except ImportError as err:
        raise ZooError(
            "running a LiteRT model needs the ai-edge-litert package (pip install ai-edge-litert)"
        ) from err
    from tensorflow_text import tflite_registrar

    source = (
        {"model_content": bytes(model)}
        if isinstance(model, (bytes, bytearray))
        else {"model_path": os.fspath(model)}
    )
    return InterpreterWithCustomOps(
        custom_op_registerers=list(tflite_registrar.SELECT_TFTEXT_OPS),
        num_threads=num_threads,
        **source,
    )


def _strings(texts) -> np.ndarray:
    return np.array([t.encode("utf-8") for t in texts], dtype=object)


class LiteRTModel:
    """Convenience wrapper around the signatures of an exported flatbuffer."""

    def __init__(self, model, num_threads: int | None = None):
        self.interpreter = load_interpreter(model, num_threads=num_threads)
        self._runners: dict = {}

    def runner(self, name: str):
        if name not in self._runners:
            self._runners[name] = self.interpreter.get_signature_runner(name)
        return self._runners[name]

    @staticmethod
    def _texts(values) -> list[str]:
        return [v.decode("utf-8", errors="replace") for v in values]

    def generate(self, prompts):
        """Greedy continuation(s): a str for a str, a list for a list."""
        single = isinstance(prompts, str)
        texts = [prompts] if single else list(prompts)
        out = self._texts(self.runner("generate")(prompt=_strings(texts))["text"])
        return out[0] if single else out

    def sample(self, prompts, *, temperature=1.0, top_k=0, top_p=1.0, seed=0):
        """Sampled continuation(s); ``seed`` is the per-row seed (an int for every row or a list)."""
        single = isinstance(prompts, str)
        texts = [prompts] if single else list(prompts)
        n = len(texts)
        seeds = np.broadcast_to(np.asarray(seed, np.int64), [n]).copy()
        out = self.runner("sample")(
            prompt=_strings(texts),
            temperature=np.full([n], temperature, np.float32),
            top_k=np.full([n], top_k, np.int32),
            top_p=np.full([n], top_p, np.float32),
            seed=seeds,
        )
        out = self._texts(out["text"])
        return out[0] if single else out

    def tokenize(self, texts) -> list[list[int]]:
        out = self.runner("tokenize")(text=_strings(texts))
        return [row[:n].tolist() for row, n in zip(out["token_ids"], out["num_tokens"], strict=True)]

    def score(self, texts, batch_size: int = 64):
        """``(log_likelihood (N,) float64, num_tokens (N,) int64)`` for a list of texts."""
        lls, counts = [], []
        for i in range(0, len(texts), batch_size):
            out = self.runner("score")(text=_strings(texts[i : i + batch_size]))
            lls.append(out["log_likelihood"].astype(np.float64))
            counts.append(out["num_tokens"].astype(np.int64))
        if not lls:
            return np.zeros([0]), np.zeros([0], np.int64)
        return np.concatenate(lls), np.concatenate(counts)

    def perplexity(self, texts, batch_size: int = 64) -> float:
        """Corpus-level perplexity of ``texts``: ``exp(-sum log_likelihood / sum num_tokens)``."""
        ll, n = self.score(list(texts), batch_size=batch_size)
        return math.exp(-float(ll.sum()) / max(int(n.sum()), 1))


# ``export.tflite`` is this module; making it callable lets ``export.tflite(run, path, ...)``
# work as the function ``export_tflite`` (the same pattern as ``export.saved_model``).
class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return export_tflite(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
