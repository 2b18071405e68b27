"""The extractive question-answering task (``bert_qa``): train, evaluate, answer, export.

Data (``zoo.data.squad``): ``dataset:squad`` or a SQuAD-layout JSON file, split by article (SQuAD
v1.1 dev: the first 40 articles for training, 36 train + 4 validation; the last 8 test). The
tokenizer is a cased WordPiece learned on the training contexts and questions, or the one of a
``bert_mlm`` run (``model.pretrained=RUN_DIR``, whose encoder weights are copied in).

Each (question, context) pair becomes one or more windows ``[CLS] question [SEP] context piece
[SEP]`` (``zoo.tasks.qa_spans``: ``doc_stride`` tokens between window starts, questions cut to
``max_question_tokens``). A window holding the whole first gold answer is trained to
point at its first and last token; the others point at ``[CLS]``.

``zoo eval`` JSON: ``exact_match`` and ``f1`` (percent; SQuAD's answer normalisation, the best
over each question's gold answers; ``zoo.qa_metrics``), ``examples``, ``articles``.

Export signature ``answer`` (also ``serving_default``), batch ``B``:
    ``question`` string ``[B]``, ``context`` string ``[B]`` -> ``answer`` string ``[B]`` (the
    context's own substring), ``score`` float32 ``[B]`` (``s_start + e_end``, the span's start
    and end logits), ``start`` / ``end`` int64 ``[B]`` (character offsets into the context,
    end exclusive: ``context[start:end] == answer``). A question is read up to its first
    ``max_question_tokens`` tokens (BERT's ``max_query_length``). An empty question or context,
    or either over ``max_context_tokens`` tokens, is an INVALID_ARGUMENT error.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import weakref

import keras
import numpy as np
import tensorflow as tf

from zoo import distribute as zdist
from zoo import progress
from zoo.data import squad
from zoo.errors import ZooError
from zoo.files import MODEL_FILE, TOKENIZER_DIR
from zoo.fitting import (
    FitPlan,
    context_config,
    finish_run,
    fit_resumable,
    open_run,
    run_record,
    write_record,
)
from zoo.models import build_model
from zoo.models.bert_mlm import ENCODER_FIELDS
from zoo.qa_metrics import squad_scores
from zoo.run import LoadedRun
from zoo.tasks.base import Task, register_task
from zoo.tasks.classification import _pretrained, array_datasets, copy_pretrained_encoder
from zoo.tasks.export_module import ExportModule
from zoo.tasks.qa_spans import (
    OffsetWordPiece,
    best_spans,
    byte_offsets,
    char_span_to_tokens,
    in_windows,
    make_windows,
    span_text,
    window_labels,
    word_edges,
)
from zoo.tasks.warmup import predict_logs, text_array
from zoo.tokenizers import load_tokenizer, train_tokenizer
from zoo.training import make_settings

EVAL_BATCH = 32  # questions per call while evaluating


@dataclasses.dataclass(frozen=True)
class SpanSettings:
    """What the windowing and the decoder need from a run's model config."""

    seq_len: int
    doc_stride: int
    max_question_tokens: int
    max_answer_tokens: int
    max_context_tokens: int

    @classmethod
    def of(cls, config: dict) -> SpanSettings:
        """From a run's ``config.json``."""
        mc = config["model_config"]
        return cls(int(config["seq_len"]), int(mc["doc_stride"]), int(mc["max_question_tokens"]),
                   int(mc["max_answer_tokens"]), int(mc["max_context_tokens"]))


# ------------------------------------------------------------------------------------------------
# training data


def encode_examples(tok: OffsetWordPiece, examples: list[squad.QAExample], spans: SpanSettings):
    """Windows ``(N, T)`` int32 and their span targets ``(N, 2)`` for training."""
    ids, labels = [], []
    for i in range(0, len(examples), 512):
        part = examples[i:i + 512]
        q_ids, _, _ = tok.tokenize_with_offsets(tf.constant([e.question for e in part]))
        q_ids = q_ids[:, :spans.max_question_tokens]
        contexts = [e.context for e in part]
        c_ids, starts, ends = tok.tokenize_with_offsets(tf.constant(contexts))
        c_ids = c_ids[:, :spans.max_context_tokens]
        token_spans = []
        for e, s, z in zip(part, starts.to_list(), ends.to_list(), strict=True):
            first, last = e.first_span if e.answers else (0, 0)
            token_spans.append(char_span_to_tokens(s, z, first, last, byte_offsets(e.context))
                               if e.answers and last > first else None)
        windows = make_windows(q_ids, c_ids, spans.seq_len, spans.doc_stride)
        ids.append(windows.ids.numpy())
        labels.append(window_labels(windows, token_spans))
    if not ids:
        return np.zeros([0, spans.seq_len], np.int32), np.zeros([0, 2], np.int32)
    return np.concatenate(ids).astype(np.int32), np.concatenate(labels)


