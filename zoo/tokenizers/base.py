"""The contract every zoo tokenizer follows.

A tokenizer is a ``tf.Module`` whose ``tokenize`` / ``detokenize`` are pure TensorFlow (and
tensorflow-text) ops, so the same object can be traced into a SavedModel: no ``tf.py_function``.

Reserved ids, identical for every tokenizer so the data pipeline, the loss mask and the decoder
can rely on them:

    0 <pad>   padding; the loss ignores label 0
    1 <unk>   anything outside the vocabulary
    2 <bos>   start of a sentence (line corpora only)
    3 <eos>   end of a sentence (line corpora only)
"""

from __future__ import annotations

import abc
import json
import os

import tensorflow as tf

from zoo.special_tokens import (  # noqa: F401  (re-exported: the tokenizers' contract)
    BOS_ID,
    EOS_ID,
    NUM_SPECIAL,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
)

TOKENIZER_CONFIG = "tokenizer.json"


class Tokenizer(tf.Module, abc.ABC):
    """Base class: text <-> token ids, in-graph.

    Subclasses implement ``tokenize``, ``detokenize``, ``vocab_size``, ``get_config``,
    ``_save_files(directory)``, ``_from_files(directory, config)`` and ``train``.
    """

    kind: str = ""

    @abc.abstractmethod
    def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """Map a string tensor of shape ``(batch,)`` to a ``tf.RaggedTensor`` of int32 ids
        ``(batch, None)``. No special tokens are added. A scalar string gives a 1-D int32 tensor."""

    @abc.abstractmethod
    def detokenize(self, ids: tf.Tensor | tf.RaggedTensor) -> tf.Tensor:
        """Map int ids ``(batch, None)`` (ragged or dense) back to strings ``(batch,)``.
        Special ids (pad, bos, eos) are dropped; ``<unk>`` is rendered by the subclass."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, including the four reserved ones."""

    @abc.abstractmethod
    def get_config(self) -> dict:
        """JSON-serialisable settings (not the vocabulary files)."""

    @abc.abstractmethod
    def _save_files(self, directory: str) -> None:
        """Write the vocabulary / model files into ``directory``."""

    @classmethod
    @abc.abstractmethod
    def _from_files(cls, directory: str, config: dict) -> Tokenizer:
        """Rebuild from files written by ``_save_files``."""

    @classmethod
    @abc.abstractmethod
    def train(cls, texts, vocab_size: int | None = None, **kwargs) -> Tokenizer:
        """Learn a vocabulary from an iterable of strings (lines or whole documents)."""

    # Special ids: the reserved ids above, unless a tokenizer with another layout (an imported
    # vocabulary such as GPT-2's) says otherwise. Generation, scoring and export read these.

    @property
    def pad_id(self) -> int | None:
        """Id of padding (the zoo's ``<pad>``: 0)."""
        return PAD_ID

    @property
    def unk_id(self) -> int | None:
        """Id of out-of-vocabulary input (``<unk>``: 1)."""
        return UNK_ID

    @property
    def bos_id(self) -> int | None:
        """Id that starts a sequence of a line corpus (``<bos>``: 2)."""
        return BOS_ID

    @property
    def eos_id(self) -> int | None:
        """Id that ends a sequence of a line corpus (``<eos>``: 3)."""
        return EOS_ID

    @property
    def suppressed_ids(self) -> tuple[int, ...]:
        """Ids generation never produces: ``<pad>`` and ``<bos>`` (not text)."""
        return (PAD_ID, BOS_ID)

    def save(self, directory: str) -> None:
        """Write ``tokenizer.json`` (kind + config) and the vocabulary files."""
        os.makedirs(directory, exist_ok=True)
        self._save_files(directory)
        with open(os.path.join(directory, TOKENIZER_CONFIG), "w", encoding="utf-8") as f:
            json.dump({"kind": self.kind, "config": self.get_config()}, f, indent=2)

    def tokenize_to_numpy(self, text: str):
        """Convenience: one Python string -> 1-D numpy int32 array."""
        return self.tokenize(tf.constant([text]))[0].numpy()

    def decode(self, ids) -> str:
        """Convenience: a 1-D sequence of ids -> one Python string."""
        ids = tf.constant([list(ids)], dtype=tf.int32)
        return self.detokenize(ids)[0].numpy().decode("utf-8")
