"""LiteRT-friendly in-graph tokenizers for ``export.tflite``.

The zoo's tokenizers use ops that LiteRT does not have as builtins (``unicode_decode``, int ->
int ``StaticHashTable``, ``unicode_encode``, the SentencePiece library op). The codecs here
rebuild the same mapping from LiteRT builtins (integer arithmetic, ``GATHER``, ``WHERE``,
``SCATTER_ND``, ``WHILE``...) plus three tensorflow-text ops that have LiteRT kernels in
``tensorflow_text.tflite_registrar``:

* ``TFText>ByteSplitWithOffsets`` (``ByteSplitter().split``): a string -> its UTF-8 bytes;
* ``RaggedTensorToTensor``: those ragged bytes -> a padded ``(B, W)`` matrix;
* ``TFText>NgramsStringJoin`` (``ngrams(..., STRING_JOIN)``): a row of strings -> one string.

Each codec has ``encode(texts (B,)) -> (ids (B, L) int32 right-padded with 0, lengths (B,))``
and ``decode(ids (B, M), num (B,)) -> strings (B,)`` where only the first ``num[b]`` ids of a
row are read (``M`` must be static).

UTF-8 decoding: a byte sequence that is valid UTF-8 decodes exactly as
``tf.strings.unicode_decode``; an invalid byte becomes one U+FFFD per byte (SentencePiece's
normaliser does the same; ``unicode_decode`` may emit one U+FFFD for a whole truncated
sequence instead, so for invalid UTF-8 the number of ``<unk>`` ids of a character tokenizer may
differ).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from zoo.errors import ZooError
from zoo.tokenizers.base import BOS_ID, EOS_ID, PAD_ID, UNK_ID

REPLACEMENT_CHAR = 0xFFFD
SPACE_SYMBOL = "\u2581"  # SentencePiece's escaped space
_MAX_CODE_POINT = 0x10FFFF
_PAGE = 256
_NUM_BLOCKS = (_MAX_CODE_POINT >> 8) + 1
_INT32_LIMIT = 2**31 - 1

SUPPORTED_KINDS = ("char", "sentencepiece")


# ------------------------------------------------------------------------------------------------
# helpers (pure graph code; every op is a LiteRT builtin unless said otherwise)


def byte_matrix(texts: tf.Tensor) -> tf.Tensor:
    """``(B,)`` strings -> ``(B, W + 1)`` int32 UTF-8 bytes padded with -1 (a -1 column always
    ends a row, so ``W + 1 >= 1`` even for empty strings)."""
    ragged = tf_text.ByteSplitter().split(texts)  # TFText>ByteSplitWithOffsets
    ragged = ragged.with_flat_values(tf.cast(ragged.flat_values, tf.int32))
    dense = ragged.to_tensor(default_value=-1)  # RaggedTensorToTensor
    batch = tf.shape(texts)[0]
    return tf.concat([dense, tf.fill(tf.stack([batch, 1]), -1)], axis=1)


def _shift_left(x: tf.Tensor, k: int, fill) -> tf.Tensor:
    """``x[:, i + k]`` (``fill`` past the end), same shape as ``x`` (B, W)."""
    batch = tf.shape(x)[0]
    width = tf.shape(x)[1]
    padded = tf.concat([x, tf.fill(tf.stack([batch, k]), tf.constant(fill, x.dtype))], axis=1)
    return padded[:, k : k + width]


def _shift_right(x: tf.Tensor, k: int, fill) -> tf.Tensor:
    """``x[:, i - k]`` (``fill`` before the start), same shape as ``x`` (B, W)."""
    batch = tf.shape(x)[0]
    width = tf.shape(x)[1]
    padded = tf.concat([tf.fill(tf.stack([batch, k]), tf.constant(fill, x.dtype)), x], axis=1)
    return padded[:, :width]


def utf8_structure(b: tf.Tensor):
    """UTF-8 structure of int32 bytes ``b`` (B, W) (negative = not a byte).

    Returns ``(code_point, length, covered)``, each (B, W): ``length`` is 1..4 where a valid
    UTF-8 character starts at that byte (``code_point`` is then its value) and 0 otherwise;
    ``covered`` is True for the continuation bytes of a valid character. Valid characters never
    overlap, so every byte is exactly one of: a valid start, covered, or invalid.
    """
    b1 = _shift_left(b, 1, -1)
    b2 = _shift_left(b, 2, -1)
    b3 = _shift_left(b, 3, -1)

    def continuation(x):
        return tf.logical_and(x >= 0x80, x < 0xC0)

    c1, c2, c3 = continuation(b1), continuation(b2), continuation(b3)
    t1, t2, t3 = b1 - 0x80, b2 - 0x80, b3 - 0x80
    one = tf.logical_and(b >= 0, b < 0x80)
    cp2 = (b - 0xC0) * 64 + t1
    two = tf.logical_and(tf.logical_and(b >= 0xC2, b < 0xE0), c1)
    cp3 = (b - 0xE0) * 4096 + t1 * 64 + t2
    three = tf.logical_and(tf.logical_and(b >= 0xE0, b < 0xF0), tf.logical_and(c1, c2))
    three = tf.logical_and(three, cp3 >= 0x800)
    three = tf.logical_and(three, tf.logical_or(cp3 < 0xD800, cp3 >= 0xE000))
    cp4 = (b - 0xF0) * 262144 + t1 * 4096 + t2 * 64 + t3
    four = tf.logical_and(tf.logical_and(b >= 0xF0, b < 0xF5), tf.logical_and(c1, c2))
    four = tf.logical_and(tf.logical_and(four, c3), cp4 >= 0x10000)
    four = tf.logical_and(four, cp4 <= _MAX_CODE_POINT)
    zeros = tf.zeros_like(b)
    length = tf.where(
        one, 1, tf.where(two, 2, tf.where(three, 3, tf.where(four, 4, zeros)))
    )
    code_point = tf.where(
        one, b, tf.where(two, cp2, tf.where(three, cp3, tf.where(four, cp4, zeros)))
    )
    covered = tf.logical_or(
        _shift_right(length, 1, 0) >= 2,
        tf.logical_or(_shift_right(length, 2, 0) >= 3, _shift_right(length, 3, 0) >= 4),
    )
    return code_point, length, covered


def decode_utf8(b: tf.Tensor):
    """Bytes (B, W) -> ``(code_points (B, W), is_char (B, W))``: one character per valid UTF-8
    sequence (at its first byte) and one U+FFFD per invalid byte."""
    code_point, length, covered = utf8_structure(b)
    is_char = tf.logical_and(b >= 0, tf.logical_not(covered))
    code_point = tf.where(length > 0, code_point, REPLACEMENT_CHAR)
    return code_point, is_char


def encode_utf8(code_point: tf.Tensor):
    """Code points (any shape, valid scalar values) -> ``(length, byte0, byte1, byte2, byte3)``."""
    cp = code_point
    length = tf.where(cp < 0x80, 1, tf.where(cp < 0x800, 2, tf.where(cp < 0x10000, 3, 4)))

    def six(k):  # bits 6k .. 6k+5
        return tf.math.floormod(tf.math.floordiv(cp, 64**k), 64)

    byte0 = tf.where(
        length == 1,
        cp,
        tf.where(
            length == 2,
            0xC0 + tf.math.floordiv(cp, 64),
            tf.where(length == 3, 0xE0 + tf.math.floordiv(cp, 4096), 0xF0 + tf.math.floordiv(cp, 262144)),
        ),
    )
    byte1 = 0x80 + tf.where(length == 2, six(0), tf.where(length == 3, six(1), six(2)))
    byte2 = 0x80 + tf.where(length == 3, six(0), six(1))
    byte3 = 0x80 + six(0)
    return length, byte0, byte1, byte2, byte3


def compact_rows(values: tf.Tensor, mask: tf.Tensor, pad_value: int = 0):
    """Left-align the ``mask``-ed entries of every row of ``values`` (B, W).

    Returns ``(compacted (B, K), lengths (B,))`` with ``K = max(1, max(lengths))`` and
    ``pad_value`` after each row's entries.
    """
    count = tf.cast(mask, tf.int32)
    lengths = tf.reduce_sum(count, axis=1)
    width = tf.maximum(tf.reduce_max(tf.concat([lengths, [0]], axis=0)), 1)
    target = tf.cumsum(count, axis=1) - 1
    where = tf.where(mask)  # (K, 2) int64
    columns = tf.cast(tf.gather_nd(target, where), tf.int64)
    indices = tf.stack([where[:, 0], columns], axis=1)
    updates = tf.gather_nd(values, where) - pad_value
    shape = tf.cast(tf.stack([tf.shape(values)[0], width]), tf.int64)
    return tf.scatter_nd(indices, updates, shape) + pad_value, lengths


def join_rows(strings: tf.Tensor, width: int) -> tf.Tensor:
    """``(B, width)`` strings -> ``(B,)``: each row concatenated (TFText>NgramsStringJoin).

    The rows are handed to the op as a ragged tensor of ``width``-long rows (one n-gram of width
    ``width`` each): tensorflow-text 2.21's TensorFlow kernel of this op crashes (double free)
    on a dense 2-D input with more than a few rows.
    """
    batch = tf.shape(strings)[0]
    splits = tf.cast(tf.range(batch + 1) * width, tf.int64)
    ragged = tf.RaggedTensor.from_row_splits(tf.reshape(strings, [-1]), splits, validate=False)
    joined = tf_text.ngrams(
        ragged, width, axis=-1, reduction_type=tf_text.Reduction.STRING_JOIN, string_separator=""
    )
    return tf.reshape(joined.flat_values, [-1])


def _clean_ids(ids, num, vocab_size):
    """The first ``num`` ids of each row; ids outside the vocabulary -> ``<unk>``."""
    width = ids.shape[1]
    inside = tf.range(width)[None, :] < num[:, None]
    ids = tf.where(tf.logical_or(ids < 0, ids >= vocab_size), UNK_ID, ids)
    return tf.where(inside, ids, PAD_ID), inside


class _PagedTable:
    """A code point -> int32 map as two dense levels (block of 256 -> page, page -> value)."""

    def __init__(self, mapping: dict[int, int], default: int):
        level1 = np.zeros([_NUM_BLOCKS], np.int32)
        pages = [np.full([_PAGE], default, np.int32)]
        for cp, value in sorted(mapping.items()):
            block = cp >> 8
            if level1[block] == 0:
                level1[block] = len(pages)
                pages.append(np.full([_PAGE], default, np.int32))
            pages[level1[block]][cp & 0xFF] = value
        self.level1 = tf.constant(level1)
        self.level2 = tf.constant(np.concatenate(pages))

    def lookup(self, code_point: tf.Tensor) -> tf.Tensor:
        cp = tf.clip_by_value(code_point, 0, _MAX_CODE_POINT)
        page = tf.gather(self.level1, tf.math.floordiv(cp, _PAGE))
        return tf.gather(self.level2, page * _PAGE + tf.math.floormod(cp, _PAGE))


# ------------------------------------------------------------------------------------------------
# character tokenizer


class CharCodec:
    """Same ids as ``zoo.tokenizers.CharTokenizer``: one id per code point, ``<unk>`` otherwise."""

    kind = "char"

    def __init__(self, tokenizer):
        code_points = list(tokenizer.code_points)
        self.vocab_size = tokenizer.vocab_size
        offset = self.vocab_size - len(code_points)
        self._table = _PagedTable({cp: offset + i for i, cp in enumerate(code_points)}, UNK_ID)
        surfaces = [b""] * self.vocab_size
        surfaces[UNK_ID] = chr(REPLACEMENT_CHAR).encode("utf-8")
        for i, cp in enumerate(code_points):
            is_surrogate = 0xD800 <= cp < 0xE000
            surfaces[offset + i] = chr(REPLACEMENT_CHAR if is_surrogate else cp).encode("utf-8")
        for special in (PAD_ID, BOS_ID, EOS_ID):
            surfaces[special] = b""
        self._surfaces = tf.constant(surfaces, dtype=tf.string)

    def encode(self, texts: tf.Tensor):
        code_point, is_char = decode_utf8(byte_matrix(texts))
        ids = self._table.lookup(code_point)
        return compact_rows(ids, is_char, pad_value=PAD_ID)

    def decode(self, ids: tf.Tensor, num: tf.Tensor) -> tf.Tensor:
        ids, _ = _clean_ids(ids, num, self.vocab_size)
        return join_rows(tf.gather(self._surfaces, ids), ids.shape[1])


# ------------------------------------------------------------------------------------------------
# SentencePiece BPE


_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def _parse_model(model_proto: bytes):
    from sentencepiece import sentencepiece_model_pb2

    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(model_proto)
    return model, sentencepiece_model_pb2


def _check_sentencepiece(model, pb2) -> None:
    model_type = pb2.TrainerSpec.ModelType.Name(model.trainer_spec.model_type).lower()
    normalizer = model.normalizer_spec
    problems = []
    if model_type != "bpe":
        problems.append(
            f"model_type {model_type!r} (only BPE is rebuilt from LiteRT builtins; "
            "tensorflow-text's FastSentencepieceTokenizer has no byte fallback, so its ids differ "
            "from the zoo tokenizer's whenever a character is outside the vocabulary)"
        )
    if not model.trainer_spec.byte_fallback:
        problems.append("byte_fallback is off")
    if normalizer.precompiled_charsmap:
        problems.append(f"normalization rule {normalizer.name!r} (only 'identity')")
    if normalizer.add_dummy_prefix or normalizer.remove_extra_whitespaces:
        problems.append("add_dummy_prefix / remove_extra_whitespaces")
    if not normalizer.escape_whitespaces or model.trainer_spec.treat_whitespace_as_suffix:
        problems.append("a whitespace handling other than escape_whitespaces")
    for piece in model.pieces:
        if piece.type == _UNUSED:
            problems.append("UNUSED pieces")
            break
        if piece.type == _USER_DEFINED and len(piece.piece) != 1:
            problems.append(f"the multi-character user-defined symbol {piece.piece!r}")
            break
    if problems:
        raise ZooError(
            "LiteRT export: this SentencePiece model is not supported: " + "; ".join(problems)
        )


class SentencePieceBPECodec:
    """Same ids and text as ``zoo.tokenizers.SentencePieceTokenizer`` for its BPE models.

    SentencePiece's BPE encoder, rebuilt: the text's characters (space -> ``▁``) are the initial
    symbols; while some adjacent pair concatenates to a vocabulary piece, the pair whose piece
    has the highest score (the leftmost on a tie) is merged; symbols that are not pieces become
    their UTF-8 byte pieces ``<0xNN>`` (byte fallback). The pair -> piece table is a sorted array
    of ``left * S + right`` keys searched with a fixed number of binary-search steps.

    Decoding follows SentencePiece's ``DecodeIds``: ``▁`` -> space, ``<unk>`` -> its surface,
    control ids -> nothing, and a run of byte pieces is decoded as UTF-8 with one U+FFFD per
    invalid byte.
    """

    kind = "sentencepiece"

    def __init__(self, tokenizer):
        model, pb2 = _parse_model(tokenizer.model_proto)
        _check_sentencepiece(model, pb2)
        pieces = [p.piece for p in model.pieces]
        types = [p.type for p in model.pieces]
        scores = np.array([p.score for p in model.pieces], np.float32)
        vocab = len(pieces)
        self.vocab_size = vocab
        mergeable = {p: i for i, p in enumerate(pieces) if types[i] == _NORMAL}
        user_chars = {p: i for i, p in enumerate(pieces) if types[i] == _USER_DEFINED}

        # symbols: piece ids, then single characters that occur inside pieces but are no piece
        extra: dict[str, int] = {}
        for piece in mergeable:
            for ch in piece:
                if ch not in mergeable and ch not in user_chars and ch not in extra:
                    extra[ch] = vocab + len(extra)
        num_symbols = vocab + len(extra)
        if num_symbols * num_symbols > _INT32_LIMIT:
            raise ZooError(f"LiteRT export: SentencePiece vocabulary too large ({vocab} pieces)")

        # initial symbol of each (normalised) code point; -1 = not a symbol
        initial = {ord(p): i for p, i in {**mergeable, **user_chars}.items() if len(p) == 1}
        initial.update({ord(ch): i for ch, i in extra.items()})
        self._initial = _PagedTable(initial, -1)
        self._extra_cp = tf.constant([ord(ch) for ch in extra] or [0], tf.int32)

        def symbol(text):
            if text in mergeable:
                return mergeable[text]
            return extra.get(text)  # None for user-defined (frozen) and multi-char non-pieces

        # every (left, right) -> piece merge, keyed by left * S + right
        ranks = {s: r for r, s in enumerate(sorted(set(scores.tolist()), reverse=True))}
        table: dict[int, tuple[int, int]] = {}
        for piece, pid in mergeable.items():
            for k in range(1, len(piece)):
                left, right = symbol(piece[:k]), symbol(piece[k:])
                if left is not None and right is not None:
                    table[left * num_symbols + right] = (pid, ranks[float(scores[pid])])
        keys = sorted(table) or [-2]
        self._keys = tf.constant(np.array(keys, np.int32))
        self._merged = tf.constant(np.array([table.get(k, (0, 0))[0] for k in keys], np.int32))
        self._rank = tf.constant(np.array([table.get(k, (0, 0))[1] for k in keys], np.int32))
        self._num_keys = len(keys)
        self._search_steps = max(1, int(np.ceil(np.log2(len(keys) + 1))) + 1)
        self._num_symbols = num_symbols

        byte_ids = np.full([256], UNK_ID, np.int32)
        byte_values = np.full([vocab], -1, np.int32)
        for i, piece in enumerate(pieces):
            if types[i] == _BYTE:
                value = int(piece[3:5], 16)
                byte_ids[value] = i
                byte_values[i] = value
        if (byte_ids == UNK_ID).any():
            raise ZooError("LiteRT export: the SentencePiece model lacks some <0xNN> byte pieces")
        self._byte_ids = tf.constant(byte_ids)
        self._byte_values = tf.constant(byte_values)

        unk_surface = model.trainer_spec.unk_surface
        surfaces = []
        for i, piece in enumerate(pieces):
            if types[i] in (_NORMAL, _USER_DEFINED):
                surfaces.append(piece.replace(SPACE_SYMBOL, " ").encode("utf-8"))
            elif types[i] == _UNKNOWN:
                surfaces.append(unk_surface.encode("utf-8"))
            else:  # control and byte pieces (bytes are handled separately)
                surfaces.append(b"")
        surfaces += [bytes([v]) for v in range(256)] + [chr(REPLACEMENT_CHAR).encode("utf-8")]
        self._surfaces = tf.constant(surfaces, dtype=tf.string)

    # -- encoding -------------------------------------------------------------------------------

    def _find(self, key):
        """Lower bound of ``key`` in the sorted keys: ``(found, position)``."""
        lo = tf.zeros_like(key)
        hi = tf.fill(tf.shape(key), self._num_keys)
        for _ in range(self._search_steps):
            active = lo < hi
            mid = tf.math.floordiv(lo + hi, 2)
            value = tf.gather(self._keys, tf.minimum(mid, self._num_keys - 1))
            right = tf.logical_and(active, value < key)
            left = tf.logical_and(active, value >= key)
            lo = tf.where(right, mid + 1, lo)
            hi = tf.where(left, mid, hi)
        position = tf.minimum(lo, self._num_keys - 1)
        return tf.equal(tf.gather(self._keys, position), key), position

    def _merge(self, symbols):
        """Apply BPE merges until no adjacent pair is a piece. ``symbols`` (B, N), N >= 2."""
        width = tf.shape(symbols)[1]
        columns = tf.range(width)[None, :]
        pair_columns = tf.range(width - 1)[None, :]
        big = tf.constant(_INT32_LIMIT, tf.int32)
        stride = self._num_symbols

        def body(symbols, active):
            left, right = symbols[:, :-1], symbols[:, 1:]
            both = tf.logical_and(left >= 0, right >= 0)
            key = tf.where(both, left * stride + right, -1)
            found, position = self._find(key)
            found = tf.logical_and(both, found)
            rank = tf.where(found, tf.gather(self._rank, position), big)
            best_rank = tf.reduce_min(rank, axis=1)
            merges = best_rank < big
            # the leftmost pair of the best rank
            leftmost = tf.where(tf.equal(rank, best_rank[:, None]), pair_columns, big)
            best = tf.reduce_min(leftmost, axis=1)
            best = tf.minimum(best, width - 2)
            merged = tf.gather(self._merged, tf.gather(position, best, batch_dims=1))
            best = tf.where(merges, best, width)
            source = columns + tf.cast(columns > best[:, None], tf.int32)
            shifted = tf.gather(symbols, tf.minimum(source, width - 1), batch_dims=1)
            shifted = tf.where(source < width, shifted, -1)
            symbols = tf.where(columns == best[:, None], merged[:, None], shifted)
            return symbols, merges

        active = tf.fill(tf.shape(symbols)[:1], True)
        symbols, _ = tf.while_loop(
            lambda symbols, active: tf.reduce_any(active), body, (symbols, active)
        )
        return symbols

    def encode(self, texts: tf.Tensor):
        code_point, is_char = decode_utf8(byte_matrix(texts))
        code_point = tf.where(code_point == 0x20, ord(SPACE_SYMBOL), code_point)
        chars, _ = compact_rows(code_point, is_char, pad_value=-1)
        batch = tf.shape(chars)[0]
        chars = tf.concat([chars, tf.fill(tf.stack([batch, 1]), -1)], axis=1)  # N >= 2
        initial = self._initial.lookup(chars)
        symbols = tf.where(chars < 0, -1, tf.where(initial < 0, -chars - 2, initial))
        symbols = self._merge(symbols)

        # pieces -> ids; other symbols (single characters) -> their UTF-8 byte pieces
        vocab = self.vocab_size
        known = tf.logical_and(symbols >= 0, symbols < vocab)
        extra_index = tf.clip_by_value(symbols - vocab, 0, tf.shape(self._extra_cp)[0] - 1)
        unknown_cp = tf.where(
            symbols >= vocab,
            tf.gather(self._extra_cp, extra_index),
            tf.where(symbols <= -2, -symbols - 2, 0),
        )
        unknown = tf.logical_or(symbols >= vocab, symbols <= -2)
        length, *utf8 = encode_utf8(unknown_cp)
        slots, masks = [], []
        for k, byte in enumerate(utf8):
            byte_id = tf.gather(self._byte_ids, tf.clip_by_value(byte, 0, 255))
            if k == 0:
                slots.append(tf.where(known, symbols, byte_id))
                masks.append(tf.logical_or(known, unknown))
            else:
                slots.append(byte_id)
                masks.append(tf.logical_and(unknown, length > k))
        slots = tf.reshape(tf.stack(slots, axis=2), tf.stack([batch, -1]))
        masks = tf.reshape(tf.stack(masks, axis=2), tf.stack([batch, -1]))
        return compact_rows(slots, masks, pad_value=PAD_ID)

    # -- decoding -------------------------------------------------------------------------------

    def decode(self, ids: tf.Tensor, num: tf.Tensor) -> tf.Tensor:
        width = ids.shape[1]
        ids, inside = _clean_ids(ids, num, self.vocab_size)
        # zoo's detokenize drops pad/bos/eos before decoding, so byte runs join across them
        keep = tf.logical_and(inside, tf.logical_and(ids != BOS_ID, ids != EOS_ID))
        keep = tf.logical_and(keep, ids != PAD_ID)
        ids, _ = compact_rows(ids, keep, pad_value=PAD_ID)
        ids = tf.pad(ids, tf.stack([[0, 0], [0, width - tf.shape(ids)[1]]]))
        ids = tf.reshape(ids, [-1, width])
        value = tf.gather(self._byte_values, ids)
        is_byte = value >= 0
        _, length, covered = utf8_structure(value)
        valid = tf.logical_and(is_byte, tf.logical_or(length > 0, covered))
        vocab = self.vocab_size
        index = tf.where(is_byte, tf.where(valid, vocab + value, vocab + 256), ids)
        return join_rows(tf.gather(self._surfaces, index), width)


def build_codec(tokenizer):
    """The LiteRT-friendly codec of a zoo tokenizer; ``ZooError`` for unsupported kinds."""
    kind = getattr(tokenizer, "kind", "")
    if kind == "char":
        return CharCodec(tokenizer)
    if kind == "sentencepiece":
        return SentencePieceBPECodec(tokenizer)
    raise ZooError(
        f"LiteRT export supports the {' and '.join(SUPPORTED_KINDS)} tokenizers, not {kind!r}: "
        "the word tokenizer needs a string -> id table over whitespace-split words and the "
        "wordpiece tokenizer a case-folding/normalising pre-tokenizer that have no LiteRT "
        "builtin equivalent here; export those runs as a SavedModel (export.saved_model)"
    )
