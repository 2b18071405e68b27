"""Tests for zoo.data: dataset registry, mirror / cache / download, corpora and tf.data pipelines.

Real corpora come from the data mirror (``$ZOO_DATA_DIR``, else ``../shared/data`` beside the
checkout); tests that need it are skipped when it is absent. Downloads are exercised against a
local ``http.server`` on 127.0.0.1. A tiny character tokenizer stands in for the real ones.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import os
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from zoo.data import (
    catalog,
    count_eval_tokens,
    dataset_path,
    encode,
    evaluation_dataset,
    labelled_texts,
    load_corpus,
    pipelines,
    steps_per_epoch,
    training_dataset,
    translation_pairs,
)
from zoo.errors import ZooError
from zoo.tokenizers.base import BOS_ID, EOS_ID

OFFSET = 4  # the stand-in tokenizer's ids start after the four reserved ones


def _find_mirror() -> str | None:
    candidates = [
        os.environ.get("ZOO_DATA_DIR"),
        str(Path(__file__).resolve().parents[2] / "shared" / "data"),
        "/work/shared/data",
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(os.path.join(candidate, "MANIFEST.json")):
            return os.path.abspath(candidate)
    return None


MIRROR = _find_mirror()
needs_mirror = pytest.mark.skipif(MIRROR is None, reason="data mirror (ZOO_DATA_DIR) not found")


class CharTokenizer(tf.Module):
    """Stand-in tokenizer: one id per Unicode code point, shifted past the reserved ids."""

    def tokenize(self, texts):
        return tf.strings.unicode_decode(texts, "UTF-8") + OFFSET


def char_ids(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int32) + OFFSET


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """Every test: a private cache, and the mirror (when there is one) as ZOO_DATA_DIR."""
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "zoo-cache"))
    if MIRROR:
        monkeypatch.setenv("ZOO_DATA_DIR", MIRROR)
    else:
        monkeypatch.delenv("ZOO_DATA_DIR", raising=False)


@pytest.fixture
def tokenizer():
    return CharTokenizer()


# --------------------------------------------------------------------------------------------------
# Real corpora from the mirror
# --------------------------------------------------------------------------------------------------


@needs_mirror
def test_tinyshakespeare_splits_like_nanogpt():
    corpus = load_corpus("dataset:tinyshakespeare")
    with open(os.path.join(MIRROR, "tinyshakespeare", "input.txt"), encoding="utf-8") as f:
        full = f.read()
    assert len(full) == 1_115_394
    assert corpus.kind == "stream"
    assert corpus.splits == ("train", "validation")
    train, val = corpus.text("train"), corpus.text("validation")
    assert len(train) == 1_003_854 == int(len(full) * 0.9)
    assert len(val) == 111_540
    assert train == full[:1_003_854] and val == full[1_003_854:]
    assert "".join(corpus.training_texts()) == train
    with pytest.raises(ZooError, match="no test split"):
        corpus.text("test")


@needs_mirror
def test_warandpeace_is_a_90_10_stream():
    corpus = load_corpus("dataset:warandpeace")
    train, val = corpus.text("train"), corpus.text("validation")
    total = len(train) + len(val)
    assert total == 3_227_579
    assert len(train) == int(total * 0.9)
    assert "War and Peace" in train[:200]


@needs_mirror
def test_ptb_line_counts():
    corpus = load_corpus("dataset:ptb")
    assert corpus.kind == "lines"
    assert corpus.splits == ("train", "validation", "test")
    counts = {split: len(corpus.lines(split)) for split in corpus.splits}
    assert counts == {"train": 42068, "validation": 3370, "test": 3761}
    lines = corpus.lines("validation")
    assert all(line and line == line.strip() for line in lines)
    assert sum(len(line.split()) for line in corpus.lines("train")) == 887_521


@needs_mirror
def test_multi30k_pairs_are_aligned():
    sizes = {"train": 29000, "validation": 1014, "test": 1000}
    for split, size in sizes.items():
        en, de = translation_pairs(split)
        assert len(en) == len(de) == size
    en, de = translation_pairs("validation")
    de2, en2 = translation_pairs("validation", src="de", tgt="en")
    assert en2 == en and de2 == de
    assert all(line.isascii() for line in en[:200])
    assert any(not line.isascii() for line in de[:200])  # umlauts
    assert load_corpus("dataset:multi30k:de").lines("test") == translation_pairs("test")[1]
    with pytest.raises(ZooError, match="language"):
        translation_pairs("train", src="en", tgt="fr")


@needs_mirror
def test_sst2_counts_and_labels():
    sizes = {"train": 67349, "validation": 872, "test": 1821}
    for split, size in sizes.items():
        texts, labels = labelled_texts(split)
        assert len(texts) == len(labels) == size
        assert set(labels) == {0, 1}
        assert all(text and "\r" not in text and "\t" not in text for text in texts)
    texts, labels = labelled_texts("train")
    assert texts[0] == "hide new secretions from the parental units"
    assert labels[:3] == [0, 0, 1]
    assert sum(labels) == 37569


@needs_mirror
def test_mirror_files_pass_their_checksums():
    for name, spec in catalog.DATASETS.items():
        for data_file in spec.files:
            path = dataset_path(name, data_file.filename)
            assert path == os.path.join(MIRROR, name, data_file.filename)


# --------------------------------------------------------------------------------------------------
# Checksums and downloads
# --------------------------------------------------------------------------------------------------


def test_corrupt_mirror_copy_is_rejected(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "tinyshakespeare").mkdir(parents=True)
    (mirror / "tinyshakespeare" / "input.txt").write_text("First Citizen:\nBefore we proceed\n")
    monkeypatch.setenv("ZOO_DATA_DIR", str(mirror))
    with pytest.raises(ZooError, match="sha256"):
        dataset_path("tinyshakespeare", "input.txt")
    with pytest.raises(ZooError, match="sha256"):
        load_corpus("dataset:tinyshakespeare").text("train")
    assert not (tmp_path / "zoo-cache").exists()


def test_corrupt_cache_copy_is_rejected(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_DATA_DIR", raising=False)
    cached = tmp_path / "zoo-cache" / "datasets" / "ptb" / "ptb.valid.txt"
    cached.parent.mkdir(parents=True)
    cached.write_text(" the <unk> truncated\n")
    with pytest.raises(ZooError, match="sha256"):
        load_corpus("dataset:ptb").lines("validation")


class _Server:
    """A static file server on 127.0.0.1 that counts the requests it answers."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
        )
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    srv = _Server(root)
    yield srv
    srv.close()


