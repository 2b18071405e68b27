"""Byte-level BPE, GPT-2's tokenizer, in-graph: the ids of ``vocab.json`` + ``merges.txt``.

    tok = ByteBPETokenizer.from_files("gpt2/vocab.json", "gpt2/merges.txt")
    tok.tokenize(tf.constant(["Hello world"]))   # [[15496, 995]] with GPT-2's files
    tok.decode([15496, 995])                     # "Hello world"

Text -> UTF-8 bytes -> GPT-2's pre-tokenizer pieces -> each byte as its printable stand-in
(``byte_alphabet``) -> BPE merges inside each piece -> ids; all TensorFlow ops that are also
LiteRT builtins (``zoo/tokenizers/_byte_bpe_ops.py``), no regex op and no Python callback, so a
SavedModel (and a LiteRT flatbuffer) carries the tokenizer. Ids are exactly those of Hugging
Face's ``GPT2TokenizerFast`` for the same files, the special token ``<|endoftext|>`` included
(it is matched in the text, as Hugging Face does).

Nothing is reserved: id 0 is a real token (``!`` in GPT-2), so this tokenizer overrides the
special ids of ``Tokenizer``: ``<|endoftext|>`` is ``bos_id``, ``eos_id``, ``unk_id`` and
``pad_id`` (as in GPT-2), and generation suppresses no id. Detokenizing keeps every id (special
tokens render as their text) and replaces invalid UTF-8 with U+FFFD, as ``decode`` does.
"""

from __future__ import annotations

import functools
import json
import os
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf

from zoo.errors import ZooError
from zoo.tokenizers import _byte_bpe_ops as ops
from zoo.tokenizers._util import as_string_batch
from zoo.tokenizers.base import Tokenizer

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
END_OF_TEXT = "<|endoftext|>"
_MERGES_HEADER = "#version: 0.2"
# White_Space in Unicode: what \s matches in Hugging Face's (Oniguruma) regex
_WHITE_SPACE = frozenset(
    [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
     0x202F, 0x205F, 0x3000]
)
_PAGE = 256


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in of each byte value (index = byte): the byte's own Latin-1
    character when that is printable (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``), otherwise
    ``chr(256 + n)`` for the n-th remaining byte (so the space is ``Ġ`` and ``\\n`` is ``Ċ``)."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    alphabet, extra = [], 0
    for value in range(256):
        if value in printable:
            alphabet.append(chr(value))
        else:
            alphabet.append(chr(256 + extra))
            extra += 1
    return alphabet


def char_class(code_point: int) -> int:
    """Pre-tokenizer class of a code point: ``LETTER`` (\\p{L}), ``NUMBER`` (\\p{N}), ``SPACE``
    (\\s) or ``OTHER``, from Python's ``unicodedata``."""
    if code_point in _WHITE_SPACE:
        return ops.SPACE
    category = unicodedata.category(chr(code_point))
    return {"L": ops.LETTER, "N": ops.NUMBER}.get(category[0], ops.OTHER)


