"""Graph ops of the byte-level BPE tokenizer (GPT-2): pre-tokenizer, merges and UTF-8 repair.

Every function here builds plain TensorFlow ops that are also LiteRT builtins (integer
arithmetic, comparisons, ``PAD``, ``GATHER``, ``SELECT``, ``CUMSUM``, ``SCATTER_ND``,
``UNSORTED_SEGMENT_MIN``, ``WHILE``) plus tensorflow-text's ``ByteSplitWithOffsets`` (the bytes
of a string); strings are joined by a function the caller passes (``ReduceJoin`` in TensorFlow,
``TFText>NgramsStringJoin`` in LiteRT). So the same code tokenizes inside a SavedModel and inside
a LiteRT flatbuffer.
Tensors are dense ``(B, W)`` int32 matrices over the UTF-8 bytes of each text, ``-1`` = padding.

**Pre-tokenizer.** GPT-2 cuts text into pieces with the regular expression

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

(neither RE2 nor LiteRT has its look-ahead). Where a piece starts depends only on neighbouring
characters, so it is decided for every character at once. With the classes L (letter), N
(number), S (white space) and O (anything else), a character starts a piece when

* it is white space and (the previous character is not white space, or the next one is not):
  a run of white space gives all but its last character to ``\\s+(?!\\S)``;
* it is L, N or O, its class differs from the previous character's, and the previous
  character is not the space U+0020 (a single space joins the run after it: `` ?\\p{L}+``);
* it follows a contraction (``'s 't 're 've 'm 'll 'd``, case-sensitive), which is a piece of
  its own when its apostrophe starts a piece by the rule above (its letters start nothing);
* it is the first of the text, or follows a special token (``<|endoftext|>``), which is always
  a piece of its own and ends the text before it (as Hugging Face splits added tokens first).

Invalid UTF-8 (one unit per maximal invalid subpart) counts as a character of class O; Hugging
Face never sees any, as it takes ``str``.

**Merges.** A piece starts as one symbol per byte (the vocabulary id of the byte's printable
stand-in). Then, in every piece at once, the adjacent pair with the lowest rank in
``merges.txt`` is replaced by the merged token at each of its non-overlapping occurrences (left
to right), until no adjacent pair of any piece has a rank: the order of OpenAI's encoder and of
Hugging Face's priority queue (a pair that contains a merged token always ranks after the merge
that made it).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

LETTER, NUMBER, SPACE, OTHER = 1, 2, 3, 4
REPLACEMENT = "\ufffd"
_BIG = np.iinfo(np.int32).max
_APOSTROPHE, _BLANK = ord("'"), ord(" ")
_CONTRACTIONS = ("s", "t", "re", "ve", "m", "ll", "d")
# pieces of the repaired text: one per byte value, then U+FFFD, then nothing
PIECE_REPLACEMENT, PIECE_EMPTY = 256, 257
PIECES = [bytes([v]) for v in range(256)] + [REPLACEMENT.encode("utf-8"), b""]


# ------------------------------------------------------------------------------------------------
# helpers


def byte_matrix(texts: tf.Tensor) -> tf.Tensor:
    """``(B,)`` strings -> ``(B, W + 1)`` int32 UTF-8 bytes, ``-1`` after each text (the last
    column is always ``-1``, so ``W + 1 >= 1`` even for empty strings)."""
    ragged = tf_text.ByteSplitter().split(texts)  # TFText>ByteSplitWithOffsets
    dense = ragged.with_flat_values(tf.cast(ragged.flat_values, tf.int32)).to_tensor(-1)
    return tf.concat([dense, tf.fill(tf.stack([tf.shape(texts)[0], 1]), -1)], axis=1)


def shift(x: tf.Tensor, k: int, fill) -> tf.Tensor:
    """``x[:, i - k]`` (``k > 0``: the k-th previous column; ``k < 0``: the |k|-th next one),
    ``fill`` outside the matrix; same shape as ``x`` ``(B, W)``."""
    if x.dtype == tf.bool:
        return tf.cast(shift(tf.cast(x, tf.int32), k, int(fill)), tf.bool)
    if k > 0:
        return tf.pad(x, [[0, 0], [k, 0]], constant_values=fill)[:, :-k]
    return tf.pad(x, [[0, 0], [0, -k]], constant_values=fill)[:, -k:]


def compact(alive: tf.Tensor, *values: tf.Tensor) -> list[tf.Tensor]:
    """Move the ``alive`` entries of each row of every ``values`` matrix (B, W) to the left, in
    order; the rest of the row becomes ``-1``. Values must be ``>= 0`` where alive."""
    batch, width = tf.shape(alive)[0], tf.shape(alive)[1]
    column = tf.cumsum(tf.cast(alive, tf.int32), axis=1) - 1
    target = tf.where(alive, column, width)  # the dead go to an extra column, dropped below
    rows = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(alive))
    indices = tf.stack([rows, target], axis=-1)  # (B, W, 2)
    shape = tf.stack([batch, width + 1])
    return [tf.scatter_nd(indices, tf.where(alive, v + 1, 0), shape)[:, :width] - 1
            for v in values]


def _search(sorted_keys: tf.Tensor, steps: int, key: tf.Tensor):
    """Lower bound of ``key`` in ``sorted_keys`` (int64): ``(found, position)``."""
    size = tf.shape(sorted_keys)[0]
    lo = tf.zeros_like(key, tf.int32)
    hi = tf.fill(tf.shape(key), size)
    for _ in range(steps):
        active = lo < hi
        mid = tf.math.floordiv(lo + hi, 2)
        value = tf.gather(sorted_keys, tf.minimum(mid, size - 1))
        lo = tf.where(tf.logical_and(active, value < key), mid + 1, lo)
        hi = tf.where(tf.logical_and(active, value >= key), mid, hi)
    position = tf.minimum(lo, size - 1)
    return tf.equal(tf.gather(sorted_keys, position), key), position


# ------------------------------------------------------------------------------------------------
# UTF-8


def utf8_units(b: tf.Tensor):
    """Split bytes ``b`` (B, W) into UTF-8 units: valid characters and invalid *maximal subparts*
    (a truncated sequence counts once, any other bad byte alone; as Python's and Rust's
    ``errors="replace"``).

    Returns ``(first, span, valid, code_point)``, each (B, W): ``first`` marks the first byte of
    every unit, ``span`` its length in bytes (meaningful where ``first``), ``valid`` says it is
    a character and ``code_point`` its value (-1 for an invalid unit).
    """
    b1, b2, b3 = shift(b, -1, -1), shift(b, -2, -1), shift(b, -3, -1)

    def tail(x):
        return tf.logical_and(x >= 0x80, x < 0xC0)

    need = tf.where(
        tf.logical_and(b >= 0, b < 0x80), 1,
        tf.where(tf.logical_and(b >= 0xC2, b < 0xE0), 2,
                 tf.where(tf.logical_and(b >= 0xE0, b < 0xF0), 3,
                          tf.where(tf.logical_and(b >= 0xF0, b < 0xF5), 4, 0))),
    )
    low = tf.where(b == 0xE0, 0xA0, tf.where(b == 0xF0, 0x90, 0x80))  # second byte's range
    high = tf.where(b == 0xED, 0x9F, tf.where(b == 0xF4, 0x8F, 0xBF))
    ok1 = tf.logical_and(need >= 2, tf.logical_and(b1 >= low, b1 <= high))
    ok2 = tf.logical_and(tf.logical_and(ok1, need >= 3), tail(b2))
    ok3 = tf.logical_and(tf.logical_and(ok2, need >= 4), tail(b3))
    span = 1 + tf.cast(ok1, tf.int32) + tf.cast(ok2, tf.int32) + tf.cast(ok3, tf.int32)
    span = tf.where(b >= 0, span, 0)
    covered = tf.zeros_like(b, tf.bool)
    for d in (1, 2, 3):
        covered = tf.logical_or(covered, shift(span, d, 0) > d)
    first = tf.logical_and(b >= 0, tf.logical_not(covered))
    valid = tf.logical_and(first, tf.equal(span, need))
    t1, t2, t3 = b1 - 0x80, b2 - 0x80, b3 - 0x80
    code_point = tf.where(
        need == 1, b,
        tf.where(need == 2, (b - 0xC0) * 64 + t1,
                 tf.where(need == 3, (b - 0xE0) * 4096 + t1 * 64 + t2,
                          (b - 0xF0) * 262144 + t1 * 4096 + t2 * 64 + t3)),
    )
    return first, span, valid, tf.where(valid, code_point, -1)


def spread(first: tf.Tensor, span: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    """Copy ``value`` from the first byte of each unit to its other bytes (B, W)."""
    out = value
    for d in (1, 2, 3):
        inside = tf.logical_and(shift(first, d, False), shift(span, d, 0) > d)
        out = tf.where(inside, shift(value, d, 0), out)
    return out


def utf8_pieces(b: tf.Tensor) -> tf.Tensor:
    """Index into ``PIECES`` for every byte of ``b`` (B, W): a valid character's bytes stand for
    themselves, an invalid unit becomes one U+FFFD, padding nothing."""
    first, span, valid, _ = utf8_units(b)
    in_valid = spread(first, span, tf.cast(valid, tf.int32)) > 0
    piece = tf.where(first, tf.where(valid, b, PIECE_REPLACEMENT), PIECE_EMPTY)
    return tf.where(tf.logical_and(tf.logical_not(first), in_valid), b, piece)


# ------------------------------------------------------------------------------------------------
# pre-tokenizer


def _special_matches(b: tf.Tensor, specials):
    """``(first, covered, ids)`` of the special tokens' literal occurrences in ``b`` (B, W)."""
    first = tf.zeros_like(b, tf.bool)
    covered = tf.zeros_like(b, tf.bool)
    ids = tf.fill(tf.shape(b), -1)
    for literal, token_id in specials:
        match = tf.logical_not(covered)
        for k, value in enumerate(literal):
            match = tf.logical_and(match, tf.equal(shift(b, -k, -1), value))
        first = tf.logical_or(first, match)
        ids = tf.where(match, token_id, ids)
        for k in range(len(literal)):
            covered = tf.logical_or(covered, shift(match, k, False))
    return first, covered, ids


