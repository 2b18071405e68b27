"""Translation (task ``seq2seq``, model ``transformer_seq2seq``): train, evaluate, translate, export.

Training pairs ``(x, y)`` become ``(source = x <eos>, target_in = <bos> y) -> target_out = y <eos>``
(``zoo.data.parallel``); the loss is the mean cross-entropy over the target tokens (padding,
label 0, excluded), and ``zoo.fitting.fit_resumable`` trains it (resumable, distributable).

Tokenizers: one per side, trained on the training split of that side (SentencePiece by default;
``--tokenizer`` picks the kind and ``--vocab-size`` the size of each). The target tokenizer is
``RUN/tokenizer/``, the source one ``RUN/source_tokenizer/`` (``config["extra_tokenizers"]``).

``zoo eval``: teacher-forced loss / perplexity over the split's target tokens (<eos> included),
corpus BLEU (sacrebleu) and mean ROUGE-1/2/L F-measures (rouge-score) of the greedy (or beam)
translations against the references (``zoo.text_metrics``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import weakref

import numpy as np
import tensorflow as tf

from zoo import distribute as zdist
from zoo import progress
from zoo.config import DEFAULT_VOCAB_SIZES
from zoo.data import parallel as zpar
from zoo.errors import ZooError
from zoo.evaluation import nll_metrics, sum_nll, token_nll_step
from zoo.files import CONFIG_FILE, TOKENIZER_DIR, read_json
from zoo.fitting import FitPlan, finish_run, fit_resumable, open_run, write_record
from zoo.metrics import Perplexity, TokenNLL, masked_lm_loss
from zoo.models import build_model, make_config
from zoo.models.transformer_seq2seq import translate_ids
from zoo.run import LoadedRun
from zoo.tasks.base import Task, register_task
from zoo.tasks.export_module import ExportModule
from zoo.tasks.warmup import predict_logs, sample_rows, text_array
from zoo.tokenizers import load_tokenizer, train_tokenizer
from zoo.tokenizers.base import EOS_ID
from zoo.training import make_settings

SOURCE = "source"  # the extra tokenizer's name: RUN/source_tokenizer/
STRATEGIES = ("greedy", "beam")
DEFAULT_LENGTH_PENALTY = 1.0  # beam scores: sum log p / length


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def _tokenizer(kind: str, vocab_size: int | None, texts: list[str], directory: str, worker,
               previous, side: str = "", verbose: int | None = None):
    """Load the run's tokenizer from ``directory`` or train one on ``texts`` (saved by the chief)."""
    if os.path.exists(os.path.join(directory, "tokenizer.json")) and (
        worker.is_chief or previous is not None
    ):
        return load_tokenizer(directory)
    tok = train_tokenizer(kind, texts, vocab_size=vocab_size or DEFAULT_VOCAB_SIZES[kind],
                          verbose=verbose, label=f"the {side} {kind} tokenizer" if side else None)
    if worker.is_chief:
        tok.save(directory)
    return tok


