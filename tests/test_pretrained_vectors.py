"""Pretrained word vectors (``model.embeddings``): word2vec / GloVe text files into the token
embeddings of a model, exactly the matched rows, static or fine-tuned, through ``zoo.train``
and its resume."""

from __future__ import annotations

import gzip
import json
import os
import shutil

import keras
import numpy as np
import pytest

import zoo
from zoo import pretrained_vectors as pv
from zoo.config import parse_settings
from zoo.errors import ZooError
from zoo.models import build_model, make_config
from zoo.tokenizers import WordTokenizer

DIM = 32  # lstm_lm tiny's embedding_dim
TRAIN = dict(tokenizer="word", max_steps=4, batch_size=4, seq_len=16, checkpoint_every=2,
             eval_batches=1, verbose=0)


def _write(path, words, vectors, header: bool, opener=open) -> str:
    with opener(path, "wt", encoding="utf-8") as f:
        if header:
            f.write(f"{len(words)} {vectors.shape[1]}\n")
        for word, vector in zip(words, vectors, strict=True):
            f.write(word + " " + " ".join(repr(float(x)) for x in vector) + "\n")
    return str(path)


def _table(model) -> np.ndarray:
    return keras.ops.convert_to_numpy(model.token_embedding_layer().embeddings)


@pytest.fixture(scope="module")
def small_vectors(tmp_path_factory):
    """Words of several cases (both "The" and "the"; "cat" only lower-cased) and their vectors."""
    words = ["the", "The", "cat", "dog", "mouse", "a word"]  # GloVe's large files hold spaces
    vectors = np.random.default_rng(0).normal(size=(len(words), DIM)).astype(np.float32)
    root = tmp_path_factory.mktemp("vectors")
    return words, vectors, root


# ------------------------------------------------------------------------------------------------
# reading the files


def test_glove_word2vec_and_gzip_files_read_the_same(small_vectors):
    words, vectors, root = small_vectors
    w2v = pv.read_vectors(_write(root / "v.w2v.txt", words, vectors, header=True))
    glove = pv.read_vectors(_write(root / "v.glove.txt", words, vectors, header=False))
    packed = pv.read_vectors(_write(root / "v.txt.gz", words, vectors, header=True, opener=gzip.open))
    assert (w2v.format, glove.format, packed.format) == ("word2vec", "glove", "word2vec")
    for read in (w2v, glove, packed):
        assert read.words == words and read.dim == DIM
        np.testing.assert_array_equal(read.vectors, vectors)
    only = pv.read_vectors(str(root / "v.glove.txt"), keep={"dog", "cat"})
    assert only.words == ["cat", "dog"]
    np.testing.assert_array_equal(only.vectors, vectors[2:4])


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("3 2\nthe 0.1 0.2\na 0.3 0.4\n", "announces 3 vectors but the file holds 2"),
    ("the 0.1 0.2 0.3\na 0.3 0.4\n", "line 2: 2 values after the word, but the file's vectors have 3"),
    ("the 0.1 0.2\na 0.3 0.4 0.5\n", "line 2: 3 values after the word, but the file's vectors have 2"),
    ("2 2\nthe 0.1 0.2\na 0.3 zero\n", "line 3: 'zero' is not a number"),
    ("the 0.1 nan\n", "line 1: the vector holds inf or nan"),
    ("2 0\n", "line 1: expected 'COUNT DIM'"),
])
def test_malformed_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ZooError, match=message):
        pv.read_vectors(str(path))


def test_missing_truncated_and_non_utf8_files_are_clear_errors(tmp_path):
    with pytest.raises(ZooError, match="no word-vector file"):
        pv.read_vectors(str(tmp_path / "absent.txt"))
    binary = tmp_path / "vectors.bin"
    binary.write_bytes(b"2 2\nthe \x9a\x99\x99\x3d\xcd\xcc\x4c\x3e\n")  # one of two rows
    with pytest.raises(ZooError, match="announces 2 vectors but the file holds 1"):
        pv.read_vectors(str(binary))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 0.1 0.2\n".encode("latin-1"))
    with pytest.raises(ZooError, match="not UTF-8 text, and has no 'COUNT DIM' line"):
        pv.read_vectors(str(latin1))


