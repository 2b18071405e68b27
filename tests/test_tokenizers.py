"""Tokenizers on real corpora: exact round trips, reserved ids, save/load, tf.function, SavedModel."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text as tf_text  # noqa: E402
from tensorflow_text.python.ops.bert_tokenizer import BasicTokenizer  # noqa: E402

from zoo.errors import ZooError  # noqa: E402
from zoo.tokenizers import (  # noqa: E402
    BOS_ID,
    EOS_ID,
    PAD_ID,
    TOKENIZERS,
    UNK_ID,
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    WordPieceTokenizer,
    WordTokenizer,
    load_tokenizer,
    train_tokenizer,
)

DEFAULT_DATA_DIR = "/work/shared/data"

UNICODE_TEXT = (
    "Café naïve façade, Ærøskøbing — Ünïcödé «quotes» ‘single’ …\n"
    "漢字かなカナ 한국어 中文字符 😀🎉👍🏽 ñ\tend  "
)
WHITESPACE_CASES = [
    "  leading spaces",
    "trailing spaces   ",
    "double  spaces  inside",
    " ",
    "",
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n",
    "\n\nstarts with newlines",
    "tab\tand  tab",
]
# Carriage returns never occur in the char tokenizer's training text; SentencePiece covers them.
CRLF_CASES = ["windows\r\nline end\r\n", "\r"]


# -- corpora ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tok_data_dir() -> str:
    """``$ZOO_DATA_DIR``, else the shared mirror; skip only if there is no data at all."""
    path = os.environ.get("ZOO_DATA_DIR")
    if not path and os.path.isdir(DEFAULT_DATA_DIR):
        path = DEFAULT_DATA_DIR
    if not path or not os.path.isdir(path):
        pytest.skip("no data: set ZOO_DATA_DIR")
    return path


def _read(data_dir: str, *parts: str) -> str:
    path = os.path.join(data_dir, *parts)
    if not os.path.isfile(path):
        pytest.skip(f"corpus file missing: {path}")
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


@pytest.fixture(scope="session")
def shakespeare(tok_data_dir) -> str:
    return _read(tok_data_dir, "tinyshakespeare", "input.txt")


@pytest.fixture(scope="session")
def shakespeare_lines(shakespeare) -> list[str]:
    """Non-empty lines from the validation part (last 10%) of tinyshakespeare."""
    tail = shakespeare[int(len(shakespeare) * 0.9) :]
    return [line for line in tail.split("\n")[1:] if line][:1500]


@pytest.fixture(scope="session")
def german_lines(tok_data_dir) -> list[str]:
    return _read(tok_data_dir, "multi30k", "train.de").split("\n")[:6000]


@pytest.fixture(scope="session")
def ptb_text(tok_data_dir) -> str:
    return _read(tok_data_dir, "ptb", "ptb.train.txt")


# -- trained tokenizers (once per session) ------------------------------------------------------


@pytest.fixture(scope="session")
def char_tok(shakespeare, german_lines) -> CharTokenizer:
    return train_tokenizer("char", [shakespeare, "\n".join(german_lines[:5000]), UNICODE_TEXT])


@pytest.fixture(scope="session")
def word_tok(ptb_text) -> WordTokenizer:
    return train_tokenizer("word", [ptb_text])


@pytest.fixture(scope="session")
def wordpiece_tok(shakespeare) -> WordPieceTokenizer:
    # A slice and a modest vocabulary keep the learner's binary search to a couple of seconds.
    head = shakespeare[:150_000]
    return train_tokenizer("wordpiece", [head], vocab_size=1000, learn_params={"num_iterations": 2})


@pytest.fixture(scope="session", params=["bpe", "unigram"])
def sp_tok(request, shakespeare, german_lines) -> SentencePieceTokenizer:
    return _sp_tokenizers(request.param, shakespeare, german_lines)


_SP_CACHE: dict[str, SentencePieceTokenizer] = {}


def _sp_tokenizers(model_type: str, shakespeare: str, german_lines: list[str]):
    if model_type not in _SP_CACHE:
        texts = [shakespeare[: int(len(shakespeare) * 0.9)], "\n".join(german_lines[:5000])]
        _SP_CACHE[model_type] = train_tokenizer(
            "sentencepiece", texts, vocab_size=4000, model_type=model_type
        )
    return _SP_CACHE[model_type]


KINDS = ["char", "word", "wordpiece", "sentencepiece-bpe", "sentencepiece-unigram"]


@pytest.fixture(params=KINDS)
def any_tok(request, shakespeare, german_lines) -> Tokenizer:
    kind = request.param
    if kind.startswith("sentencepiece"):
        return _sp_tokenizers(kind.split("-")[1], shakespeare, german_lines)
    return request.getfixturevalue(f"{kind}_tok")


def _decode_all(tok: Tokenizer, ids) -> list[str]:
    return [s.decode("utf-8") for s in tok.detokenize(ids).numpy().tolist()]


def _ids(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    return tok.tokenize(tf.constant(texts, dtype=tf.string)).to_list()


def _flat_ids(tok: Tokenizer, texts: list[str]) -> list[int]:
    return tok.tokenize(tf.constant(texts, dtype=tf.string)).flat_values.numpy().tolist()


# -- exact round trips --------------------------------------------------------------------------


def _assert_round_trip(tok: Tokenizer, texts: list[str]) -> None:
    ids = tok.tokenize(tf.constant(texts, dtype=tf.string))
    assert isinstance(ids, tf.RaggedTensor)
    assert ids.dtype == tf.int32
    assert _decode_all(tok, ids) == texts
    # Dense (pad-filled) ids and bos/eos framing decode to the same strings.
    assert _decode_all(tok, ids.to_tensor(default_value=PAD_ID)) == texts
    framed = tf.concat(
        [tf.fill([ids.nrows(), 1], BOS_ID), ids, tf.fill([ids.nrows(), 1], EOS_ID)], axis=1
    )
    assert _decode_all(tok, framed) == texts


def test_char_round_trip_real_text(char_tok, shakespeare_lines, german_lines):
    german = german_lines[:800]  # seen in training, so every character is in the vocabulary
    assert any(ch in "".join(german) for ch in "äöüß")
    _assert_round_trip(char_tok, shakespeare_lines + german + WHITESPACE_CASES)
    assert UNK_ID not in _flat_ids(char_tok, shakespeare_lines + german)


def test_char_round_trip_unicode(char_tok):
    _assert_round_trip(char_tok, [UNICODE_TEXT, "😀 漢字 é", "ü\nü"])
    ids = char_tok.tokenize_to_numpy("😀漢")
    assert len(ids) == 2 and UNK_ID not in ids


def test_sentencepiece_round_trip_real_text(sp_tok, shakespeare_lines, german_lines):
    german = german_lines[-800:]  # held out: unseen characters go through byte fallback
    _assert_round_trip(sp_tok, shakespeare_lines + german + WHITESPACE_CASES + CRLF_CASES)


def test_sentencepiece_round_trip_unseen_unicode_by_byte_fallback(sp_tok):
    texts = [UNICODE_TEXT, "😀", "漢字 \n 한국어", "\u2603\u00a0x"]
    _assert_round_trip(sp_tok, texts)
    flat = _flat_ids(sp_tok, texts)
    assert UNK_ID not in flat
    # Unseen characters really went through byte pieces (<0x..>), not whole-character pieces.
    vocab = sp_tok.vocabulary
    assert any(vocab[i].startswith("<0x") for i in flat)


def test_sentencepiece_newline_is_one_piece(sp_tok):
    newline_id = sp_tok.vocabulary.index("\n")
    ids = sp_tok.tokenize_to_numpy("To be,\nor not\n\nto be")
    assert list(ids).count(newline_id) == 3
    assert sp_tok.decode(ids) == "To be,\nor not\n\nto be"


# -- reserved / unknown ids ---------------------------------------------------------------------


def test_reserved_ids_not_produced(any_tok, shakespeare_lines, german_lines):
    ids = any_tok.tokenize(tf.constant(shakespeare_lines + german_lines[-300:])).flat_values.numpy()
    assert ids.size > 0
    assert ids.max() < any_tok.vocab_size
    for reserved in (PAD_ID, BOS_ID, EOS_ID):
        assert reserved not in ids
    assert ((ids >= 4) | (ids == UNK_ID)).all()
    # Literal reserved-token strings in text are not turned into pad/bos/eos.
    lit = any_tok.tokenize(tf.constant(["<pad> <bos> <eos> x"])).flat_values.numpy()
    assert not {PAD_ID, BOS_ID, EOS_ID} & set(lit.tolist())


def test_char_unknown_maps_to_unk_and_renders_replacement(char_tok):
    assert "\u2603" not in char_tok.vocabulary
    ids = char_tok.tokenize_to_numpy("a\u2603b")
    assert ids[1] == UNK_ID and ids[0] >= 4 and ids[2] >= 4
    assert char_tok.decode(ids) == "a\ufffdb"


def test_char_vocabulary_order_and_cap():
    tok = CharTokenizer.train(["abbcc", "c"])
    # c x3, b x2, a x1, then the always-included newline (count 0).
    assert tok.vocabulary == ["<pad>", "<unk>", "<bos>", "<eos>", "c", "b", "a", "\n"]
    tok = CharTokenizer.train(["abbcc", "c"], vocab_size=6)
    assert tok.vocab_size == 6
    assert tok.vocabulary[4:] == ["c", "\n"]
    assert tok.tokenize_to_numpy("a").tolist() == [UNK_ID]
    tok = CharTokenizer.train(["yxxy"], always_include="")
    assert tok.vocabulary[4:] == ["x", "y"]  # tie broken by code point


def test_word_ptb_unk_and_round_trip(word_tok, ptb_text):
    lines = [line for line in ptb_text.split("\n") if line.strip()][:2000]
    assert any("<unk>" in line.split() for line in lines)
    ids = word_tok.tokenize(tf.constant(lines))
    for line, row in zip(lines[:200], ids.to_list(), strict=False):
        words = line.split()
        assert len(row) == len(words)
        for word, i in zip(words, row, strict=True):
            assert (i == UNK_ID) == (word == "<unk>")
    assert _decode_all(word_tok, ids) == [" ".join(line.split()) for line in lines]
    # PTB's closed vocabulary: 10k types counting the sentence end, i.e. 9,999 words in the
    # file, "<unk>" being one of them (id 1, not learned again).
    assert word_tok.vocab_size == 4 + 9_998
    assert word_tok.vocabulary[UNK_ID] == "<unk>"
    assert word_tok.vocabulary[4] == "the"


def test_word_unknown_word_and_cap(ptb_text):
    tok = WordTokenizer.train([ptb_text], vocab_size=104)
    assert tok.vocab_size == 104
    ids = tok.tokenize_to_numpy("the  zyzzyva\tof\n<unk>")
    assert ids[0] == 4 and ids[1] == UNK_ID and ids[3] == UNK_ID
    assert tok.decode(ids) == "the <unk> of <unk>"


# -- WordPiece ----------------------------------------------------------------------------------


def test_wordpiece_matches_tensorflow_text(wordpiece_tok, shakespeare_lines, tmp_path):
    wordpiece_tok.save(str(tmp_path))
    with open(tmp_path / "vocab.txt", encoding="utf-8") as f:
        vocab = f.read().split("\n")[:-1]
    assert vocab[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    reference = tf_text.FastWordpieceTokenizer(
        vocab=vocab,
        suffix_indicator="##",
        unknown_token="<unk>",
        no_pretokenization=False,
        support_detokenization=True,
        token_out_type=tf.int32,
    )
    texts = shakespeare_lines + ["Zwei junge weiße Männer 漢字 😀", "unbelievably, x!"]
    expected = reference.tokenize(tf.constant(texts)).to_list()
    assert _ids(wordpiece_tok, texts) == expected
    # Subword splitting actually happens (some ## pieces are used).
    flat = {i for row in expected for i in row}
    assert any(vocab[i].startswith("##") for i in flat)


def test_wordpiece_detokenize_gives_words(wordpiece_tok, shakespeare):
    lines = [line for line in shakespeare[:150_000].split("\n") if line][:800]
    words = BasicTokenizer(lower_case=False).tokenize(tf.constant(lines))
    expected = [b" ".join(row).decode("utf-8") for row in words.to_list()]
    ids = wordpiece_tok.tokenize(tf.constant(lines))
    assert UNK_ID not in ids.flat_values.numpy()
    assert _decode_all(wordpiece_tok, ids) == expected
    assert wordpiece_tok.decode(wordpiece_tok.tokenize_to_numpy("Hello,  world!\n")) == (
        "Hello , world !"
    )


def test_wordpiece_lower_case():
    text = "Héllo WORLD, hello world. Ünder the BRIDGE under the bridge\n" * 20
    tok = WordPieceTokenizer.train([text], vocab_size=200, lower_case=True)
    assert tok.lower_case
    assert tok.decode(tok.tokenize_to_numpy("HELLO Under")) == "hello under"
    cased = WordPieceTokenizer.train([text], vocab_size=200)
    assert cased.decode(cased.tokenize_to_numpy("WORLD Héllo")) == "WORLD Héllo"


# -- save / load, tf.function, SavedModel -------------------------------------------------------


def test_save_load_identical_ids(any_tok, shakespeare_lines, tmp_path):
    texts = shakespeare_lines[:300] + WHITESPACE_CASES + [UNICODE_TEXT]
    any_tok.save(str(tmp_path))
    with open(tmp_path / "tokenizer.json", encoding="utf-8") as f:
        assert json.load(f)["kind"] == any_tok.kind
    loaded = load_tokenizer(str(tmp_path))
    assert type(loaded) is type(any_tok)
    assert loaded.vocab_size == any_tok.vocab_size
    assert loaded.vocabulary == any_tok.vocabulary
    assert loaded.get_config() == any_tok.get_config()
    ids = _ids(any_tok, texts)
    assert _ids(loaded, texts) == ids
    assert _decode_all(loaded, tf.ragged.constant(ids, dtype=tf.int32)) == _decode_all(
        any_tok, tf.ragged.constant(ids, dtype=tf.int32)
    )


def test_tf_function_tracing(any_tok, shakespeare_lines):
    texts = tf.constant(shakespeare_lines[:50] + ["", "a  b\nc"])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def round_trip(x):
        ids = any_tok.tokenize(x)
        return ids, any_tok.detokenize(ids)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def decode_dense(ids):
        return any_tok.detokenize(ids)

    ids, text = round_trip(texts)
    eager_ids = any_tok.tokenize(texts)
    assert ids.to_list() == eager_ids.to_list()
    assert text.numpy().tolist() == any_tok.detokenize(eager_ids).numpy().tolist()
    assert decode_dense(ids.to_tensor()).numpy().tolist() == text.numpy().tolist()
    # The traced graph contains no Python callbacks.
    graph = round_trip.get_concrete_function().graph
    op_types = {op.type for op in graph.get_operations()}
    assert not op_types & {"EagerPyFunc", "PyFunc", "PyFuncStateless"}


class _TokenizerModule(tf.Module):
    def __init__(self, tokenizer: Tokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, texts):
        return self.tokenizer.tokenize(texts)

    @tf.function(input_signature=[tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1)])
    def detokenize(self, ids):
        return self.tokenizer.detokenize(ids)


def test_saved_model_round_trip(any_tok, shakespeare_lines, tmp_path):
    texts = tf.constant(shakespeare_lines[:100] + WHITESPACE_CASES + [UNICODE_TEXT])
    export_dir = str(tmp_path / "saved")
    tf.saved_model.save(_TokenizerModule(any_tok), export_dir)
    restored = tf.saved_model.load(export_dir)
    expected = any_tok.tokenize(texts)
    got = restored.tokenize(texts)
    assert isinstance(got, tf.RaggedTensor)
    assert got.to_list() == expected.to_list()
    assert (
        restored.detokenize(got).numpy().tolist() == any_tok.detokenize(expected).numpy().tolist()
    )


# -- shapes -------------------------------------------------------------------------------------


def test_batch_of_different_lengths_is_ragged(any_tok):
    texts = ["a", "", "to be or not to be", "x  y\nz", "hello world " * 10]
    ids = any_tok.tokenize(tf.constant(texts))
    assert isinstance(ids, tf.RaggedTensor) and ids.shape.rank == 2
    singles = [len(any_tok.tokenize_to_numpy(t)) for t in texts]
    assert ids.row_lengths().numpy().tolist() == singles
    assert singles[1] == 0 and singles[4] > singles[2] > singles[0] > 0
    if any_tok.kind == "char":
        assert singles == [len(t) for t in texts]
    if any_tok.kind == "word":
        assert singles == [len(t.split()) for t in texts]
    # A scalar string gives a 1-D id tensor.
    scalar = any_tok.tokenize(tf.constant("to be or not to be"))
    assert scalar.shape.rank == 1 and scalar.dtype == tf.int32
    assert scalar.numpy().tolist() == ids[2].numpy().tolist()


# -- registry / errors --------------------------------------------------------------------------


def test_registry_and_unknown_kind():
    assert set(TOKENIZERS) == {"char", "word", "wordpiece", "sentencepiece"}
    for kind, cls in TOKENIZERS.items():
        assert cls.kind == kind and issubclass(cls, Tokenizer)
    with pytest.raises(ZooError) as err:
        train_tokenizer("bytes", ["abc"])
    for kind in TOKENIZERS:
        assert kind in str(err.value)


def test_load_tokenizer_errors_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ZooError, match="nowhere"):
        load_tokenizer(str(missing))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ZooError, match="corrupt"):
        load_tokenizer(str(corrupt))
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "tokenizer.json").write_text('{"kind": "nope", "config": {}}', encoding="utf-8")
    with pytest.raises(ZooError, match="valid kinds"):
        load_tokenizer(str(unknown))
    no_vocab = tmp_path / "no_vocab"
    no_vocab.mkdir()
    (no_vocab / "tokenizer.json").write_text('{"kind": "char", "config": {}}', encoding="utf-8")
    with pytest.raises(ZooError, match="no_vocab"):
        load_tokenizer(str(no_vocab))


def test_sentencepiece_small_corpus_and_vocab_clamp():
    small = ["hello world", "the cat sat on the mat\nthe end"]
    tok = SentencePieceTokenizer.train(small)  # default vocab_size far above what it can fill
    assert 261 <= tok.vocab_size < 8000
    assert tok.decode(tok.tokenize_to_numpy("the cat\nsat  ")) == "the cat\nsat  "
    many_chars = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 120)) * 3
    tok = SentencePieceTokenizer.train([many_chars], vocab_size=261, model_type="unigram")
    assert tok.vocab_size > 261 and tok.model_type == "unigram"
    with pytest.raises(ZooError):
        SentencePieceTokenizer.train(small, vocab_size=50)
    with pytest.raises(ZooError):
        SentencePieceTokenizer.train(small, model_type="word")


def test_train_accepts_documents_or_lines(shakespeare):
    head = shakespeare[:20_000]
    as_doc = train_tokenizer("word", head)  # a single str is one document, not characters
    as_lines = train_tokenizer("word", head.split("\n"))
    assert as_doc.vocabulary == as_lines.vocabulary
    assert as_doc.vocab_size > 500
    sp_doc = train_tokenizer("sentencepiece", [head], vocab_size=500)
    sp_lines = train_tokenizer("sentencepiece", head.split("\n"), vocab_size=500)
    assert sp_doc.vocabulary == sp_lines.vocabulary


def test_sentencepiece_survives_set_random_seed(sp_tok):
    """``keras.utils.set_random_seed`` (every training run calls it) clears TF's eager kernel
    cache; a tokenizer made before it must keep working afterwards (e.g. a loaded run's)."""
    import keras

    text = tf.constant(["To be, or not to be"])
    before = sp_tok.tokenize(text).to_list()
    keras.utils.set_random_seed(123)
    assert sp_tok.tokenize(text).to_list() == before
    assert sp_tok.detokenize(sp_tok.tokenize(text)).numpy().tolist() == [b"To be, or not to be"]
