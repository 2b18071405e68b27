"""Training and evaluation windows of token ids, in NumPy: the one definition of a causal LM's
batches, whatever runs the model.

The ``tf.data`` pipelines (``zoo.data.pipelines``, ``zoo.data.prepared``) wrap these functions, and
training on JAX takes their arrays directly, so a batch is the same under every backend. Nothing
here imports TensorFlow.

Two corpus kinds:

* stream: one 1-D array of ids (in memory, or memory-mapped shards with ``windows``/``gather``).
  A window at offset ``o`` is ``x = ids[o : o + L]``, ``y = ids[o + 1 : o + L + 1]``; a label past
  the end of the stream is pad (0), and so is its input.
* lines: ``(flat, splits)``, the ids of every line back to back and the line boundaries
  (``flat[splits[i] : splits[i + 1]]`` is line ``i``). A line becomes
  ``seq = [BOS] + ids + [EOS]``; the window at ``q`` is ``x = seq[q : q + L]`` without the EOS,
  ``y = seq[q + 1 : q + L + 1]``, right-padded with 0.

Training batch ``s`` is a pure function of ``(seed, s)``: its ``B`` window offsets (stream) or
line numbers (lines) are ``r mod high`` for ``r`` the first ``B`` 64-bit words of the Philox-4x64
counter-based generator keyed by ``seed``, with ``s`` in the counter's top word. A run resumed at step ``s`` sees
exactly the batches an uninterrupted run would have seen (modulo bias < high / 2^64).
"""

from __future__ import annotations

import math

import numpy as np

from zoo.errors import ZooError
from zoo.special_tokens import BOS_ID, EOS_ID, PAD_ID

FAR = np.int64(1) << 40  # a start position past any sequence: the window is all padding
_MASK64 = (1 << 64) - 1


def batch_draws(seed: int, step: int, batch_size: int, high: int) -> np.ndarray:
    """``batch_size`` int64 integers uniform in ``[0, high)``, a pure function of ``(seed, step)``.

        r_i = Philox4x64-10(key=seed, counter=step * 2^192 + i // 4)_(i mod 4)
        draw_i = r_i mod high
    """
    # The step is the counter's top 64-bit word: the words drawn advance the low word, so two
    # steps never share a Philox block (with the step in the low word, step s + 1 would reuse
    # all but the first block of step s).
    counter = (int(step) & _MASK64) << 192
    generator = np.random.Philox(key=int(seed) & _MASK64, counter=counter)
    raw = generator.random_raw(int(batch_size))  # uint64 (batch_size,)
    return (raw % np.uint64(high)).astype(np.int64)


def stream_array(ids) -> np.ndarray:
    """A stream's ids as one 1-D int32 array (refuses a ragged tensor of lines)."""
    if hasattr(ids, "row_splits"):
        raise ValueError("a stream's ids are one 1-D array, not a ragged tensor")
    array = np.asarray(ids)
    if array.ndim != 1:
        raise ValueError(f"a stream's ids must be 1-D, got shape {array.shape}")
    return array.astype(np.int32, copy=False)


def line_parts(ids) -> tuple[np.ndarray, np.ndarray]:
    """``(flat int32 values, row_splits int64)`` of per-line ids: a ``tf.RaggedTensor`` (read
    through its attributes: TensorFlow is not imported here) or a sequence of sequences."""
    if hasattr(ids, "row_splits"):
        if ids.ragged_rank != 1:
            ids = ids.merge_dims(1, -1)
        return (np.asarray(ids.flat_values).astype(np.int32, copy=False),
                np.asarray(ids.row_splits).astype(np.int64))
    rows = [np.asarray(row, dtype=np.int32).ravel() for row in ids]
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate(rows) if rows else np.zeros([0], np.int32)
    return flat.astype(np.int32, copy=False), splits


def _is_line_source(ids) -> bool:
    return (isinstance(ids, tuple) and len(ids) == 2 and isinstance(ids[1], np.ndarray)
            and ids[1].dtype == np.int64 and isinstance(ids[0], np.ndarray))