@pytest.mark.parametrize("name", ["vectors.bin", "vectors.bin.gz"])
def test_binary_word2vec_files_read_as_gensim_writes_them(small_vectors, tmp_path, name):
    """gensim's ``save_word2vec_format(binary=True)`` (no newline after a vector) and
    word2vec.c's rows (a newline after each) read back exactly, words with spaces aside."""
    from gensim.models import KeyedVectors

    words, vectors, _ = small_vectors
    words, vectors = words[:5], vectors[:5]  # "a word" cannot be written in the binary format
    keyed = KeyedVectors(DIM)
    keyed.add_vectors(words, vectors)
    path = str(tmp_path / name)
    keyed.save_word2vec_format(path, binary=True)
    read = pv.read_vectors(path)
    assert (read.format, read.words, read.dim) == ("word2vec", words, DIM)
    np.testing.assert_array_equal(read.vectors, vectors)
    only = pv.read_vectors(path, keep={"dog"})
    assert only.words == ["dog"]
    np.testing.assert_array_equal(only.vectors, vectors[3:4])
    c_tool = tmp_path / "c.bin"  # word2vec.c: "%s " then the floats, then "\n"
    c_tool.write_bytes(f"{len(words)} {DIM}\n".encode() + b"".join(
        w.encode() + b" " + v.astype("<f4").tobytes() + b"\n" for w, v in zip(words, vectors,
                                                                            strict=True)))
    read = pv.read_vectors(str(c_tool))
    assert read.words == words
    np.testing.assert_array_equal(read.vectors, vectors)


# ------------------------------------------------------------------------------------------------
# tokens to words


def test_only_whole_word_tokens_are_looked_up():
    special = {0, 1, 2, 3}
    base = ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert pv.token_words("word", [*base, "the", "Cat"], special) == {4: "the", 5: "Cat"}
    assert pv.token_words("wordpiece", [*base, "play", "##ing", "[MASK]"], special) == {
        4: "play", 6: "[MASK]"}
    assert pv.token_words("sentencepiece", [*base, "\u2581the", "ing", "\u2581", "<0x41>"],
                          special) == {4: "the"}
    # GPT-2's byte-level BPE: real tokens at ids 0-3, "Ġ" marks a word start
    assert pv.token_words("byte_bpe", ["\u0120the", "a", "\u0120cat", "<|endoftext|>"], {3}) == {
        0: "the", 2: "cat"}
    rows, exact = pv.match_tokens({4: "The", 5: "Cat", 6: "emu"}, {"The": 0, "the": 1, "cat": 2})
    assert rows == {4: 0, 5: 2} and exact == 1  # exact first, then lower-cased


# ------------------------------------------------------------------------------------------------
# into a model


@pytest.fixture(scope="module")
def word_tokenizer():
    return WordTokenizer(["the", "The", "Cat", "dog", "zebra", "word"])


def test_vectors_set_exactly_the_matched_rows(small_vectors, word_tokenizer):
    words, vectors, root = small_vectors
    path = _write(root / "rows.txt", words, vectors, header=False)
    keras.utils.set_random_seed(7)
    plain = build_model("lstm_lm", word_tokenizer.vocab_size)
    keras.utils.set_random_seed(7)
    model = build_model("lstm_lm", word_tokenizer.vocab_size)
    matched = pv.load_into(model, word_tokenizer, path, verbose=0)
    # ids: 0-3 reserved, 4 the, 5 The, 6 Cat, 7 dog, 8 zebra, 9 word
    assert (matched.matched, matched.exact, matched.tokens) == (4, 3, 6)
    assert "matched 4 of 6 tokens from" in matched.message()
    expected = _table(plain).copy()
    expected[[4, 5, 6, 7]] = vectors[[0, 1, 2, 3]]  # the, The, cat (for "Cat"), dog
    np.testing.assert_array_equal(_table(model), expected)  # the rest: the seeded random init
    assert model.token_embedding_layer().trainable


@pytest.mark.parametrize("name, overrides", [
    ("mlp_lm", {}), ("transformer_lm", {}), ("bert_mlm", {}), ("bert_qa", {}),
    ("text_classifier", {}), ("text_classifier", {"encoder": "lstm"}), ("transformer_seq2seq", {}),
])
def test_every_family_names_its_token_embedding(name, overrides):
    """``token_embedding_layer()``: the model's own (vocab_size, width) table, not the position
    or segment embedding (vocab 50 is neither a context length nor 2)."""
    model = build_model(name, 50, **overrides)
    layer = model.token_embedding_layer()
    assert isinstance(layer, keras.layers.Embedding) and layer.input_dim == 50
    assert any(w is layer.embeddings for w in model.weights)


