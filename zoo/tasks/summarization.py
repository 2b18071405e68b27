"""Summarization (task ``summarization``, model ``summarizer``): train, evaluate, summarize, export.

The translator of ``zoo.tasks.seq2seq`` with one shared vocabulary: a document ``x`` (its
sentences joined, cut to ``max_source_length - 1`` tokens, then <eos>) -> its summary ``y``,
trained on the teacher-forced mean cross-entropy of ``y <eos>`` and decoded greedily or with beam
search by the zoo's loop (``transformer_seq2seq.translate_ids``). Data: ``zoo.data.summaries``
(``dataset:scitldr``, a ``.jsonl`` or a ``source<TAB>summary`` ``.tsv``); a training document
with several references counts once per reference.

One tokenizer (SentencePiece by default, trained on the training documents and summaries) reads
the document and writes the summary: ``RUN/tokenizer/``.

``--set model.init_encoder=RUN`` starts the encoder from a finished ``bert_mlm`` run: its sizes
(``d_model``, ``num_heads``, ``ffn_dim``, ``activation``, ``norm_first``, ``layer_norm_epsilon``;
``num_encoder_layers`` = its ``num_layers``) and its tokenizer are taken, positions become learned
and ``max_source_length`` is at most its ``max_length``. Copied: the token embeddings (to both
the source and the target embedding, divided by ``sqrt(d_model)`` as this model scales them; the
segment-0 embedding is folded into the source's), the position table, every block and the final
LayerNorm. BERT's embedding LayerNorm has no counterpart here and is dropped (the first block's
pre-norm LayerNorm normalises its input anyway when ``norm_first``); the decoder starts afresh.

``zoo eval``: the loss / perplexity (teacher-forced, every reference), then ROUGE-1/2/L F1 of the
decoded summaries and of the lead-1 baseline (the document's first sentence), each against the
reference with its best ROUGE-1 (``zoo.summary_metrics``, as SciTLDR reports).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from zoo import distribute as zdist
from zoo import progress
from zoo.config import DEFAULT_VOCAB_SIZES
from zoo.data import parallel as zpar
from zoo.data.summaries import lead, load_summaries
from zoo.errors import ZooError
from zoo.files import CONFIG_FILE, MODEL_FILE, TOKENIZER_DIR, read_json
from zoo.fitting import FitPlan, finish_run, fit_resumable, open_run, write_record
from zoo.metrics import Perplexity, TokenNLL, masked_lm_loss
from zoo.models import build_model, make_config
from zoo.run import LoadedRun
from zoo.summary_metrics import rouge_best_reference
from zoo.tasks import seq2seq
from zoo.tasks.base import Task, register_task
from zoo.tasks.export_module import ExportModule
from zoo.tasks.warmup import predict_logs
from zoo.tokenizers import load_tokenizer
from zoo.training import make_settings

TASK = "summarization"
MAX_TEXT_BYTES = 1 << 16  # a longer document is refused (not cut): 64 KiB of UTF-8
TEXT_INPUT, SUMMARY_OUTPUT = "text", "summary"
_BERT_SIZES = {"d_model": "d_model", "num_heads": "num_heads", "ffn_dim": "ffn_dim",
               "activation": "activation", "norm_first": "norm_first",
               "layer_norm_epsilon": "layer_norm_epsilon", "num_layers": "num_encoder_layers"}


# --------------------------------------------------------------------------------------------------
# Initialising the encoder from a bert_mlm run
# --------------------------------------------------------------------------------------------------


def _bert_run(path: str) -> dict:
    """A finished bert_mlm run's config (checked)."""
    if not os.path.isfile(os.path.join(path, CONFIG_FILE)):
        raise ZooError(f"model.init_encoder={path!r} is not a run directory (no {CONFIG_FILE})")
    config = read_json(os.path.join(path, CONFIG_FILE))
    if config.get("model") != "bert_mlm":
        raise ZooError(f"model.init_encoder={path!r} holds a {config.get('model')} run, "
                       "not bert_mlm")
    if not os.path.isfile(os.path.join(path, MODEL_FILE)):
        raise ZooError(f"model.init_encoder={path!r} is not finished ({MODEL_FILE} is missing)")
    return config


