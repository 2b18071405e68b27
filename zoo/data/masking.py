"""Masked-language-model data: the ``[MASK]`` token, packed sequences and dynamic masking.

Ids. Every zoo tokenizer reserves ``0 <pad> 1 <unk> 2 <bos> 3 <eos>``; a masked LM reads
``<bos>`` as ``[CLS]`` and ``<eos>`` as ``[SEP]`` and appends one id to the tokenizer's
vocabulary for ``[MASK]``: ``mask_id = tokenizer.vocab_size`` (the model's vocabulary is one
larger than the tokenizer's). ``MaskedTextTokenizer`` wraps a tokenizer so that the text
``"[MASK]"`` maps to ``mask_id`` in-graph and ``mask_id`` renders back as ``"[MASK]"``.

Sequences. The sentences (lines) of a split are packed greedily, in order, into rows of
``seq_len`` ids: ``[CLS] s_1 [SEP] s_2 [SEP] ... [SEP] <pad>...``; a sentence longer than
``seq_len - 2`` tokens is cut. Segment ids (BERT's A/B) follow from the ids: 0 up to and including
the first ``[SEP]``, 1 after it (``zoo.models.bert_mlm.segment_ids``).

Dynamic masking (BERT): every batch draws a fresh mask. Of the tokens that are neither special
(ids < 4) nor ``[MASK]``, each is selected with probability ``rate`` (15%); a selected token is
replaced by ``[MASK]`` with probability 0.8, by a uniformly random ordinary token (ids
``4 .. mask_id - 1``) with probability 0.1, and kept with probability 0.1. Labels hold the
original id at selected positions and 0 (ignored by the loss) everywhere else. The draws are
stateless random ops seeded by ``(seed, step)``, so batch ``s`` of a resumed run is the batch
an uninterrupted run would have drawn.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from zoo.errors import ZooError
from zoo.special_tokens import CLS_ID, NUM_SPECIAL, PAD_ID, SEP_ID
from zoo.tokenizers._util import as_string_batch

MASK_TOKEN = "[MASK]"
MASK_RATE = 0.15
MASK_REPLACE = 0.8  # of the selected: -> [MASK]
RANDOM_REPLACE = 0.1  # of the selected: -> a random token (the rest are kept)
EVAL_SEED = 20240601  # evaluation masks: fixed, so `zoo eval` is reproducible
AUTOTUNE = tf.data.AUTOTUNE


class MaskedTextTokenizer(tf.Module):
    """A zoo tokenizer plus the ``[MASK]`` id (``base.vocab_size``), in-graph both ways.

    ``tokenize`` splits each text at the literal ``"[MASK]"``, tokenizes the pieces with the base
    tokenizer and puts ``mask_id`` between them; ``detokenize`` renders ``mask_id`` as
    ``"[MASK]"`` (pieces joined by single spaces around it).
    """

    def __init__(self, base, name: str | None = None):
        super().__init__(name=name)
        self.base = base
        self.mask_id = int(base.vocab_size)

    @property
    def vocab_size(self) -> int:
        """The base vocabulary plus ``[MASK]``."""
        return self.mask_id + 1

    @property
    def kind(self) -> str:
        return self.base.kind

    def token_strings(self) -> list[str]:
        """The string of every id (index = id): the base vocabulary, then ``[MASK]``."""
        return [str(t) for t in self.base.vocabulary] + [MASK_TOKEN]

    def tokenize(self, texts) -> tf.RaggedTensor:
        """Strings ``(B,)`` -> ragged int32 ids ``(B, None)``, ``"[MASK]"`` -> ``mask_id``."""
        batch, _ = as_string_batch(texts)
        pieces = tf.strings.split(batch, sep=MASK_TOKEN)  # (B, P) ragged, >= 1 piece per row
        ids = _ragged_rows(self.base.tokenize(pieces.flat_values))  # (sum P, None)
        row = pieces.value_rowids()
        index = tf.range(tf.shape(row, out_type=tf.int64)[0]) - tf.gather(pieces.row_splits, row)
        last = index == tf.gather(pieces.row_lengths(), row) - 1
        mask_lengths = tf.where(last, tf.constant(0, tf.int64), 1)
        masks = tf.RaggedTensor.from_row_lengths(
            tf.fill([tf.reduce_sum(mask_lengths)], tf.constant(self.mask_id, tf.int32)), mask_lengths
        )
        with_masks = tf.concat([ids, masks], axis=1)  # each piece followed by [MASK] but the last
        return pieces.with_flat_values(with_masks).merge_dims(1, 2)

    def detokenize(self, ids) -> tf.Tensor:
        """Ids ``(B, None)`` (ragged or dense, 0 = padding) -> strings ``(B,)``."""
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(tf.convert_to_tensor(ids))
        ids = tf.cast(ids, tf.int32)
        values = ids.flat_values
        row = ids.value_rowids()
        is_mask = values == self.mask_id
        # segment of each token inside its row = masks before it; a row has (masks + 1) segments
        masks_before = tf.cumsum(tf.cast(is_mask, tf.int64), exclusive=True)
        mask_counts = tf.math.unsorted_segment_sum(
            tf.cast(is_mask, tf.int64), row, ids.nrows(out_type=tf.int64)
        )  # (B,)
        segments_per_row = mask_counts + 1
        segment_starts = tf.cumsum(segments_per_row, exclusive=True)  # first segment of each row
        row_mask_start = tf.cumsum(mask_counts, exclusive=True)  # masks before each row
        segment = tf.gather(segment_starts, row) + masks_before - tf.gather(row_mask_start, row)
        keep = tf.logical_not(is_mask)
        pieces = tf.RaggedTensor.from_value_rowids(
            tf.boolean_mask(values, keep), tf.boolean_mask(segment, keep),
            nrows=tf.reduce_sum(segments_per_row),
        )
        texts = self.base.detokenize(pieces)  # (total segments,)
        # a segment is followed by " [MASK] " unless it is its row's last (join by hand: a ragged
        # reduce_join skips empty strings, separators included)
        last = tf.scatter_nd(
            (segment_starts + segments_per_row - 1)[:, None],
            tf.ones_like(segments_per_row, tf.bool), tf.reduce_sum(segments_per_row)[None],
        )
        texts = tf.where(last, texts, texts + f" {MASK_TOKEN} ")
        joined = tf.strings.reduce_join(
            tf.RaggedTensor.from_row_lengths(texts, segments_per_row), axis=1
        )
        for _ in range(2):  # "[MASK]  [MASK]" (an empty piece between two masks) -> one space
            joined = tf.strings.regex_replace(joined, r"\[MASK\]  \[MASK\]", "[MASK] [MASK]")
        return tf.strings.strip(joined)


def _ragged_rows(ids) -> tf.RaggedTensor:
    if not isinstance(ids, tf.RaggedTensor):
        ids = tf.RaggedTensor.from_tensor(ids)
    if ids.ragged_rank > 1:
        ids = ids.merge_dims(1, -1)
    return tf.cast(ids, tf.int32)


def with_cls_sep(ids: tf.RaggedTensor, max_length: int) -> tf.Tensor:
    """``[CLS] ids[:max_length - 2] [SEP]`` per row, right-padded with 0 to the longest row."""
    ids = _ragged_rows(ids)[:, : max_length - 2]
    batch = ids.nrows(out_type=tf.int64)
    cls = tf.RaggedTensor.from_tensor(tf.fill(tf.stack([batch, 1]), tf.constant(CLS_ID, tf.int32)))
    sep = tf.RaggedTensor.from_tensor(tf.fill(tf.stack([batch, 1]), tf.constant(SEP_ID, tf.int32)))
    return tf.concat([cls, ids, sep], axis=1).to_tensor(default_value=PAD_ID)


def pack_sentences(lines: tf.RaggedTensor, seq_len: int) -> np.ndarray:
    """Sentences' ids -> int32 ``(N, seq_len)`` rows ``[CLS] s_1 [SEP] s_2 [SEP] ...`` (greedy,
    in order; a sentence longer than ``seq_len - 2`` is cut; empty sentences are skipped)."""
    if seq_len < 3:
        raise ZooError(f"seq_len must be at least 3 for [CLS] x [SEP]. Received: {seq_len}")
    lines = _ragged_rows(lines)
    flat = lines.flat_values.numpy()
    splits = lines.row_splits.numpy()
    rows: list[np.ndarray] = []
    current = [CLS_ID]
    for i in range(len(splits) - 1):
        sentence = flat[splits[i] : splits[i + 1]][: seq_len - 2]
        if sentence.size == 0:
            continue
        if len(current) + sentence.size + 1 > seq_len:
            rows.append(np.asarray(current, np.int32))
            current = [CLS_ID]
        current.extend(sentence.tolist())
        current.append(SEP_ID)
    if len(current) > 1:
        rows.append(np.asarray(current, np.int32))
    packed = np.full([len(rows), seq_len], PAD_ID, np.int32)
    for i, row in enumerate(rows):
        packed[i, : row.size] = row
    return packed


def mask_tokens(token_ids, seed, mask_id: int, rate: float = MASK_RATE,
                mask_fraction: float = MASK_REPLACE, random_fraction: float = RANDOM_REPLACE):
    """BERT's dynamic masking of int32 ids ``(B, T)`` with a stateless seed ``[2]`` (int64).

    Returns ``(inputs, labels)``: ``labels = ids`` where selected, ``PAD_ID`` (0) elsewhere;
    ``inputs`` has the selected tokens replaced (see the module docstring). Same ids and seed ->
    same result.
    """
    token_ids = tf.cast(token_ids, tf.int32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
    shape = tf.shape(token_ids)
    eligible = (token_ids >= NUM_SPECIAL) & (token_ids != mask_id)
    selected = eligible & (tf.random.stateless_uniform(shape, seeds[0], alg="philox") < rate)
    action = tf.random.stateless_uniform(shape, seeds[1], alg="philox")
    random_ids = tf.random.stateless_uniform(shape, seeds[2], minval=NUM_SPECIAL, maxval=mask_id,
                                             dtype=tf.int32, alg="philox")
    inputs = tf.where(selected & (action < mask_fraction), mask_id, token_ids)
    use_random = selected & (action >= mask_fraction) & (action < mask_fraction + random_fraction)
    inputs = tf.where(use_random, random_ids, inputs)
    labels = tf.where(selected, token_ids, PAD_ID)  # PAD_ID: a label the loss ignores
    return inputs, labels


def training_dataset(examples: np.ndarray, batch_size: int, seed: int, mask_id: int,
                     start_step: int = 0, num_steps: int | None = None) -> tf.data.Dataset:
    """Batches ``(inputs, labels)`` int32 ``(batch_size, seq_len)``; batch ``s`` is a pure function
    of ``(seed, s)``: rows drawn uniformly with one half of the split seed, masked with the other."""
    if len(examples) < 1:
        raise ZooError("the training split has no text to build masked-LM examples from")
    table = tf.constant(examples)
    count = len(examples)
    seed_t = tf.constant(int(seed), tf.int64)

    def make_batch(step):
        rows_seed, mask_seed = tf.unstack(
            tf.random.experimental.stateless_split(tf.stack([seed_t, step]), num=2)
        )
        rows = tf.random.stateless_uniform([batch_size], rows_seed, minval=0, maxval=count,
                                           dtype=tf.int64, alg="philox")
        inputs, labels = mask_tokens(tf.gather(table, rows), mask_seed, mask_id)
        return tf.ensure_shape(inputs, [batch_size, examples.shape[1]]), labels

    if num_steps is None:
        steps = tf.data.Dataset.counter(start=int(start_step), dtype=tf.int64)
    else:
        steps = tf.data.Dataset.range(int(start_step), int(start_step) + int(num_steps))
    return steps.map(make_batch, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)


def evaluation_dataset(examples: np.ndarray, batch_size: int, mask_id: int,
                       seed: int = EVAL_SEED) -> tf.data.Dataset:
    """Every row once, in order, masked with the fixed ``(seed, batch index)``; the last batch is
    filled with all-padding rows (no labels), so every batch has the same shape."""
    if len(examples) < 1:
        raise ZooError("the evaluation split has no text to build masked-LM examples from")
    num_batches = math.ceil(len(examples) / batch_size)
    filled = np.full([num_batches * batch_size, examples.shape[1]], PAD_ID, np.int32)
    filled[: len(examples)] = examples
    batches = filled.reshape(num_batches, batch_size, examples.shape[1])
    seed_t = tf.constant(int(seed), tf.int64)

    def make_batch(index, ids):
        return mask_tokens(ids, tf.stack([seed_t, index]), mask_id)

    dataset = tf.data.Dataset.from_tensor_slices((tf.range(num_batches, dtype=tf.int64), batches))
    return dataset.map(make_batch).prefetch(AUTOTUNE)
