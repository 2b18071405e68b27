"""Extractive QA in TensorFlow ops: token offsets, windows over long contexts, the best span.

Everything here is graph-friendly (ragged tensors, no Python loops over the batch), so the same
functions serve ``run.answer``/``zoo eval`` and the SavedModel's ``answer`` signature.

Tokens with offsets. ``OffsetWordPiece`` applies a WordPiece vocabulary with
``tensorflow_text.FastWordpieceTokenizer.tokenize_with_offsets``: each token's ``[start, end)``
in the UTF-8 bytes of the original text (the zoo's cased WordPiece tokenizer gives the same ids;
a lower-casing one changes the bytes it sees and is refused).

Windows. With ``q`` question tokens and a window of ``T`` ids, a window holds ``room = T - q - 3``
context tokens: ``[CLS] question [SEP] c_k .. c_{k+room-1} [SEP]``. Window ``w`` of a context of
``n`` tokens starts at token ``k = w * stride``; there are ``1 + max(0, ceil((n - room) /
stride))`` windows, so consecutive windows overlap by ``room - stride`` tokens and every token
is in at least one.

Best span. In each window, over context positions ``i <= j < i + max_answer_tokens`` where
``i`` begins a word and ``j`` ends one (no ``##`` piece at either edge), the span score is
``s_i + e_j`` (start and end logits, as BERT on SQuAD); the answer is the best span of
the best window. Its tokens map back to characters through the offsets: the answer text is the
context's own substring from the first token's first byte to the last token's last byte.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf
import tensorflow_text as tf_text

from zoo.errors import ZooError
from zoo.special_tokens import CLS_ID, SEP_ID
from zoo.tokenizers.base import SPECIAL_TOKENS, UNK_ID

_NEG = -1e30  # score of an impossible span


class OffsetWordPiece(tf.Module):
    """A zoo WordPiece vocabulary applied with byte offsets (``tokenize_with_offsets``)."""

    def __init__(self, tokenizer, name: str | None = None):
        super().__init__(name=name)
        if getattr(tokenizer, "kind", None) != "wordpiece":
            raise ZooError("question answering needs a wordpiece tokenizer. "
                           f"Received: {getattr(tokenizer, 'kind', tokenizer)!r}")
        if tokenizer.lower_case:
            raise ZooError("question answering needs a cased wordpiece tokenizer (lower_case "
                           "changes the text the offsets point into)")
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=tokenizer.vocabulary, suffix_indicator="##",
            unknown_token=SPECIAL_TOKENS[UNK_ID], no_pretokenization=False,
            support_detokenization=False, token_out_type=tf.int32)
        # suffix_table[id]: the token is a "##" piece (continues a word)
        self.suffix_table = tf.constant([t.startswith("##") for t in tokenizer.vocabulary])

    def tokenize_with_offsets(self, texts: tf.Tensor):
        """Strings ``(B,)`` -> ragged ``(ids int32, starts int64, ends int64)``, each ``(B, None)``;
        ``[starts, ends)`` are byte ranges of the text."""
        ids, starts, ends = self._wordpiece.tokenize_with_offsets(texts)
        return tf.cast(ids, tf.int32), tf.cast(starts, tf.int64), tf.cast(ends, tf.int64)


class Windows(NamedTuple):
    """The windows of a batch of (question, context) pairs; ``N`` windows in all.

    ``ids`` (N, T) int32 rows ``[CLS] q [SEP] context piece [SEP] <pad>``; ``example`` (N,) the
    pair each window belongs to; ``start`` (N,) its first context token (index into the
    context's tokens); ``length`` (N,) its context tokens; ``offset`` (N,) the row position of
    its first context token (``q + 2``).
    """

    ids: tf.Tensor
    example: tf.Tensor
    start: tf.Tensor
    length: tf.Tensor
    offset: tf.Tensor


def make_windows(question_ids: tf.RaggedTensor, context_ids: tf.RaggedTensor, seq_len: int,
                 stride: int) -> Windows:
    """Cut every context into overlapping windows (see the module docstring).

    ``question_ids`` must leave room: ``q <= seq_len - 4``, checked by the caller."""
    q_len = question_ids.row_lengths()  # (B,) int64
    n_c = context_ids.row_lengths()
    room = tf.maximum(tf.constant(seq_len - 3, tf.int64) - q_len, 1)  # (B,)
    stride = tf.constant(stride, tf.int64)
    extra = tf.maximum(n_c - room, 0)
    num_windows = 1 + (extra + stride - 1) // stride  # (B,)
    example = tf.repeat(tf.range(tf.size(num_windows, out_type=tf.int64)), num_windows)  # (N,)
    start = tf.ragged.range(num_windows).flat_values * stride  # (N,)
    length = tf.maximum(tf.minimum(tf.gather(room, example), tf.gather(n_c, example) - start), 0)
    first = tf.gather(context_ids.row_splits, example) + start
    pieces = tf.gather(context_ids.flat_values, tf.ragged.range(first, first + length).flat_values)
    context = tf.RaggedTensor.from_row_lengths(pieces, length)  # (N, None)
    question = tf.gather(question_ids, example)  # (N, None)
    n = tf.shape(example, out_type=tf.int64)[0]
    cls = tf.RaggedTensor.from_tensor(tf.fill(tf.stack([n, 1]), tf.constant(CLS_ID, tf.int32)))
    sep = tf.RaggedTensor.from_tensor(tf.fill(tf.stack([n, 1]), tf.constant(SEP_ID, tf.int32)))
    rows = tf.concat([cls, question, sep, context, sep], axis=1)
    ids = rows.to_tensor(default_value=0, shape=[None, seq_len])
    return Windows(ids=ids, example=example, start=start, length=length,
                   offset=tf.gather(q_len, example) + 2)


def word_edges(context_ids: tf.RaggedTensor, suffix_table: tf.Tensor):
    """``(starts_word, ends_word)`` ragged bool ``(B, None)``: a token begins a word (it is not
    a ``##`` piece) / ends one (the next token is not a ``##`` piece)."""
    suffix = tf.gather(suffix_table, context_ids)
    begins = tf.logical_not(suffix)
    after = tf.concat([begins[:, 1:], tf.ones_like(begins[:, :1])], axis=1)
    return begins, after


def in_windows(values: tf.RaggedTensor, windows: Windows, width) -> tf.Tensor:
    """Per-context-token bools ``(B, None)`` laid out like the windows' rows: ``(N, T)``, False
    outside each window's context piece."""
    pos = tf.range(tf.cast(width, tf.int64))[None, :]
    lo = windows.offset[:, None]
    inside = (pos >= lo) & (pos < lo + windows.length[:, None])  # (N, T)
    index = tf.gather(values.row_splits, windows.example)[:, None] + windows.start[:, None] + pos - lo
    index = tf.clip_by_value(index, 0, tf.maximum(tf.size(values.flat_values, tf.int64) - 1, 0))
    return inside & tf.gather(values.flat_values, index)


def best_spans(logits: tf.Tensor, windows: Windows, num_examples, max_answer_tokens: int,
               may_start=None, may_end=None):
    """The best span of each pair over all its windows.

    ``logits`` (N, T, 2) start/end logits of the windows; ``may_start`` / ``may_end`` (N, T)
    bool: where a span may begin / end (default: any context position; ``in_windows`` of
    ``word_edges`` keeps answers to whole words). Returns ``(score (B,) float32, first (B,)
    int64, last (B,) int64)``: ``s_first + e_last`` and the span's first and last context
    token (indices into the context's tokens, ``last >= first``)."""
    logits = tf.cast(logits, tf.float32)
    width = tf.shape(logits, out_type=tf.int64)[1]
    pos = tf.range(width)
    lo = windows.offset[:, None]
    in_context = (pos[None, :] >= lo) & (pos[None, :] < lo + windows.length[:, None])  # (N, T)
    starts_ok = in_context if may_start is None else in_context & may_start
    ends_ok = in_context if may_end is None else in_context & may_end
    i, j = pos[:, None], pos[None, :]
    shape_ok = (j >= i) & (j - i < max_answer_tokens)  # (T, T)
    valid = shape_ok[None] & starts_ok[:, :, None] & ends_ok[:, None, :]  # (N, T, T)
    pair = logits[:, :, 0][:, :, None] + logits[:, :, 1][:, None, :]
    pair = tf.where(valid, pair, _NEG)
    flat = tf.reshape(pair, tf.stack([tf.shape(pair, out_type=tf.int64)[0], width * width]))
    best = tf.argmax(flat, axis=1)  # (N,)
    score = tf.reduce_max(flat, axis=1)
    per_example = tf.RaggedTensor.from_value_rowids(score, windows.example,
                                                    nrows=tf.cast(num_examples, tf.int64))
    chosen = tf.argmax(per_example.to_tensor(default_value=2 * _NEG), axis=1)  # (B,)
    window = per_example.row_splits[:-1] + chosen
    base = tf.gather(windows.start, window) - tf.gather(windows.offset, window)
    first = base + tf.gather(best // width, window)
    last = base + tf.gather(best % width, window)
    return tf.gather(score, window), first, last


def span_text(contexts: tf.Tensor, starts: tf.RaggedTensor, ends: tf.RaggedTensor,
              first: tf.Tensor, last: tf.Tensor):
    """Token span -> ``(text, char_start, char_end)``: the context's substring from token
    ``first``'s first byte to token ``last``'s last byte, and its character offsets (end
    exclusive)."""
    byte_start = tf.gather(starts.flat_values, starts.row_splits[:-1] + first)
    byte_end = tf.gather(ends.flat_values, ends.row_splits[:-1] + last)
    text = tf.strings.substr(contexts, byte_start, byte_end - byte_start, unit="BYTE")
    _, char_bytes = tf.strings.unicode_decode_with_offsets(contexts, "UTF-8")  # (B, None)
    char_start = tf.reduce_sum(tf.cast(char_bytes < byte_start[:, None], tf.int64), axis=1)
    char_end = tf.reduce_sum(tf.cast(char_bytes < byte_end[:, None], tf.int64), axis=1)
    return text, char_start, char_end


def char_span_to_tokens(starts, ends, char_start: int, char_end: int,
                        byte_of_char) -> tuple[int, int] | None:
    """The first and last token (indices) covering characters ``[char_start, char_end)``, or
    ``None`` when no token overlaps them. ``starts``/``ends``: one text's token byte offsets;
    ``byte_of_char``: the byte offset of each character (and one past the end)."""
    lo, hi = byte_of_char[char_start], byte_of_char[char_end]
    inside = [k for k in range(len(starts)) if ends[k] > lo and starts[k] < hi]
    if not inside:
        return None
    return inside[0], inside[-1]


def byte_offsets(text: str) -> list[int]:
    """The UTF-8 byte offset of each character of ``text``, then its byte length."""
    offsets, at = [], 0
    for ch in text:
        offsets.append(at)
        at += len(ch.encode("utf-8"))
    offsets.append(at)
    return offsets


def window_labels(windows: Windows, token_spans: list[tuple[int, int] | None]):
    """Training targets ``(N, 2)`` int32: the answer's row positions in each window holding
    all of it, ``[0, 0]`` (``[CLS]``) in the others (and for pairs with no span)."""
    import numpy as np

    example = windows.example.numpy()
    start, length, offset = (t.numpy() for t in (windows.start, windows.length, windows.offset))
    labels = np.zeros([len(example), 2], np.int32)
    for n, b in enumerate(example):
        span = token_spans[b]
        if span is None:
            continue
        a, z = span
        if start[n] <= a and z < start[n] + length[n]:
            labels[n] = (a - start[n] + offset[n], z - start[n] + offset[n])
    return labels