def test_dimension_mismatch_names_both_widths_and_the_setting(small_vectors, word_tokenizer):
    words, vectors, root = small_vectors
    path = _write(root / "wide.txt", words, np.tile(vectors, 2), header=True)
    model = build_model("lstm_lm", word_tokenizer.vocab_size)
    with pytest.raises(ZooError, match=r"holds 64-dimensional vectors but the model's token "
                                       r"embeddings are 32-dimensional: set model.embedding_dim=64"):
        pv.load_into(model, word_tokenizer, path, width_setting="embedding_dim", verbose=0)
    with pytest.raises(ZooError, match="has no token embedding"):
        pv.load_into(keras.Sequential([keras.layers.Dense(2)]), word_tokenizer, path)


def test_settings_are_checked_once_for_every_trainer(small_vectors, tmp_path):
    words, vectors, root = small_vectors
    path = _write(root / "s.txt", words, vectors, header=True)
    overrides, _ = parse_settings([f"model.embeddings={path}", "model.freeze_embeddings=true",
                                   "model.units=8"])
    assert pv.settings_of(overrides, "causal_lm") == {
        "embeddings": os.path.abspath(path), "freeze_embeddings": True, "units": 8}
    assert pv.settings_of({"freeze_embeddings": False}, "causal_lm") == {}
    for task in ("question_answering", "summarization", "seq2seq"):
        assert pv.settings_of({"embeddings": path}, task) == {
            "embeddings": os.path.abspath(path), "freeze_embeddings": False}
    assert pv.settings_of({"source_embeddings": path, "freeze_embeddings": True}, "seq2seq") == {
        "source_embeddings": os.path.abspath(path), "freeze_embeddings": True}
    for bad, task, message in [
        ({"freeze_embeddings": True}, "causal_lm", "needs model.embeddings"),
        ({"embeddings": path, "freeze_embeddings": "yes"}, "causal_lm", "true or false"),
        ({"embeddings": str(tmp_path / "none.txt")}, "masked_lm", "no such file"),
        ({"embeddings": path}, "word_vectors", "not of a word_vectors model"),
        ({"source_embeddings": path}, "summarization", "has one vocabulary"),
        ({"source_embeddings": path, "freeze_embeddings": 1}, "seq2seq", "true or false"),
        ({"embeddings": path, "pretrained": "runs/bert"}, "classification", "choose one"),
    ]:
        with pytest.raises(ZooError, match=message):
            pv.settings_of(bad, task)
    assert make_config("lstm_lm", "tiny", embeddings=path).embedding_dim == DIM
    with pytest.raises(ZooError, match="applied by training"):
        build_model("lstm_lm", 10, embeddings=path)


# ------------------------------------------------------------------------------------------------
# zoo.train: static and fine-tuned, recorded, resumed


@pytest.fixture(scope="module")
def corpus_and_vectors(shakespeare_file, tmp_path_factory):
    """The small Shakespeare text and GloVe vectors of 300 of its lower-cased words."""
    with open(shakespeare_file, encoding="utf-8") as f:
        words = sorted({w.lower() for w in f.read().split()})[:300]
    vectors = np.random.default_rng(1).normal(size=(len(words), DIM)).astype(np.float32)
    root = tmp_path_factory.mktemp("train_vectors")
    return shakespeare_file, _write(root / "glove.txt", words, vectors, header=False), root


@pytest.fixture(scope="module")
def trained(corpus_and_vectors):
    """lstm_lm runs with the vectors, static (frozen) and fine-tuned, and the model they start
    from (the seeded init with the vectors loaded)."""
    corpus, path, root = corpus_and_vectors
    runs = {
        freeze: zoo.train("lstm_lm", corpus, str(root / f"run_{freeze}"),
                          model_overrides={"embeddings": path, "freeze_embeddings": freeze},
                          **TRAIN)
        for freeze in (True, False)
    }
    keras.utils.set_random_seed(runs[True].config["train"]["seed"])
    start = build_model("lstm_lm", runs[True].tokenizer.vocab_size)
    pv.load_into(start, runs[True].tokenizer, path, verbose=0)
    return runs, _table(start)