def copy_bert_encoder(model, bert) -> None:
    """Copy a ``BertMLM``'s encoder into a ``TransformerSeq2Seq`` of matching sizes (see the
    module docstring for what is copied and what is dropped)."""
    encoder = bert.encoder
    if (len(model.encoder_blocks) != len(encoder.blocks) or model.d_model != encoder.d_model
            or model.position != "learned" or model.vocab_size != encoder.vocab_size
            or model.max_source_length > encoder.max_length):
        raise ZooError("the summarizer's encoder does not match the bert_mlm run's sizes")
    scale = math.sqrt(model.d_model)
    tokens = np.asarray(encoder.embedding.token_embedding.embeddings)
    segment = np.asarray(encoder.segment_embedding.embeddings)[0]
    model.source_embedding.token_embedding.embeddings.assign((tokens + segment) / scale)
    model.target_embedding.token_embedding.embeddings.assign(tokens / scale)
    positions = np.asarray(encoder.embedding.position_embedding.weights[0])
    model.source_embedding.position_embedding.weights[0].assign(
        positions[: model.max_source_length])
    for block, bert_block in zip(model.encoder_blocks, encoder.blocks, strict=True):
        block.set_weights(bert_block.get_weights())
    if encoder.final_norm is not None:
        model.encoder_norm.set_weights(encoder.final_norm.get_weights())


