"""word2vec's training examples with tf.data: subsampling, dynamic windows, negative sampling.

The corpus is read as sentences (its lines); each is tokenized with the run's word tokenizer
and the ids below ``NUM_SPECIAL`` (``<unk>``: words outside the vocabulary, PTB's own ``<unk>``
included) are dropped, as gensim drops words under ``min_count``. What is left is one flat id
array ``ids (N,)`` with the sentence number of every token ``sentence (N,)``; windows never cross
a sentence.

One epoch ``e`` (``epoch_examples``), everything drawn with stateless seeds from ``(seed, e)``:

1. Subsampling of frequent words (word2vec.c and gensim's ``sample``; not the paper's
   ``1 - sqrt(t / f)``): a token of a word of count c, corpus size N and threshold t is kept with
   probability  p(c) = min(1, (sqrt(c / (t N)) + 1) * t N / c)   (``keep_probabilities``).
   The kept tokens are closed up, so the window reaches past the dropped ones (as word2vec.c).
2. Dynamic window: each centre word draws b uniformly in 1..window; its context is the words at
   distance <= b in its sentence (word2vec.c's "reduced window").
3. Skip-gram: one example per (centre, context word) pair, input the centre; CBOW: one example per
   centre with at least one context word, inputs its context (padded with 0 to 2 * window).
4. The examples are shuffled and cut into batches of ``batch_size`` (the last partial batch of
   an epoch is dropped).

Batch number s then gets its K negatives, drawn from the noise distribution
P_n(w) = c_w^0.75 / sum_v c_v^0.75 (``noise_distribution``) by inverse-CDF sampling with the
stateless seed ``(seed, s)`` (a negative equal to the positive word is kept, unlike word2vec.c).
Training batches are the epochs' batches one after the other, so batch s is a pure function of
``(seed, s)`` and a resumed run skips to it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zoo.errors import ZooError
from zoo.special_tokens import NUM_SPECIAL

NOISE_POWER = 0.75


def encode_sentences(tokenizer, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Lines -> ``(ids (N,), sentence (N,))`` int32: the in-vocabulary word ids of every line in
    order and the line number of each (lines left empty contribute nothing)."""
    ids_parts, sentence_parts = [], []
    offset = 0
    for start in range(0, len(lines), 8192):
        ragged = tokenizer.tokenize(tf.constant(lines[start:start + 8192], tf.string))
        flat = ragged.flat_values.numpy()
        rows = ragged.value_rowids().numpy() + offset
        keep = flat >= NUM_SPECIAL
        ids_parts.append(flat[keep].astype(np.int32))
        sentence_parts.append(rows[keep].astype(np.int32))
        offset += len(lines[start:start + 8192])
    if not ids_parts or not sum(len(p) for p in ids_parts):
        raise ZooError("the corpus has no words of the vocabulary to train word vectors on")
    return np.concatenate(ids_parts), np.concatenate(sentence_parts)


