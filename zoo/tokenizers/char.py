"""Character (Unicode code point) tokenizer."""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf

from zoo.errors import ZooError
from zoo.tokenizers._util import as_string_batch, check_vocab_size, clean_ids, iter_texts
from zoo.tokenizers.base import NUM_SPECIAL, SPECIAL_TOKENS, UNK_ID, Tokenizer

CHAR_VOCAB_FILE = "char_vocab.json"
REPLACEMENT_CHAR = 0xFFFD


class CharTokenizer(Tokenizer):
    """One id per Unicode code point.

    Ids 0-3 are the reserved tokens; id ``4 + i`` is ``code_points[i]``. ``train`` orders the code
    points most frequent first, ties broken by code point, so the same corpus always gives the same
    ids. Code points outside the vocabulary tokenize to ``<unk>`` (1), which detokenizes to U+FFFD;
    any in-vocabulary text round-trips exactly (newlines, spaces, accents, CJK, emoji).

    Everything is in-graph: ``tf.strings.unicode_decode`` + a ``StaticHashTable`` (code point ->
    id) to tokenize, a constant gather (id -> code point) + ``tf.strings.unicode_encode`` to
    detokenize. The table is built from constants, so a SavedModel carries it.
    """

    kind = "char"

    def __init__(self, code_points: Sequence[int], name: str | None = None):
        super().__init__(name=name)
        code_points = [int(cp) for cp in code_points]
        if len(set(code_points)) != len(code_points):
            raise ZooError("char tokenizer: duplicate code points in the vocabulary")
        if any(cp < 0 or cp > 0x10FFFF for cp in code_points):
            raise ZooError("char tokenizer: code point out of the Unicode range")
        self._code_points = code_points
        keys = np.asarray(code_points, dtype=np.int32)
        values = np.arange(NUM_SPECIAL, NUM_SPECIAL + len(code_points), dtype=np.int32)
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.constant(values)),
            default_value=UNK_ID,
        )
        # id -> code point; the reserved ids map to U+FFFD (pad/bos/eos are dropped before this).
        id_to_cp = np.concatenate(
            [np.full([NUM_SPECIAL], REPLACEMENT_CHAR, dtype=np.int32), keys]
        ).astype(np.int32)
        self._id_to_code_point = tf.constant(id_to_cp)

    # -- in-graph ---------------------------------------------------------------------------

    def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """Strings ``(batch,)`` -> ragged int32 ids ``(batch, None)``, one id per code point.

        Invalid UTF-8 bytes decode to U+FFFD (then usually ``<unk>``)."""
        batch, scalar = as_string_batch(texts)
        code_points = tf.strings.unicode_decode(batch, "UTF-8", errors="replace")
        ids = code_points.with_flat_values(self._table.lookup(code_points.flat_values))
        return ids[0] if scalar else ids

    def detokenize(self, ids: tf.Tensor | tf.RaggedTensor) -> tf.Tensor:
        """Ids ``(batch, None)`` -> strings ``(batch,)``; pad/bos/eos dropped, ``<unk>`` -> U+FFFD."""
        ragged, single = clean_ids(ids, self.vocab_size)
        code_points = ragged.with_flat_values(tf.gather(self._id_to_code_point, ragged.flat_values))
        texts = tf.strings.unicode_encode(code_points, "UTF-8")
        return texts[0] if single else texts

    # -- vocabulary -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return NUM_SPECIAL + len(self._code_points)

    @property
    def code_points(self) -> list[int]:
        """The learned code points; ``code_points[i]`` has id ``4 + i``."""
        return list(self._code_points)

    @property
    def vocabulary(self) -> list[str]:
        """Token strings, index = id (reserved tokens first)."""
        return list(SPECIAL_TOKENS) + [chr(cp) for cp in self._code_points]

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size}

    def _save_files(self, directory: str) -> None:
        path = os.path.join(directory, CHAR_VOCAB_FILE)
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"code_points": list(self._code_points)}, f)

    @classmethod
    def _from_files(cls, directory: str, config: dict) -> CharTokenizer:
        path = os.path.join(directory, CHAR_VOCAB_FILE)
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return cls(data["code_points"])

    # -- training ---------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | str,
        vocab_size: int | None = None,
        min_frequency: int = 1,
        always_include: str = "\n",
        **kwargs,
    ) -> CharTokenizer:
        """Learn the code points of ``texts`` (documents or lines).

        Args:
            texts: iterable of strings; a single ``str`` is one document.
            vocab_size: optional cap on the number of ids (reserved ones included); the least
                frequent code points are dropped.
            min_frequency: drop code points seen fewer times than this.
            always_include: characters kept in the vocabulary even if unseen (default a newline,
                so a tokenizer trained on lines can still encode multi-line text).
        """
        if kwargs:
            raise ZooError(f"char tokenizer: unknown option(s) {sorted(kwargs)}")
        check_vocab_size(vocab_size, NUM_SPECIAL + 1, cls.kind)
        counts: collections.Counter[str] = collections.Counter()
        for text in iter_texts(texts):
            counts.update(text)
        learned = {ch: n for ch, n in counts.items() if n >= min_frequency}
        forced = list(dict.fromkeys(always_include))
        order = sorted(learned.items(), key=lambda item: (-item[1], ord(item[0])))
        chosen = list(forced)
        chosen_set = set(chosen)
        limit = None if vocab_size is None else int(vocab_size) - NUM_SPECIAL
        for ch, _ in order:
            if limit is not None and len(chosen) >= limit:
                break
            if ch not in chosen_set:
                chosen.append(ch)
                chosen_set.add(ch)
        if limit is not None:
            chosen = chosen[:limit]
        chosen.sort(key=lambda ch: (-counts.get(ch, 0), ord(ch)))
        return cls([ord(ch) for ch in chosen])