def train(model: str, data: str, out: str, *, preset: str = "tiny", tokenizer: str | None = None,
          model_overrides: dict | None = None, verbose: int = 1, **train_settings) -> LoadedRun:
    """Train a span-extraction model on ``data`` into ``out`` (resumable; ``zoo.fitting``)."""
    from zoo.config import DEFAULT_VOCAB_SIZES

    overrides = dict(model_overrides or {})
    pretrained = overrides.get("pretrained") or ""
    pre_config = None
    if pretrained:
        pretrained = os.path.abspath(os.path.expanduser(str(pretrained)))
        overrides["pretrained"] = pretrained
        pre_config = _pretrained(pretrained)
        overrides.update({k: v for k, v in pre_config["model_config"].items()
                          if k in ENCODER_FIELDS and k not in ("dropout", "max_length")})
        tokenizer = pre_config["tokenizer"]
    settings = make_settings(model, data, preset, tokenizer, overrides, train_settings,
                             default_tokenizer="wordpiece")
    if settings.tokenizer != "wordpiece":
        raise ZooError(f"question answering needs the wordpiece tokenizer. "
                       f"Received: {settings.tokenizer}")
    strategy, worker = zdist.make_strategy(settings.distribute)
    train_examples = squad.load_examples(data, squad.TRAIN)
    valid_examples = squad.load_examples(data, squad.VALIDATION)
    model_config, seq_len = context_config(model, preset, settings, overrides)
    if pre_config is not None and seq_len > int(pre_config["model_config"]["max_length"]):
        raise ZooError(f"seq_len {seq_len} is longer than the pretrained encoder's context "
                       f"({pre_config['model_config']['max_length']})")
    record = run_record("question_answering", settings, model_config, seq_len)
    previous, finished = open_run(out, record, worker)
    if finished is not None:
        return finished

    tokenizer_dir = os.path.join(out, TOKENIZER_DIR)
    if os.path.exists(os.path.join(tokenizer_dir, "tokenizer.json")) and (
        worker.is_chief or previous is not None
    ):
        tok = load_tokenizer(tokenizer_dir)
    elif pre_config is not None:
        tok = load_tokenizer(os.path.join(pretrained, TOKENIZER_DIR))
        if worker.is_chief:
            shutil.copytree(os.path.join(pretrained, TOKENIZER_DIR), tokenizer_dir,
                            dirs_exist_ok=True)
    else:
        texts = list(dict.fromkeys(e.context for e in train_examples))
        texts += [e.question for e in train_examples]
        tok = train_tokenizer("wordpiece", texts, vocab_size=settings.vocab_size
                              or DEFAULT_VOCAB_SIZES["wordpiece"], verbose=verbose)
        if worker.is_chief:
            tok.save(tokenizer_dir)
    vocab_size = int(pre_config["vocab_size"]) if pre_config is not None else tok.vocab_size
    record.update(vocab_size=vocab_size)
    write_record(out, record, previous, worker)

    spans = SpanSettings.of(record)
    offsets = OffsetWordPiece(tok)
    with progress.stage(f"windowing {len(train_examples)} + {len(valid_examples)} questions"):
        x_train, y_train = encode_examples(offsets, train_examples, spans)
        x_valid, y_valid = encode_examples(offsets, valid_examples, spans)
    total_steps, make_train_ds, make_valid_ds = array_datasets(x_train, y_train, x_valid, y_valid,
                                                               settings)

    def build():
        built = build_model(model, vocab_size, preset, **dataclasses.asdict(model_config))
        if pre_config is not None:
            _copy_encoder(built, pretrained)
        return built

    from zoo.models.bert_qa import SpanLoss

    plan = FitPlan(
        build_model=build,
        loss=SpanLoss(),
        make_metrics=lambda: [],
        make_train_ds=make_train_ds,
        make_valid_ds=make_valid_ds,
        total_steps=total_steps,
        monitor="val_loss",
        agree={"the vocabulary size": vocab_size, "the training windows": len(x_train)},
        tokenizer=tok,  # model.embeddings matches its tokens
    )
    result = fit_resumable(out, settings, strategy, worker, plan, verbose=verbose)
    metrics = {}
    if result.is_chief:
        metrics = result.summary(settings)
        run = LoadedRun(path=out, model=result.model, tokenizer=tok, config=record)
        metrics.update(total_steps=total_steps, training_windows=int(len(x_train)),
                       validation=score_examples(run, valid_examples, verbose))
    return finish_run(out, result, metrics, record, tok)