def test_train_records_the_vectors_in_config_json(trained, corpus_and_vectors):
    runs, start = trained
    _, path, _ = corpus_and_vectors
    for freeze, run in runs.items():
        with open(os.path.join(run.path, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        record = config["pretrained_embeddings"]
        assert record["path"] == os.path.abspath(path) and record["freeze"] is freeze
        assert record["format"] == "glove" and record["dim"] == DIM
        assert 0 < record["matched"] < record["tokens"] == run.tokenizer.vocab_size - 4
        assert config["train"]["model_overrides"] == {"embeddings": os.path.abspath(path),
                                                      "freeze_embeddings": freeze}
        assert "embeddings" not in config["model_config"]


def test_static_vectors_stay_and_fine_tuned_ones_train(trained):
    runs, start = trained
    np.testing.assert_array_equal(_table(runs[True].model), start)  # 4 steps later
    assert np.abs(_table(runs[False].model) - start).max() > 1e-4


def test_resume_restores_the_checkpoint_and_keeps_the_freeze(trained, corpus_and_vectors,
                                                             monkeypatch):
    runs, start = trained
    corpus, path, root = corpus_and_vectors
    out = str(root / "resumed")
    shutil.copytree(runs[True].path, out)
    for name in ("model.keras", "metrics.json"):
        os.remove(os.path.join(out, name))
    with open(os.path.join(out, "checkpoints", "checkpoint"), "w", encoding="utf-8") as f:
        f.write('model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-2"\n')

    def no_reading(*args, **kwargs):
        raise AssertionError("a resumed run read the vectors again")

    monkeypatch.setattr(pv, "read_vectors", no_reading)
    run = zoo.train("lstm_lm", corpus, out, model_overrides={
        "embeddings": path, "freeze_embeddings": True}, **TRAIN)
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        assert json.load(f)["resumed_from_step"] == 2
    np.testing.assert_array_equal(_table(run.model), start)  # frozen through steps 3-4 too
    assert run.config["pretrained_embeddings"] == runs[True].config["pretrained_embeddings"]


@pytest.mark.parametrize("checkpoint", [False, True])
def test_zoo_load_keeps_the_freeze(trained, checkpoint):
    """A static run loaded again (model.keras, or its last checkpoint) has the same table and
    a frozen embedding layer, so fine-tuning it further keeps the vectors."""
    runs, start = trained
    loaded = zoo.load(runs[True].path, checkpoint=checkpoint)
    layer = loaded.model.token_embedding_layer()
    assert not layer.trainable
    np.testing.assert_array_equal(_table(loaded.model), start)
    fine_tuned = zoo.load(runs[False].path, checkpoint=checkpoint)
    assert fine_tuned.model.token_embedding_layer().trainable
    np.testing.assert_array_equal(_table(fine_tuned.model), _table(runs[False].model))


# ------------------------------------------------------------------------------------------------
# encoder-decoders and QA: each table from its own tokenizer, through zoo.train


ENGLISH = ["a dog runs on the grass", "the cat sleeps on a bed", "two dogs play in the snow",
           "a man reads the book", "the woman sings a song", "a boy kicks the ball"]
GERMAN = ["ein hund rennt auf dem gras", "die katze schläft auf einem bett",
          "zwei hunde spielen im schnee", "ein mann liest das buch", "die frau singt ein lied",
          "ein junge tritt den ball"]
TINY_FIT = dict(max_steps=2, batch_size=4, checkpoint_every=2, eval_batches=1, verbose=0)


def _vectors_of(texts, dim: int, path, seed: int) -> tuple[str, dict[str, np.ndarray]]:
    """A GloVe file holding a vector for every word of ``texts`` but the last one (sorted)."""
    words = sorted({w for text in texts for w in text.split()})[:-1]
    vectors = np.random.default_rng(seed).normal(size=(len(words), dim)).astype(np.float32)
    return _write(path, words, vectors, header=False), dict(zip(words, vectors, strict=True))


def _check_table(layer, tokenizer, vectors: dict, record: dict) -> None:
    """``layer`` holds ``vectors`` at exactly the rows of ``tokenizer``'s matched words."""
    table = keras.ops.convert_to_numpy(layer.embeddings)
    vocabulary = pv._vocabulary(tokenizer)
    special = {i for i, t in enumerate(vocabulary) if i in pv._special_ids(tokenizer)
               or t in pv.SPECIAL_TOKENS}
    words = pv.token_words(tokenizer.kind, vocabulary, special)
    rows = {i: w if w in vectors else w.lower() for i, w in words.items()
            if w in vectors or w.lower() in vectors}  # as it is, else lower-cased
    assert rows and record["matched"] == len(rows) and record["freeze"] is True
    for i, word in rows.items():
        np.testing.assert_array_equal(table[i], vectors[word])
    assert not layer.trainable


def test_translation_fills_target_and_source_tables_from_their_files(tmp_path):
    """transformer_seq2seq: ``model.embeddings`` the target (German) table with the target
    tokenizer, ``model.source_embeddings`` the source (English) one; frozen through training
    and through ``zoo.load(checkpoint=True)``."""
    dim = make_config("transformer_seq2seq", "tiny").d_model
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{en}\t{de}\n" for en, de in zip(ENGLISH * 4, GERMAN * 4,
                                                                strict=True)), encoding="utf-8")
    german, de_vectors = _vectors_of(GERMAN, dim, tmp_path / "de.txt", 1)
    english, en_vectors = _vectors_of(ENGLISH, dim, tmp_path / "en.txt", 2)
    run = zoo.train("transformer_seq2seq", str(pairs), str(tmp_path / "run"), tokenizer="word",
                    model_overrides={"embeddings": german, "source_embeddings": english,
                                     "freeze_embeddings": True}, **TINY_FIT)
    config = run.config
    assert config["pretrained_embeddings"]["path"] == german
    assert config["pretrained_source_embeddings"]["path"] == english
    for loaded in (run, zoo.load(run.path, checkpoint=True)):
        _check_table(loaded.model.token_embedding_layer(), loaded.tokenizer, de_vectors,
                     config["pretrained_embeddings"])
        _check_table(loaded.model.source_token_embedding_layer(),
                     loaded.extra_tokenizers["source"], en_vectors,
                     config["pretrained_source_embeddings"])