def _contraction_lengths(b: tf.Tensor, apostrophe: tf.Tensor) -> tf.Tensor:
    """Length (2 or 3, else 0) of the contraction starting at each piece-starting apostrophe."""
    length = tf.zeros_like(b)
    for suffix in _CONTRACTIONS:
        match = apostrophe
        for k, char in enumerate(suffix):
            match = tf.logical_and(match, tf.equal(shift(b, -(k + 1), -1), ord(char)))
        length = tf.where(match, len(suffix) + 1, length)
    return length


def piece_starts(b: tf.Tensor, char_class, specials):
    """Where the pieces of GPT-2's pre-tokenizer start (see the module docstring).

    Args:
      b: bytes (B, W), ``-1`` padded.
      char_class: function ``code_points -> classes`` (``LETTER``, ``NUMBER``, ``SPACE``,
        ``OTHER``); invalid units (code point -1) are ``OTHER``.
      specials: ``[(literal bytes, token id), ...]``.

    Returns ``(start, special_first, special_covered, special_ids)``, each (B, W).
    """
    first, span, valid, code_point = utf8_units(b)
    special_first, special, special_ids = _special_matches(b, specials)
    text = tf.logical_and(b >= 0, tf.logical_not(special))  # bytes of ordinary text
    unit = tf.logical_and(first, text)
    cls = tf.where(valid, char_class(tf.maximum(code_point, 0)), OTHER)
    cls = spread(first, span, tf.where(first, cls, 0))  # every byte: its character's class

    prev_text = shift(text, 1, False)
    prev_cls = shift(cls, 1, 0)
    prev_blank = tf.equal(shift(b, 1, -1), _BLANK)
    width = tf.shape(b)[1]
    after = tf.minimum(tf.range(width)[None, :] + tf.maximum(span, 1), width - 1)
    next_text = tf.gather(text, after, batch_dims=1)
    next_cls = tf.gather(cls, after, batch_dims=1)

    space = tf.equal(cls, SPACE)
    space_start = tf.logical_or(
        tf.logical_or(tf.logical_not(prev_text), tf.not_equal(prev_cls, SPACE)),
        tf.logical_and(next_text, tf.not_equal(next_cls, SPACE)),
    )
    run_start = tf.logical_or(
        tf.logical_not(prev_text),
        tf.logical_and(tf.not_equal(prev_cls, cls), tf.logical_not(prev_blank)),
    )
    apostrophe = tf.logical_and(tf.logical_and(unit, tf.equal(b, _APOSTROPHE)), run_start)
    contraction = _contraction_lengths(b, apostrophe)
    inside = tf.logical_or(shift(contraction, 1, 0) >= 2, shift(contraction, 2, 0) >= 3)
    follows = tf.logical_or(tf.equal(shift(contraction, 2, 0), 2),
                            tf.equal(shift(contraction, 3, 0), 3))
    start = tf.where(space, space_start, tf.logical_and(run_start, tf.logical_not(inside)))
    start = tf.logical_and(unit, tf.logical_or(start, follows))
    return tf.logical_or(start, special_first), special_first, special, special_ids