def word_counts(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Occurrences of every id in ``ids``, int64 (vocab_size,)."""
    return np.bincount(ids, minlength=vocab_size).astype(np.int64)


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """Subsampling: p(c) = min(1, (sqrt(c / (t N)) + 1) t N / c), N = sum of counts (word2vec.c,
    gensim); 1 everywhere for ``sample`` = 0 or an unseen word. float64 (V,)."""
    counts = np.asarray(counts, np.float64)
    keep = np.ones_like(counts)
    if sample <= 0:
        return keep
    threshold = sample * counts.sum()
    seen = counts > 0
    c = counts[seen]
    keep[seen] = np.minimum(1.0, (np.sqrt(c / threshold) + 1.0) * threshold / c)
    return keep


def noise_distribution(counts: np.ndarray, power: float = NOISE_POWER) -> np.ndarray:
    """P_n(w) = c_w^power / sum_v c_v^power (reserved ids get 0), float64 (V,)."""
    weights = np.asarray(counts, np.float64) ** power
    weights[:NUM_SPECIAL] = 0.0
    total = weights.sum()
    if total <= 0:
        raise ZooError("no word has a count: cannot draw negative samples")
    return weights / total


def draw_negatives(cdf: tf.Tensor, shape, seed: tf.Tensor) -> tf.Tensor:
    """Ids drawn from the distribution whose cumulative sums are ``cdf`` (V,) float64:
    ``searchsorted(cdf, u, side='right')`` for u ~ U[0, 1) with the stateless ``seed`` (2,)."""
    u = tf.random.stateless_uniform(shape, seed, dtype=tf.float64, alg="philox")
    flat = tf.searchsorted(cdf, tf.reshape(u, [-1]), side="right")
    size = tf.shape(cdf, out_type=flat.dtype)[0]
    return tf.reshape(tf.minimum(flat, size - 1), shape)  # cdf[-1] may round below 1


def _seed(seed, epoch, part: int) -> tf.Tensor:
    """A stateless seed (2,) for one use (``part``) in one epoch."""
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64) * 8 + part])


def subsample(ids: tf.Tensor, sentence: tf.Tensor, keep: tf.Tensor,
              seed) -> tuple[tf.Tensor, tf.Tensor]:
    """Step 1: keep token i with probability ``keep[ids[i]]`` (stateless ``seed`` (2,)) and close
    up the rest: ``(ids (N',), sentence (N',))``."""
    u = tf.random.stateless_uniform(tf.shape(ids), seed, dtype=tf.float64, alg="philox")
    kept = u < tf.gather(keep, ids)
    return tf.boolean_mask(ids, kept), tf.boolean_mask(sentence, kept)


def context_matrix(ids: tf.Tensor, sentence: tf.Tensor, window: int, seed) -> tf.Tensor:
    """The dynamic-window context of every position, int32 (N, 2 * window), 0 = none.

    Column ``j`` holds offset ``-window..-1, 1..window``; position i's reduced window b_i is
    uniform in 1..window (stateless ``seed`` (2,)) and column d is filled when |d| <= b_i and
    i + d is in the same sentence.
    """
    n = tf.shape(ids)[0]
    reduced = tf.random.stateless_uniform([n], seed, minval=1, maxval=window + 1, dtype=tf.int32,
                                          alg="philox")
    pad_ids = tf.pad(ids, [[window, window]])
    pad_sentence = tf.pad(sentence, [[window, window]], constant_values=-1)
    columns = []
    for d in [*range(-window, 0), *range(1, window + 1)]:
        other = pad_ids[window + d: window + d + n]
        same = tf.equal(pad_sentence[window + d: window + d + n], sentence)
        valid = tf.logical_and(same, abs(d) <= reduced)
        columns.append(tf.where(valid, other, tf.zeros_like(other)))
    return tf.stack(columns, axis=1)


def epoch_examples(ids: tf.Tensor, sentence: tf.Tensor, keep: tf.Tensor, window: int,
                   architecture: str, seed, epoch) -> tuple[tf.Tensor, tf.Tensor]:
    """One epoch's shuffled examples ``(inputs (M, C), positives (M,))`` (steps 1-3 of the
    module docstring): skip-gram C = 1 (the centre), CBOW C = 2 * window (the context)."""
    ids, sentence = subsample(ids, sentence, keep, _seed(seed, epoch, 0))
    context = context_matrix(ids, sentence, window, _seed(seed, epoch, 1))  # (N', 2W)
    if architecture == "cbow":
        has_context = tf.reduce_any(context > 0, axis=1)
        inputs = tf.boolean_mask(context, has_context)
        positives = tf.boolean_mask(ids, has_context)
    else:
        pairs = context > 0
        centres = tf.broadcast_to(ids[:, None], tf.shape(context))
        inputs = tf.boolean_mask(centres, pairs)[:, None]
        positives = tf.boolean_mask(context, pairs)
    order = tf.argsort(tf.random.stateless_uniform(tf.shape(positives), _seed(seed, epoch, 2),
                                                   alg="philox"))
    return tf.gather(inputs, order), tf.gather(positives, order)


class SkipGramData:
    """The examples of one split: ids, sentences, the keep and noise tables and the settings.

    ``dataset(start_step, num_steps)`` yields ``((inputs (B, C), targets (B, 1 + K)),
    labels (B, 1 + K))`` with targets = [positive, K negatives] and labels [1, 0, ..., 0].
    ``counts`` (the training split's) set both tables, so a validation split uses the same ones.
    """

    def __init__(self, ids: np.ndarray, sentence: np.ndarray, counts: np.ndarray, *,
                 window: int, negatives: int, sample: float, architecture: str,
                 batch_size: int, seed: int):
        self.ids, self.sentence = np.asarray(ids, np.int32), np.asarray(sentence, np.int32)
        self.window, self.negatives, self.architecture = int(window), int(negatives), architecture
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.keep = keep_probabilities(counts, sample)
        self.noise = noise_distribution(counts)

    def examples(self, epoch) -> tuple[tf.Tensor, tf.Tensor]:
        """``epoch_examples`` of this split."""
        return epoch_examples(tf.constant(self.ids), tf.constant(self.sentence),
                              tf.constant(self.keep), self.window, self.architecture,
                              self.seed, epoch)

    def num_examples(self) -> int:
        """Examples in epoch 0 (later epochs differ by the randomness of steps 1-2)."""
        return int(self.examples(0)[1].shape[0])

    def steps_per_epoch(self) -> int:
        """Full batches in epoch 0."""
        return self.num_examples() // self.batch_size

    def _epoch_batches(self, epoch) -> tf.data.Dataset:
        inputs, positives = self.examples(epoch)
        count = tf.shape(positives)[0] // self.batch_size
        size = count * self.batch_size
        width = tf.shape(inputs)[1]
        return tf.data.Dataset.from_tensor_slices((
            tf.reshape(inputs[:size], [count, self.batch_size, width]),
            tf.reshape(positives[:size], [count, self.batch_size]),
        ))

    def dataset(self, start_step: int = 0, num_steps: int | None = None) -> tf.data.Dataset:
        """Batches ``start_step, start_step + 1, ...`` (``num_steps`` of them; None: endless)."""
        if self.steps_per_epoch() < 1:
            raise ZooError(f"the split has fewer than batch_size={self.batch_size} examples "
                           "per epoch: lower --batch-size")
        batches = tf.data.Dataset.counter(dtype=tf.int64).flat_map(self._epoch_batches)
        batches = batches.skip(int(start_step))
        steps = tf.data.Dataset.counter(start=int(start_step), dtype=tf.int64)
        if num_steps is not None:  # the stream is endless: exactly num_steps, and Keras knows it
            batches = batches.take(int(num_steps)).apply(
                tf.data.experimental.assert_cardinality(int(num_steps)))
            steps = steps.take(int(num_steps))
        cdf = tf.constant(np.cumsum(self.noise))
        k, b = self.negatives, self.batch_size
        labels = tf.constant(np.eye(1, 1 + k, dtype=np.float32).repeat(b, axis=0))  # (B, 1 + K)
        seed = self.seed

        def add_negatives(step, batch):
            inputs, positives = batch
            noise = draw_negatives(cdf, [b, k], tf.stack([tf.constant(seed, tf.int64), step]))
            targets = tf.concat([positives[:, None], tf.cast(noise, tf.int32)], axis=1)
            return (inputs, targets), labels

        return tf.data.Dataset.zip(steps, batches).map(
            add_negatives, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        ).prefetch(tf.data.AUTOTUNE)
