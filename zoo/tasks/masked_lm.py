"""The masked-LM task (``bert_mlm``): train, evaluate, fill-mask, embed, export.

Data: any corpus ``zoo.data.load_corpus`` reads (``dataset:NAME``, a ``.txt`` file or a
directory); its lines are packed into ``[CLS] s_1 [SEP] s_2 [SEP] ...`` rows of ``seq_len`` ids and
masked dynamically, BERT-style (``zoo.data.masking``). The tokenizer (WordPiece by default; also
``sentencepiece``, ``word``, ``char``) is learned on the train split; ``[MASK]`` is appended as id
``tokenizer.vocab_size`` (the model's vocabulary is one larger), ``[CLS]``/``[SEP]`` are the reserved
``<bos>``/``<eos>``.

Metrics over the masked positions only (labels 0 elsewhere are ignored):

    loss = -(1/N) sum_{masked i} log p(w_i | masked sequence)      N = masked tokens
    perplexity = exp(loss)          masked_accuracy = (1/N) sum [argmax_v p(v) == w_i]

``zoo eval`` masks the split with a fixed seed (``masking.EVAL_SEED``), so it is reproducible.

Export (``serving_module``), batched over a dynamic batch ``B``; ``M`` = the export's
``max_masks`` (8) and ``K`` = its ``top_k`` (the export's ``top_k`` setting, 5 when 0):

``fill_mask`` (also ``serving_default``)
    ``text`` string ``[B]`` (``"[MASK]"`` marks each blank) -> ``tokens`` string ``[B, M, K]``,
    ``token_ids`` int32 ``[B, M, K]``, ``scores`` float32 ``[B, M, K]`` (the model's probability
    of each candidate), ``positions`` int32 ``[B, M]`` (the mask's index in ``[CLS] ids [SEP]``,
    -1 for an unused slot), ``num_masks`` int32 ``[B]`` (all masks of the row, even beyond M) and
    ``filled`` string ``[B]`` (the text with every mask replaced by its best candidate). Slot
    ``m`` holds the row's ``m``-th mask from the left; unused slots hold "", 0 and 0.0.
    Candidates never include the special ids (pad, unk, [CLS], [SEP], [MASK]).
``embed``
    ``text`` string ``[B]`` -> ``embedding`` float32 ``[B, d_model]``: the final hidden states
    mean-pooled over the non-padding positions of ``[CLS] ids [SEP]``.

A text longer than the model's ``max_length - 2`` tokens is cut (masks past the cut are lost).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os

import numpy as np
import tensorflow as tf
from keras import ops

from zoo import data as zdata
from zoo import distribute as zdist
from zoo import progress
from zoo.backends import model_function
from zoo.data import masking
from zoo.errors import ZooError
from zoo.files import TOKENIZER_DIR
from zoo.fitting import (
    FitPlan,
    context_config,
    finish_run,
    fit_resumable,
    open_run,
    run_record,
    write_record,
)
from zoo.metrics import MaskedAccuracy, Perplexity, TokenNLL, masked_lm_loss, masked_token_nll
from zoo.models import build_model
from zoo.models.bert_mlm import masked_mean
from zoo.run import LoadedRun
from zoo.tasks.base import Task, register_task
from zoo.tasks.export_module import ExportModule
from zoo.tasks.warmup import predict_logs, sample_rows, text_array
from zoo.tokenizers import load_tokenizer, train_tokenizer
from zoo.tokenizers.base import NUM_SPECIAL
from zoo.training import make_settings

log = logging.getLogger("zoo.train")

DEFAULT_TOP_K = 5
MAX_MASKS = 8


def masked_tokenizer(run: LoadedRun) -> masking.MaskedTextTokenizer:
    """The run's tokenizer with ``[MASK]`` (checked against the model's vocabulary)."""
    tok = masking.MaskedTextTokenizer(run.tokenizer)
    if tok.vocab_size != int(run.config["vocab_size"]):
        raise ZooError(
            f"{run.path}: the tokenizer has {run.tokenizer.vocab_size} ids + [MASK] but the model "
            f"{run.config['vocab_size']}"
        )
    return tok


def _packed(tok, corpus, split: str, seq_len: int) -> np.ndarray:
    return masking.pack_sentences(zdata.encode_lines(tok, corpus.lines(split)), seq_len)


# ------------------------------------------------------------------------------------------------
# training


def train(model: str, data: str, out: str, *, preset: str = "tiny", tokenizer: str | None = None,
          model_overrides: dict | None = None, verbose: int = 1, **train_settings) -> LoadedRun:
    """Train a masked LM on ``data`` into ``out`` (resumable; see ``zoo.fitting``)."""
    settings = make_settings(model, data, preset, tokenizer, model_overrides, train_settings,
                             default_tokenizer="wordpiece")
    strategy, worker = zdist.make_strategy(settings.distribute)
    model_config, seq_len = context_config(model, preset, settings, settings.model_overrides)
    record = run_record("masked_lm", settings, model_config, seq_len)
    previous, finished = open_run(out, record, worker)
    if finished is not None:
        return finished

    corpus = zdata.load_corpus(data)
    tokenizer_dir = os.path.join(out, TOKENIZER_DIR)
    if os.path.exists(os.path.join(tokenizer_dir, "tokenizer.json")) and (
        worker.is_chief or previous is not None
    ):
        base = load_tokenizer(tokenizer_dir)
    else:
        from zoo.config import DEFAULT_VOCAB_SIZES

        vocab_size = settings.vocab_size or DEFAULT_VOCAB_SIZES[settings.tokenizer]
        base = train_tokenizer(settings.tokenizer, corpus.lines("train"), vocab_size=vocab_size,
                               verbose=verbose)
        if worker.is_chief:
            base.save(tokenizer_dir)
    tok = masking.MaskedTextTokenizer(base)
    record.update(vocab_size=tok.vocab_size, mask_id=tok.mask_id, corpus_kind=corpus.kind)
    write_record(out, record, previous, worker)

    train_rows = _packed(base, corpus, "train", seq_len)
    valid_rows = _packed(base, corpus, "validation", seq_len)
    if settings.max_steps is not None:
        total_steps = settings.max_steps
    else:
        total_steps = (settings.epochs or 1) * math.ceil(len(train_rows) / settings.batch_size)

    def make_valid_ds() -> tf.data.Dataset:
        valid = masking.evaluation_dataset(valid_rows, settings.batch_size, tok.mask_id)
        return valid.take(settings.eval_batches) if settings.eval_batches else valid

    plan = FitPlan(
        build_model=lambda: build_model(model, tok.vocab_size, preset,
                                        **dataclasses.asdict(model_config)),
        loss=masked_lm_loss,
        make_metrics=lambda: [TokenNLL(), Perplexity(), MaskedAccuracy()],
        make_train_ds=lambda start, steps: masking.training_dataset(
            train_rows, settings.batch_size, settings.seed, tok.mask_id, start, steps),
        make_valid_ds=make_valid_ds,
        total_steps=total_steps,
        monitor="val_token_nll",
        tokens_per_step=settings.batch_size * seq_len,
        agree={"the vocabulary size": tok.vocab_size, "the training rows": len(train_rows)},
        tokenizer=base,  # model.embeddings matches its tokens ([MASK] keeps its random row)
    )
    result = fit_resumable(out, settings, strategy, worker, plan, verbose=verbose)
    metrics = {}
    if result.is_chief:
        final = measure(result.model, masking.evaluation_dataset(valid_rows, settings.batch_size,
                                                                 tok.mask_id), verbose=verbose)
        metrics = result.summary(settings, tokens_per_step=settings.batch_size * seq_len)
        metrics.update(total_steps=total_steps, validation=final)
    return finish_run(out, result, metrics, record, base)


# ------------------------------------------------------------------------------------------------
# evaluation


def measure(model, dataset: tf.data.Dataset, verbose: int | None = None) -> dict:
    """Masked-token loss, perplexity and accuracy of ``model`` over ``(inputs, labels)`` batches
    (``verbose`` > 0: a progress bar on stderr; None: the ambient level, ``zoo.progress``)."""

    def totals(call, inputs, labels):
        logits = ops.cast(call(inputs), "float32")
        nll, mask = masked_token_nll(labels, logits)  # mask: the selected (non-0) labels
        hits = ops.cast(ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), labels), "float32")
        return ops.sum(nll), ops.sum(hits * mask), ops.sum(mask)

    step = model_function(model, totals)
    total_nll = correct = count = 0.0
    size = int(dataset.cardinality())
    batches = progress.track(dataset.as_numpy_iterator(), "evaluating masked tokens",
                             size if size >= 0 else None, verbose)
    for inputs, labels in batches:
        a, b, c = step(inputs, labels)
        total_nll += float(a)
        correct += float(b)
        count += float(c)
    loss = total_nll / max(count, 1.0)
    return {"loss": loss, "perplexity": math.exp(loss), "masked_accuracy": correct / max(count, 1.0),
            "masked_tokens": int(count)}


def evaluation_batches(run: LoadedRun, data: str | None = None, split: str = "validation",
                       batch_size: int | None = None) -> tf.data.Dataset:
    """The ``(inputs, labels)`` batches ``evaluate`` scores (fixed-seed masks)."""
    tok = masked_tokenizer(run)
    corpus = zdata.load_corpus(data or run.config["data"])
    rows = _packed(run.tokenizer, corpus, split, int(run.config["seq_len"]))
    batch_size = batch_size or int(run.config["train"]["batch_size"])
    return masking.evaluation_dataset(rows, batch_size, tok.mask_id)


def evaluate(run: LoadedRun, data: str | None = None, split: str = "validation",
             batch_size: int | None = None) -> dict:
    """``zoo eval``'s JSON: ``loss``, ``perplexity``, ``masked_accuracy``, ``masked_tokens``."""
    return measure(run.model, evaluation_batches(run, data, split, batch_size))