def test_summarizer_fills_both_tables_from_its_shared_vocabulary(tmp_path, monkeypatch):
    """Both tables hold the vectors; the file is read once for the two."""
    reads = []
    read_vectors = pv.read_vectors
    monkeypatch.setattr(pv, "read_vectors", lambda *a, **k: reads.append(a) or read_vectors(*a, **k))
    dim = make_config("summarizer", "tiny").d_model
    documents = [f"{en} . {de_free}" for en, de_free in zip(ENGLISH, reversed(ENGLISH),
                                                            strict=True)]
    data = tmp_path / "summaries.tsv"
    data.write_text("".join(f"{doc}\t{summary}\n" for doc, summary
                            in zip(documents * 4, ENGLISH * 4, strict=True)), encoding="utf-8")
    path, vectors = _vectors_of(ENGLISH, dim, tmp_path / "en.txt", 3)
    run = zoo.train("summarizer", str(data), str(tmp_path / "run"), tokenizer="word",
                    model_overrides={"embeddings": path, "freeze_embeddings": True}, **TINY_FIT)
    for key, layer in [("pretrained_embeddings", run.model.token_embedding_layer()),
                       ("pretrained_source_embeddings", run.model.source_token_embedding_layer())]:
        assert run.config[key]["path"] == path
        _check_table(layer, run.tokenizer, vectors, run.config[key])
    assert len(reads) == 1


def test_question_answering_takes_vectors_for_its_encoder(data_dir, tmp_path):
    with open(os.path.join(data_dir, "squad", "dev-v1.1.json"), encoding="utf-8") as f:
        articles = json.load(f)["data"][:6]
    small = {"version": "1.1", "data": [dict(a, paragraphs=a["paragraphs"][:1])
                                        for a in articles]}
    qa_file = tmp_path / "squad_small.json"
    qa_file.write_text(json.dumps(small), encoding="utf-8")
    texts = [p["context"].lower() for a in small["data"] for p in a["paragraphs"]]
    dim = make_config("bert_qa", "tiny").d_model
    path, vectors = _vectors_of(texts, dim, tmp_path / "en.txt", 4)
    run = zoo.train("bert_qa", str(qa_file), str(tmp_path / "run"), vocab_size=400,
                    model_overrides={"embeddings": path, "freeze_embeddings": True,
                                     "max_context_tokens": 400}, **TINY_FIT)
    _check_table(run.model.token_embedding_layer(), run.tokenizer, vectors,
                 run.config["pretrained_embeddings"])


def test_a_run_stopped_by_a_width_mismatch_says_how_to_start_afresh(corpus_and_vectors,
                                                                   tmp_path):
    """The vectors' width is checked when the model is built: the run directory then holds its
    config and tokenizer but no checkpoint, and a retry with the fixed width is told so."""
    corpus, path, _ = corpus_and_vectors
    out = str(tmp_path / "run")
    with pytest.raises(ZooError, match="set model.embedding_dim=32"):
        zoo.train("lstm_lm", corpus, out, model_overrides={"embeddings": path,
                                                           "embedding_dim": 16}, **TRAIN)
    with pytest.raises(ZooError, match="stopped before its first checkpoint: remove"):
        zoo.train("lstm_lm", corpus, out, model_overrides={"embeddings": path}, **TRAIN)