def train(model: str, data: str, out: str, *, preset: str = "tiny", tokenizer: str | None = None,
          model_overrides: dict | None = None, verbose: int = 1, **train_settings) -> LoadedRun:
    """Train a ``transformer_seq2seq`` on parallel ``data`` into run directory ``out``.

    ``data``: ``dataset:multi30k`` (English -> German), ``dataset:multi30k:de-en``,
    ``SOURCE_FILE:TARGET_FILE`` or a two-column TSV file. ``seq_len`` (if given) sets both
    ``max_source_length`` and ``max_target_length`` unless they are set. Rerunning the same call
    resumes from the last checkpoint; on a finished run it returns the finished model.
    """
    settings = make_settings(model, data, preset, tokenizer, model_overrides, train_settings,
                             default_tokenizer="sentencepiece")
    strategy, worker = zdist.make_strategy(settings.distribute)
    overrides = dict(settings.model_overrides)
    if settings.seq_len:
        overrides.setdefault("max_source_length", settings.seq_len)
        overrides.setdefault("max_target_length", settings.seq_len)
    config_path = os.path.join(out, CONFIG_FILE)
    if "source_vocab_size" not in overrides and os.path.exists(config_path):
        # fixed by the source tokenizer when the run began: resume with the same value
        previous_sizes = read_json(config_path).get("model_config", {})
        overrides["source_vocab_size"] = previous_sizes.get("source_vocab_size", 0)
    model_config = make_config(model, preset, **overrides)
    corpus = zpar.load_parallel(data)
    record = {
        "task": "seq2seq",
        "model": model,
        "preset": preset,
        "model_config": dataclasses.asdict(model_config),
        "train": settings.to_dict(),
        "tokenizer": settings.tokenizer,
        "data": data,
        "source_language": corpus.source_language,
        "target_language": corpus.target_language,
        "extra_tokenizers": [SOURCE],
    }
    previous, finished = open_run(out, record, worker)
    if finished is not None:
        return finished

    train_src, train_tgt = corpus.pairs("train")
    valid_src, valid_tgt = corpus.pairs("validation")
    src_tok = _tokenizer(settings.tokenizer, settings.vocab_size, train_src,
                         os.path.join(out, f"{SOURCE}_{TOKENIZER_DIR}"), worker, previous,
                         "source", verbose)
    tgt_tok = _tokenizer(settings.tokenizer, settings.vocab_size, train_tgt,
                         os.path.join(out, TOKENIZER_DIR), worker, previous, "target", verbose)
    if model_config.source_vocab_size not in (0, src_tok.vocab_size):
        raise ZooError(
            f"model.source_vocab_size={model_config.source_vocab_size} but the source tokenizer "
            f"has {src_tok.vocab_size} ids; leave source_vocab_size out"
        )
    model_config = dataclasses.replace(model_config, source_vocab_size=src_tok.vocab_size)
    record.update(model_config=dataclasses.asdict(model_config), vocab_size=tgt_tok.vocab_size)
    write_record(out, record, previous, worker)

    train_pairs = zpar.encode_pairs(src_tok, tgt_tok, train_src, train_tgt)
    valid_pairs = zpar.encode_pairs(src_tok, tgt_tok, valid_src, valid_tgt)
    lengths = dict(max_source_length=model_config.max_source_length,
                   max_target_length=model_config.max_target_length)
    batch = settings.batch_size
    if settings.max_steps is not None:
        total_steps = settings.max_steps
    else:
        total_steps = (settings.epochs or 1) * zpar.steps_per_epoch(train_pairs, batch)

    def make_train_ds(start_step: int, num_steps: int) -> tf.data.Dataset:
        return zpar.training_dataset(train_pairs, batch, settings.seed, start_step=start_step,
                                     num_steps=num_steps, **lengths)

    def make_valid_ds() -> tf.data.Dataset:
        valid = zpar.evaluation_dataset(valid_pairs, batch, **lengths)
        return valid.take(settings.eval_batches) if settings.eval_batches else valid

    sizes = dataclasses.asdict(model_config)
    plan = FitPlan(
        build_model=lambda: build_model(model, tgt_tok.vocab_size, preset, **sizes),
        loss=masked_lm_loss,
        make_metrics=lambda: [TokenNLL(), Perplexity()],
        make_train_ds=make_train_ds,
        make_valid_ds=make_valid_ds,
        total_steps=total_steps,
        monitor="val_token_nll",
        agree={"the source vocabulary size": src_tok.vocab_size,
               "the target vocabulary size": tgt_tok.vocab_size,
               "the number of training pairs": len(train_pairs)},
        tokenizer=tgt_tok, source_tokenizer=src_tok,  # model.embeddings / source_embeddings
    )
    result = fit_resumable(out, settings, strategy, worker, plan, verbose=verbose)
    metrics = {}
    if result.is_chief:
        final = teacher_forced_loss(result.model, valid_pairs, batch, verbose=verbose, **lengths)
        metrics = result.summary(settings)
        metrics.update(total_steps=total_steps, validation=final)
    loaded = finish_run(out, result, metrics, record, tgt_tok)
    loaded.extra_tokenizers.setdefault(SOURCE, src_tok)
    return loaded


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def teacher_forced_loss(model, pairs: zpar.EncodedPairs, batch_size: int, *,
                        max_source_length: int, max_target_length: int,
                        verbose: int | None = None) -> dict:
    """Corpus-level loss over every target token (``y <eos>``) of ``pairs``:
    ``loss = Σ -log p(y_t | y_<t, x) / N``, ``perplexity = exp(loss)`` (``verbose`` > 0: a
    progress bar on stderr; None: the ambient level, ``zoo.progress``)."""
    batches = zpar.evaluation_dataset(pairs, batch_size, max_source_length, max_target_length)
    size = int(batches.cardinality())
    tracked = progress.track(batches.as_numpy_iterator(), "evaluating the loss (teacher-forced)",
                             size if size >= 0 else None, verbose)
    return nll_metrics(*sum_nll(token_nll_step(model), tracked))


