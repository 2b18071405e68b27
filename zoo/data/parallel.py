"""Parallel (source, target) sentence pairs for translation, and their ``tf.data`` batches.

Data sources (``load_parallel``):

* ``dataset:multi30k`` -- English -> German; ``dataset:multi30k:de-en`` the other way
  (``dataset:multi30k:en-de`` spells out the default). Splits train / validation / test
  (test = the 2016 Flickr test set).
* ``SOURCE_FILE:TARGET_FILE`` -- two line-aligned text files (line i of one translates line i of
  the other; their line counts must match).
* a ``.tsv`` file -- ``source<TAB>target`` a line (a first line ``source<TAB>target`` is a header).

A pair of files or a TSV file is split like a text corpus: the first 90% of the pairs train, the
rest is validation (at least one pair each). Pairs with an empty side are dropped.

Batches (``training_dataset`` / ``evaluation_dataset``) are ``((source, target_in), target_out)``
int32, right-padded with 0 (pad; label 0 is ignored by the loss):

    source     = x[:S-1] + <eos>
    target_in  = (<bos> y)[:T]
    target_out = (y <eos>)[:T]

with ``S`` / ``T`` the model's ``max_source_length`` / ``max_target_length``. Each batch is padded
to the longest row rounded up to a multiple of ``WIDTH_BUCKET`` (at most S or T), so a batch of
short sentences costs less and only a few shapes occur. Training batch ``s`` is a pure function
of ``(seed, s)`` (its rows are drawn with stateless random ops), so a resumed run replays exactly
the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from zoo.data.catalog import (
    DATASET_PREFIX,
    PAIRS,
    STREAM_TRAIN_FRACTION,
    TEST,
    TRAIN,
    VALIDATION,
    get_dataset,
)
from zoo.data.corpus import read_text, translation_pairs
from zoo.data.pipelines import encode_lines
from zoo.errors import ZooError
from zoo.special_tokens import BOS_ID, EOS_ID, PAD_ID

AUTOTUNE = tf.data.AUTOTUNE
WIDTH_BUCKET = 16
FILE_SPLITS = (TRAIN, VALIDATION)


@dataclasses.dataclass
class ParallelCorpus:
    """Sentence pairs with named splits, loaded lazily (``pairs(split)``)."""

    name: str
    source_language: str
    target_language: str
    splits: tuple[str, ...]
    loader: Callable[[str], tuple[list[str], list[str]]]
    _loaded: dict = dataclasses.field(default_factory=dict, repr=False)

    def pairs(self, split: str) -> tuple[list[str], list[str]]:
        """``(source_lines, target_lines)`` of ``split``, same length."""
        if split not in self.splits:
            raise ZooError(f"{self.name} has no {split!r} split (splits: {', '.join(self.splits)})")
        if split not in self._loaded:
            self._loaded[split] = self.loader(split)
        return self._loaded[split]


def _lines(path: str) -> list[str]:
    """A file's lines (a final newline does not start another line), stripped."""
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines]


def _drop_empty(source: list[str], target: list[str]) -> tuple[list[str], list[str]]:
    kept = [(s, t) for s, t in zip(source, target, strict=True) if s and t]
    return [s for s, _ in kept], [t for _, t in kept]


def read_parallel_files(source_path: str, target_path: str) -> tuple[list[str], list[str]]:
    """Line-aligned pairs from two files; ``ZooError`` naming both files when they differ in
    line count."""
    for path in (source_path, target_path):
        if not os.path.isfile(path):
            raise ZooError(f"no such file: {path} (expected SOURCE_FILE:TARGET_FILE)")
    source, target = _lines(source_path), _lines(target_path)
    if len(source) != len(target):
        raise ZooError(
            f"{source_path} has {len(source)} lines but {target_path} has {len(target)}: "
            "source and target files must be line-aligned"
        )
    source, target = _drop_empty(source, target)
    if not source:
        raise ZooError(f"{source_path} and {target_path} hold no sentence pairs")
    return source, target


def read_tsv_pairs(path: str) -> tuple[list[str], list[str]]:
    """Pairs from a ``source<TAB>target`` file (blank lines skipped; an optional
    ``source<TAB>target`` header); a line without exactly one tab is a ``ZooError``."""
    source, target = [], []
    for number, line in enumerate(_lines(path), start=1):
        if not line:
            continue
        fields = line.split("\t")
        if number == 1 and [f.strip().lower() for f in fields] == ["source", "target"]:
            continue
        if len(fields) != 2:
            raise ZooError(
                f"{path}:{number}: expected two tab-separated columns (source, target), "
                f"found {len(fields)}"
            )
        source.append(fields[0].strip())
        target.append(fields[1].strip())
    source, target = _drop_empty(source, target)
    if not source:
        raise ZooError(f"{path} holds no sentence pairs")
    return source, target


