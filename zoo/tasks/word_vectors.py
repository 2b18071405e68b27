"""The word-vectors task (``word2vec``, ``glove``): train, evaluate, query.

Training (``zoo train word2vec --data dataset:ptb --max-steps N``): the corpus's lines are the
sentences; the ``word`` tokenizer (the default, and the only one accepted) learns the words seen
at least ``model.min_count`` times (as gensim's ``min_count``); ``--vocab-size`` caps it.

* ``word2vec``: skip-gram (``model.architecture=cbow``: CBOW) with negative sampling,
      L = -log sigma(u_o . v_c) - sum_k log sigma(-u_k . v_c),
  on the examples of ``zoo.data.skipgrams`` (subsampling, dynamic window, unigram^0.75 noise).
* ``glove``: J = sum_ij f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2 over the cells of the
  co-occurrence matrix of ``zoo.data.cooccurrence`` (1/d weighting).

Both train with the zoo's loop (``zoo.fitting``: AdamW, warm-up then cosine decay; no weight
decay on embedding tables), resumable; ``--epochs`` counts passes over the examples (word2vec:
the number of batches of epoch 0, later epochs differ slightly by the subsampling). Task defaults
where none is given: batch 1024, learning rate 0.005 (GloVe at 0.02 over-fitted PTB by its third
epoch), a checkpoint every 1000 steps with 20 validation batches (the validation split's
examples; a small split gives one batch of all of them), gradient clipping off (``clipnorm``
1e9: the rows of a batch are independent words). XLA is on in runs of 500 steps or more.

``zoo eval RUN`` (``zoo.word_similarity``, on gensim's copies of the test files; ``--data`` and
``--split`` do not apply):

    wordsim353  spearman, pairs (covered), pairs_total     Spearman rho, cosine vs human scores
    analogy     accuracy, correct, questions (covered), questions_total
                3CosAdd over the 30,000 most frequent words (gensim's restrict_vocab default)
    vocabulary  the number of words with vectors

Runs answer ``most_similar(word, top_k=10)``, ``analogy(a, b, c, top_k=1)`` and
``word_vectors()`` (the words, most frequent first, and the final vectors: word2vec W_in,
GloVe W + W~). Export is the word2vec / GloVe text formats (``zoo export RUN --vectors FILE``,
``export.word_vectors``); there is no SavedModel (``serving_module`` raises ``ZooError``).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from zoo import data as zdata
from zoo import distribute as zdist
from zoo.data.cooccurrence import CooccurrenceData, cooccurrence
from zoo.data.skipgrams import SkipGramData, encode_sentences, word_counts
from zoo.errors import ZooError
from zoo.files import TOKENIZER_DIR
from zoo.fitting import FitPlan, finish_run, fit_resumable, open_run, run_record, write_record
from zoo.models import build_model, make_config
from zoo.models.glove import glove_loss, weighting
from zoo.models.word2vec import negative_sampling_loss
from zoo.run import LoadedRun
from zoo.special_tokens import NUM_SPECIAL
from zoo.tasks.base import Task, register_task
from zoo.training import make_settings
from zoo.word_similarity import WordVectors, analogy_accuracy, wordsim_spearman

LOSSES = {"word2vec": negative_sampling_loss, "glove": glove_loss}
# batch 2048 at 0.01 (bench/RESULTS.md): 1.7-1.8x faster on a CPU than 1024 at 0.005, as good
DEFAULTS = {"batch_size": 2048, "learning_rate": 0.01, "checkpoint_every": 1000,
            "eval_batches": 20, "clipnorm": 1e9}


def _tokenizer(settings, lines: list[str], min_count: int, tokenizer_dir: str, worker, previous):
    """The run's word tokenizer: reloaded when resuming, else learnt on ``lines``."""
    from zoo.tokenizers import load_tokenizer, train_tokenizer

    if os.path.exists(os.path.join(tokenizer_dir, "tokenizer.json")) and (
        worker.is_chief or previous is not None
    ):
        return load_tokenizer(tokenizer_dir)
    tok = train_tokenizer("word", lines, vocab_size=settings.vocab_size, min_frequency=min_count)
    if worker.is_chief:
        tok.save(tokenizer_dir)
    return tok


def _datasets(model: str, model_config, settings, tok, corpus):
    """``(steps_per_epoch, train data, validation data)``: ``SkipGramData`` or
    ``CooccurrenceData`` of the train and validation splits."""
    train_ids, train_sentences = encode_sentences(tok, corpus.lines("train"))
    valid_ids, valid_sentences = encode_sentences(tok, corpus.lines("validation"))
    counts = word_counts(train_ids, tok.vocab_size)
    if model == "word2vec":
        common = dict(window=model_config.window, negatives=model_config.negatives,
                      sample=model_config.sample, architecture=model_config.architecture,
                      batch_size=settings.batch_size)
        train = SkipGramData(train_ids, train_sentences, counts, seed=settings.seed, **common)
        valid = SkipGramData(valid_ids, valid_sentences, counts, seed=settings.seed + 1, **common)
        if valid.num_examples() < settings.batch_size:  # a small validation split: one batch
            valid.batch_size = max(valid.num_examples(), 1)
        return train.steps_per_epoch(), train, valid

    def cells(ids, sentences, seed):  # a small validation split: one batch of all its cells
        rows, cols, x = cooccurrence(ids, sentences, model_config.window, tok.vocab_size)
        f = np.asarray(weighting(x, model_config.x_max, model_config.alpha))
        return CooccurrenceData(rows, cols, x, f, min(settings.batch_size, len(rows)), seed)

    train = cells(train_ids, train_sentences, settings.seed)
    if len(train.rows) < settings.batch_size:
        raise ZooError(f"the co-occurrence matrix has {len(train.rows)} cells, fewer than "
                       f"batch_size={settings.batch_size}: lower --batch-size")
    return train.steps_per_epoch(), train, cells(valid_ids, valid_sentences, settings.seed + 1)