def _source_tokenizer(run: LoadedRun):
    if SOURCE not in run.extra_tokenizers:
        raise ZooError(f"{run.path} has no source tokenizer ({SOURCE}_{TOKENIZER_DIR}/)")
    return run.extra_tokenizers[SOURCE]


def evaluate(run: LoadedRun, data: str | None = None, split: str = "validation",
             batch_size: int | None = None, max_examples: int | None = None,
             strategy: str = "greedy", num_beams: int = 4) -> dict:
    """Loss / perplexity (teacher-forced), corpus BLEU and ROUGE-1/2/L of ``split``.

    The translations are decoded with ``strategy`` (``greedy`` or ``beam``); ``max_examples``
    keeps the first pairs only (default: the whole split).
    """
    from zoo.text_metrics import bleu, rouge

    source = data or run.config["data"]
    sources, references = zpar.load_parallel(source).pairs(split)
    if max_examples is not None:
        if max_examples < 1:
            raise ZooError(f"max_examples must be >= 1, got {max_examples}")
        sources, references = sources[:max_examples], references[:max_examples]
    batch = batch_size or run.config["train"]["batch_size"]
    sizes = run.config["model_config"]
    pairs = zpar.encode_pairs(_source_tokenizer(run), run.tokenizer, sources, references)
    result = teacher_forced_loss(run.model, pairs, batch,
                                 max_source_length=sizes["max_source_length"],
                                 max_target_length=sizes["max_target_length"])
    hypotheses = translate(run, sources, strategy=strategy, num_beams=num_beams,
                           batch_size=batch, verbose=progress.level())
    with progress.stage(f"scoring BLEU and ROUGE of {len(hypotheses)} translations"):
        result["bleu"] = bleu(hypotheses, references)
        result.update(rouge(hypotheses, references))
    result.update(examples=len(sources), strategy=strategy, data=source, split=split,
                  model=run.config["model"])
    if strategy == "beam":
        result["num_beams"] = num_beams
    return result


# --------------------------------------------------------------------------------------------------
# Translation
# --------------------------------------------------------------------------------------------------


def source_ids(tokenizer, texts, max_source_length: int) -> tf.Tensor:
    """Strings ``(B,)`` -> source ids ``(B, S')``: the first ``max_source_length - 1`` tokens then
    <eos>, right-padded with 0 (pure TensorFlow: also used inside the SavedModel)."""
    ids = tokenizer.tokenize(texts)
    if not isinstance(ids, tf.RaggedTensor):
        ids = tf.RaggedTensor.from_tensor(ids)
    if ids.ragged_rank > 1:
        ids = ids.merge_dims(1, -1)
    ids = tf.cast(ids[:, : max_source_length - 1], tf.int32)
    eos = tf.fill([ids.nrows(out_type=tf.int32), 1], EOS_ID)
    return tf.concat([ids, tf.RaggedTensor.from_tensor(eos)], axis=1).to_tensor(default_value=0)


class _Translator:
    """A ``tf.function`` body translating source ids with fixed settings; holds the model weakly."""

    def __init__(self, model, settings: dict):
        self._model = weakref.ref(model)
        self._settings = settings
        self.__name__ = "zoo_translate"

    def __call__(self, ids):
        return translate_ids(self._model(), ids, **self._settings)


_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled(model, settings: dict):
    per_model = _FUNCTIONS.setdefault(model, {})
    key = tuple(sorted(settings.items()))
    if key not in per_model:
        per_model[key] = tf.function(
            _Translator(model, settings),
            input_signature=[tf.TensorSpec([None, None], tf.int32)],
        )
    return per_model[key]


