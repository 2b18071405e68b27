"""Token ids -> ``tf.data`` pipelines of ``(x, y)`` int32 batches for causal language models.

Two corpus kinds:

* ``"stream"``: one long 1-D array of ids. Training samples random windows (as nanoGPT does);
  evaluation walks consecutive non-overlapping windows so every label is scored exactly once.
* ``"lines"``: one id sequence per sentence (a ``tf.RaggedTensor``, or a list of sequences). Each
  sentence becomes ``[BOS] + ids + [EOS]``; ``x = seq[:-1]``, ``y = seq[1:]``, right-padded with
  ``0`` (pad), and label ``0`` is ignored by the loss.

Training batch ``s`` is a pure function of ``(seed, s)`` -- it is drawn with stateless random ops
seeded with ``(seed, s)`` -- so a run resumed at step ``s`` sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from zoo.data.sources import LINES, STREAM, Corpus
from zoo.errors import ZooError
from zoo.tokenizers.base import BOS_ID, EOS_ID, PAD_ID

AUTOTUNE = tf.data.AUTOTUNE

# encode(): a stream is cut into chunks of about this many characters, ending after a newline, and
# several chunks are tokenized per call (one string each in the batch).
CHUNK_CHARS = 1 << 16
CALL_CHARS = 1 << 22
LINES_PER_CALL = 8192

_FAR = np.int64(1) << 40  # a start position past any sequence: the window is all padding


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


def _stream_ids(ids) -> np.ndarray:
    if isinstance(ids, tf.RaggedTensor):
        raise ValueError("a stream's ids are one 1-D array, not a ragged tensor")
    array = np.asarray(ids)
    if array.ndim != 1:
        raise ValueError(f"a stream's ids must be 1-D, got shape {array.shape}")
    return array.astype(np.int32, copy=False)


def _line_parts(ids) -> tuple[np.ndarray, np.ndarray]:
    """``(flat int32 values, row_splits int64)`` of per-line ids (ragged tensor or sequences)."""
    if isinstance(ids, tf.RaggedTensor):
        if ids.ragged_rank != 1:
            ids = ids.merge_dims(1, -1)
        return (
            ids.flat_values.numpy().astype(np.int32, copy=False),
            ids.row_splits.numpy().astype(np.int64),
        )
    rows = [np.asarray(row, dtype=np.int32).ravel() for row in ids]
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate(rows) if rows else np.zeros([0], np.int32)
    return flat.astype(np.int32, copy=False), splits


def _gather_stream(ids_t: tf.Tensor, starts: tf.Tensor, batch_size: int, seq_len: int):
    """``x = ids[o : o + seq_len]``, ``y = ids[o + 1 : o + seq_len + 1]`` for each start ``o``;
    a label past the end of the stream is pad, and so is its input."""
    n = tf.shape(ids_t, out_type=tf.int64)[0]
    pos = starts[:, None] + tf.range(seq_len + 1, dtype=tf.int64)[None, :]
    seq = tf.gather(ids_t, tf.clip_by_value(pos, 0, tf.maximum(n - 1, 0)))
    pad = tf.fill(tf.shape(seq[:, 1:]), tf.constant(PAD_ID, tf.int32))
    has_label = pos[:, 1:] < n
    x = tf.where(has_label, seq[:, :-1], pad)
    y = tf.where(has_label, seq[:, 1:], pad)
    return _fix_shapes(x, y, batch_size, seq_len)


def _gather_lines(
    flat_t: tf.Tensor,
    splits_t: tf.Tensor,
    rows: tf.Tensor,
    starts: tf.Tensor,
    batch_size: int,
    seq_len: int,
):
    """Windows of ``seq = [BOS] + line + [EOS]``: ``x = seq[q : q + seq_len]`` without the EOS
    (``x = seq[:-1]``), ``y = seq[q + 1 : q + seq_len + 1]``, both right-padded with 0."""
    begin = tf.gather(splits_t, rows)[:, None]
    length = tf.gather(splits_t, rows + 1)[:, None] - begin
    q = starts[:, None] + tf.range(seq_len + 1, dtype=tf.int64)[None, :]
    last = tf.maximum(tf.shape(flat_t, out_type=tf.int64)[0] - 1, 0)
    tokens = tf.gather(flat_t, tf.clip_by_value(begin + q - 1, 0, last))
    pad = tf.fill(tf.shape(tokens), tf.constant(PAD_ID, tf.int32))
    seq = tf.where(q == length + 1, tf.constant(EOS_ID, tf.int32), pad)
    seq = tf.where((q >= 1) & (q <= length), tokens, seq)
    seq = tf.where(q == 0, tf.constant(BOS_ID, tf.int32), seq)
    x = tf.where(q[:, :-1] <= length, seq[:, :-1], pad[:, :-1])
    return _fix_shapes(x, seq[:, 1:], batch_size, seq_len)


def _fix_shapes(x, y, batch_size: int, seq_len: int):
    x = tf.ensure_shape(x, [batch_size, seq_len])
    y = tf.ensure_shape(y, [batch_size, seq_len])
    return x, y


def _nonempty_flat(flat: np.ndarray) -> np.ndarray:
    # tf.gather on an empty tensor fails even when every result is masked; keep one dummy value.
    return flat if flat.size else np.zeros([1], np.int32)


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
    seed_t = tf.constant(int(seed), tf.int64)

    if kind == STREAM:
        array = _stream_ids(ids)
        if array.size < seq_len + 1:
            raise ZooError(
                f"the split has {array.size} tokens, too few for one training window of "
                f"seq_len {seq_len} (needs {seq_len + 1}); use a smaller seq_len or more text"
            )
        ids_t = tf.constant(array)
        high = array.size - seq_len  # offsets 0 .. len - seq_len - 1

        def make_batch(step):
            starts = tf.random.stateless_uniform(
                [batch_size],
                seed=tf.stack([seed_t, step]),
                minval=0,
                maxval=high,
                dtype=tf.int64,
                alg="philox",
            )
            return _gather_stream(ids_t, starts, batch_size, seq_len)

    else:
        flat, splits = _line_parts(ids)
        num_lines = splits.size - 1
        if num_lines < 1:
            raise ZooError("the split has no lines to train on")
        flat_t = tf.constant(_nonempty_flat(flat))
        splits_t = tf.constant(splits)

        def make_batch(step):
            rows = tf.random.stateless_uniform(
                [batch_size],
                seed=tf.stack([seed_t, step]),
                minval=0,
                maxval=num_lines,
                dtype=tf.int64,
                alg="philox",
            )
            starts = tf.zeros([batch_size], tf.int64)
            return _gather_lines(flat_t, splits_t, rows, starts, batch_size, seq_len)

    if num_steps is None:
        steps = tf.data.Dataset.counter(start=int(start_step), dtype=tf.int64)
    else:
        steps = tf.data.Dataset.range(int(start_step), int(start_step) + int(num_steps))
    return steps.map(make_batch, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def _eval_windows(ids, kind: str, seq_len: int):
    """Window table ``(rows, starts)`` (int64 numpy) plus the gather function's data."""
    if kind == STREAM:
        array = _stream_ids(ids)
        if array.size < 2:
            raise ZooError(f"the split has {array.size} tokens: nothing to evaluate")
        num_windows = math.ceil((array.size - 1) / seq_len)
        starts = np.arange(num_windows, dtype=np.int64) * seq_len
        return np.zeros_like(starts), starts, (array,)
    flat, splits = _line_parts(ids)
    num_lines = splits.size - 1
    if num_lines < 1:
        raise ZooError("the split has no lines to evaluate")
    labels = np.diff(splits) + 1  # the tokens and the EOS of each line
    per_line = -(-labels // seq_len)  # windows per line: ceil(labels / seq_len)
    rows = np.repeat(np.arange(num_lines, dtype=np.int64), per_line)
    first = np.repeat(np.cumsum(per_line) - per_line, per_line)
    starts = (np.arange(rows.size, dtype=np.int64) - first) * seq_len
    return rows, starts, (flat, splits)


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
    rows, starts, data = _eval_windows(ids, kind, seq_len)

    num_batches = math.ceil(rows.size / batch_size)
    fill = num_batches * batch_size - rows.size
    rows = np.concatenate([rows, np.zeros([fill], np.int64)]).reshape(num_batches, batch_size)
    starts = np.concatenate([starts, np.full([fill], _FAR, np.int64)])
    starts = starts.reshape(num_batches, batch_size)

    if kind == STREAM:
        ids_t = tf.constant(data[0])

        def make_batch(_rows, batch_starts):
            return _gather_stream(ids_t, batch_starts, batch_size, seq_len)

    else:
        flat_t = tf.constant(_nonempty_flat(data[0]))
        splits_t = tf.constant(data[1])

        def make_batch(batch_rows, batch_starts):
            return _gather_lines(flat_t, splits_t, batch_rows, batch_starts, batch_size, seq_len)

    dataset = tf.data.Dataset.from_tensor_slices((rows, starts))
    return dataset.map(make_batch, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(
        AUTOTUNE
    )


def count_eval_tokens(ids, kind: str) -> int:
    """Number of non-pad labels ``evaluation_dataset`` yields (the denominator of a per-token
    loss): ``len(ids) - 1`` for a stream, ``sum(len(line) + 1)`` for lines (ids are never 0)."""
    _check_kind(kind)
    if kind == STREAM:
        array = _stream_ids(ids)
        return int(np.count_nonzero(array[1:]))
    flat, splits = _line_parts(ids)
    return int(np.count_nonzero(flat)) + int(splits.size - 1)


def steps_per_epoch(ids, kind: str, seq_len: int, batch_size: int) -> int:
    """Batches in one pass over the split.

    stream: ``ceil((len(ids) - 1) / (seq_len * batch_size))`` -- the label positions covered, so it
    equals the number of ``evaluation_dataset`` batches; lines: ``ceil(num_lines / batch_size)``.
    """
    _check_kind(kind)
    _check_sizes(seq_len, batch_size)
    if kind == STREAM:
        tokens = max(_stream_ids(ids).size - 1, 0)
        return math.ceil(tokens / (int(seq_len) * int(batch_size)))
    _, splits = _line_parts(ids)
    return math.ceil((splits.size - 1) / int(batch_size))
