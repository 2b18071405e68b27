"""GloVe's training data: the co-occurrence matrix, built once in NumPy, then tf.data batches.

    X_ij = sum over the occurrences of word i of 1/d for every occurrence of word j at distance
           d in 1..window in the same sentence (both directions: X is symmetric)

as the reference ``cooccur`` tool with ``symmetric=1`` and distance weighting. The sentences
are ``zoo.data.skipgrams.encode_sentences``'s (in-vocabulary ids only). The non-zero cells
are kept as three arrays (rows, cols, counts): NumPy's ``unique`` over the keys ``i * V + j``
sums the duplicates (no scipy needed).

Training batches: every epoch e shuffles the cells (stateless seed ``(seed, e)``) and cuts them
into batches of ``batch_size`` (the last partial one dropped); batch s is
``((rows (B,), cols (B,)), labels (B, 2) = [log X_ij, f(X_ij)])``, a pure function of
``(seed, s)``, so a resumed run skips to it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zoo.errors import ZooError


def cooccurrence(ids: np.ndarray, sentence: np.ndarray, window: int,
                 vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-zero cells of X (module docstring): ``(rows, cols)`` int32 and ``counts`` float64,
    sorted by ``(row, col)``."""
    ids = np.asarray(ids, np.int64)
    sentence = np.asarray(sentence)
    keys, weights = [], []
    for d in range(1, int(window) + 1):
        same = sentence[:-d] == sentence[d:]
        a, b = ids[:-d][same], ids[d:][same]
        keys += [a * vocab_size + b, b * vocab_size + a]
        weights += [np.full(2 * len(a), 1.0 / d)]
    if not keys or not sum(len(k) for k in keys):
        raise ZooError("no two words share a window: the corpus is too small for GloVe")
    unique, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    counts = np.bincount(inverse, weights=np.concatenate(weights))
    return ((unique // vocab_size).astype(np.int32), (unique % vocab_size).astype(np.int32),
            counts)


class CooccurrenceData:
    """The cells of X with their labels ``[log X, f(X)]``; ``dataset`` batches them (module
    docstring). ``weights`` are f(X_ij), computed by the caller with the model's ``weighting``."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray,
                 weights: np.ndarray, batch_size: int, seed: int):
        self.rows, self.cols = np.asarray(rows, np.int32), np.asarray(cols, np.int32)
        self.labels = np.stack([np.log(counts), weights], axis=1).astype(np.float32)  # (n, 2)
        self.batch_size, self.seed = int(batch_size), int(seed)
        if self.steps_per_epoch() < 1:
            raise ZooError(f"the co-occurrence matrix has {len(rows)} cells, fewer than "
                           f"batch_size={batch_size}: lower --batch-size")

    def steps_per_epoch(self) -> int:
        """Full batches per epoch."""
        return len(self.rows) // self.batch_size

    def _epoch_batches(self, epoch) -> tf.data.Dataset:
        n, b = len(self.rows), self.batch_size
        count = n // b
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(epoch, tf.int64)])
        order = tf.argsort(tf.random.stateless_uniform([n], seed, alg="philox"))[:count * b]
        return tf.data.Dataset.from_tensor_slices((
            (tf.reshape(tf.gather(tf.constant(self.rows), order), [count, b]),
             tf.reshape(tf.gather(tf.constant(self.cols), order), [count, b])),
            tf.reshape(tf.gather(tf.constant(self.labels), order), [count, b, 2]),
        ))

    def dataset(self, start_step: int = 0, num_steps: int | None = None) -> tf.data.Dataset:
        """Batches ``start_step, start_step + 1, ...`` (``num_steps`` of them; None: endless)."""
        batches = tf.data.Dataset.counter(dtype=tf.int64).flat_map(self._epoch_batches)
        batches = batches.skip(int(start_step))
        if num_steps is not None:  # the stream is endless: exactly num_steps, and Keras knows it
            batches = batches.take(int(num_steps)).apply(
                tf.data.experimental.assert_cardinality(int(num_steps)))
        return batches.prefetch(tf.data.AUTOTUNE)