def _check_options(model, strategy, num_beams, max_new_tokens) -> None:
    if strategy not in STRATEGIES:
        raise ZooError(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ZooError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    bound = model.max_target_length - 1
    if max_new_tokens is not None and (
        isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
        or not 1 <= max_new_tokens <= bound
    ):
        raise ZooError(
            f"max_new_tokens must be an integer in [1, {bound}] (the model's target context "
            f"max_target_length={model.max_target_length} holds <bos> too), got {max_new_tokens!r}"
        )


def translate(run: LoadedRun, texts, strategy: str = "greedy", num_beams: int = 4,
              max_new_tokens: int | None = None, *, length_penalty: float = DEFAULT_LENGTH_PENALTY,
              batch_size: int = 64, cached: bool = True, verbose: int = 0):
    """Translate ``texts`` (a str -> a str, a list -> a list) with the run's model.

    ``strategy``: ``greedy`` or ``beam`` (``num_beams`` hypotheses, scores divided by
    ``length ** length_penalty``). ``max_new_tokens``: at most this many target tokens (default:
    the model's ``max_target_length - 1``). A source longer than ``max_source_length - 1`` tokens
    keeps its first ones. ``cached=False`` uses the uncached reference decoder (slow; for tests).
    ``verbose`` > 0: a progress bar over the batches on stderr (``zoo.progress``; ``zoo eval``).
    """
    single = isinstance(texts, str)
    items = [texts] if single else list(texts)
    if any(not isinstance(t, str) for t in items):
        raise ZooError("translate takes a string or a list of strings")
    model = run.model
    _check_options(model, strategy, num_beams, max_new_tokens)
    if not items:
        return []
    settings = dict(strategy=strategy, max_new_tokens=max_new_tokens, cached=bool(cached))
    if strategy == "beam":
        settings.update(num_beams=num_beams, length_penalty=float(length_penalty))
    function = _compiled(model, settings)
    src_tok = _source_tokenizer(run)
    outputs: list[str] = []
    how = f"beam search, {num_beams} beams" if strategy == "beam" else strategy
    starts = range(0, len(items), batch_size)
    label = f"translating {len(items)} sources ({how}, batches of {batch_size})"
    for start in progress.track(starts, label, verbose=verbose):
        chunk = tf.constant(items[start : start + batch_size], tf.string)
        ids, _ = function(source_ids(src_tok, chunk, model.max_source_length))
        # ids are 0 (<pad>, dropped) after each row's last token
        outputs += [t.decode("utf-8") for t in run.tokenizer.detokenize(ids).numpy()]
    return outputs[0] if single else outputs


# --------------------------------------------------------------------------------------------------
# Export (export.saved_model calls serving_module and warmup_records)
# --------------------------------------------------------------------------------------------------


def decoded_outputs(model, source_tokenizer, target_tokenizer, text, output_name: str, *,
                    max_new_tokens: int, **settings) -> dict:
    """A decoding signature's outputs for source strings ``text`` ``[B]``: ``output_name`` the
    decoded strings ``[B]``, ``token_ids`` int32 ``[B, N]`` (0-padded to the longest row) and
    ``num_tokens`` int32 ``[B]`` (translation's ``target``, summarization's ``summary``)."""
    ids = source_ids(source_tokenizer, text, model.max_source_length)
    new_ids, num_new = translate_ids(model, ids, max_new_tokens=max_new_tokens, **settings)
    longest = tf.reduce_max(tf.concat([num_new, [0]], axis=0))
    return {output_name: target_tokenizer.detokenize(new_ids),
            "token_ids": new_ids[:, :longest], "num_tokens": num_new}


class _TranslationModule(ExportModule):
    """The SavedModel's object graph: the model's variables, both tokenizers, the signatures."""

    def __init__(self, model, source_tokenizer, target_tokenizer, *, max_new_tokens: int,
                 num_beams: int, length_penalty: float, asset_paths=()):
        super().__init__(model, name="zoo_translation",
                         tokenizers={"source_tokenizer": source_tokenizer,
                                     "target_tokenizer": target_tokenizer},
                         asset_paths=asset_paths)
        self._max_new = int(max_new_tokens)
        self._beam = dict(num_beams=int(num_beams), length_penalty=float(length_penalty))
        spec = tf.TensorSpec([None], tf.string)
        self.translate = self.function(self._translate, spec)
        self.translate_beam = self.function(self._translate_beam, spec)

    def _run(self, source, **settings):
        return decoded_outputs(self.keras_model, self.source_tokenizer, self.target_tokenizer,
                               source, "target", max_new_tokens=self._max_new, **settings)

    def _translate(self, source):
        return self._run(source, strategy="greedy")

    def _translate_beam(self, source):
        return self._run(source, strategy="beam", **self._beam)

    def signatures(self) -> dict:
        greedy = self.translate.get_concrete_function()
        return {"serving_default": greedy, "translate": greedy,
                "translate_beam": self.translate_beam.get_concrete_function()}


def serving_module(run: LoadedRun, max_new_tokens: int = 64, num_beams: int = 4,
                   length_penalty: float = DEFAULT_LENGTH_PENALTY, **_ignored):
    """``(module, signatures, export settings)`` for ``export.saved_model``.

    Signatures (batched over a dynamic batch dimension; tokenizers and the KV-cached decoding
    loop in the graph, no XLA, no py_function):

    * ``translate`` and ``serving_default``: ``source`` string ``[B]`` -> ``target`` string
      ``[B]`` (greedy), ``token_ids`` int32 ``[B, N]`` (0-padded), ``num_tokens`` int32 ``[B]``;
    * ``translate_beam``: the same with beam search (``num_beams``, ``length_penalty``).

    ``max_new_tokens`` is the loop's static bound, at most ``max_target_length - 1`` (clamped).
    Sampling settings of the export do not apply to translation and are ignored.
    """
    model = run.model
    max_new = max(1, min(int(max_new_tokens), model.max_target_length - 1))
    # the tokenizers' files, for reference (assets/source_*, assets/target_*); the folder lives
    # as long as the module, which is saved before it goes
    files = tempfile.TemporaryDirectory(prefix="zoo-tokenizers-")
    assets = []
    for side, tok in (("source", _source_tokenizer(run)), ("target", run.tokenizer)):
        side_dir = os.path.join(files.name, side)
        tok.save(side_dir)
        for name in sorted(os.listdir(side_dir)):
            path = os.path.join(files.name, f"{side}_{name}")
            shutil.move(os.path.join(side_dir, name), path)
            assets.append(path)
    module = _TranslationModule(model, _source_tokenizer(run), run.tokenizer,
                                max_new_tokens=max_new, num_beams=num_beams,
                                length_penalty=length_penalty, asset_paths=assets)
    module.keep_alive(files)
    signatures = module.signatures()
    settings = {"max_new_tokens": max_new, "num_beams": int(num_beams),
                "length_penalty": float(length_penalty), "strategy": "greedy",
                "max_source_length": model.max_source_length,
                "max_target_length": model.max_target_length}
    return module, signatures, settings


def warmup_texts(tokenizer) -> np.ndarray:
    """Two source texts of different lengths made of in-vocabulary tokens (UTF-8 bytes)."""
    return text_array(tokenizer.decode(row) for row in sample_rows(tokenizer.vocab_size))


def warmup_records(run: LoadedRun) -> list[bytes]:
    """``PredictionLog`` records (``translate``, ``serving_default``, ``translate_beam`` on two
    sources) that a server replays before answering."""
    sources = warmup_texts(_source_tokenizer(run))
    return predict_logs({signature: {"source": sources}
                         for signature in ("translate", "serving_default", "translate_beam")})


# --------------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------------


@register_task
class Seq2SeqTask(Task):
    """Translation (``transformer_seq2seq``): an encoder reads the source ``x``, a decoder
    predicts the target ``y`` token by token.

    Trains on, and reports, the teacher-forced mean negative log-likelihood of the target tokens
    (``y <eos>``, padding excluded):

        L = -(1/N) sum_t log p(y_t | y_<t, x),     perplexity = exp(L)

    ``evaluate`` adds corpus BLEU and ROUGE-1/2/L of the decoded translations. Runs also answer
    ``translate``; the export has ``translate`` and ``translate_beam`` signatures.
    """

    name = "seq2seq"
    # the module's functions are the task's methods
    train = staticmethod(train)
    evaluate = staticmethod(evaluate)
    serving_module = staticmethod(serving_module)

    def warmup_records(self, run: LoadedRun, **export_settings) -> list[bytes]:
        """``translate``, ``serving_default`` and ``translate_beam`` requests on two sources."""
        return warmup_records(run)

    translate = staticmethod(translate)
