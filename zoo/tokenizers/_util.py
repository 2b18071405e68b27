"""Small helpers shared by the tokenizers (graph-safe id cleaning, corpus iteration)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import tensorflow as tf

from zoo.errors import ZooError
from zoo.tokenizers.base import BOS_ID, EOS_ID, PAD_ID, UNK_ID


def iter_texts(texts: Iterable[str] | str) -> Iterator[str]:
    """Yield the items of ``texts``; a single ``str`` counts as one document, not as characters."""
    if isinstance(texts, (str, bytes)):
        texts = [texts]
    for text in texts:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if not isinstance(text, str):
            raise ZooError(f"tokenizer training expects strings, got {type(text).__name__}")
        yield text


def iter_lines(texts: Iterable[str] | str) -> Iterator[str]:
    """Yield the non-empty lines (split on ``"\\n"`` only) of every text in ``texts``."""
    for text in iter_texts(texts):
        for line in text.split("\n"):
            if line:
                yield line


def as_string_batch(texts) -> tuple[tf.Tensor, bool]:
    """Convert ``texts`` to a string tensor of rank 1; the flag says it was a scalar."""
    texts = tf.convert_to_tensor(texts, dtype=tf.string)
    if texts.shape.rank == 0:
        return texts[tf.newaxis], True
    return texts, False


def clean_ids(ids, vocab_size: int) -> tuple[tf.RaggedTensor, bool]:
    """Turn ragged or dense ids into a 2-D int32 ``tf.RaggedTensor`` ready for decoding.

    Pad, bos and eos are dropped; ids outside ``[0, vocab_size)`` become ``UNK_ID``. A 1-D dense
    input is treated as one sequence; the returned flag says so (the caller returns a scalar).
    """
    single = False
    if isinstance(ids, tf.RaggedTensor):
        ragged = ids
    else:
        ids = tf.convert_to_tensor(ids)
        if ids.shape.rank == 1:
            ids = ids[tf.newaxis]
            single = True
        ragged = tf.RaggedTensor.from_tensor(ids)
    ragged = tf.cast(ragged, tf.int32)
    keep = (ragged != PAD_ID) & (ragged != BOS_ID) & (ragged != EOS_ID)
    ragged = tf.ragged.boolean_mask(ragged, keep)
    values = ragged.flat_values
    values = tf.where((values < 0) | (values >= vocab_size), tf.constant(UNK_ID), values)
    return ragged.with_flat_values(values), single


def check_vocab_size(vocab_size: int | None, minimum: int, kind: str) -> None:
    """Raise ``ZooError`` when a requested ``vocab_size`` cannot hold ``minimum`` ids."""
    if vocab_size is not None and int(vocab_size) < minimum:
        raise ZooError(f"{kind} tokenizer: vocab_size must be at least {minimum}, got {vocab_size}")