def _copy_encoder(model, path: str) -> None:
    """The bert_mlm run's encoder weights, position table cut to this model's context."""
    try:
        copy_pretrained_encoder(model, path)
        return
    except ValueError:  # a shorter context than the pretrained one
        pass
    pre = keras.saving.load_model(os.path.join(path, MODEL_FILE), safe_mode=True,
                                  compile=False)
    weights = [w if w.shape == t.shape else w[: t.shape[0]]
               for w, t in zip(pre.encoder.get_weights(), model.encoder.get_weights(),
                               strict=True)]
    model.encoder.set_weights(weights)


# ------------------------------------------------------------------------------------------------
# answering: one graph for Python, zoo eval and the export


def answer_graph(model, tok: OffsetWordPiece, spans: SpanSettings, question, context) -> dict:
    """Questions and contexts ``(B,)`` -> ``{"answer", "score", "start", "end"}`` (``(B,)``
    each; see the module docstring). Bad inputs fail with ``InvalidArgumentError``."""
    q_ids, _, _ = tok.tokenize_with_offsets(question)
    c_ids, starts, ends = tok.tokenize_with_offsets(context)
    q_len, c_len = q_ids.row_lengths(), c_ids.row_lengths()
    checks = [
        tf.debugging.assert_positive(q_len, message="answer: every question needs some text"),
        tf.debugging.assert_positive(c_len, message="answer: every context needs some text"),
        tf.debugging.assert_less_equal(
            q_len, tf.constant(spans.max_context_tokens, tf.int64),
            message=f"answer: a question is longer than {spans.max_context_tokens} tokens"),
        tf.debugging.assert_less_equal(
            c_len, tf.constant(spans.max_context_tokens, tf.int64),
            message=f"answer: a context is longer than {spans.max_context_tokens} tokens"),
    ]
    with tf.control_dependencies(checks):
        q_ids = tf.identity(q_ids[:, :spans.max_question_tokens])
    windows = make_windows(q_ids, c_ids, spans.seq_len, spans.doc_stride)
    logits = model(windows.ids, training=False)  # (N, T, 2)
    begins, ends_word = word_edges(c_ids, tok.suffix_table)
    width = tf.shape(windows.ids)[1]
    score, first, last = best_spans(logits, windows, tf.shape(question)[0],
                                    spans.max_answer_tokens, in_windows(begins, windows, width),
                                    in_windows(ends_word, windows, width))
    text, start, end = span_text(context, starts, ends, first, last)
    return {"answer": text, "score": score, "start": start, "end": end}


_ANSWERERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _answerer(run: LoadedRun):
    """The run's ``answer_graph`` as a ``tf.function`` (built once per model)."""
    fn = _ANSWERERS.get(run.model)
    if fn is None:
        tok, spans = OffsetWordPiece(run.tokenizer), SpanSettings.of(run.config)
        spec = tf.TensorSpec([None], tf.string)
        fn = tf.function(lambda q, c: answer_graph(run.model, tok, spans, q, c),
                         input_signature=[spec, spec], autograph=False)
        fn.keep = tok  # the tokenizer's tables live as long as the function
        _ANSWERERS[run.model] = fn
    return fn