# ------------------------------------------------------------------------------------------------
# BPE


def bpe_merge(symbols: tf.Tensor, segments: tf.Tensor, merges) -> tf.Tensor:
    """Apply the merges to every piece (see the module docstring).

    Args:
      symbols: token ids (B, W), left-aligned, ``-1`` after each row's symbols.
      segments: piece number of each symbol (B, W), unique over the batch, ``< B * W``.
      merges: ``(keys, ranks, results, vocab_size, search_steps)``: the sorted int64 keys
        ``left * vocab_size + right`` of the mergeable pairs, their ranks and merged ids.

    Returns the merged symbols (B, W), left-aligned, ``-1`` padded.
    """
    keys, ranks, results, vocab_size, steps = merges
    batch, width = tf.shape(symbols)[0], tf.shape(symbols)[1]
    dump = batch * width  # segment of dead entries (no pair there is mergeable)
    pairs = tf.range(width - 1)[None, :]
    offsets = tf.range(batch)[:, None] * width
    no_rank = tf.constant(_BIG, tf.int32)

    def body(symbols, segments, _):
        left, right = symbols[:, :-1], symbols[:, 1:]
        seg = tf.where(segments[:, :-1] < 0, dump, segments[:, :-1])
        pair = tf.logical_and(tf.logical_and(left >= 0, right >= 0),
                              tf.equal(segments[:, :-1], segments[:, 1:]))
        key = tf.cast(left, tf.int64) * vocab_size + tf.cast(right, tf.int64)
        found, position = _search(keys, steps, key)
        rank = tf.where(tf.logical_and(pair, found), tf.gather(ranks, position), no_rank)
        best_rank = tf.math.unsorted_segment_min(
            tf.reshape(rank, [-1]), tf.reshape(seg, [-1]), dump + 1
        )
        best = tf.logical_and(rank < no_rank, tf.equal(rank, tf.gather(best_rank, seg)))
        # non-overlapping occurrences (a pair of equal symbols in a run), left to right
        run = tf.cumsum(1 - tf.cast(best, tf.int32), axis=1) + offsets
        run_first = tf.math.unsorted_segment_min(
            tf.reshape(tf.where(best, pairs, no_rank), [-1]), tf.reshape(run, [-1]), dump + 1
        )
        chosen = tf.logical_and(best, tf.equal(tf.math.floormod(
            pairs - tf.gather(run_first, run), 2), 0))
        merged = tf.where(chosen, tf.gather(results, position), left)
        symbols = tf.concat([merged, symbols[:, -1:]], axis=1)
        removed = tf.concat([tf.zeros(tf.stack([batch, 1]), tf.bool), chosen], axis=1)
        alive = tf.logical_and(symbols >= 0, tf.logical_not(removed))
        symbols, segments = compact(alive, symbols, segments)
        return symbols, segments, tf.reduce_any(best)

    symbols, _, _ = tf.while_loop(
        lambda symbols, segments, more: more, body, (symbols, segments, tf.constant(True))
    )
    return symbols


