"""SentencePiece (BPE or unigram) tokenizer: lossless, byte fallback, applied with tensorflow-text."""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterable

import tensorflow as tf
import tensorflow_text as tf_text

from zoo.errors import ZooError
from zoo.tokenizers._util import as_string_batch, check_vocab_size, clean_ids, iter_lines
from zoo.tokenizers.base import (
    BOS_ID,
    EOS_ID,
    NUM_SPECIAL,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    Tokenizer,
)

logger = logging.getLogger(__name__)

SENTENCEPIECE_MODEL_FILE = "sentencepiece.model"
DEFAULT_VOCAB_SIZE = 8000
MODEL_TYPES = ("bpe", "unigram")
NEWLINE = "\n"
# 4 reserved + the newline symbol + 256 byte pieces: the least a byte-fallback model can hold.
MIN_VOCAB_SIZE = NUM_SPECIAL + 1 + 256
_TOO_SMALL = re.compile(r"smaller than required_chars\. *(\d+) vs (\d+)")


class SentencePieceTokenizer(Tokenizer):
    """SentencePiece subwords; ``detokenize(tokenize(x)) == x`` exactly for any UTF-8 text.

    Trained in memory by the ``sentencepiece`` package with settings chosen to be lossless:
    identity normalisation, no dummy prefix, extra whitespace kept (leading, trailing and repeated
    spaces survive), ``"\\n"`` as a user-defined symbol (so multi-line text keeps its line breaks
    with one id per newline), and byte fallback, so characters never seen in training (CJK, emoji,
    ...) become UTF-8 byte pieces instead of ``<unk>``. Ids 0-3 are ``<pad> <unk> <bos> <eos>``.

    Applied in-graph by ``tensorflow_text.SentencepieceTokenizer``, which holds the serialized
    model; a SavedModel carries it.
    """

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, name: str | None = None):
        """``model_proto``: a serialized SentencePiece model (the ``sentencepiece.model`` bytes)."""
        super().__init__(name=name)
        self._model_proto = bytes(model_proto)
        processor = _processor(self._model_proto)
        self._vocabulary = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
        expected = {PAD_ID: processor.pad_id(), UNK_ID: processor.unk_id()}
        expected.update({BOS_ID: processor.bos_id(), EOS_ID: processor.eos_id()})
        if any(got != want for want, got in expected.items()):
            raise ZooError(
                f"sentencepiece tokenizer: the model must use pad={PAD_ID} unk={UNK_ID} "
                f"bos={BOS_ID} eos={EOS_ID}"
            )
        self._model_type = _model_type_name(self._model_proto)
        self._sentencepiece = tf_text.SentencepieceTokenizer(
            model=self._model_proto, out_type=tf.int32
        )

    # -- in-graph ---------------------------------------------------------------------------

    def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """Strings ``(batch,)`` -> ragged int32 piece ids ``(batch, None)``."""
        batch, scalar = as_string_batch(texts)
        ids = self._run("tokenize", batch)
        return ids[0] if scalar else ids

    def detokenize(self, ids: tf.Tensor | tf.RaggedTensor) -> tf.Tensor:
        """Ids ``(batch, None)`` -> the original strings; pad/bos/eos dropped, ``<unk>`` -> U+FFFD."""
        ragged, single = clean_ids(ids, self.vocab_size)
        texts = self._run("detokenize", ragged)
        return texts[0] if single else texts

    def _run(self, method: str, value):
        """``self._sentencepiece.<method>(value)``, rebuilding the op's resource once if it is
        gone: ``tf.random.set_seed`` (``keras.utils.set_random_seed``, as every training run
        calls) clears TensorFlow's eager kernel cache, which deletes the SentencePiece model an
        eager kernel owned, and the next eager call would fail with ``NotFoundError``."""
        try:
            return getattr(self._sentencepiece, method)(value)
        except tf.errors.NotFoundError:
            if not tf.executing_eagerly():
                raise
            self._sentencepiece = tf_text.SentencepieceTokenizer(
                model=self._model_proto, out_type=tf.int32
            )
            return getattr(self._sentencepiece, method)(value)

    # -- vocabulary -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._vocabulary)

    @property
    def vocabulary(self) -> list[str]:
        """Piece strings, index = id (``▁`` stands for a space, ``<0xNN>`` for a raw byte)."""
        return list(self._vocabulary)

    @property
    def model_proto(self) -> bytes:
        """The serialized SentencePiece model."""
        return self._model_proto

    @property
    def model_type(self) -> str:
        return self._model_type

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "model_type": self._model_type}

    def _save_files(self, directory: str) -> None:
        with open(os.path.join(directory, SENTENCEPIECE_MODEL_FILE), "wb") as f:
            f.write(self._model_proto)

    @classmethod
    def _from_files(cls, directory: str, config: dict) -> SentencePieceTokenizer:
        with open(os.path.join(directory, SENTENCEPIECE_MODEL_FILE), "rb") as f:
            return cls(f.read())

    # -- training ---------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | str,
        vocab_size: int | None = None,
        model_type: str = "bpe",
        character_coverage: float = 0.9995,
        input_sentence_size: int = 1_000_000,
        max_sentencepiece_length: int = 16,
        seed: int = 0,
        num_threads: int | None = None,
        **kwargs,
    ) -> SentencePieceTokenizer:
        """Train a SentencePiece model in memory on the lines of ``texts``.

        Args:
            texts: iterable of strings (documents or lines). Training sees lines; newlines are the
                ``"\\n"`` user symbol.
            vocab_size: number of pieces (default 8000), reserved tokens and the 256 byte pieces
                included. A corpus too small to fill it gives a smaller vocabulary
                (``hard_vocab_limit=False``); a value below what the model needs (261 plus the
                characters seen) is raised to that minimum, with a warning.
            model_type: ``"bpe"`` or ``"unigram"``.
            character_coverage: share of characters kept as pieces; the rest use byte fallback.
            input_sentence_size: at most this many lines (sampled) are used to train.
            seed: seed of SentencePiece's sampler (for reproducible sampling of large corpora).
            num_threads: trainer threads (default: the CPU count, at most 8).
            **kwargs: other ``SentencePieceTrainer`` options (e.g. ``split_digits=True``).
        """
        import sentencepiece as spm

        if model_type not in MODEL_TYPES:
            raise ZooError(
                f"sentencepiece model_type must be one of {MODEL_TYPES}, got {model_type!r}"
            )
        vocab_size = DEFAULT_VOCAB_SIZE if vocab_size is None else int(vocab_size)
        check_vocab_size(vocab_size, MIN_VOCAB_SIZE, cls.kind)
        lines = list(iter_lines(texts))
        if not lines:
            raise ZooError("sentencepiece tokenizer: no text to learn from")
        options = {
            "model_type": model_type,
            "pad_id": PAD_ID,
            "unk_id": UNK_ID,
            "bos_id": BOS_ID,
            "eos_id": EOS_ID,
            "pad_piece": SPECIAL_TOKENS[PAD_ID],
            "unk_piece": SPECIAL_TOKENS[UNK_ID],
            "bos_piece": SPECIAL_TOKENS[BOS_ID],
            "eos_piece": SPECIAL_TOKENS[EOS_ID],
            "unk_surface": "\ufffd",
            "user_defined_symbols": [NEWLINE],
            "normalization_rule_name": "identity",
            "add_dummy_prefix": False,
            "remove_extra_whitespaces": False,
            "allow_whitespace_only_pieces": True,
            "byte_fallback": True,
            "hard_vocab_limit": False,
            "character_coverage": character_coverage,
            "input_sentence_size": input_sentence_size,
            "shuffle_input_sentence": True,
            "max_sentencepiece_length": max_sentencepiece_length,
            "num_threads": num_threads or max(1, min(8, os.cpu_count() or 1)),
            "minloglevel": 2,
        }
        options.update(kwargs)
        spm.set_random_generator_seed(seed)
        for _ in range(2):
            writer = io.BytesIO()
            try:
                spm.SentencePieceTrainer.train(
                    sentence_iterator=iter(lines),
                    model_writer=writer,
                    vocab_size=vocab_size,
                    **options,
                )
            except RuntimeError as err:
                match = _TOO_SMALL.search(str(err))
                if match is None or int(match.group(2)) <= vocab_size:
                    raise ZooError(f"sentencepiece training failed: {err}") from err
                logger.warning(
                    "sentencepiece: vocab_size %d is below the %s the corpus needs; using %s",
                    vocab_size,
                    match.group(2),
                    match.group(2),
                )
                vocab_size = int(match.group(2))
                continue
            return cls(writer.getvalue())
        raise ZooError("sentencepiece training failed: could not find a workable vocab_size")


def _processor(model_proto: bytes):
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_proto=model_proto)
    except (RuntimeError, TypeError) as err:
        raise ZooError(f"not a valid SentencePiece model: {err}") from err


def _model_type_name(model_proto: bytes) -> str:
    """``"bpe"``, ``"unigram"``, ... read from the model's trainer spec."""
    from sentencepiece import sentencepiece_model_pb2

    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(model_proto)
    return sentencepiece_model_pb2.TrainerSpec.ModelType.Name(model.trainer_spec.model_type).lower()