@functools.lru_cache(maxsize=1)
def _class_table() -> tuple[np.ndarray, np.ndarray]:
    """``char_class`` of every code point as two levels: block (cp // 256) -> page, page ->
    classes. Identical pages are stored once (124 pages for Unicode 14)."""
    pages: dict[bytes, int] = {}
    level1 = np.zeros([0x110000 // _PAGE], np.int32)
    for block in range(level1.size):
        page = bytes(char_class(block * _PAGE + i) for i in range(_PAGE))
        level1[block] = pages.setdefault(page, len(pages))
    level2 = np.frombuffer(b"".join(pages), np.uint8).astype(np.int32)
    return level1, level2


class ByteBPETokenizer(Tokenizer):
    """GPT-2's byte-level BPE (see the module docstring).

    Args:
        vocab: token string -> id, the ids ``0..len(vocab)-1`` (``vocab.json``).
        merges: ``(left, right)`` token pairs, highest priority first (``merges.txt``).
        name: ``tf.Module`` name.

    Raises ``ZooError`` when the vocabulary lacks a byte's token or a merge names unknown tokens.
    """

    kind = "byte_bpe"

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]],
                 name: str | None = None):
        super().__init__(name=name)
        self._vocab = _check_vocab(vocab)
        self._merges = [tuple(pair) for pair in merges]
        size = len(self._vocab)
        alphabet = byte_alphabet()
        missing = [f"0x{v:02X}" for v, ch in enumerate(alphabet) if ch not in self._vocab]
        if missing:
            raise ZooError(
                f"byte-level BPE: the vocabulary lacks the token of byte(s) {', '.join(missing[:8])}"
            )
        self._eot = self._vocab.get(END_OF_TEXT)
        self._specials = [] if self._eot is None else [(END_OF_TEXT.encode("utf-8"), self._eot)]

        table: dict[int, tuple[int, int]] = {}  # key -> (rank, merged id)
        for rank, (left, right) in enumerate(self._merges):
            ids = [self._vocab.get(t) for t in (left, right, left + right)]
            if None in ids:
                unknown = [t for t, i in zip((left, right, left + right), ids, strict=True)
                           if i is None]
                raise ZooError(
                    f"merges.txt merge {rank + 1} ({left} {right}) names a token that is not in "
                    f"the vocabulary: {unknown[0]!r}"
                )
            table.setdefault(ids[0] * size + ids[1], (rank, ids[2]))
        keys = sorted(table) or [-1]
        level1, level2 = _class_table()
        self._class_level1 = tf.constant(level1)
        self._class_level2 = tf.constant(level2)
        self._byte_ids = tf.constant([self._vocab[ch] for ch in alphabet], tf.int32)
        self._merge_table = (
            tf.constant(np.array(keys, np.int64)),
            tf.constant(np.array([table.get(k, (0, 0))[0] for k in keys], np.int32)),
            tf.constant(np.array([table.get(k, (0, 0))[1] for k in keys], np.int32)),
            size,
            max(1, int(np.ceil(np.log2(len(keys) + 1))) + 1),
        )
        decoder = {ch: value for value, ch in enumerate(alphabet)}
        tokens = sorted(self._vocab, key=self._vocab.get)
        surfaces = [_surface(token, decoder) for token in tokens]
        self._max_token_bytes = max(len(s) for s in surfaces)
        self._surfaces = tf.constant(surfaces + [b""], tf.string)
        # traced once, then shared by every caller (eager calls, each export signature)
        self._encode_fn = tf.function(
            self.encode_dense, input_signature=[tf.TensorSpec([None], tf.string)],
            autograph=False,
        )
        self._decode_fn = tf.function(
            self._decode_joined,
            input_signature=[tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32)],
            autograph=False,
        )

    # -- in-graph ---------------------------------------------------------------------------

    def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """Strings ``(batch,)`` -> ragged int32 ids ``(batch, None)`` (GPT-2's ids)."""
        batch, scalar = as_string_batch(texts)
        ids, lengths = self._encode_fn(batch)
        ragged = tf.RaggedTensor.from_tensor(ids, lengths=lengths)
        return ragged[0] if scalar else ragged

    def detokenize(self, ids: tf.Tensor | tf.RaggedTensor) -> tf.Tensor:
        """Ids ``(batch, None)`` (ragged or dense; every id is a token) -> strings ``(batch,)``."""
        single = False
        if isinstance(ids, tf.RaggedTensor):
            ids = tf.cast(ids, tf.int32)
            lengths = tf.cast(ids.row_lengths(), tf.int32)
            dense = ids.to_tensor(default_value=-1)
        else:
            dense = tf.cast(tf.convert_to_tensor(ids), tf.int32)
            if dense.shape.rank == 1:
                dense, single = dense[tf.newaxis], True
            lengths = tf.fill(tf.shape(dense)[:1], tf.shape(dense)[1])
        texts = self._decode_fn(dense, lengths)
        return texts[0] if single else texts

    def encode_dense(self, texts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Strings ``(B,)`` -> ``(ids (B, W) left-aligned, -1 after each row, lengths (B,))``.
        Builds only LiteRT builtins plus ``TFText>ByteSplitWithOffsets``."""
        return ops.encode(texts, self._char_class, self._byte_ids, self._specials,
                          self._merge_table)

    def decode_dense(self, ids: tf.Tensor, lengths: tf.Tensor, join, width: int | None = None):
        """Ids ``(B, M)`` (the first ``lengths[b]`` of each row) -> strings ``(B,)``.

        ``join`` concatenates the strings of each row of a ``(B, K)`` matrix; ``width`` is a
        static bound on a row's bytes for a ``join`` that needs static shapes (LiteRT: use
        ``M * max_token_bytes``). See ``_byte_bpe_ops.decode``."""
        return ops.decode(ids, lengths, self._surfaces, join, width)

    def _decode_joined(self, ids: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        return self.decode_dense(ids, lengths, _reduce_join)

    def _char_class(self, code_point: tf.Tensor) -> tf.Tensor:
        cp = tf.clip_by_value(code_point, 0, 0x10FFFF)
        page = tf.gather(self._class_level1, tf.math.floordiv(cp, _PAGE))
        return tf.gather(self._class_level2, page * _PAGE + tf.math.floormod(cp, _PAGE))

    # -- vocabulary and special ids ----------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def vocabulary(self) -> dict[str, int]:
        """Token string -> id (the contents of ``vocab.json``)."""
        return dict(self._vocab)

    @property
    def merges(self) -> list[tuple[str, str]]:
        """The merges, highest priority first."""
        return list(self._merges)

    @property
    def max_token_bytes(self) -> int:
        """The longest token's length in bytes."""
        return self._max_token_bytes

    @property
    def end_of_text_id(self) -> int | None:
        """Id of ``<|endoftext|>`` (None when the vocabulary has none)."""
        return self._eot

    @property
    def pad_id(self) -> int | None:
        return self._eot

    @property
    def unk_id(self) -> int | None:
        return self._eot

    @property
    def bos_id(self) -> int | None:
        return self._eot

    @property
    def eos_id(self) -> int | None:
        return self._eot

    @property
    def suppressed_ids(self) -> tuple[int, ...]:
        """Nothing: every id of the vocabulary may be generated (as in GPT-2)."""
        return ()

    # -- files --------------------------------------------------------------------------------

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "merges": len(self._merges),
                "end_of_text_id": self._eot}

    def _save_files(self, directory: str) -> None:
        with open(os.path.join(directory, VOCAB_FILE), "w", encoding="utf-8") as f:
            json.dump(self._vocab, f, ensure_ascii=False)
        with open(os.path.join(directory, MERGES_FILE), "w", encoding="utf-8") as f:
            f.write(_MERGES_HEADER + "\n")
            f.writelines(f"{left} {right}\n" for left, right in self._merges)

    @classmethod
    def _from_files(cls, directory: str, config: dict) -> ByteBPETokenizer:
        return cls.from_files(os.path.join(directory, VOCAB_FILE),
                              os.path.join(directory, MERGES_FILE))

    @classmethod
    def from_files(cls, vocab_file: str, merges_file: str) -> ByteBPETokenizer:
        """Read Hugging Face / OpenAI ``vocab.json`` and ``merges.txt`` (``ZooError`` naming the
        file when one is missing or malformed)."""
        return cls(read_vocab(vocab_file), read_merges(merges_file))

    @classmethod
    def train(cls, texts: Iterable[str] | str, vocab_size: int | None = None,
              **kwargs) -> ByteBPETokenizer:
        """Not supported: a byte-level BPE comes with its checkpoint (``zoo import gpt2``)."""
        raise ZooError(
            "the byte_bpe tokenizer is not trained by the zoo: it is read from vocab.json and "
            "merges.txt (zoo import gpt2 CHECKPOINT_DIR, or ByteBPETokenizer.from_files)"
        )