# ------------------------------------------------------------------------------------------------
# in-graph fill-mask and embed (the Python API and the export share them)


def encode_texts(tok: masking.MaskedTextTokenizer, texts, max_length: int) -> tf.Tensor:
    """Strings ``(B,)`` -> ``[CLS] ids [SEP]`` int32 ``(B, L)``, right-padded, cut to max_length."""
    return masking.with_cls_sep(tok.tokenize(texts), max_length)


def fill_mask_graph(model, tok: masking.MaskedTextTokenizer, token_table: tf.Tensor, ids,
                    top_k: int, max_masks: int) -> dict:
    """The ``fill_mask`` signature's outputs for ``[CLS] ids [SEP]`` rows ``ids`` (B, L)."""
    logits = tf.cast(model(ids, training=False), tf.float32)  # (B, L, V)
    probs = tf.nn.softmax(logits, axis=-1)
    vocab = tf.shape(probs)[-1]
    ordinary = (tf.range(vocab) >= NUM_SPECIAL) & (tf.range(vocab) != tok.mask_id)
    candidates = tf.where(ordinary, probs, -1.0)
    k = min(int(top_k), tok.vocab_size - NUM_SPECIAL - 1)
    scores, token_ids = tf.math.top_k(candidates, k=k)  # (B, L, K)
    is_mask = tf.equal(ids, tok.mask_id)
    length = tf.shape(ids)[1]
    pos = tf.range(length)[None, :]
    key = tf.where(is_mask, pos, length + pos)  # masks first, left to right
    key = tf.pad(tf.sort(key, axis=1), [[0, 0], [0, max_masks]], constant_values=2 * length + 1)
    key = key[:, :max_masks]
    used = key < length
    positions = tf.where(used, key, -1)  # (B, M)
    safe = tf.where(used, key, 0)
    slot_ids = tf.where(used[:, :, None], tf.gather(token_ids, safe, batch_dims=1), 0)
    slot_scores = tf.where(used[:, :, None], tf.gather(scores, safe, batch_dims=1), 0.0)
    slot_tokens = tf.where(used[:, :, None], tf.gather(token_table, slot_ids), "")
    filled_ids = tf.where(is_mask, token_ids[:, :, 0], ids)
    return {
        "tokens": slot_tokens,
        "token_ids": slot_ids,
        "scores": slot_scores,
        "positions": tf.cast(positions, tf.int32),
        "num_masks": tf.reduce_sum(tf.cast(is_mask, tf.int32), axis=1),
        "filled": tok.base.detokenize(filled_ids),
    }