def _init_from_bert(overrides: dict, tokenizer: str | None) -> tuple[dict | None, str | None]:
    """Take the sizes and the tokenizer of ``overrides["init_encoder"]`` (if any)."""
    path = overrides.get("init_encoder") or ""
    if not path:
        return None, tokenizer
    path = os.path.abspath(os.path.expanduser(str(path)))
    overrides["init_encoder"] = path
    config = _bert_run(path)
    sizes = config["model_config"]
    overrides.update({ours: sizes[theirs] for theirs, ours in _BERT_SIZES.items()})
    overrides["position"] = "learned"
    if tokenizer not in (None, config["tokenizer"]):
        raise ZooError(f"model.init_encoder uses its run's {config['tokenizer']} tokenizer, "
                       f"not {tokenizer}")
    return config, config["tokenizer"]


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def train(model: str, data: str, out: str, *, preset: str = "tiny", tokenizer: str | None = None,
          model_overrides: dict | None = None, verbose: int = 1, **train_settings) -> LoadedRun:
    """Train a ``summarizer`` on ``data`` (``dataset:scitldr``, ``.jsonl`` or ``.tsv``) into
    ``out``. ``seq_len`` (if given) sets ``max_source_length`` unless it is set. Resumable: the
    same call continues from the last checkpoint; on a finished run it returns the result."""
    overrides = dict(model_overrides or {})
    bert, tokenizer = _init_from_bert(overrides, tokenizer)
    settings = make_settings(model, data, preset, tokenizer, overrides, train_settings,
                             default_tokenizer="sentencepiece")
    strategy, worker = zdist.make_strategy(settings.distribute)
    if settings.seq_len:
        overrides.setdefault("max_source_length", settings.seq_len)
    model_config = make_config(model, preset, **overrides)
    if bert is not None and model_config.max_source_length > bert["model_config"]["max_length"]:
        model_config = dataclasses.replace(model_config,
                                           max_source_length=bert["model_config"]["max_length"])
    corpus = load_summaries(data)
    record = {"task": TASK, "model": model, "preset": preset,
              "model_config": dataclasses.asdict(model_config), "train": settings.to_dict(),
              "tokenizer": settings.tokenizer, "data": data}
    previous, finished = open_run(out, record, worker)
    if finished is not None:
        return finished

    train_src, train_tgt = corpus.pairs("train")
    valid_src, valid_tgt = corpus.pairs("validation")
    tokenizer_dir = os.path.join(out, TOKENIZER_DIR)
    if bert is not None and not os.path.exists(os.path.join(tokenizer_dir, "tokenizer.json")):
        if worker.is_chief:
            shutil.copytree(os.path.join(model_config.init_encoder, TOKENIZER_DIR), tokenizer_dir,
                            dirs_exist_ok=True)
        tok = load_tokenizer(os.path.join(model_config.init_encoder, TOKENIZER_DIR))
    else:
        vocab = settings.vocab_size or DEFAULT_VOCAB_SIZES[settings.tokenizer]
        tok = seq2seq._tokenizer(settings.tokenizer, vocab, sorted(set(train_src)) + train_tgt,
                                 tokenizer_dir, worker, previous, "shared", verbose)
    record.update(vocab_size=tok.vocab_size)
    write_record(out, record, previous, worker)

    train_pairs = zpar.encode_pairs(tok, tok, train_src, train_tgt)
    valid_pairs = zpar.encode_pairs(tok, tok, valid_src, valid_tgt)
    lengths = dict(max_source_length=model_config.max_source_length,
                   max_target_length=model_config.max_target_length)
    batch = settings.batch_size
    total_steps = settings.max_steps or (settings.epochs or 1) * zpar.steps_per_epoch(
        train_pairs, batch)

    def make_train_ds(start_step: int, num_steps: int) -> tf.data.Dataset:
        return zpar.training_dataset(train_pairs, batch, settings.seed, start_step=start_step,
                                     num_steps=num_steps, **lengths)

    def make_valid_ds() -> tf.data.Dataset:
        valid = zpar.evaluation_dataset(valid_pairs, batch, **lengths)
        return valid.take(settings.eval_batches) if settings.eval_batches else valid

    def build() -> keras.Model:
        built = build_model(model, tok.vocab_size, preset, **dataclasses.asdict(model_config))
        if bert is not None:
            copy_bert_encoder(built, keras.saving.load_model(
                os.path.join(model_config.init_encoder, MODEL_FILE), safe_mode=True,
                compile=False))
        return built

    plan = FitPlan(
        build_model=build, loss=masked_lm_loss,
        make_metrics=lambda: [TokenNLL(), Perplexity()],
        make_train_ds=make_train_ds, make_valid_ds=make_valid_ds, total_steps=total_steps,
        monitor="val_token_nll",
        agree={"the vocabulary size": tok.vocab_size,
               "the number of training pairs": len(train_pairs)},
        tokenizer=tok, source_tokenizer=tok,  # model.embeddings fills both tables
    )
    result = fit_resumable(out, settings, strategy, worker, plan, verbose=verbose)
    metrics = {}
    if result.is_chief:
        final = seq2seq.teacher_forced_loss(result.model, valid_pairs, batch, verbose=verbose,
                                            **lengths)
        metrics = result.summary(settings)
        metrics.update(total_steps=total_steps, validation=final)
    return finish_run(out, result, metrics, record, tok)


# --------------------------------------------------------------------------------------------------
# Summarising and evaluating
# --------------------------------------------------------------------------------------------------


def _as_translator(run: LoadedRun) -> LoadedRun:
    """The run as ``zoo.tasks.seq2seq`` reads a translator: its one tokenizer on both sides."""
    tokenizers = {**run.extra_tokenizers, seq2seq.SOURCE: run.tokenizer}
    return dataclasses.replace(run, extra_tokenizers=tokenizers)


def check_texts(texts) -> tuple[list[str], bool]:
    """``(texts as a list, whether one string was given)``; an empty (blank) document or one
    over ``MAX_TEXT_BYTES`` bytes of UTF-8 is a ``ZooError`` naming it."""
    single = isinstance(texts, str)
    items = [texts] if single else list(texts)
    for number, text in enumerate(items):
        if not isinstance(text, str):
            raise ZooError("summarize takes a string or a list of strings")
        if not text.strip():
            raise ZooError(f"text {number} is empty: there is nothing to summarise")
        size = len(text.encode("utf-8"))
        if size > MAX_TEXT_BYTES:
            raise ZooError(f"text {number} is {size} bytes long, over the limit of "
                           f"{MAX_TEXT_BYTES}; documents are cut to the model's "
                           "max_source_length tokens anyway: send the beginning")
    return items, single


