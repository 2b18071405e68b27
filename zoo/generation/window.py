"""Generation past the context: the sliding window, once for every decoder.

A transformer of context ``L`` cannot attend past ``L`` positions, so a continuation longer
than the context is made in *rounds*; with ``h = L // 2``:

* round 0 conditions on the whole prompt when it is shorter than ``L``, otherwise on its last
  ``L - h`` tokens;
* every later round conditions on the last ``L - h`` tokens of the sequence so far (prompt
  and continuation);
* a round whose context holds ``k`` tokens makes ``min(L - k, remaining)`` new tokens (it
  fills the window), and a row stops at a stop token or at its budget;
* the random draw of round ``r`` is taken at steps ``t + r * L`` (``Sampler.shifted``), so no
  two rounds reuse one.

What a row gets depends only on its prompt, settings and seed -- not on its budget (asking for
more tokens never changes the first ones, so a stream is a prefix of ``generate``) and not on
the other rows of a batch. A prompt plus continuation that fits in ``L`` is one round: the
plain cached loop (``zoo.generation.loop.decode``).

``decode_windowed`` runs the rounds inside one TensorFlow graph (``ops.while_loop`` around the
loop; shapes change per round, so no XLA) for the SavedModel and LiteRT exports;
``zoo.generation.api.generate`` and ``zoo.generation.stream.stream`` run the same rounds from
Python, with ``round_context`` and ``round_budget``.
"""

from __future__ import annotations

import dataclasses

from keras import ops

from zoo.generation.loop import DecodeSettings, decode
from zoo.generation.prompts import gather_rows
from zoo.generation.samplers import Sampler

__all__ = ["decode_windowed", "round_budget", "round_context", "slide"]


def slide(max_length: int) -> int:
    """``L - h``: how many tokens a later round keeps (``h = L // 2``)."""
    return max_length - max_length // 2


def round_context(tokens: list[int], round_index: int, max_length: int) -> list[int]:
    """The tokens round ``round_index`` conditions on, from the sequence so far."""
    if round_index == 0 and len(tokens) < max_length:
        return list(tokens)
    return list(tokens[-slide(max_length):])


def round_budget(context_length: int, remaining: int, max_length: int) -> int:
    """New tokens of a round whose context holds ``context_length`` tokens."""
    return max(0, min(max_length - context_length, remaining))


def _size(x, axis: int):
    static = x.shape[axis]
    return static if static is not None else ops.shape(x)[axis]


def decode_windowed(model, sampler: Sampler, prompt_ids, prompt_lengths, row_max,
                    settings: DecodeSettings, *, max_length: int, bucket: int = 1):
    """``loop.decode`` continued past the context ``max_length`` in sliding-window rounds (see
    the module docstring); returns ``(new_ids (B, M) int32, num_new (B,) int32)``.

    ``prompt_ids (B, P)`` right-padded with 0 (not truncated: the rounds choose what to keep),
    ``prompt_lengths (B,) >= 1``, ``row_max (B,)`` each row's budget ``<= M =
    settings.max_new_tokens``. Each round's contexts are padded to a multiple of ``bucket``.
    """
    window = int(max_length)
    kept = slide(window)
    max_new = settings.max_new_tokens
    inner = dataclasses.replace(settings, max_new_tokens=min(max_new, window - 1),
                                prefill_length=None, max_length=window)
    prompt_ids = ops.cast(prompt_ids, "int32")
    lengths = ops.cast(prompt_lengths, "int32")
    row_max = ops.cast(row_max, "int32")
    batch = _size(prompt_ids, 0)
    history = ops.pad(prompt_ids, [[0, 0], [0, max_new]])  # (B, P + M)
    width = _size(history, 1)
    columns = ops.arange(width, dtype="int32")[None, :]

    def cond(r, history, length, produced, finished):
        return ops.logical_not(ops.all(finished))

    def body(r, history, length, produced, finished):
        first_round = ops.logical_and(r == 0, length < window)
        keep = ops.where(first_round, length, ops.minimum(length, kept))  # (B,)
        start = length - keep
        context_width = ops.max(keep)
        padded = ops.minimum((context_width + bucket - 1) // bucket * bucket, window - 1)
        padded = ops.maximum(padded, context_width)
        context_columns = ops.arange(padded, dtype="int32")[None, :]
        source = ops.minimum(start[:, None] + context_columns, width - 1)
        context = ops.where(context_columns < keep[:, None], gather_rows(history, source), 0)
        budget = ops.maximum(ops.minimum(window - keep, row_max - produced), 0)
        budget = ops.where(finished, 0, budget)
        new_ids, num_new = decode(model, sampler.shifted(r * window), context, keep, budget,
                                  inner)
        # append row b's num_new[b] tokens at columns length[b] .. length[b] + num_new[b] - 1
        offset = ops.clip(columns - length[:, None], 0, inner.max_new_tokens - 1)
        appended = gather_rows(new_ids, offset)
        written = ops.logical_and(columns >= length[:, None],
                                  columns < (length + num_new)[:, None])
        history = ops.where(written, appended, history)
        produced = produced + num_new
        stopped = num_new < budget
        finished = ops.logical_or(ops.logical_or(finished, stopped), produced >= row_max)
        return r + 1, history, length + num_new, produced, finished

    state = (ops.convert_to_tensor(0, "int32"), history, lengths,
             ops.zeros((batch,), "int32"), row_max <= 0)
    _, history, _, produced, _ = ops.while_loop(cond, body, state)
    out_columns = ops.arange(max_new, dtype="int32")[None, :]
    source = ops.minimum(lengths[:, None] + out_columns, width - 1)
    new_ids = ops.where(out_columns < produced[:, None], gather_rows(history, source), 0)
    return new_ids, produced
