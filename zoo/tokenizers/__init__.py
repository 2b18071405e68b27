"""Tokenizers: text <-> int32 ids, in-graph (``tf.function`` / SavedModel safe).

tok = train_tokenizer("sentencepiece", texts, vocab_size=8000)
ids = tok.tokenize(tf.constant(["Hello\\nworld"]))   # tf.RaggedTensor int32
tok.detokenize(ids)                                 # [b"Hello\\nworld"]
tok.save("runs/x/tokenizer"); tok = load_tokenizer("runs/x/tokenizer")
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from zoo.errors import ZooError
from zoo.progress import stage
from zoo.tokenizers.base import (
    BOS_ID,
    EOS_ID,
    NUM_SPECIAL,
    PAD_ID,
    SPECIAL_TOKENS,
    TOKENIZER_CONFIG,
    UNK_ID,
    Tokenizer,
)
from zoo.tokenizers.byte_bpe import ByteBPETokenizer
from zoo.tokenizers.char import CharTokenizer
from zoo.tokenizers.sentencepiece import SentencePieceTokenizer
from zoo.tokenizers.word import WordTokenizer
from zoo.tokenizers.wordpiece import WordPieceTokenizer

TOKENIZERS: dict[str, type[Tokenizer]] = {
    "char": CharTokenizer,
    "word": WordTokenizer,
    "wordpiece": WordPieceTokenizer,
    "sentencepiece": SentencePieceTokenizer,
}
# Read from their files, never trained here (zoo import gpt2): known to load_tokenizer only.
IMPORTED_TOKENIZERS: dict[str, type[Tokenizer]] = {"byte_bpe": ByteBPETokenizer}

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "NUM_SPECIAL",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "TOKENIZERS",
    "IMPORTED_TOKENIZERS",
    "UNK_ID",
    "ByteBPETokenizer",
    "CharTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "WordPieceTokenizer",
    "WordTokenizer",
    "load_tokenizer",
    "train_tokenizer",
]


def _tokenizer_class(kind: str, kinds: dict = TOKENIZERS) -> type[Tokenizer]:
    try:
        return kinds[kind]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(kinds))
        raise ZooError(f"unknown tokenizer kind {kind!r}; valid kinds: {valid}") from None


def train_tokenizer(
    kind: str, texts: Iterable[str] | str, vocab_size: int | None = None, *,
    verbose: int | None = None, label: str | None = None, **kwargs
) -> Tokenizer:
    """Train a tokenizer of ``kind`` ("char", "word", "wordpiece", "sentencepiece") on ``texts``
    (an iterable of documents or lines). ``vocab_size`` None means the kind's default (char and
    word: everything seen). ``verbose`` > 0 prints the stage and its time on stderr (None: the
    ambient level, see ``zoo.progress``), called ``label`` (default: ``the <kind> tokenizer``).
    Extra keyword arguments go to the class's ``train``."""
    cls = _tokenizer_class(kind)
    wanted = f", vocabulary {vocab_size}" if vocab_size else ""
    with stage(f"training {label or f'the {kind} tokenizer'}{wanted}", verbose) as running:
        tok = cls.train(texts, vocab_size=vocab_size, **kwargs)
        running.detail = f"{tok.vocab_size} ids"
    return tok


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Rebuild a tokenizer written by ``Tokenizer.save(directory)``.

    Raises ``ZooError`` naming the path when ``tokenizer.json`` or the vocabulary files are
    missing or corrupt."""
    directory = os.fspath(directory)
    path = os.path.join(directory, TOKENIZER_CONFIG)
    if not os.path.isfile(path):
        raise ZooError(f"no tokenizer saved at {directory}: {path} is missing")
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ZooError(f"corrupt tokenizer config {path}: {err}") from err
    if not isinstance(saved, dict) or not isinstance(saved.get("config", {}), dict):
        raise ZooError(
            f"corrupt tokenizer config {path}: expected {{'kind': ..., 'config': {{...}}}}"
        )
    if "kind" not in saved:
        raise ZooError(f"corrupt tokenizer config {path}: no 'kind'")
    try:
        cls = _tokenizer_class(saved["kind"], {**TOKENIZERS, **IMPORTED_TOKENIZERS})
    except ZooError as err:
        raise ZooError(f"{path}: {err}") from None
    try:
        return cls._from_files(directory, saved.get("config", {}))
    except ZooError as err:
        raise ZooError(f"cannot load tokenizer from {directory}: {err}") from err
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise ZooError(
            f"cannot load tokenizer from {directory}: {type(err).__name__}: {err}"
        ) from err