def summarize(run: LoadedRun, texts, strategy: str = "greedy", num_beams: int = 4,
              max_new_tokens: int | None = None, *,
              length_penalty: float = seq2seq.DEFAULT_LENGTH_PENALTY, batch_size: int = 64,
              verbose: int = 0):
    """Summarise ``texts`` (a str -> a str, a list -> a list) with the run's model.

    ``strategy``: ``greedy`` or ``beam`` (``num_beams``, scores divided by
    ``length ** length_penalty``); ``max_new_tokens``: at most this many summary tokens (default
    ``max_target_length - 1``). A document longer than ``max_source_length - 1`` tokens keeps its
    first ones; an empty one, or one over ``MAX_TEXT_BYTES``, is a ``ZooError``.
    """
    items, single = check_texts(texts)
    outputs = seq2seq.translate(_as_translator(run), items, strategy=strategy,
                                num_beams=num_beams, max_new_tokens=max_new_tokens,
                                length_penalty=length_penalty, batch_size=batch_size,
                                verbose=verbose)
    return outputs[0] if single else outputs


def evaluate(run: LoadedRun, data: str | None = None, split: str = "validation",
             batch_size: int | None = None, max_examples: int | None = None,
             strategy: str = "greedy", num_beams: int = 4) -> dict:
    """Loss / perplexity, then ROUGE-1/2/L F1 of the model's summaries and of lead-1 (under
    ``lead1``) over the documents of ``split`` (the first ``max_examples`` of them)."""
    source = data or run.config["data"]
    documents = load_summaries(source).documents(split)
    if max_examples is not None:
        if max_examples < 1:
            raise ZooError(f"max_examples must be >= 1, got {max_examples}")
        documents = documents[:max_examples]
    texts = [d.text for d in documents]
    references = [list(d.references) for d in documents]
    batch = batch_size or run.config["train"]["batch_size"]
    sizes = run.config["model_config"]
    pairs = zpar.encode_pairs(run.tokenizer, run.tokenizer,
                              [t for t, r in zip(texts, references, strict=True) for _ in r],
                              [x for r in references for x in r])
    result = seq2seq.teacher_forced_loss(run.model, pairs, batch,
                                         max_source_length=sizes["max_source_length"],
                                         max_target_length=sizes["max_target_length"])
    summaries = summarize(run, texts, strategy=strategy, num_beams=num_beams, batch_size=batch,
                          verbose=progress.level())
    with progress.stage(f"scoring ROUGE of {len(summaries)} summaries and of lead-1"):
        result.update(rouge_best_reference(summaries, references))
        result["lead1"] = rouge_best_reference([lead(d) for d in documents], references)
    result.update(examples=len(documents), references=sum(map(len, references)),
                  rouge="F1, best reference by ROUGE-1, Porter stemmer", strategy=strategy,
                  data=source, split=split, model=run.config["model"])
    if strategy == "beam":
        result["num_beams"] = num_beams
    return result


# --------------------------------------------------------------------------------------------------
# Export (export.saved_model calls serving_module and warmup_records)
# --------------------------------------------------------------------------------------------------


class _SummarizationModule(ExportModule):
    """The SavedModel's object graph: the model's variables, the tokenizer, the signatures."""

    def __init__(self, model, tokenizer, *, max_new_tokens: int, num_beams: int,
                 length_penalty: float, asset_paths=()):
        super().__init__(model, name="zoo_summarization", tokenizers={"tokenizer": tokenizer},
                         asset_paths=asset_paths)
        self._max_new = int(max_new_tokens)
        self._beam = dict(num_beams=int(num_beams), length_penalty=float(length_penalty))
        spec = tf.TensorSpec([None], tf.string, name=TEXT_INPUT)
        self.summarize = self.function(self._summarize, spec)
        self.summarize_beam = self.function(self._summarize_beam, spec)

    def _run(self, text, **settings):
        length = tf.strings.length(text)
        checks = [
            tf.debugging.assert_greater(
                tf.strings.length(tf.strings.strip(text)), 0,
                message="summarize: a text is empty; there is nothing to summarise"),
            tf.debugging.assert_less_equal(
                length, MAX_TEXT_BYTES,
                message=f"summarize: a text is over {MAX_TEXT_BYTES} bytes long"),
        ]
        with tf.control_dependencies(checks):
            text = tf.identity(text)
        return seq2seq.decoded_outputs(self.keras_model, self.tokenizer, self.tokenizer, text,
                                       SUMMARY_OUTPUT, max_new_tokens=self._max_new, **settings)

    def _summarize(self, text):
        return self._run(text, strategy="greedy")

    def _summarize_beam(self, text):
        return self._run(text, strategy="beam", **self._beam)

    def signatures(self) -> dict:
        greedy = self.summarize.get_concrete_function()
        return {"serving_default": greedy, "summarize": greedy,
                "summarize_beam": self.summarize_beam.get_concrete_function()}


