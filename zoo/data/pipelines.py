"""Token ids -> ``tf.data`` pipelines of ``(x, y)`` int32 batches for causal language models.

Two corpus kinds:

* ``"stream"``: one long 1-D array of ids. Training samples random windows (as nanoGPT does);
  evaluation walks consecutive non-overlapping windows so every label is scored exactly once.
* ``"lines"``: one id sequence per sentence (a ``tf.RaggedTensor``, or a list of sequences). Each
  sentence becomes ``[BOS] + ids + [EOS]``; ``x = seq[:-1]``, ``y = seq[1:]``, right-padded with
  ``0`` (pad), and label ``0`` is ignored by the loss.

Training batch ``s`` is a pure function of ``(seed, s)`` -- the windows are drawn in NumPy by
``zoo.data.windows``, the same for every backend -- so a run resumed at step ``s`` sees exactly the
batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from zoo.data import windows
from zoo.data.catalog import LINES, STREAM
from zoo.data.corpus import Corpus
from zoo.errors import ZooError

AUTOTUNE = tf.data.AUTOTUNE

# encode(): a stream is cut into chunks of about this many characters, ending after a newline, and
# several chunks are tokenized per call (one string each in the batch).
CHUNK_CHARS = 1 << 16
CALL_CHARS = 1 << 22
LINES_PER_CALL = 8192

STEPS_PER_CALL = 8  # training batches drawn per NumPy call


# --------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------


def _tokenize(tokenizer, strings: list[str]) -> tf.RaggedTensor:
    ids = tokenizer.tokenize(tf.constant(strings, dtype=tf.string))
    if not isinstance(ids, tf.RaggedTensor):
        ids = tf.RaggedTensor.from_tensor(ids)
    if ids.ragged_rank != 1:
        ids = ids.merge_dims(1, -1)
    return tf.cast(ids, tf.int32)


def chunk_bounds(text: str, chunk_chars: int = CHUNK_CHARS) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``text``: pieces of about ``chunk_chars`` characters.

    A piece ends just after a newline where one is found within the next ``chunk_chars``
    characters; inside a very long line it ends before a space (so a following word keeps its
    leading space), and only then at an arbitrary character.
    """
    if chunk_chars < 1:
        raise ValueError("chunk_chars must be positive")
    bounds = []
    start, n = 0, len(text)
    while start < n:
        target = start + chunk_chars
        if target >= n:
            end = n
        else:
            newline = text.find("\n", target, target + chunk_chars)
            if newline != -1:
                end = newline + 1
            else:
                space = text.find(" ", target, target + chunk_chars)
                end = space if space > start else target
        bounds.append((start, end))
        start = end
    return bounds


def encode_text(
    tokenizer, text: str, chunk_chars: int = CHUNK_CHARS, call_chars: int = CALL_CHARS
) -> np.ndarray:
    """Ids of one long text as a 1-D int32 array, tokenized chunk by chunk (newlines kept)."""
    pieces: list[np.ndarray] = []
    batch: list[str] = []
    size = 0
    for start, end in chunk_bounds(text, chunk_chars):
        batch.append(text[start:end])
        size += end - start
        if size >= call_chars:
            pieces.append(_tokenize(tokenizer, batch).flat_values.numpy())
            batch, size = [], 0
    if batch:
        pieces.append(_tokenize(tokenizer, batch).flat_values.numpy())
    if not pieces:
        return np.zeros([0], np.int32)
    return np.concatenate(pieces).astype(np.int32, copy=False)


def encode_lines(
    tokenizer, lines: list[str], lines_per_call: int = LINES_PER_CALL
) -> tf.RaggedTensor:
    """Ids of each line: an int32 ``tf.RaggedTensor`` of shape ``(len(lines), None)``."""
    values: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    for i in range(0, len(lines), lines_per_call):
        ids = _tokenize(tokenizer, lines[i : i + lines_per_call])
        values.append(ids.flat_values.numpy())
        lengths.append(ids.row_lengths().numpy())
    flat = np.concatenate(values).astype(np.int32) if values else np.zeros([0], np.int32)
    row_lengths = np.concatenate(lengths).astype(np.int64) if lengths else np.zeros([0], np.int64)
    return tf.RaggedTensor.from_row_lengths(flat, row_lengths, validate=False)


def encode(tokenizer, corpus: Corpus, split: str, chunk_chars: int = CHUNK_CHARS):
    """Token ids of one split of ``corpus``.

    Stream corpus: a 1-D ``np.int32`` array for the whole split, equal to tokenizing the text in one
    go for any tokenizer that does not merge across a newline. Lines corpus: an int32
    ``tf.RaggedTensor`` ``(num_lines, None)``.
    """
    if corpus.kind == STREAM:
        return encode_text(tokenizer, corpus.text(split), chunk_chars)
    if corpus.kind == LINES:
        return encode_lines(tokenizer, corpus.lines(split))
    raise ValueError(f"unknown corpus kind {corpus.kind!r}")


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in (STREAM, LINES):
        raise ValueError(f"kind must be {STREAM!r} or {LINES!r}, not {kind!r}")