def encode(texts: tf.Tensor, char_class, byte_ids: tf.Tensor, specials, merges):
    """Strings ``(B,)`` -> ``(ids (B, W) left-aligned, -1 padded, lengths (B,))``."""
    b = byte_matrix(texts)
    start, special_first, special, special_ids = piece_starts(b, char_class, specials)
    symbols = tf.where(b >= 0, tf.gather(byte_ids, tf.clip_by_value(b, 0, 255)), -1)
    symbols = tf.where(special, -1, symbols)
    symbols = tf.where(special_first, special_ids, symbols)
    batch, width = tf.shape(b)[0], tf.shape(b)[1]
    segments = tf.cumsum(tf.cast(start, tf.int32), axis=1) + tf.range(batch)[:, None] * width
    symbols, segments = compact(symbols >= 0, symbols, segments)
    symbols = bpe_merge(symbols, segments, merges)
    return symbols, tf.reduce_sum(tf.cast(symbols >= 0, tf.int32), axis=1)


def decode(ids: tf.Tensor, lengths: tf.Tensor, surfaces: tf.Tensor, join, width: int | None = None):
    """Ids ``(B, M)`` (the first ``lengths[b]`` of a row are read) -> strings ``(B,)``.

    ``surfaces``: each token's bytes, plus ``b""`` at index ``vocab_size`` (ids outside the
    vocabulary render as nothing). ``join``: ``(B, K)`` strings -> ``(B,)`` row concatenation.
    The tokens' bytes are joined, then repaired as UTF-8 (one U+FFFD per invalid unit).
    ``width``: a static bound on the bytes of a row, for a ``join`` that needs static shapes.
    """
    vocab_size = tf.shape(surfaces)[0] - 1
    columns = tf.range(tf.shape(ids)[1])[None, :]
    inside = tf.logical_and(columns < lengths[:, None], tf.logical_and(ids >= 0, ids < vocab_size))
    raw = join(tf.gather(surfaces, tf.where(inside, ids, vocab_size)))
    b = byte_matrix(raw)
    if width is not None:
        b = tf.pad(b, tf.stack([[0, 0], [0, tf.maximum(width - tf.shape(b)[1], 0)]]),
                   constant_values=-1)
        b = tf.reshape(b[:, :width], [-1, width])
    return join(tf.gather(tf.constant(PIECES, tf.string), utf8_pieces(b)))