def serving_module(run: LoadedRun, max_new_tokens: int = 64, num_beams: int = 4,
                   length_penalty: float = seq2seq.DEFAULT_LENGTH_PENALTY, **_ignored):
    """``(module, signatures, export settings)`` for ``export.saved_model``.

    Signatures (a dynamic batch; tokenizer and KV-cached decoding loop in the graph, no XLA, no
    py_function):

    * ``summarize`` and ``serving_default``: ``text`` string ``[B]`` -> ``summary`` string
      ``[B]`` (greedy), ``token_ids`` int32 ``[B, N]`` (0-padded), ``num_tokens`` int32 ``[B]``;
    * ``summarize_beam``: the same with beam search (``num_beams``, ``length_penalty``).

    A blank text or one over ``MAX_TEXT_BYTES`` bytes fails the request (INVALID_ARGUMENT).
    ``max_new_tokens`` is the loop's static bound, at most ``max_target_length - 1`` (clamped).
    """
    model = run.model
    max_new = max(1, min(int(max_new_tokens), model.max_target_length - 1))
    files = tempfile.TemporaryDirectory(prefix="zoo-tokenizer-")
    run.tokenizer.save(files.name)
    assets = [os.path.join(files.name, name) for name in sorted(os.listdir(files.name))]
    module = _SummarizationModule(model, run.tokenizer, max_new_tokens=max_new,
                                  num_beams=num_beams, length_penalty=length_penalty,
                                  asset_paths=assets)
    module.keep_alive(files)
    settings = {"max_new_tokens": max_new, "num_beams": int(num_beams),
                "length_penalty": float(length_penalty), "strategy": "greedy",
                "max_source_length": model.max_source_length,
                "max_target_length": model.max_target_length, "max_text_bytes": MAX_TEXT_BYTES}
    return module, module.signatures(), settings


def warmup_records(run: LoadedRun) -> list[bytes]:
    """``PredictionLog`` records (``summarize``, ``serving_default``, ``summarize_beam`` on two
    texts) that a server replays before answering."""
    texts = seq2seq.warmup_texts(run.tokenizer)
    return predict_logs({signature: {TEXT_INPUT: texts}
                         for signature in ("summarize", "serving_default", "summarize_beam")})


# --------------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------------


@register_task
class SummarizationTask(Task):
    """Summarization (``summarizer``): an encoder reads the document ``x``, a decoder writes the
    summary ``y`` token by token, one vocabulary for both.

        L = -(1/N) sum_t log p(y_t | y_<t, x),     perplexity = exp(L)

    ``evaluate`` adds ROUGE-1/2/L F1 (best reference by ROUGE-1) of the decoded summaries beside
    the lead-1 baseline; runs answer ``summarize``; the export has ``summarize`` and
    ``summarize_beam`` signatures.
    """

    name = TASK
    train = staticmethod(train)
    evaluate = staticmethod(evaluate)
    serving_module = staticmethod(serving_module)
    summarize = staticmethod(summarize)

    def warmup_records(self, run: LoadedRun, **export_settings) -> list[bytes]:
        """``summarize``, ``serving_default`` and ``summarize_beam`` requests on two texts."""
        return warmup_records(run)