def source_of(ids, kind: str):
    """The window source of encoded ids: ``StreamIds`` (``kind="stream"``) or
    ``(flat, splits)`` (``kind="lines"``); a source is returned as it is."""
    if isinstance(ids, StreamIds) or (kind == "lines" and _is_line_source(ids)):
        return ids
    if kind == "stream":
        return StreamIds(stream_array(ids))
    if kind == "lines":
        return line_parts(ids)
    raise ValueError(f"kind must be 'stream' or 'lines', not {kind!r}")


class StreamIds:
    """Random access to a stream held in one array or in several (memory-mapped) shards."""

    def __init__(self, shards):
        shards = [shards] if isinstance(shards, np.ndarray) and shards.ndim == 1 else list(shards)
        self.shards = [s for s in shards if s.size]
        self.sizes = np.array([s.size for s in self.shards], np.int64)
        self.bounds = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.size = int(self.bounds[-1])

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """``ids[positions]`` (positions already inside ``[0, size)``), int32."""
        if len(self.shards) == 1:
            return np.asarray(self.shards[0][positions], np.int32)
        out = np.empty(positions.shape, np.int32)
        shard = np.searchsorted(self.bounds, positions, side="right") - 1
        for k in np.unique(shard):
            where = shard == k
            out[where] = self.shards[k][positions[where] - self.bounds[k]]
        return out

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """``ids[s : s + length]`` for each start ``s`` inside the stream: ``(len(starts), length)``."""
        span = np.arange(length, dtype=np.int64)
        if len(self.shards) == 1:
            return np.asarray(self.shards[0][starts[:, None] + span], np.int32)
        shard = np.searchsorted(self.bounds, starts, side="right") - 1
        local = starts - self.bounds[shard]
        inside = local + length <= self.sizes[shard]
        out = np.empty((starts.size, length), np.int32)
        for k in np.unique(shard[inside]):  # windows within one shard: one fancy index per shard
            rows = np.flatnonzero(inside & (shard == k))
            out[rows] = self.shards[k][local[rows, None] + span]
        across = np.flatnonzero(~inside)  # windows over a shard boundary (rare)
        if across.size:
            out[across] = self.gather(starts[across, None] + span)
        return out


def stream_windows(ids: StreamIds, starts: np.ndarray, seq_len: int):
    """``(x, y)`` int32 ``(len(starts), seq_len)`` of a stream; a label at or past the end is pad,
    and so is its input (evaluation's last window, and the all-pad filler rows at ``FAR``)."""
    starts = np.asarray(starts, np.int64)
    if starts.size and int(starts.max()) + seq_len < ids.size:  # every window inside: fast path
        seq = ids.windows(starts, seq_len + 1)
        return seq[:, :-1], seq[:, 1:]
    pos = starts[:, None] + np.arange(seq_len + 1, dtype=np.int64)[None, :]  # (N, L + 1)
    seq = ids.gather(np.clip(pos, 0, max(ids.size - 1, 0))) if ids.size else np.zeros(pos.shape, np.int32)
    has_label = pos[:, 1:] < ids.size
    x = np.where(has_label, seq[:, :-1], PAD_ID).astype(np.int32)
    y = np.where(has_label, seq[:, 1:], PAD_ID).astype(np.int32)
    return x, y


def line_windows(flat: np.ndarray, splits: np.ndarray, rows: np.ndarray, starts: np.ndarray,
                 seq_len: int):
    """``(x, y)`` int32 ``(len(rows), seq_len)``: windows of ``[BOS] + line + [EOS]`` at ``starts``."""
    rows = np.asarray(rows, np.int64)
    begin = splits[rows][:, None]  # (N, 1)
    length = splits[rows + 1][:, None] - begin  # (N, 1)
    q = np.asarray(starts, np.int64)[:, None] + np.arange(seq_len + 1, dtype=np.int64)[None, :]
    last = max(flat.size - 1, 0)
    tokens = flat[np.clip(begin + q - 1, 0, last)] if flat.size else np.zeros(q.shape, np.int32)
    seq = np.where(q == length + 1, EOS_ID, PAD_ID)
    seq = np.where((q >= 1) & (q <= length), tokens, seq)
    seq = np.where(q == 0, BOS_ID, seq).astype(np.int32)  # (N, L + 1)
    x = np.where(q[:, :-1] <= length, seq[:, :-1], PAD_ID).astype(np.int32)
    return x, seq[:, 1:]


