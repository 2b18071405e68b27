"""Export a trained zoo run as a LiteRT (TensorFlow Lite) flatbuffer, tokenizer inside.

    from export.tflite import LiteRTModel, export_tflite
    info = export_tflite("runs/shakespeare", "shakespeare.tflite", quantize="dynamic")
    lm = LiteRTModel(info["path"])        # export.litert_runner
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
    Greedy, ``M`` = the export's ``max_new_tokens`` (default 256, independent of the context):
    the same text as ``run.generate(prompt, strategy="greedy", max_new_tokens=M)``.
``sample``
    ``prompt`` string ``[B]``, ``temperature`` float32 ``[B]``, ``top_k`` int32 ``[B]``,
    ``top_p`` float32 ``[B]``, ``seed`` int64 ``[B]`` -> as ``generate``. Per row:
    ``temperature <= 0`` is greedy; ``top_k <= 0`` / ``top_p >= 1`` switch the filters off; the
    draw is the zoo's counter-based Gumbel-max draw, so row ``b`` of
    ``run.generate(prompts, strategy="sample", seed=s, ...)`` is reproduced with the seed
    ``zoo.generation.api.row_seed(s, b)``.
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
"lines"``) get ``<bos>`` and stop at ``<eos>``; a transformer continues past its context
``max_length`` in the sliding-window rounds of ``zoo.generation.window``, inside the graph (a
WHILE around the decoding loop's WHILE), so ``M`` may exceed the context. Unlike the Python API: an empty prompt of a stream model gives an empty
continuation (``text == ""``, ``num_tokens == 0``) instead of an error (a line model's empty
prompt is just ``<bos>``), and characters a character tokenizer does not know become ``<unk>``
instead of an error. Prompts must be valid UTF-8 for ids identical to the zoo tokenizer's.

Supported: the ``char`` and ``sentencepiece`` (BPE, as the zoo trains it) tokenizers and GPT-2's
``byte_bpe`` (``export/_tflite_byte_bpe.py``), with every zoo model (``transformer_lm``,
``gpt2``, ``lstm_lm``, ``gru_lm``, ``rnn_lm``, ``mlp_lm``, ``gcnn_lm``). The ``word`` and
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

from export._litert_views import log_likelihood, make_view
from export._tflite_byte_bpe import ByteBPECodec
from export._tflite_text import build_codec
from export.litert_runner import LiteRTModel, load_interpreter
from zoo import progress
from zoo.errors import ZooError
from zoo.generation.loop import SUPPRESSED_TOKEN_IDS, DecodeSettings, decode
from zoo.generation.prompts import PROMPT_BUCKET, prepare_prompts
from zoo.generation.random_draw import LiteRTWords
from zoo.generation.samplers import GreedySampler, RandomSampler
from zoo.generation.window import decode_windowed
from zoo.run import load_finished
from zoo.special_tokens import BOS_ID, EOS_ID, PAD_ID
from zoo.tasks.export_module import ExportModule

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


class _LiteRTModule(ExportModule):
    """The model's variables, the tokenizer tables and the signature functions."""

    SIGNATURES = SIGNATURES

    def __init__(self, model, codec, *, line_corpus: bool, max_new_tokens: int,
                 stop_ids=None, suppressed_ids=SUPPRESSED_TOKEN_IDS):
        super().__init__(model, name="zoo_litert")
        self._ref.codec = codec
        self._view = make_view(model)
        self._line = bool(line_corpus)
        self._max_new = int(max_new_tokens)
        self._max_length = getattr(model, "max_length", None)
        stop_ids = ((EOS_ID,) if self._line else ()) if stop_ids is None else tuple(stop_ids)
        # the prefill is min(lengths) rounded down to PROMPT_BUCKET, as the Python API's
        self._settings = DecodeSettings(max_new_tokens=self._max_new, stop_token_ids=stop_ids,
                                        suppressed_token_ids=tuple(suppressed_ids),
                                        prefill_bucket=PROMPT_BUCKET)
        strings = tf.TensorSpec([None], tf.string)
        self.generate = self.function(self._generate, strings)
        self.sample = self.function(
            self._sample, strings, tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([None], tf.int64),
        )
        self.score = self.function(self._score, strings)
        self.tokenize = self.function(self._tokenize, strings)

    @property
    def _codec(self):
        return self._ref.codec

    def _prompts(self, prompt):
        """Prompt strings -> ``(ids (B, P), lengths (B,), empty (B,))`` as ``generate`` sees them
        (``zoo.generation.prompts.prepare_prompts``, without width buckets)."""
        ids, lengths = self._codec.encode(prompt)
        return prepare_prompts(ids, lengths, bos_id=BOS_ID if self._line else None)

    def _continue(self, prompt, sampler):
        ids, lengths, empty = self._prompts(prompt)
        row_max = tf.where(empty, 0, self._max_new)
        if self._max_length is None:
            new_ids, num_new = decode(self._view, sampler, ids, lengths, row_max, self._settings)
        else:  # past the context: the sliding window's rounds, as run.generate
            new_ids, num_new = decode_windowed(self._view, sampler, ids, lengths, row_max,
                                               self._settings, max_length=self._max_length)
        text = self._codec.decode(new_ids, num_new)
        return {"text": text, "token_ids": new_ids, "num_tokens": num_new}

    def _generate(self, prompt):
        return self._continue(prompt, GreedySampler())

    def _sample(self, prompt, temperature, top_k, top_p, seed):
        sampler = RandomSampler(temperature, top_k, top_p, seed, words=LiteRTWords())
        return self._continue(prompt, sampler)

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
        total, num_tokens = log_likelihood(self._view, ids, lengths, self._max_length)
        return {"log_likelihood": total, "num_tokens": num_tokens}

    def _tokenize(self, text):
        ids, lengths = self._codec.encode(text)
        return {"token_ids": ids, "num_tokens": lengths}