def split_pairs(source: list[str], target: list[str], split: str,
                fraction: float = STREAM_TRAIN_FRACTION) -> tuple[list[str], list[str]]:
    """The first ``fraction`` of the pairs (train) or the rest (validation), one pair at least."""
    if len(source) < 2:
        raise ZooError(f"{len(source)} sentence pair(s): need at least 2 (train and validation)")
    cut = min(max(int(len(source) * fraction), 1), len(source) - 1)
    if split == TRAIN:
        return source[:cut], target[:cut]
    if split == VALIDATION:
        return source[cut:], target[cut:]
    raise ZooError(
        f"a file of pairs is split {fraction:.0%} train / {1 - fraction:.0%} validation: "
        f"there is no {split!r} split"
    )


def _dataset_parallel(spec: str) -> ParallelCorpus:
    name, _, direction = spec.partition(":")
    dataset = get_dataset(name)
    if dataset.kind != PAIRS:
        raise ZooError(f"dataset {name!r} is not a translation dataset; use dataset:multi30k")
    source_lang, target_lang = dataset.languages[:2]
    if direction:
        parts = direction.split("-")
        if len(parts) != 2 or set(parts) != set(dataset.languages[:2]):
            raise ZooError(
                f"unknown direction {direction!r} for {name}; use {source_lang}-{target_lang} "
                f"or {target_lang}-{source_lang}"
            )
        source_lang, target_lang = parts
    return ParallelCorpus(
        f"{name}:{source_lang}-{target_lang}", source_lang, target_lang, dataset.splits,
        lambda split: translation_pairs(split, source_lang, target_lang, name),
    )


def load_parallel(source: str) -> ParallelCorpus:
    """A ``ParallelCorpus`` from ``dataset:multi30k[:de-en]``, ``SOURCE_FILE:TARGET_FILE`` or a
    two-column TSV file (see the module docstring)."""
    if not isinstance(source, str) or not source.strip():
        raise ZooError("no data given: use dataset:multi30k, SOURCE_FILE:TARGET_FILE or a .tsv")
    if source.startswith(DATASET_PREFIX):
        return _dataset_parallel(source[len(DATASET_PREFIX):].strip())
    path = os.path.expanduser(source)
    if os.path.isfile(path):
        pairs = read_tsv_pairs(path)
        name = os.path.splitext(os.path.basename(path))[0]
    elif ":" in source:
        source_path, target_path = (os.path.expanduser(p) for p in source.split(":", 1))
        pairs = read_parallel_files(source_path, target_path)
        name = os.path.basename(source_path)
    else:
        raise ZooError(
            f"no such file: {source} (translation data is dataset:multi30k, "
            "SOURCE_FILE:TARGET_FILE or a source<TAB>target .tsv file)"
        )
    return ParallelCorpus(name, "source", "target", FILE_SPLITS,
                          lambda split: split_pairs(*pairs, split))


# --------------------------------------------------------------------------------------------------
# Encoding and batches
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class EncodedPairs:
    """Token ids of a split's pairs: flat values and row splits of each side (numpy)."""

    source_flat: np.ndarray
    source_splits: np.ndarray
    target_flat: np.ndarray
    target_splits: np.ndarray

    def __len__(self) -> int:
        return int(self.source_splits.size - 1)

    def target_tokens(self, max_target_length: int) -> int:
        """Labels ``evaluation_dataset`` scores: ``min(len(y) + 1, T)`` per pair."""
        lengths = np.diff(self.target_splits) + 1
        return int(np.minimum(lengths, max_target_length).sum())


def encode_pairs(source_tokenizer, target_tokenizer, source: list[str],
                 target: list[str]) -> EncodedPairs:
    """Tokenize both sides (no special tokens added)."""
    src, tgt = encode_lines(source_tokenizer, source), encode_lines(target_tokenizer, target)
    return EncodedPairs(
        src.flat_values.numpy(), src.row_splits.numpy().astype(np.int64),
        tgt.flat_values.numpy(), tgt.row_splits.numpy().astype(np.int64),
    )


def _nonempty(flat: np.ndarray) -> np.ndarray:
    return flat if flat.size else np.zeros([1], np.int32)  # tf.gather needs one value


def _bucket(width, cap: int):
    """Round ``width`` up to a multiple of ``WIDTH_BUCKET``, at most ``cap`` and at least 1."""
    rounded = (tf.maximum(width, 1) + WIDTH_BUCKET - 1) // WIDTH_BUCKET * WIDTH_BUCKET
    return tf.minimum(rounded, cap)


def _gather_rows(flat_t, splits_t, rows, width: int, first: int, keep):
    """``(B, width)`` int32: position ``q`` holds token ``q - first`` of each row while
    ``0 <= q - first < keep``, ``PAD_ID`` elsewhere."""
    begin = tf.gather(splits_t, rows)[:, None]
    q = tf.range(width, dtype=tf.int64)[None, :] - first
    last = tf.cast(tf.shape(flat_t)[0] - 1, tf.int64)
    tokens = tf.gather(flat_t, tf.clip_by_value(begin + q, 0, last))
    inside = tf.logical_and(q >= 0, q < keep[:, None])
    return tf.where(inside, tokens, PAD_ID)


