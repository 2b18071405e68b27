"""WordPiece tokenizer (BERT-style), learned and applied with tensorflow-text."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import tensorflow as tf
import tensorflow_text as tf_text

from zoo.errors import ZooError
from zoo.tokenizers._util import as_string_batch, check_vocab_size, clean_ids, iter_lines
from zoo.tokenizers.base import NUM_SPECIAL, SPECIAL_TOKENS, UNK_ID, Tokenizer

WORDPIECE_VOCAB_FILE = "vocab.txt"
SUFFIX_INDICATOR = "##"
UNK_TOKEN = SPECIAL_TOKENS[UNK_ID]
DEFAULT_VOCAB_SIZE = 4000
# Passed to ``wordpiece_tokenizer_learner_lib.learn``; fewer search iterations than the library's
# default keep training on a ~1 MB corpus to a few seconds. Override with ``learn_params``.
DEFAULT_LEARN_PARAMS = {"lower_thresh": 2, "num_iterations": 3, "slack_ratio": 0.1}


class WordPieceTokenizer(Tokenizer):
    """BERT WordPiece: split text into words and punctuation, then words into ``##``-pieces.

    The vocabulary is learned by tensorflow-text's own tool
    (``tensorflow_text.tools.wordpiece_vocab.bert_vocab_from_dataset``) with the reserved tokens
    first, so ids 0-3 are ``<pad> <unk> <bos> <eos>``; the text is applied in-graph by
    ``tensorflow_text.FastWordpieceTokenizer`` (end-to-end: it does the whitespace/punctuation
    pre-tokenization itself). Words it cannot spell with the vocabulary become ``<unk>`` (1).

    Case is preserved unless ``lower_case=True`` (then text is case-folded, NFD-normalised and
    stripped of accents, as BERT's uncased models do, both when learning and when tokenizing).

    Not preserved by ``detokenize``: the exact whitespace. It returns the words and punctuation
    marks joined by single spaces (``"Hello, world!"`` -> ``"Hello , world !"``); newlines, tabs and
    repeated spaces are lost, and with ``lower_case`` so are case and accents.
    """

    kind = "wordpiece"

    def __init__(
        self, vocabulary: Sequence[str], lower_case: bool = False, name: str | None = None
    ):
        """``vocabulary``: all tokens, index = id; must start with the four reserved tokens."""
        super().__init__(name=name)
        vocabulary = [str(tok) for tok in vocabulary]
        if tuple(vocabulary[:NUM_SPECIAL]) != SPECIAL_TOKENS:
            raise ZooError(f"wordpiece tokenizer: vocabulary must start with {SPECIAL_TOKENS}")
        if len(set(vocabulary)) != len(vocabulary):
            raise ZooError("wordpiece tokenizer: duplicate tokens in the vocabulary")
        self._vocabulary = vocabulary
        self._lower_case = bool(lower_case)
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=vocabulary,
            suffix_indicator=SUFFIX_INDICATOR,
            unknown_token=UNK_TOKEN,
            no_pretokenization=False,
            support_detokenization=True,
            token_out_type=tf.int32,
        )

    # -- in-graph ---------------------------------------------------------------------------

    def _normalize(self, texts: tf.Tensor) -> tf.Tensor:
        if not self._lower_case:
            return texts
        texts = tf_text.case_fold_utf8(texts)
        texts = tf_text.normalize_utf8(texts, "NFD")
        return tf.strings.regex_replace(texts, r"\p{Mn}", "")

    def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """Strings ``(batch,)`` -> ragged int32 WordPiece ids ``(batch, None)``."""
        batch, scalar = as_string_batch(texts)
        ids = self._wordpiece.tokenize(self._normalize(batch))
        ids = tf.cast(ids, tf.int32)
        return ids[0] if scalar else ids

    def detokenize(self, ids: tf.Tensor | tf.RaggedTensor) -> tf.Tensor:
        """Ids ``(batch, None)`` -> words joined by single spaces (``##`` pieces merged back).

        Pad/bos/eos are dropped; ``<unk>`` renders as the string ``<unk>``."""
        ragged, single = clean_ids(ids, self.vocab_size)
        texts = self._wordpiece.detokenize(ragged)
        return texts[0] if single else texts

    # -- vocabulary -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._vocabulary)

    @property
    def vocabulary(self) -> list[str]:
        """Token strings, index = id; suffix pieces start with ``##``."""
        return list(self._vocabulary)

    @property
    def lower_case(self) -> bool:
        return self._lower_case

    def get_config(self) -> dict:
        return {
            "vocab_size": self.vocab_size,
            "lower_case": self._lower_case,
            "suffix_indicator": SUFFIX_INDICATOR,
        }

    def _save_files(self, directory: str) -> None:
        path = os.path.join(directory, WORDPIECE_VOCAB_FILE)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(self._vocabulary) + "\n")

    @classmethod
    def _from_files(cls, directory: str, config: dict) -> WordPieceTokenizer:
        path = os.path.join(directory, WORDPIECE_VOCAB_FILE)
        with open(path, encoding="utf-8", newline="\n") as f:
            entries = f.read().split("\n")
        if entries and entries[-1] == "":
            entries.pop()
        return cls(entries, lower_case=bool(config.get("lower_case", False)))

    # -- training ---------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | str,
        vocab_size: int | None = None,
        lower_case: bool = False,
        learn_params: dict | None = None,
        batch_size: int = 2048,
        **kwargs,
    ) -> WordPieceTokenizer:
        """Learn a WordPiece vocabulary with ``bert_vocab_from_dataset``.

        Args:
            texts: iterable of strings (documents or lines); fed as a ``tf.data`` dataset of lines.
            vocab_size: target size (default 4000), reserved tokens included. The learner treats it
                as a target: the result may be somewhat smaller (a small corpus cannot fill it) or
                slightly larger (every character it saw is added as a word start and a ``##``
                suffix); ``vocab_size`` of the returned tokenizer is the real count.
            lower_case: case-fold and strip accents (uncased model).
            learn_params: extra arguments for the learner (``wordpiece_tokenizer_learner_lib.learn``),
                merged over ``DEFAULT_LEARN_PARAMS``.
            batch_size: lines per dataset element while counting words.
        """
        from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset as bvfd

        if kwargs:
            raise ZooError(f"wordpiece tokenizer: unknown option(s) {sorted(kwargs)}")
        vocab_size = DEFAULT_VOCAB_SIZE if vocab_size is None else int(vocab_size)
        check_vocab_size(vocab_size, NUM_SPECIAL + 1, cls.kind)
        lines = list(iter_lines(texts))
        if not lines:
            raise ZooError("wordpiece tokenizer: no text to learn from")
        dataset = tf.data.Dataset.from_tensor_slices(tf.constant(lines, dtype=tf.string))
        dataset = dataset.batch(batch_size)
        params = {**DEFAULT_LEARN_PARAMS, **(learn_params or {})}
        vocabulary = bvfd.bert_vocab_from_dataset(
            dataset,
            vocab_size=vocab_size,
            reserved_tokens=list(SPECIAL_TOKENS),
            bert_tokenizer_params={"lower_case": bool(lower_case)},
            learn_params=params,
        )
        # Keep the first occurrence of each token (the learner never repeats one, but be safe).
        vocabulary = list(dict.fromkeys(vocabulary))
        return cls(vocabulary, lower_case=lower_case)