def train(model: str, data: str, out: str, *, preset: str = "tiny", tokenizer: str | None = None,
          model_overrides: dict | None = None, verbose: int = 1, **train_settings) -> LoadedRun:
    """Train word vectors (``word2vec`` or ``glove``) on ``data`` into ``out`` (resumable)."""
    if tokenizer not in (None, "word"):
        raise ZooError(f"word vectors use the word tokenizer, not {tokenizer}")
    if model not in LOSSES:
        raise ZooError(f"the word_vectors task trains {', '.join(LOSSES)}, not {model}")
    given = {k: v for k, v in train_settings.items() if v is not None}
    train_settings = {**DEFAULTS, **given}
    settings = make_settings(model, data, preset, "word", model_overrides, train_settings,
                             default_tokenizer="word")
    strategy, worker = zdist.make_strategy(settings.distribute)
    model_config = make_config(model, preset, **settings.model_overrides)
    record = run_record("word_vectors", settings, model_config, 0)
    previous, finished = open_run(out, record, worker)
    if finished is not None:
        return finished

    corpus = zdata.load_corpus(data)
    tok = _tokenizer(settings, corpus.lines("train"), model_config.min_count,
                     os.path.join(out, TOKENIZER_DIR), worker, previous)
    record.update(vocab_size=tok.vocab_size, corpus_kind=corpus.kind)
    write_record(out, record, previous, worker)
    per_epoch, train_data, valid_data = _datasets(model, model_config, settings, tok, corpus)
    total_steps = settings.max_steps or (settings.epochs or 1) * per_epoch
    eval_batches = min(settings.eval_batches or valid_data.steps_per_epoch(),
                       valid_data.steps_per_epoch())

    plan = FitPlan(
        build_model=lambda: build_model(model, tok.vocab_size, preset,
                                        **dataclasses.asdict(model_config)),
        loss=LOSSES[model],
        make_metrics=lambda: [],
        make_train_ds=train_data.dataset,
        make_valid_ds=lambda: valid_data.dataset(0, eval_batches),
        total_steps=total_steps,
        monitor="val_loss",
        agree={"the vocabulary size": tok.vocab_size},
    )
    result = fit_resumable(out, settings, strategy, worker, plan, verbose=verbose)
    metrics = {}
    if result.is_chief:
        metrics = result.summary(settings)
        metrics.update(total_steps=total_steps, steps_per_epoch=per_epoch,
                       vocabulary=tok.vocab_size - NUM_SPECIAL,
                       validation={"loss": result.history.get("val_loss", [None])[-1]})
    return finish_run(out, result, metrics, record, tok)


# ------------------------------------------------------------------------------------------------
# the Python API and evaluation


def word_vectors(run: LoadedRun) -> tuple[list[str], np.ndarray]:
    """``(words, vectors (V, d))``: the vocabulary without the reserved ids, most frequent
    first, and the model's final vectors."""
    words = run.tokenizer.vocabulary[NUM_SPECIAL:]
    return list(words), run.model.word_vectors()[NUM_SPECIAL:]


def _vectors(run: LoadedRun) -> WordVectors:
    return WordVectors(*word_vectors(run))


def most_similar(run: LoadedRun, word: str, top_k: int = 10) -> list[tuple[str, float]]:
    """The ``top_k`` words nearest ``word`` by cosine (``ZooError`` for an unknown word)."""
    return _vectors(run).most_similar(word, top_k)


def analogy(run: LoadedRun, a: str, b: str, c: str, top_k: int = 1) -> list[tuple[str, float]]:
    """a is to b as c is to ?: 3CosAdd, a, b and c excluded (``zoo.word_similarity``)."""
    return _vectors(run).analogy(a, b, c, top_k)


def evaluate(run: LoadedRun, data: str | None = None, split: str = "validation",
             batch_size: int | None = None) -> dict:
    """WordSim-353 Spearman rho and Google analogy accuracy with their coverage."""
    if data not in (None, run.config.get("data")):
        raise ZooError("word vectors are evaluated on WordSim-353 and the Google analogies; "
                       "--data does not apply")
    vectors = _vectors(run)
    return {"wordsim353": wordsim_spearman(vectors), "analogy": analogy_accuracy(vectors),
            "vocabulary": len(vectors.words)}


def serving_module(run: LoadedRun, **_ignored):
    """No SavedModel: word vectors are exported as text (``zoo export RUN --vectors FILE``)."""
    raise ZooError(f"{run.path} holds word vectors: export them with zoo export RUN --vectors "
                   "FILE (word2vec or GloVe text format); there is no SavedModel export")


@register_task
class WordVectorsTask(Task):
    """Word vectors (``word2vec``, ``glove``); see the module docstring for the losses.

    Runs answer ``most_similar``, ``analogy`` and ``word_vectors``; ``zoo eval`` reports
    WordSim-353 Spearman rho and Google analogy accuracy.
    """

    name = "word_vectors"
    train = staticmethod(train)
    evaluate = staticmethod(evaluate)
    serving_module = staticmethod(serving_module)
    most_similar = staticmethod(most_similar)
    analogy = staticmethod(analogy)
    word_vectors = staticmethod(word_vectors)