def _as_list(texts) -> tuple[list[str], bool]:
    if isinstance(texts, str):
        return [texts], True
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise ZooError("texts must be strings")
    return texts, False


def fill_mask(run: LoadedRun, texts, top_k: int = DEFAULT_TOP_K) -> list[dict] | dict:
    """Candidates for every ``[MASK]`` of each text.

    Returns, per text, ``{"text", "filled", "masks"}``: ``masks`` has one list per ``[MASK]``
    (left to right) of ``top_k`` dicts ``{"token": str, "id": int, "score": probability}``, best
    first; ``filled`` is the text with each mask replaced by its best candidate. A single string
    gives a single dict.
    """
    items, single = _as_list(texts)
    if not isinstance(top_k, int) or top_k < 1:
        raise ZooError(f"top_k must be an integer >= 1. Received: {top_k!r}")
    tok = masked_tokenizer(run)
    ids = encode_texts(tok, tf.constant(items, tf.string), run.model.max_length)
    max_masks = max(int(tf.reduce_max(tf.reduce_sum(tf.cast(ids == tok.mask_id, tf.int32), 1))), 1)
    table = tf.constant(tok.token_strings())
    out = fill_mask_graph(run.model, tok, table, ids, top_k, max_masks)
    results = []
    for b, text in enumerate(items):
        masks = []
        for m in range(int(out["num_masks"][b])):
            masks.append([
                {"token": out["tokens"][b, m, j].numpy().decode("utf-8"),
                 "id": int(out["token_ids"][b, m, j]), "score": float(out["scores"][b, m, j])}
                for j in range(out["tokens"].shape[2])
            ])
        results.append({"text": text, "filled": out["filled"][b].numpy().decode("utf-8"),
                        "masks": masks})
    return results[0] if single else results