def _make_batch(flat, rows, valid, max_source_length: int, max_target_length: int):
    """``((source, target_in), target_out)`` for pair indices ``rows`` (see the module
    docstring); rows where ``valid`` is False are all padding (they fill up the last evaluation
    batch)."""
    src_flat, src_splits, tgt_flat, tgt_splits = flat
    S, T = max_source_length, max_target_length
    src_len = tf.gather(src_splits, rows + 1) - tf.gather(src_splits, rows)
    tgt_len = tf.gather(tgt_splits, rows + 1) - tf.gather(tgt_splits, rows)
    src_keep = tf.where(valid, tf.minimum(src_len, S - 1), 0)  # tokens before <eos>
    tgt_keep = tf.where(valid, tgt_len, 0)
    live = valid[:, None]

    source = _gather_rows(src_flat, src_splits, rows, S, 0, src_keep)  # (B, S)
    q_s = tf.range(S, dtype=tf.int64)[None, :]
    source = tf.where(live & (q_s == src_keep[:, None]), EOS_ID, source)

    seq = _gather_rows(tgt_flat, tgt_splits, rows, T + 1, 1, tgt_keep)  # (B, T+1): _ y
    q_t = tf.range(T + 1, dtype=tf.int64)[None, :]
    seq = tf.where(live & (q_t == 0), BOS_ID, seq)
    seq = tf.where(live & (q_t == tgt_keep[:, None] + 1), EOS_ID, seq)  # <bos> y <eos>, cut
    target_in = tf.where(q_t[:, :T] == tgt_keep[:, None] + 1, PAD_ID, seq[:, :T])
    target_out = seq[:, 1:]

    source_width = _bucket(tf.cast(tf.reduce_max(src_keep), tf.int32) + 1, S)
    target_width = _bucket(tf.cast(tf.reduce_max(tgt_keep), tf.int32) + 1, T)
    return (source[:, :source_width], target_in[:, :target_width]), target_out[:, :target_width]


def _flat_tensors(pairs: EncodedPairs):
    return (
        tf.constant(_nonempty(pairs.source_flat.astype(np.int32))),
        tf.constant(pairs.source_splits),
        tf.constant(_nonempty(pairs.target_flat.astype(np.int32))),
        tf.constant(pairs.target_splits),
    )


def training_dataset(pairs: EncodedPairs, batch_size: int, seed: int, max_source_length: int,
                     max_target_length: int, start_step: int = 0,
                     num_steps: int | None = None) -> tf.data.Dataset:
    """Random training batches ``s = start_step, ...`` (``num_steps`` of them, or forever):
    ``batch_size`` pairs drawn uniformly with a stateless generator seeded by ``(seed, s)``."""
    if len(pairs) < 1:
        raise ZooError("the training split has no sentence pairs")
    if batch_size < 1:
        raise ZooError(f"batch_size must be >= 1, got {batch_size}")
    flat = _flat_tensors(pairs)
    seed_t = tf.constant(int(seed), tf.int64)
    count = len(pairs)
    valid = tf.ones([batch_size], tf.bool)

    def make_batch(step):
        rows = tf.random.stateless_uniform([batch_size], seed=tf.stack([seed_t, step]), minval=0,
                                           maxval=count, dtype=tf.int64, alg="philox")
        return _make_batch(flat, rows, valid, max_source_length, max_target_length)

    if num_steps is None:
        steps = tf.data.Dataset.counter(start=int(start_step), dtype=tf.int64)
    else:
        steps = tf.data.Dataset.range(int(start_step), int(start_step) + int(num_steps))
    return steps.map(make_batch, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)


def evaluation_dataset(pairs: EncodedPairs, batch_size: int, max_source_length: int,
                       max_target_length: int) -> tf.data.Dataset:
    """Every pair exactly once, in order, ``batch_size`` a batch (the last one filled up with
    all-padding rows)."""
    if len(pairs) < 1:
        raise ZooError("the split has no sentence pairs to evaluate")
    flat = _flat_tensors(pairs)
    batches = math.ceil(len(pairs) / batch_size)
    index = np.arange(batches * batch_size, dtype=np.int64)
    valid = index < len(pairs)
    rows = np.where(valid, index, 0).reshape(batches, batch_size)
    valid = valid.reshape(batches, batch_size)

    def make_batch(batch_rows, batch_valid):
        return _make_batch(flat, batch_rows, batch_valid, max_source_length, max_target_length)

    dataset = tf.data.Dataset.from_tensor_slices((rows, valid))
    return dataset.map(make_batch, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(
        AUTOTUNE)


def steps_per_epoch(pairs: EncodedPairs, batch_size: int) -> int:
    """Batches in one pass over the pairs: ``ceil(pairs / batch_size)``."""
    return math.ceil(len(pairs) / batch_size)


__all__ = [
    "EncodedPairs",
    "ParallelCorpus",
    "TEST",
    "encode_pairs",
    "evaluation_dataset",
    "load_parallel",
    "read_parallel_files",
    "read_tsv_pairs",
    "split_pairs",
    "steps_per_epoch",
    "training_dataset",
]