def _check_sizes(seq_len: int, batch_size: int) -> None:
    if int(seq_len) < 1 or int(batch_size) < 1:
        raise ZooError(f"seq_len and batch_size must be positive (got {seq_len}, {batch_size})")


window_source = windows.source_of


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def training_dataset(
    ids,
    kind: str,
    seq_len: int,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    num_steps: int | None = None,
) -> tf.data.Dataset:
    """Random training batches ``(x, y)``, each int32 ``(batch_size, seq_len)``.

    Yields batches ``start_step, ..., start_step + num_steps - 1`` (forever when ``num_steps`` is
    ``None``); batch ``s`` depends only on ``(seed, s)``.

    * stream: ``batch_size`` window offsets ``o`` uniform in ``[0, len(ids) - seq_len)``;
      ``x = ids[o : o + seq_len]``, ``y = ids[o + 1 : o + seq_len + 1]``.
    * lines: ``batch_size`` random lines, ``seq = ([BOS] + ids + [EOS])[: seq_len + 1]``,
      ``x = seq[:-1]``, ``y = seq[1:]``, right-padded with 0.
    """
    _check_kind(kind)
    _check_sizes(seq_len, batch_size)
    seq_len, batch_size = int(seq_len), int(batch_size)
    if start_step < 0:
        raise ZooError(f"start_step must be >= 0, got {start_step}")
    if num_steps is not None and num_steps < 0:
        raise ZooError(f"num_steps must be >= 0, got {num_steps}")
    sampler = windows.TrainingWindows(window_source(ids, kind), seq_len, batch_size, seed)
    return windows_dataset(sampler, start_step, num_steps)


def windows_dataset(sampler: windows.TrainingWindows, start_step: int = 0,
                    num_steps: int | None = None) -> tf.data.Dataset:
    """``tf.data`` of ``sampler``'s batches ``start_step, ...`` (``num_steps`` of them, or forever);
    the windows are drawn in NumPy, ``STEPS_PER_CALL`` batches per call."""
    batch, seq_len = sampler.batch_size, sampler.seq_len

    def make_batches(steps):
        x, y = tf.numpy_function(sampler.batches, [steps], (tf.int32, tf.int32), stateful=False)
        return (tf.ensure_shape(x, [None, batch, seq_len]),
                tf.ensure_shape(y, [None, batch, seq_len]))

    if num_steps is None:
        steps = tf.data.Dataset.counter(start=int(start_step), dtype=tf.int64)
    else:
        steps = tf.data.Dataset.range(int(start_step), int(start_step) + int(num_steps))
    batches = steps.batch(STEPS_PER_CALL).map(make_batches, num_parallel_calls=AUTOTUNE,
                                              deterministic=True)
    return batches.unbatch().prefetch(AUTOTUNE)


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def evaluation_dataset(ids, kind: str, seq_len: int, batch_size: int) -> tf.data.Dataset:
    """Deterministic batches ``(x, y)`` covering the split exactly once, int32
    ``(batch_size, seq_len)`` each.

    * stream: consecutive windows ``x = ids[k*L : k*L + L]``, ``y = ids[k*L + 1 : k*L + L + 1]``;
      every token from the second to the last is a label exactly once, the tail is padded with 0.
    * lines: each line as ``[BOS] + ids + [EOS]``; a line longer than ``seq_len + 1`` continues in
      further windows (stride ``seq_len``), so each token and the EOS is a label exactly once.

    Where a label is pad its input is pad too. The last batch is filled up with all-padding rows, so every batch has the same static shape;
    the number of batches is ``steps_per_epoch`` for a stream.
    """
    _check_kind(kind)
    _check_sizes(seq_len, batch_size)
    seq_len, batch_size = int(seq_len), int(batch_size)
    x, y = windows.evaluation_windows(window_source(ids, kind), seq_len, batch_size)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)


def count_eval_tokens(ids, kind: str) -> int:
    """Number of non-pad labels ``evaluation_dataset`` yields (the denominator of a per-token
    loss): ``len(ids) - 1`` for a stream, ``sum(len(line) + 1)`` for lines (ids are never 0)."""
    _check_kind(kind)
    if kind == STREAM:
        array = windows.stream_array(ids)
        return int(np.count_nonzero(array[1:]))
    flat, splits = windows.line_parts(ids)
    return int(np.count_nonzero(flat)) + int(splits.size - 1)


def steps_per_epoch(ids, kind: str, seq_len: int, batch_size: int) -> int:
    """Batches in one pass over the split.

    stream: ``ceil((len(ids) - 1) / (seq_len * batch_size))`` -- the label positions covered, so it
    equals the number of ``evaluation_dataset`` batches; lines: ``ceil(num_lines / batch_size)``.
    """
    _check_kind(kind)
    _check_sizes(seq_len, batch_size)
    if kind == STREAM:
        tokens = max(windows.stream_array(ids).size - 1, 0)
        return math.ceil(tokens / (int(seq_len) * int(batch_size)))
    _, splits = windows.line_parts(ids)
    return math.ceil((splits.size - 1) / int(batch_size))