def embed(run: LoadedRun, texts) -> np.ndarray:
    """Sentence vectors ``[batch, d_model]``: final hidden states mean-pooled over the
    non-padding positions of ``[CLS] ids [SEP]``."""
    items, _ = _as_list(texts)
    tok = masked_tokenizer(run)
    ids = encode_texts(tok, tf.constant(items, tf.string), run.model.max_length)
    return masked_mean(run.model.encode(ids, training=False), ids).numpy()


# ------------------------------------------------------------------------------------------------
# export


class _ServingModule(ExportModule):
    """The model's variables, the tokenizer and the ``fill_mask`` / ``embed`` functions."""

    def __init__(self, model, tok: masking.MaskedTextTokenizer, top_k: int, max_masks: int):
        super().__init__(model, name="zoo_masked_lm", tokenizers={"tokenizer": tok})
        self._table = tok.token_strings()
        self._top_k = int(top_k)
        self._max_masks = int(max_masks)
        spec = tf.TensorSpec([None], tf.string, name="text")
        self.fill_mask = self.function(self._fill_mask, spec)
        self.embed = self.function(self._embed, spec)

    def _ids(self, text):
        return encode_texts(self.tokenizer, text, self.keras_model.max_length)

    def _fill_mask(self, text):
        return fill_mask_graph(self.keras_model, self.tokenizer, tf.constant(self._table),
                               self._ids(text), self._top_k, self._max_masks)

    def _embed(self, text):
        ids = self._ids(text)
        hidden = self.keras_model.encode(ids, training=False)
        return {"embedding": tf.cast(masked_mean(hidden, ids), tf.float32)}


def serving_module(run: LoadedRun, top_k: int = 0, max_masks: int = MAX_MASKS, **_ignored):
    """``(module, signatures, settings)`` for ``export.saved_model`` (see the module docstring)."""
    top_k = int(top_k) if top_k else DEFAULT_TOP_K
    module = _ServingModule(run.model, masked_tokenizer(run), top_k, max_masks)
    fill = module.fill_mask.get_concrete_function()
    signatures = {"serving_default": fill, "fill_mask": fill,
                  "embed": module.embed.get_concrete_function()}
    return module, signatures, {"top_k": top_k, "max_masks": int(max_masks),
                                "max_length": int(run.model.max_length)}


def warmup_texts(run: LoadedRun) -> list[str]:
    """Two texts with masks made of in-vocabulary tokens."""
    first, second = (run.tokenizer.decode(row) for row in sample_rows(run.tokenizer.vocab_size))
    return [f"{first} {masking.MASK_TOKEN}", f"{masking.MASK_TOKEN} {second} {masking.MASK_TOKEN}"]


def warmup_records(run: LoadedRun) -> list[bytes]:
    """``PredictionLog`` records: ``fill_mask`` and ``embed`` on two texts."""
    texts = text_array(warmup_texts(run))
    return predict_logs({signature: {"text": texts} for signature in ("fill_mask", "embed")})


# ------------------------------------------------------------------------------------------------
# the task


@register_task
class MaskedLMTask(Task):
    """BERT-style masked-token prediction (``bert_mlm``).

    Trains and evaluates on the mean negative log-likelihood of the masked positions only
    (every other label is 0 and ignored):

        L = -(1/N) sum_{masked i} log p(w_i | masked sequence),     N = masked tokens

    reporting also ``perplexity = exp(L)`` and the masked-token accuracy. Runs also answer
    ``fill_mask`` and ``embed``; the export has ``fill_mask`` and ``embed`` signatures.
    """

    name = "masked_lm"
    # the module's functions are the task's methods
    train = staticmethod(train)
    evaluate = staticmethod(evaluate)
    serving_module = staticmethod(serving_module)

    def warmup_records(self, run: LoadedRun, **export_settings) -> list[bytes]:
        """``fill_mask`` and ``embed`` requests on two texts."""
        return warmup_records(run)

    fill_mask = staticmethod(fill_mask)
    embed = staticmethod(embed)