# ------------------------------------------------------------------------------------------------
# files and helpers


def read_vocab(path: str) -> dict[str, int]:
    """``vocab.json``: token string -> id."""
    try:
        with open(path, encoding="utf-8") as f:
            vocab = json.load(f)
    except FileNotFoundError:
        raise ZooError(f"{path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ZooError(f"{path} is not a valid vocab.json: {err}") from None
    if not isinstance(vocab, dict):
        raise ZooError(f"{path} is not a valid vocab.json: expected an object token -> id")
    return vocab


def read_merges(path: str) -> list[tuple[str, str]]:
    """``merges.txt``: one ``left right`` pair a line; a ``#version`` first line is skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise ZooError(f"{path} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ZooError(f"{path} cannot be read: {err}") from None
    merges = []
    for number, line in enumerate(lines, start=1):
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ZooError(f"{path} line {number}: expected two tokens separated by a space, "
                           f"got {line[:60]!r}")
        merges.append((parts[0], parts[1]))
    return merges


def _check_vocab(vocab: dict) -> dict[str, int]:
    if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
               for k, v in vocab.items()):
        raise ZooError("byte-level BPE: the vocabulary must map token strings to integer ids")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ZooError(f"byte-level BPE: the vocabulary's ids must be 0..{len(vocab) - 1}, "
                       "each once")
    return dict(vocab)


def _surface(token: str, decoder: dict[str, int]) -> bytes:
    """The bytes a token stands for (special tokens and other non-byte tokens: their text)."""
    if token == END_OF_TEXT or not all(ch in decoder for ch in token):
        return token.encode("utf-8")
    return bytes(decoder[ch] for ch in token)


def _reduce_join(strings: tf.Tensor) -> tf.Tensor:
    return tf.strings.reduce_join(strings, axis=1)