def build_module(run, max_new_tokens: int = 256) -> _LiteRTModule:
    """The ``tf.Module`` whose signatures are converted (it also runs in TensorFlow)."""
    model = run.model
    if model.compute_dtype != "float32":
        raise ZooError(
            f"LiteRT export: the model computes in {model.compute_dtype}; export a float32 "
            "model (quantize='float16' gives a smaller file)"
        )
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ZooError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
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
        label = f"calibrating int8 on {len(texts)} texts (the score signature)"
        for text in progress.track(texts, label, len(texts), unit="text"):
            yield "score", {"text": np.array([text.encode("utf-8")], dtype=object)}

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec._experimental_custom_op_registerers = list(
        tflite_registrar.SELECT_TFTEXT_OPS
    )
    converter._experimental_calibrate_only = True
    with progress.stage("converting to LiteRT and calibrating (quantize=int8)"):
        calibrated = converter.convert()
    with progress.stage("quantizing to int8"):
        return tflite_convert.mlir_quantize(calibrated, denylisted_ops=list(INT8_FLOAT_OPS))


def _convert(module, quantize: str, calibration_texts) -> bytes:
    with progress.stage("freezing the signatures") as freezing:
        frozen = _FrozenSignatures(module.signatures())
        signatures = frozen.signatures()
        freezing.detail = ", ".join(signatures)
    with tempfile.TemporaryDirectory(prefix="zoo-litert-") as tmp:
        with progress.stage("saving them for the converter"):
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
            with progress.stage(f"converting to LiteRT (quantize={quantize})") as converting:
                flatbuffer = converter.convert()
                converting.detail = f"{len(flatbuffer):,} bytes"
            return flatbuffer
        except Exception as err:  # the converter raises many types; keep the first lines
            message = "\n".join(str(err).strip().splitlines()[:6])
            raise ZooError(f"LiteRT conversion failed ({quantize}): {message}") from err


def corpus_windows(run, split: str = "validation", count: int = 200, tokens: int | None = None,
                   data: str | None = None) -> list[str]:
    """``count`` real texts of ``split`` of the run's corpus, evenly spread over the split.

    Stream corpus: windows of ``tokens`` (default: the run's ``seq_len``) + 1 token ids,
    detokenized. Line corpus: lines. An empty list for a run that records no corpus (an
    imported checkpoint) when no ``data`` is given.
    """
    from zoo import data as zdata

    if count <= 0 or not (data or run.config.get("data")):
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


def export_tflite(run_or_dir, path, *, quantize: str = "none", max_new_tokens: int = 256,
                  calibration_texts=None, validation_texts=None,
                  verbose: int | None = None) -> dict:
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
      verbose: 1 prints each stage (freezing, conversion, int8 calibration with a bar,
        scoring) and its time on stderr; None: the ambient level (``zoo.progress``).

    Returns ``{"path", "bytes", "quantize", "ops"}`` (+ ``"perplexity"``).
    Raises ``ZooError`` for bad arguments, unsupported tokenizers and failed conversions.
    """
    if quantize not in QUANTIZE_MODES:
        raise ZooError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, got {quantize!r}")
    with progress.verbosity(verbose):
        return _export_tflite(run_or_dir, path, quantize, max_new_tokens, calibration_texts,
                              validation_texts)


def _export_tflite(run_or_dir, path, quantize: str, max_new_tokens: int, calibration_texts,
                   validation_texts) -> dict:
    run = load_finished(run_or_dir)
    progress.echo(f"exporting LiteRT (quantize={quantize}) to {os.fspath(path)}")
    with progress.stage("building the LiteRT signatures"):
        module = build_module(run, max_new_tokens)
    if quantize == "int8" and calibration_texts is None:
        with progress.stage("reading calibration windows of the training split"):
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
        with progress.stage(f"scoring {len(texts)} validation texts with LiteRT") as scoring:
            result["perplexity"] = LiteRTModel(flatbuffer).perplexity(texts) if texts else math.nan
            scoring.detail = f"perplexity {result['perplexity']:.3f}"
    return result


# ``export.tflite`` is this module; making it callable lets ``export.tflite(run, path, ...)``
# work as the function ``export_tflite`` (the same pattern as ``export.saved_model``).
class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return export_tflite(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
