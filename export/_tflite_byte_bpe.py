"""LiteRT codec of the byte-level BPE tokenizer (GPT-2) for ``export.tflite``.

``zoo.tokenizers.ByteBPETokenizer`` already builds its graph from LiteRT builtins plus
``TFText>ByteSplitWithOffsets`` (``zoo/tokenizers/_byte_bpe_ops.py``: GPT-2's pre-tokenizer
rules computed per character, the BPE merges in a ``WHILE``, UTF-8 repair). This adapter gives
it the codec interface of ``export/_tflite_text.py`` and joins strings with
``TFText>NgramsStringJoin``, as LiteRT has no ``ReduceJoin``.
"""

from __future__ import annotations

import tensorflow as tf

# The op behind tensorflow_text.ngrams(..., STRING_JOIN). Called directly: the public function
# also builds a sliding window of `width` slices that it does not use, thousands of dead nodes
# for the byte-wide joins here (a private module of tensorflow-text 2.21, checked by the tests).
from tensorflow_text.python.ops.ngrams_op import gen_ngrams_op


def join_rows(strings: tf.Tensor) -> tf.Tensor:
    """``(B, K)`` strings with a static ``K`` -> ``(B,)``: each row concatenated (one n-gram of
    width ``K`` per row of a ragged tensor; a dense 2-D input crashes the TF kernel)."""
    width = int(strings.shape[1])
    splits = tf.cast(tf.range(tf.shape(strings)[0] + 1) * width, tf.int64)
    joined, _ = gen_ngrams_op.tf_text_ngrams_string_join(
        input_values=tf.reshape(strings, [-1]), input_row_splits=[splits], width=width,
        axis=-1, string_separator="",
    )
    return joined


class ByteBPECodec:
    """Same ids and text as ``ByteBPETokenizer`` (``encode`` / ``decode`` as the other codecs)."""

    kind = "byte_bpe"

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size

    def encode(self, texts: tf.Tensor):
        """Strings ``(B,)`` -> ``(ids (B, L) right-padded with 0, lengths (B,))``."""
        ids, lengths = self._tokenizer.encode_dense(texts)
        width = tf.maximum(tf.reduce_max(tf.concat([lengths, [0]], axis=0)), 1)
        return tf.maximum(ids[:, :width], 0), lengths

    def decode(self, ids: tf.Tensor, num: tf.Tensor) -> tf.Tensor:
        """Ids ``(B, M)`` (``M`` static; the first ``num[b]`` of a row) -> strings ``(B,)``."""
        width = int(ids.shape[1]) * self._tokenizer.max_token_bytes + 1
        return self._tokenizer.decode_dense(ids, num, join_rows, width)
