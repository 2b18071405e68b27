"""Prompt preparation, once for every decoder: ``generate``, streaming, the SavedModel and LiteRT.

    prompt_ids, lengths, empty = prepare_prompts(ids, lengths, bos_id=2, keep=48, bucket=16,
                                                 max_width=48)

Input: token ids ``(B, N)`` right-padded with 0 and their lengths ``(B,)``. In order:

1. ``bos_id``: prepend ``<bos>`` to every row (line corpora);
2. ``keep``: keep the last ``keep`` tokens of longer rows (left truncation, so a prompt longer
   than the context keeps its end): row ``b`` keeps ``ids[b, f_b : n_b]`` with
   ``f_b = max(n_b - keep, 0)``, and the width shrinks to ``min(N, keep)``;
3. empty rows (``n_b == 0``) get a placeholder ``<unk>`` at column 0 and length 1, and are
   reported in ``empty`` (callers give them no budget);
4. ``bucket``: the width is padded with 0 up to a multiple of ``bucket`` (at most ``max_width``,
   never below the width), so that prompts of similar lengths share one compiled loop.

Written with ``keras.ops`` (plus ``tf.gather`` on TensorFlow, which LiteRT converts to a
builtin): the same code runs eagerly, in a graph with unknown shapes, and under ``jax.jit``.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from zoo.backends import current
from zoo.special_tokens import UNK_ID

__all__ = ["PROMPT_BUCKET", "dense_rows", "gather_rows", "prepare_prompts"]

PROMPT_BUCKET = 16


def gather_rows(x, index):
    """``out[b, j] = x[b, index[b, j]]`` for ``x (B, N)`` and ``index (B, M)``."""
    if current() == "tensorflow":
        import tensorflow as tf

        return tf.gather(x, index, batch_dims=1)
    return ops.take_along_axis(x, index, axis=1)


def _width(x):
    static = x.shape[1]
    return static if static is not None else ops.shape(x)[1]


def _minimum(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    return ops.minimum(a, b)


def _maximum(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    return ops.maximum(a, b)


def prepare_prompts(ids, lengths, *, bos_id: int | None = None, keep: int | None = None,
                    bucket: int = 1, max_width: int | None = None):
    """Steps 1-4 of the module docstring.

    Args:
      ids: ``(B, N)`` int32 token ids, right-padded with 0.
      lengths: ``(B,)`` int32 row lengths.
      bos_id: prepend this id to every row (``None``: nothing).
      keep: keep at most the last ``keep`` tokens of every row (``None``: all).
      bucket: pad the width to a multiple of this.
      max_width: cap of that padding.

    Returns:
      ``(prompt_ids (B, P) int32, lengths (B,) int32 >= 1, empty (B,) bool)``.
    """
    ids = ops.cast(ids, "int32")
    lengths = ops.cast(lengths, "int32")
    if bos_id is not None:
        batch = ops.shape(ids)[0]
        ids = ops.concatenate([ops.full((batch, 1), bos_id, dtype="int32"), ids], axis=1)
        lengths = lengths + 1
    if keep is not None:
        width = _width(ids)
        first = ops.maximum(lengths - keep, 0)
        columns = ops.arange(width, dtype="int32")[None, :]
        source = ops.minimum(first[:, None] + columns, width - 1)
        lengths = lengths - first
        ids = ops.where(columns < lengths[:, None], gather_rows(ids, source), 0)
        ids = ids[:, : _minimum(width, keep)]
    empty = lengths <= 0
    width = _maximum(_width(ids), 1)
    padded = (width + bucket - 1) // bucket * bucket
    if max_width is not None:
        padded = _minimum(padded, max_width)
    padded = _maximum(padded, width)
    ids = ops.pad(ids, [[0, 0], [0, padded - _width(ids)]])
    first_column = ops.arange(padded, dtype="int32")[None, :] == 0
    ids = ops.where(ops.logical_and(empty[:, None], first_column), UNK_ID, ids)
    return ids, ops.maximum(lengths, 1), empty


def dense_rows(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Python lists of ids -> ``(ids (B, max_len) int32 right-padded with 0, lengths (B,))``."""
    lengths = np.array([len(row) for row in rows], np.int32)
    ids = np.zeros((len(rows), int(lengths.max(initial=0))), np.int32)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = row
    return ids, lengths
