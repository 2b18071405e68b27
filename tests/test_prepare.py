"""``zoo prepare``: sharded token ids, their manifest and checksums, and training from them."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import data as zdata
from zoo.cli import main
from zoo.data.prepared import MANIFEST
from zoo.data.windows import StreamIds
from zoo.errors import ZooError

FAST = dict(max_steps=6, batch_size=4, seq_len=32, checkpoint_every=3, eval_batches=2)


@pytest.fixture(scope="module")
def prepared_dir(shakespeare_file, tmp_path_factory) -> str:
    """The small Shakespeare file in shards of 5,000 ids: 4 train shards, 1 validation shard."""
    out = str(tmp_path_factory.mktemp("prepared") / "shakespeare")
    zdata.prepare(shakespeare_file, out, tokenizer="char", shard_tokens=5000)
    return out


def _batches(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_manifest_shards_and_ids_match_tokenizing_the_text(prepared_dir, shakespeare_file):
    data = zdata.open_prepared("prepared:" + prepared_dir)
    manifest = data.manifest
    assert manifest["source"] == shakespeare_file and data.kind == "stream"
    assert manifest["tokenizer"]["kind"] == "char"
    train = manifest["splits"]["train"]
    assert [s["tokens"] for s in train["shards"]] == [5000, 5000, 5000, 3000]
    assert [s["file"] for s in train["shards"]][0] == "train-00000-of-00004.tfrecord"
    assert all(len(s["sha256"]) == 64 for s in train["shards"])

    tok = data.tokenizer()
    corpus = zdata.load_corpus(shakespeare_file)
    for split in ("train", "validation"):
        expected = zdata.encode(tok, corpus, split)
        np.testing.assert_array_equal(data.ids(split), expected)
        assert data.num_tokens(split) == expected.size
    # each shard is an ordinary TFRecord file: one record of raw little-endian int32 ids
    first = os.path.join(prepared_dir, train["shards"][0]["file"])
    (record,) = list(tf.data.TFRecordDataset(first))
    np.testing.assert_array_equal(tf.io.decode_raw(record, tf.int32).numpy(), data.ids("train")[:5000])


def test_prepared_batches_are_the_in_memory_batches(prepared_dir, shakespeare_file):
    """Batch s depends only on (seed, s), whether the ids come from the text or the shards."""
    data = zdata.open_prepared(prepared_dir)
    ids = zdata.encode(data.tokenizer(), zdata.load_corpus(shakespeare_file), "train")
    for start_step, seq_len, batch in ((0, 32, 8), (17, 64, 5)):
        expected = zdata.training_dataset(ids, "stream", seq_len, batch, seed=3,
                                          start_step=start_step, num_steps=25)
        got = data.training_dataset(seq_len, batch, seed=3, start_step=start_step, num_steps=25)
        for (x, y), (gx, gy) in zip(_batches(expected), _batches(got), strict=True):
            np.testing.assert_array_equal(gx, x)
            np.testing.assert_array_equal(gy, y)
    # windows over shard boundaries (5000, 10000, 15000) read across the two shards
    sharded = StreamIds(data.shard_arrays("train"))
    starts = np.array([4990, 9999, 14968, 0, 17960], np.int64)
    np.testing.assert_array_equal(sharded.windows(starts, 33), ids[starts[:, None] + np.arange(33)])


def test_training_on_prepared_data_equals_training_on_the_text(prepared_dir, shakespeare_file,
                                                              tmp_path):
    text_run = zoo.train("transformer_lm", shakespeare_file, str(tmp_path / "text"), verbose=0, **FAST)
    out = str(tmp_path / "prepared")
    run = zoo.train("transformer_lm", "prepared:" + prepared_dir, out, verbose=0, **FAST)
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(text_run.path, "metrics.json")) as f:
        text_metrics = json.load(f)
    assert metrics["history"] == text_metrics["history"]
    assert metrics["validation"] == text_metrics["validation"]
    for a, b in zip(run.model.get_weights(), text_run.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["tokenizer"] == "char" and len(config["prepared"]) == 64
    assert run.tokenizer.vocab_size == text_run.tokenizer.vocab_size
    assert config["data"] == "prepared:" + prepared_dir
    # zoo eval reads the prepared validation shards: same figures as on the text
    assert run.evaluate() == {**text_run.evaluate(), "data": "prepared:" + prepared_dir}
    # the directory alone (without the prefix) names the same data: the finished run loads
    again = zoo.train("transformer_lm", prepared_dir, out, verbose=0, **FAST)
    np.testing.assert_array_equal(again.model.get_weights()[0], run.model.get_weights()[0])
    with pytest.raises(ZooError, match="prepared with the char tokenizer"):
        zoo.train("transformer_lm", prepared_dir, str(tmp_path / "w"), verbose=0, tokenizer="word",
                  **FAST)


def test_damaged_or_missing_shards_are_detected(prepared_dir, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(prepared_dir, copy)
    zdata.open_prepared(copy)  # intact: verifies
    shard = os.path.join(copy, "train-00002-of-00004.tfrecord")
    with open(shard, "r+b") as f:  # flip one byte inside the ids
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ZooError, match="train-00002-of-00004.tfrecord does not match the sha256"):
        zdata.open_prepared(copy)
    with pytest.raises(ZooError, match="sha256"):
        zoo.train("transformer_lm", "prepared:" + copy, str(tmp_path / "run"), verbose=0, **FAST)
    zdata.open_prepared(copy, verify=False)  # the caller may skip the check
    with open(shard, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ZooError, match="damaged shard"):
        zdata.open_prepared(copy, verify=False).shard_arrays("train")
    os.remove(os.path.join(copy, "tokenizer", "tokenizer.json"))
    with pytest.raises(ZooError, match="missing"):
        zdata.open_prepared(copy)
    with pytest.raises(ZooError, match=f"holds no {MANIFEST}"):
        zdata.open_prepared(str(tmp_path))


def test_line_corpus_prepared_ids_and_batches(data_dir, tmp_path):
    out = str(tmp_path / "ptb")
    manifest = zdata.prepare("dataset:ptb", out, tokenizer="word", shard_tokens=400_000)
    assert manifest["corpus"]["kind"] == "lines"
    assert len(manifest["splits"]["train"]["shards"]) == 3
    data = zdata.open_prepared(out)
    corpus = zdata.load_corpus("dataset:ptb")
    tok = data.tokenizer()
    for split in ("train", "test"):
        expected, got = zdata.encode(tok, corpus, split), data.ids(split)
        np.testing.assert_array_equal(got.flat_values.numpy(), expected.flat_values.numpy())
        np.testing.assert_array_equal(got.row_splits.numpy(), expected.row_splits.numpy())
    expected = zdata.training_dataset(zdata.encode(tok, corpus, "train"), "lines", 24, 8, seed=1,
                                      start_step=5, num_steps=10)
    got = data.training_dataset(24, 8, seed=1, start_step=5, num_steps=10)
    for (x, y), (gx, gy) in zip(_batches(expected), _batches(got), strict=True):
        np.testing.assert_array_equal(gx, x)
        np.testing.assert_array_equal(gy, y)


def test_prepare_and_train_from_the_command_line(shakespeare_file, tmp_path, capsys):
    out = str(tmp_path / "cli")
    assert main(["prepare", "--data", shakespeare_file, "--out", out, "--shard-tokens", "4000"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"]["train"] == {"tokens": 18000, "shards": 5}
    assert summary["tokenizer"] == "char"
    # an existing directory is never overwritten
    assert main(["prepare", "--data", shakespeare_file, "--out", out]) == 2
    assert "already exists" in capsys.readouterr().err
    # the tokenizer is the prepared one: asking for another is a one-line error
    assert main(["train", "gru_lm", "--data", "prepared:" + out, "--out", str(tmp_path / "r"),
                 "--tokenizer", "word", "--max-steps", "2", "--quiet"]) == 2
    assert "prepared with the char tokenizer" in capsys.readouterr().err
    # a prepared directory given as a plain path trains
    assert main(["train", "gru_lm", "--data", out, "--out", str(tmp_path / "run"), "--max-steps",
                 "2", "--batch-size", "4", "--seq-len", "16", "--quiet", "--set", "model.units=16",
                 "--set", "checkpoint_every=2", "--set", "eval_batches=1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 2