def answer(run: LoadedRun, question, context) -> dict | list[dict]:
    """``{"answer", "score", "start", "end"}`` for a question on a context (lists of both: a
    list of dicts); ``context[start:end] == answer``. Bad input raises ``ZooError``."""
    single = isinstance(question, str)
    questions = [question] if single else list(question)
    contexts = [context] if isinstance(context, str) else list(context)
    if len(questions) != len(contexts):
        raise ZooError(f"{len(questions)} questions for {len(contexts)} contexts")
    results = []
    for i in range(0, len(questions), EVAL_BATCH):
        try:
            out = _answerer(run)(tf.constant(questions[i:i + EVAL_BATCH]),
                                 tf.constant(contexts[i:i + EVAL_BATCH]))
        except tf.errors.InvalidArgumentError as err:
            found = re.search(r"\[(answer: [^\]]*)\]", err.message)
            raise ZooError(found.group(1).rstrip(". ") if found else err.message.split("\n")[0]) from None
        for k in range(len(out["answer"])):
            results.append({"answer": out["answer"][k].numpy().decode("utf-8", "replace"),
                            "score": float(out["score"][k]), "start": int(out["start"][k]),
                            "end": int(out["end"][k])})
    return results[0] if single else results


def score_examples(run: LoadedRun, examples: list[squad.QAExample], verbose: int = 0) -> dict:
    """EM and F1 (percent) of the run's answers to ``examples``."""
    predictions = []
    starts = range(0, len(examples), EVAL_BATCH)
    label = f"answering {len(examples)} questions (batches of {EVAL_BATCH})"
    for i in progress.track(starts, label, verbose=verbose):
        part = examples[i:i + EVAL_BATCH]
        predictions += [r["answer"] for r in answer(run, [e.question for e in part],
                                                    [e.context for e in part])]
    scores = squad_scores(predictions, [e.answers for e in examples])
    scores["articles"] = len({e.article for e in examples})
    return scores


def evaluate(run: LoadedRun, data: str | None = None, split: str = "validation",
             batch_size: int | None = None) -> dict:
    """Exact match and F1 over the questions of ``split`` (``test``: the held-out articles)."""
    examples = squad.load_examples(data or run.config["data"], split)
    scores = score_examples(run, examples, progress.level())
    scores["split"] = split
    return scores


# ------------------------------------------------------------------------------------------------
# export


class _ServingModule(ExportModule):
    """The model's variables, the offset tokenizer and the ``answer`` function."""

    SIGNATURES = ("answer",)

    def __init__(self, model, tokenizer, spans: SpanSettings):
        super().__init__(model, name="zoo_question_answering",
                         tokenizers={"tokenizer": OffsetWordPiece(tokenizer)})
        self._spans = spans
        self.answer = self.function(
            self._answer, tf.TensorSpec([None], tf.string, name="question"),
            tf.TensorSpec([None], tf.string, name="context"))

    def _answer(self, question, context):
        return answer_graph(self.keras_model, self.tokenizer, self._spans, question, context)


def serving_module(run: LoadedRun, **_ignored):
    """``(module, signatures, settings)`` for ``export.saved_model``."""
    spans = SpanSettings.of(run.config)
    module = _ServingModule(run.model, run.tokenizer, spans)
    fn = module.answer.get_concrete_function()
    return module, {"serving_default": fn, "answer": fn}, dataclasses.asdict(spans)


def warmup_records(run: LoadedRun) -> list[bytes]:
    """One ``answer`` PredictionLog (two pairs, one needing several windows)."""
    words = [w for w in run.tokenizer.vocabulary[4:] if w.isalpha()][:50] or ["text"]
    long_context = " ".join(words[i % len(words)] for i in range(3 * int(run.config["seq_len"])))
    return predict_logs({"answer": {
        "question": text_array([words[0], words[-1]]),
        "context": text_array([" ".join(words[:10]), long_context])}})


# ------------------------------------------------------------------------------------------------
# the task


@register_task
class QuestionAnsweringTask(Task):
    """Extractive question answering (``bert_qa``): the answer is a span of the context.

    Trains on the mean of the start and end cross-entropies, ``s``/``e`` a window's start/end
    logits and ``(a, z)`` the answer's first and last position (``[CLS]`` when the window does not
    hold it):

        L = -(1/2N) sum_n (log softmax(s_n)_{a_n} + log softmax(e_n)_{z_n})

    and reports SQuAD's exact match and F1. Runs also ``answer``; the export has an ``answer``
    signature.
    """

    name = "question_answering"
    train = staticmethod(train)
    evaluate = staticmethod(evaluate)
    serving_module = staticmethod(serving_module)

    def warmup_records(self, run: LoadedRun, **export_settings) -> list[bytes]:
        """One ``answer`` request of two pairs."""
        return warmup_records(run)

    answer = staticmethod(answer)
