"""Whitespace word tokenizer (PTB-style word-level language modelling)."""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Sequence

import tensorflow as tf

from zoo.errors import ZooError
from zoo.tokenizers._util import as_string_batch, check_vocab_size, clean_ids, iter_texts
from zoo.tokenizers.base import NUM_SPECIAL, SPECIAL_TOKENS, UNK_ID, Tokenizer

WORD_VOCAB_FILE = "vocab.txt"
UNK_TOKEN = SPECIAL_TOKENS[UNK_ID]


class WordTokenizer(Tokenizer):
    """Split on ASCII whitespace; one id per known word, ``<unk>`` (1) for the rest.

    The literal word ``<unk>`` (PTB writes it) maps to id 1 as well. The other reserved token
    strings (``<pad>``, ``<bos>``, ``<eos>``) are never learned and tokenize to ``<unk>``, so plain
    text never yields ids 0, 2 or 3. ``detokenize`` joins words with single spaces (the original
    spacing and line breaks are not preserved) and renders id 1 as ``<unk>``.

    In-graph: ``tf.strings.split`` + a string -> id ``StaticHashTable`` built from constants, and a
    constant gather + ``tf.strings.reduce_join`` back.
    """

    kind = "word"

    def __init__(self, words: Sequence[str], name: str | None = None):
        """``words``: the learned vocabulary, ``words[i]`` has id ``4 + i``."""
        super().__init__(name=name)
        words = [str(w) for w in words]
        if len(set(words)) != len(words):
            raise ZooError("word tokenizer: duplicate words in the vocabulary")
        bad = [
            w for w in words if not w or w in SPECIAL_TOKENS or len(w.encode("utf-8").split()) != 1
        ]
        if bad:
            raise ZooError(f"word tokenizer: invalid vocabulary entries {bad[:5]!r}")
        self._words = words
        keys = [*words, UNK_TOKEN]
        values = [*range(NUM_SPECIAL, NUM_SPECIAL + len(words)), UNK_ID]
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(keys, dtype=tf.string), tf.constant(values, dtype=tf.int32)
            ),
            default_value=UNK_ID,
        )
        self._id_to_word = tf.constant(list(SPECIAL_TOKENS) + words, dtype=tf.string)

    # -- in-graph ---------------------------------------------------------------------------

    def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """Strings ``(batch,)`` -> ragged int32 word ids ``(batch, None)``."""
        batch, scalar = as_string_batch(texts)
        words = tf.strings.split(batch)
        ids = words.with_flat_values(self._table.lookup(words.flat_values))
        return ids[0] if scalar else ids

    def detokenize(self, ids: tf.Tensor | tf.RaggedTensor) -> tf.Tensor:
        """Ids ``(batch, None)`` -> words joined by single spaces; pad/bos/eos dropped."""
        ragged, single = clean_ids(ids, self.vocab_size)
        words = ragged.with_flat_values(tf.gather(self._id_to_word, ragged.flat_values))
        texts = tf.strings.reduce_join(words, axis=-1, separator=" ")
        return texts[0] if single else texts

    # -- vocabulary -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return NUM_SPECIAL + len(self._words)

    @property
    def vocabulary(self) -> list[str]:
        """Token strings, index = id (reserved tokens first)."""
        return list(SPECIAL_TOKENS) + list(self._words)

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size}

    def _save_files(self, directory: str) -> None:
        with open(
            os.path.join(directory, WORD_VOCAB_FILE), "w", encoding="utf-8", newline="\n"
        ) as f:
            f.write("\n".join(self.vocabulary) + "\n")

    @classmethod
    def _from_files(cls, directory: str, config: dict) -> WordTokenizer:
        with open(os.path.join(directory, WORD_VOCAB_FILE), encoding="utf-8", newline="\n") as f:
            entries = f.read().split("\n")
        if entries and entries[-1] == "":
            entries.pop()
        if tuple(entries[:NUM_SPECIAL]) != SPECIAL_TOKENS:
            raise ZooError(
                f"word tokenizer: {WORD_VOCAB_FILE} does not start with {SPECIAL_TOKENS}"
            )
        return cls(entries[NUM_SPECIAL:])

    # -- training ---------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | str,
        vocab_size: int | None = None,
        min_frequency: int = 1,
        **kwargs,
    ) -> WordTokenizer:
        """Learn the most frequent whitespace-separated words of ``texts``.

        Args:
            texts: iterable of strings (documents or lines); a single ``str`` is one document.
            vocab_size: optional cap on the number of ids (reserved ones included).
            min_frequency: drop words seen fewer times than this.

        Order: most frequent first, ties broken by the word's UTF-8 bytes (deterministic).
        """
        if kwargs:
            raise ZooError(f"word tokenizer: unknown option(s) {sorted(kwargs)}")
        check_vocab_size(vocab_size, NUM_SPECIAL + 1, cls.kind)
        counts: collections.Counter[bytes] = collections.Counter()
        for text in iter_texts(texts):
            # bytes.split() splits on ASCII whitespace exactly like tf.strings.split.
            counts.update(text.encode("utf-8").split())
        specials = {tok.encode("utf-8") for tok in SPECIAL_TOKENS}
        order = sorted(
            (
                item
                for item in counts.items()
                if item[1] >= min_frequency and item[0] not in specials
            ),
            key=lambda item: (-item[1], item[0]),
        )
        if vocab_size is not None:
            order = order[: int(vocab_size) - NUM_SPECIAL]
        return cls([word.decode("utf-8") for word, _ in order])