def _patch_files(monkeypatch, name: str, **changes_by_file):
    """Replace some of a registered dataset's DataFile fields (url, sha256...) for this test."""
    spec = catalog.DATASETS[name]
    files = tuple(
        dataclasses.replace(f, **changes_by_file[f.filename])
        if f.filename in changes_by_file
        else f
        for f in spec.files
    )
    monkeypatch.setitem(catalog.DATASETS, name, dataclasses.replace(spec, files=files))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cache_files(tmp_path) -> list[str]:
    root = tmp_path / "zoo-cache"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_download_lands_in_cache_and_is_reused(server, tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_DATA_DIR", raising=False)
    body = ("To be, or not to be, that is the question:\n" * 50).encode()
    (server.root / "input.txt").write_bytes(body)
    _patch_files(
        monkeypatch,
        "tinyshakespeare",
        **{"input.txt": {"url": server.url("input.txt"), "sha256": _sha256(body)}},
    )

    path = dataset_path("tinyshakespeare", "input.txt")
    assert path == str(tmp_path / "zoo-cache" / "datasets" / "tinyshakespeare" / "input.txt")
    assert Path(path).read_bytes() == body
    assert server.requests == ["/input.txt"]
    assert _cache_files(tmp_path) == ["datasets/tinyshakespeare/input.txt"]

    assert dataset_path("tinyshakespeare", "input.txt") == path
    corpus = load_corpus("dataset:tinyshakespeare")
    assert corpus.text("train") + corpus.text("validation") == body.decode()
    assert server.requests == ["/input.txt"]  # reused, not downloaded again


def test_gzip_download_checks_the_decompressed_bytes(server, tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_DATA_DIR", raising=False)
    en = b"A dog runs.\nTwo men talk.\n"
    de = "Ein Hund läuft.\nZwei Männer reden.\n".encode()
    (server.root / "val.en.gz").write_bytes(gzip.compress(en))
    (server.root / "val.de.gz").write_bytes(gzip.compress(de))
    _patch_files(
        monkeypatch,
        "multi30k",
        **{
            "val.en": {"url": server.url("val.en.gz"), "sha256": _sha256(en)},
            "val.de": {"url": server.url("val.de.gz"), "sha256": _sha256(de)},
        },
    )
    source, target = translation_pairs("validation")
    assert source == ["A dog runs.", "Two men talk."]
    assert target == ["Ein Hund läuft.", "Zwei Männer reden."]
    assert _cache_files(tmp_path) == ["datasets/multi30k/val.de", "datasets/multi30k/val.en"]


def test_zip_download_extracts_glue_layout(server, tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_DATA_DIR", raising=False)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("SST-2/train.tsv", "sentence\tlabel\ngreat fun \t1\ndull \t0\n")
        zf.writestr("SST-2/dev.tsv", "sentence\tlabel\nfine\t1\n")
        zf.writestr("SST-2/test.tsv", "index\tsentence\n0\tunlabelled\n")
    data = archive.getvalue()
    (server.root / "SST-2.zip").write_bytes(data)
    patch = {"url": server.url("SST-2.zip"), "archive_sha256": _sha256(data)}
    _patch_files(monkeypatch, "sst2", **{"train.tsv": patch, "dev.tsv": patch})

    assert labelled_texts("train") == (["great fun", "dull"], [1, 0])
    assert labelled_texts("validation") == (["fine"], [1])
    assert server.requests == ["/SST-2.zip"]  # one download gives both files
    assert _cache_files(tmp_path) == ["datasets/sst2/dev.tsv", "datasets/sst2/train.tsv"]
    with pytest.raises(ZooError, match="only available from the data mirror"):
        labelled_texts("test")


def test_wrong_sha256_leaves_nothing_in_cache(server, tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_DATA_DIR", raising=False)
    (server.root / "input.txt").write_bytes(b"<html>not the file</html>\n")
    _patch_files(monkeypatch, "tinyshakespeare", **{"input.txt": {"url": server.url("input.txt")}})
    with pytest.raises(ZooError, match="sha256") as info:
        dataset_path("tinyshakespeare", "input.txt")
    assert "Nothing was cached" in str(info.value)
    assert _cache_files(tmp_path) == []
    assert server.requests == ["/input.txt"]


def test_offline_error_names_mirror_and_data_flag(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_DATA_DIR", raising=False)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _patch_files(
        monkeypatch, "ptb", **{"ptb.train.txt": {"url": f"http://127.0.0.1:{port}/ptb.train.txt"}}
    )
    with pytest.raises(ZooError) as info:
        load_corpus("dataset:ptb").lines("train")
    message = str(info.value)
    assert "ZOO_DATA_DIR" in message and "--data" in message
    assert _cache_files(tmp_path) == []


def test_missing_file_on_server_is_a_zoo_error(server, monkeypatch):
    monkeypatch.delenv("ZOO_DATA_DIR", raising=False)
    _patch_files(monkeypatch, "ptb", **{"ptb.test.txt": {"url": server.url("nothing.txt")}})
    with pytest.raises(ZooError, match="could not download"):
        dataset_path("ptb", "ptb.test.txt")


# --------------------------------------------------------------------------------------------------
# load_corpus on user files
# --------------------------------------------------------------------------------------------------


def test_load_corpus_file(tmp_path):
    text = "".join(f"line {i}: {'é' * (i % 7)}\n" for i in range(300))
    path = tmp_path / "notes.txt"
    path.write_text(text, encoding="utf-8")
    corpus = load_corpus(str(path))
    assert (corpus.name, corpus.kind, corpus.splits) == ("notes", "stream", ("train", "validation"))
    cut = int(len(text) * 0.9)
    assert corpus.text("train") == text[:cut]
    assert corpus.text("validation") == text[cut:]
    assert "".join(corpus.training_texts()) == text[:cut]
    assert corpus.lines("train")[:2] == ["line 0: ", "line 1: é"]
    with pytest.raises(ZooError, match="no test split"):
        corpus.text("test")


def test_load_corpus_directory(tmp_path):
    (tmp_path / "b.txt").write_text("second\n")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "c.md").write_text("not text")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.txt").write_text("nested")
    corpus = load_corpus(str(tmp_path))
    full = corpus.text("train") + corpus.text("validation")
    assert full == "first\nsecond\n"


def test_load_corpus_errors(tmp_path):
    with pytest.raises(ZooError, match="no such file"):
        load_corpus(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ZooError, match="empty"):
        load_corpus(str(tmp_path / "empty.txt"))
    (tmp_path / "blank").mkdir()
    with pytest.raises(ZooError, match="no .txt files"):
        load_corpus(str(tmp_path / "blank"))
    with pytest.raises(ZooError) as info:
        load_corpus("dataset:shakespeare")
    assert "tinyshakespeare" in str(info.value) and "ptb" in str(info.value)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ZooError, match="UTF-8"):
        load_corpus(str(tmp_path / "latin1.txt"))


# --------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------


def test_chunk_bounds_cover_text_and_end_at_newlines():
    text = "".join(f"{'word ' * (i % 13)}line {i}\n" for i in range(500)) + "x" * 5000
    bounds = pipelines.chunk_bounds(text, 200)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert len(bounds) > 20
    assert all(text[end - 1] == "\n" for _, end in bounds if end <= len(text) - 5000)


@needs_mirror
def test_encode_stream_equals_tokenizing_whole_text(tokenizer):
    corpus = load_corpus("dataset:tinyshakespeare")
    ids = encode(tokenizer, corpus, "train")
    assert ids.dtype == np.int32 and ids.shape == (1_003_854,)
    np.testing.assert_array_equal(ids, char_ids(corpus.text("train")))
    small_chunks = encode(tokenizer, corpus, "validation", chunk_chars=997)
    np.testing.assert_array_equal(small_chunks, char_ids(corpus.text("validation")))


def test_encode_long_lines_and_multibyte(tokenizer, tmp_path):
    text = ("Ünïcödé " * 3000) + "\n" + ("漢字" * 4000) + "\n\nend"
    (tmp_path / "u.txt").write_text(text, encoding="utf-8")
    corpus = load_corpus(str(tmp_path / "u.txt"))
    for split in corpus.splits:
        ids = encode(tokenizer, corpus, split, chunk_chars=333)
        np.testing.assert_array_equal(ids, char_ids(corpus.text(split)))


@needs_mirror
def test_encode_lines(tokenizer):
    corpus = load_corpus("dataset:ptb")
    ids = encode(tokenizer, corpus, "validation")
    lines = corpus.lines("validation")
    assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
    assert ids.nrows() == len(lines) == 3370
    for i in (0, 1, 1234, 3369):
        np.testing.assert_array_equal(ids[i].numpy(), char_ids(lines[i]))


# --------------------------------------------------------------------------------------------------
# Training pipeline
# --------------------------------------------------------------------------------------------------


def _batches(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_training_stream_windows_and_determinism():
    ids = np.arange(OFFSET, OFFSET + 5000, dtype=np.int32)  # distinct ids: a window is a range
    seq_len, batch = 32, 8
    run = _batches(training_dataset(ids, "stream", seq_len, batch, seed=7, num_steps=6))
    assert len(run) == 6
    for x, y in run:
        assert x.shape == y.shape == (batch, seq_len) and x.dtype == y.dtype == np.int32
        np.testing.assert_array_equal(y, x + 1)  # y is x shifted by one token
        np.testing.assert_array_equal(x, x[:, :1] + np.arange(seq_len))
    assert len({x[:, 0].tobytes() for x, _ in run}) == 6  # batches differ from step to step

    again = _batches(training_dataset(ids, "stream", seq_len, batch, seed=7, num_steps=6))
    resumed = _batches(
        training_dataset(ids, "stream", seq_len, batch, seed=7, start_step=4, num_steps=2)
    )
    for (xa, ya), (xb, yb) in zip(run, again, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    for (xa, ya), (xb, yb) in zip(run[4:], resumed, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    other = _batches(training_dataset(ids, "stream", seq_len, batch, seed=8, num_steps=1))
    assert not np.array_equal(other[0][0], run[0][0])

    endless = training_dataset(ids, "stream", seq_len, batch, seed=7, start_step=5)
    x5, _ = next(iter(endless))
    np.testing.assert_array_equal(x5.numpy(), run[5][0])


def test_training_stream_offsets_reach_both_ends():
    seq_len = 5
    ids = np.arange(OFFSET, OFFSET + seq_len + 3, dtype=np.int32)  # offsets 0, 1, 2 possible
    run = _batches(training_dataset(ids, "stream", seq_len, 16, seed=0, num_steps=8))
    offsets = {int(v) - OFFSET for x, _ in run for v in x[:, 0]}
    assert offsets == {0, 1, 2}
    with pytest.raises(ZooError, match="too few"):
        training_dataset(ids[:seq_len], "stream", seq_len, 4, seed=0, num_steps=1)


def test_training_lines_bos_eos_padding():
    lengths = [0, 1, 3, 6, 9, 25]
    lines = [[100 * i + j + OFFSET for j in range(n)] for i, n in enumerate(lengths)]
    seq_len, batch = 10, 12
    ragged = tf.ragged.constant(lines, dtype=tf.int32, row_splits_dtype=tf.int64)
    run = _batches(training_dataset(ragged, "lines", seq_len, batch, seed=3, num_steps=5))
    seen = set()
    for x, y in run:
        assert x.shape == y.shape == (batch, seq_len) and x.dtype == np.int32
        assert (x[:, 0] == BOS_ID).all()
        for xr, yr in zip(x, y, strict=True):
            line = 0 if yr[0] == EOS_ID else (int(yr[0]) - OFFSET) // 100  # the empty line: 0
            seen.add(line)
            seq = ([BOS_ID] + lines[line] + [EOS_ID])[: seq_len + 1]
            expected_x, expected_y = np.zeros((2, seq_len), np.int32)
            expected_x[: len(seq) - 1] = seq[:-1]
            expected_y[: len(seq) - 1] = seq[1:]
            np.testing.assert_array_equal(xr, expected_x)
            np.testing.assert_array_equal(yr, expected_y)
            assert EOS_ID not in xr
            if len(lines[line]) + 1 <= seq_len:  # fits: ends with EOS, then padding label 0
                assert yr[len(lines[line])] == EOS_ID and (yr[len(lines[line]) + 1 :] == 0).all()
            else:  # truncated: every label is a token
                assert (yr != 0).all() and EOS_ID not in yr
    assert seen == set(range(len(lines)))

    as_lists = _batches(
        training_dataset(lines, "lines", seq_len, batch, seed=3, start_step=2, num_steps=3)
    )
    for (xa, ya), (xb, yb) in zip(run[2:], as_lists, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    with pytest.raises(ZooError):
        training_dataset([], "lines", seq_len, batch, seed=0, num_steps=1)


# --------------------------------------------------------------------------------------------------
# Evaluation pipeline
# --------------------------------------------------------------------------------------------------


@needs_mirror
def test_evaluation_stream_covers_every_label_once(tokenizer):
    corpus = load_corpus("dataset:tinyshakespeare")
    ids = encode(tokenizer, corpus, "validation")
    seq_len, batch = 100, 16
    run = _batches(evaluation_dataset(ids, "stream", seq_len, batch))
    xs = np.concatenate([x for x, _ in run])
    ys = np.concatenate([y for _, y in run])
    assert all(x.shape == y.shape == (batch, seq_len) for x, y in run)
    assert len(run) == steps_per_epoch(ids, "stream", seq_len, batch)
    n = ids.size
    assert int(np.count_nonzero(ys)) == count_eval_tokens(ids, "stream") == n - 1
    np.testing.assert_array_equal(ys[ys != 0], ids[1:])  # each label once, in order
    flat_x, flat_y = xs.reshape(-1), ys.reshape(-1)
    np.testing.assert_array_equal(flat_x[: n - 1], ids[:-1])  # the input before each label
    assert (flat_x[n - 1 :] == 0).all() and (flat_y[n - 1 :] == 0).all()
    again = _batches(evaluation_dataset(ids, "stream", seq_len, batch))
    np.testing.assert_array_equal(np.concatenate([y for _, y in again]), ys)


@needs_mirror
def test_evaluation_lines_covers_every_token_and_eos_once(tokenizer):
    corpus = load_corpus("dataset:ptb")
    ids = encode(tokenizer, corpus, "validation")
    seq_len, batch = 48, 64  # many PTB lines are longer: they continue in further windows
    lengths = ids.row_lengths().numpy()
    assert (lengths + 1 > seq_len).sum() > 1000
    run = _batches(evaluation_dataset(ids, "lines", seq_len, batch))
    xs = np.concatenate([x for x, _ in run])
    ys = np.concatenate([y for _, y in run])
    assert all(x.shape == y.shape == (batch, seq_len) for x, y in run)
    expected = int((lengths + 1).sum())
    assert int(np.count_nonzero(ys)) == count_eval_tokens(ids, "lines") == expected
    # Labels in order are each line's tokens followed by its EOS, every line exactly once.
    flat = ys[ys != 0]
    rows = ids.to_list()
    np.testing.assert_array_equal(flat, np.concatenate([r + [EOS_ID] for r in rows]))
    # Windows start a line with BOS; a continuation window starts with the previous label.
    first = xs[:, 0]
    assert int((first == BOS_ID).sum()) == len(rows)
    windows = int((-(-(lengths + 1) // seq_len)).sum())
    assert (xs[windows:] == 0).all() and (ys[windows:] == 0).all()
    assert (xs[:windows, 0] != 0).all()


def test_evaluation_lines_small_exact():
    lines = [[5, 6, 7, 8, 9], [], [10]]
    run = _batches(evaluation_dataset(lines, "lines", seq_len=3, batch_size=3))
    assert len(run) == 2
    x = np.concatenate([b[0] for b in run])
    y = np.concatenate([b[1] for b in run])
    np.testing.assert_array_equal(
        x, [[BOS_ID, 5, 6], [7, 8, 9], [BOS_ID, 0, 0], [BOS_ID, 10, 0], [0, 0, 0], [0, 0, 0]]
    )
    np.testing.assert_array_equal(
        y, [[5, 6, 7], [8, 9, EOS_ID], [EOS_ID, 0, 0], [10, EOS_ID, 0], [0, 0, 0], [0, 0, 0]]
    )
    assert count_eval_tokens(lines, "lines") == 9
    assert steps_per_epoch(lines, "lines", 3, 2) == 2


def test_evaluation_stream_small_exact():
    ids = np.arange(4, 12, dtype=np.int32)  # 8 tokens -> 7 labels
    run = _batches(evaluation_dataset(ids, "stream", seq_len=3, batch_size=2))
    x = np.concatenate([b[0] for b in run])
    y = np.concatenate([b[1] for b in run])
    np.testing.assert_array_equal(x, [[4, 5, 6], [7, 8, 9], [10, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(y, [[5, 6, 7], [8, 9, 10], [11, 0, 0], [0, 0, 0]])
    assert count_eval_tokens(ids, "stream") == 7
    assert steps_per_epoch(ids, "stream", 3, 2) == len(run) == 2
    with pytest.raises(ZooError):
        evaluation_dataset(ids[:1], "stream", 3, 2)