class TrainingWindows:
    """Training batch ``s`` of a split: ``(x, y)`` int32 ``(batch_size, seq_len)``, a pure
    function of ``(seed, s)`` (see the module docstring).

    ``source`` is a ``StreamIds`` (stream) or ``(flat, splits)`` (lines).
    """

    def __init__(self, source, seq_len: int, batch_size: int, seed: int):
        self.seq_len, self.batch_size, self.seed = int(seq_len), int(batch_size), int(seed)
        if self.seq_len < 1 or self.batch_size < 1:
            raise ZooError(f"seq_len and batch_size must be positive (got {seq_len}, {batch_size})")
        self.source = source
        if isinstance(source, StreamIds):
            if source.size < self.seq_len + 1:
                raise ZooError(
                    f"the split has {source.size} tokens, too few for one training window of "
                    f"seq_len {self.seq_len} (needs {self.seq_len + 1}); use a smaller seq_len or "
                    "more text"
                )
            self.high = source.size - self.seq_len  # offsets 0 .. len - seq_len - 1
        else:
            flat, splits = source
            self.high = int(splits.size - 1)
            if self.high < 1:
                raise ZooError("the split has no lines to train on")

    def batch(self, step: int):
        """Batch number ``step``: ``(x, y)``."""
        draws = batch_draws(self.seed, step, self.batch_size, self.high)
        if isinstance(self.source, StreamIds):
            return stream_windows(self.source, draws, self.seq_len)
        flat, splits = self.source
        return line_windows(flat, splits, draws, np.zeros_like(draws), self.seq_len)

    def batches(self, steps) -> tuple[np.ndarray, np.ndarray]:
        """Several batches stacked: ``(x, y)`` int32 ``(len(steps), batch_size, seq_len)``."""
        pairs = [self.batch(int(s)) for s in np.asarray(steps).ravel()]
        shape = (len(pairs), self.batch_size, self.seq_len)
        if not pairs:
            return np.zeros(shape, np.int32), np.zeros(shape, np.int32)
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def iterate(self, start_step: int = 0, num_steps: int | None = None):
        """Yield batches ``start_step, start_step + 1, ...`` (``num_steps`` of them, or forever)."""
        step = int(start_step)
        stop = None if num_steps is None else step + int(num_steps)
        while stop is None or step < stop:
            yield self.batch(step)
            step += 1


def evaluation_windows(source, seq_len: int, batch_size: int):
    """Every label of the split exactly once: ``(x, y)`` int32 ``(num_batches * batch_size,
    seq_len)``, filled up with all-pad rows to whole batches.

    * stream: consecutive windows ``x = ids[kL : kL + L]``, ``y = ids[kL + 1 : kL + L + 1]``.
    * lines: each line as ``[BOS] + ids + [EOS]``; a line longer than ``L + 1`` continues in
      further windows (stride ``L``), so each token and the EOS is a label exactly once.
    """
    seq_len, batch_size = int(seq_len), int(batch_size)
    if isinstance(source, StreamIds):
        if source.size < 2:
            raise ZooError(f"the split has {source.size} tokens: nothing to evaluate")
        starts = np.arange(math.ceil((source.size - 1) / seq_len), dtype=np.int64) * seq_len
        rows = np.zeros_like(starts)
    else:
        flat, splits = source
        num_lines = splits.size - 1
        if num_lines < 1:
            raise ZooError("the split has no lines to evaluate")
        labels = np.diff(splits) + 1  # the tokens and the EOS of each line
        per_line = -(-labels // seq_len)  # windows per line: ceil(labels / seq_len)
        rows = np.repeat(np.arange(num_lines, dtype=np.int64), per_line)
        first = np.repeat(np.cumsum(per_line) - per_line, per_line)
        starts = (np.arange(rows.size, dtype=np.int64) - first) * seq_len
    fill = -rows.size % batch_size
    rows = np.concatenate([rows, np.zeros([fill], np.int64)])
    starts = np.concatenate([starts, np.full([fill], FAR, np.int64)])
    if isinstance(source, StreamIds):
        return stream_windows(source, starts, seq_len)
    flat, splits = source
    return line_windows(flat, splits, rows, starts, seq_len)
