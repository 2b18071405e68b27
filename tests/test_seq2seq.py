"""transformer_seq2seq: causal decoder / bidirectional encoder, cached = uncached decoding (greedy
and beam), parallel data, resume, .keras reload, SavedModel in a clean interpreter, and the
served ``translate`` signature over REST and gRPC (train once, export once, serve once)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import export
import zoo
from zoo.data import parallel as zpar
from zoo.errors import ZooError
from zoo.models.transformer_seq2seq import translate_ids
from zoo.tasks import seq2seq
from zoo.text_metrics import bleu, rouge
from zoo.tokenizers.base import BOS_ID, EOS_ID

FAST = dict(verbose=0, max_steps=4, batch_size=8, checkpoint_every=2, eval_batches=2,
            vocab_size=300, learning_rate=3e-3)
SOURCES = ["A man in a blue shirt is standing on a ladder.", "Two dogs play in the snow.", ""]


def _tiny_model(**sizes):
    keras.utils.set_random_seed(7)
    settings = dict(num_encoder_layers=1, num_decoder_layers=2, max_source_length=12,
                    max_target_length=10, source_vocab_size=37)
    settings.update(sizes)
    return zoo.build_model("transformer_seq2seq", 41, "tiny", **settings)


SOURCE_IDS = np.array([[5, 9, 11, 7, 30, EOS_ID, 0, 0],
                       [6, EOS_ID, 0, 0, 0, 0, 0, 0],
                       [8, 12, 13, 14, 15, 16, 17, EOS_ID]], np.int32)


# ------------------------------------------------------------------------------------------------
# the model


def test_decoder_is_causal_and_encoder_bidirectional():
    model = _tiny_model()
    src = tf.constant(SOURCE_IDS)
    tgt = np.array([[BOS_ID, 5, 6, 7, 8, 9]] * 3, np.int32)
    base = model((src, tf.constant(tgt))).numpy()
    for k in range(1, tgt.shape[1]):
        changed = tgt.copy()
        changed[:, k] = 20
        out = model((src, tf.constant(changed))).numpy()
        np.testing.assert_allclose(out[:, :k], base[:, :k], atol=1e-6)  # no look-ahead
        assert np.abs(out[:, k:] - base[:, k:]).max() > 1e-4
    # the encoder is bidirectional: the last source token changes the first encoder state
    memory, _ = model.encode(src)
    last = SOURCE_IDS.copy()
    last[2, 6] = 33
    memory2, _ = model.encode(tf.constant(last))
    assert np.abs(memory2.numpy()[2, 0] - memory.numpy()[2, 0]).max() > 1e-4
    np.testing.assert_allclose(memory2.numpy()[:2], memory.numpy()[:2], atol=1e-6)
    # source padding is masked: more padding columns change nothing
    wider = np.pad(SOURCE_IDS, [[0, 0], [0, 3]])
    np.testing.assert_allclose(model((tf.constant(wider), tf.constant(tgt))).numpy(), base,
                               atol=1e-5)


def test_decode_step_with_caches_equals_the_full_decoder():
    model = _tiny_model()
    src = tf.constant(SOURCE_IDS)
    tgt = tf.constant([[BOS_ID, 5, 6, 7, 8]] * 3)
    full = model((src, tgt)).numpy()
    memory, mask = model.encode(src)
    cross = model.cross_caches(memory)
    cache = model.init_decoder_cache(3, 10)
    logits, cache = model.decode_step(tgt[:, :2], cache, cross, mask, 0)  # a 2-token prefill
    steps = [logits.numpy()]
    for i in range(2, 5):
        logits, cache = model.decode_step(tgt[:, i : i + 1], cache, cross, mask, i)
        steps.append(logits.numpy())
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def _decode(model, **settings):
    fn = tf.function(lambda ids: translate_ids(model, ids, **settings))
    ids, counts = fn(tf.constant(SOURCE_IDS))
    return ids.numpy(), counts.numpy()


def test_cached_and_uncached_decoding_agree_greedy_and_beam():
    model = _tiny_model()
    greedy = _decode(model, strategy="greedy")
    np.testing.assert_array_equal(greedy[0], _decode(model, strategy="greedy", cached=False)[0])
    assert greedy[0].shape == (3, 9)  # max_target_length - 1 new tokens at most
    assert len({tuple(row) for row in greedy[0]}) > 1 and (greedy[0] > 3).sum() > 5
    beam = _decode(model, strategy="beam", num_beams=3)
    uncached = _decode(model, strategy="beam", num_beams=3, cached=False)
    np.testing.assert_array_equal(beam[0], uncached[0])
    np.testing.assert_array_equal(beam[1], uncached[1])
    one_beam = _decode(model, strategy="beam", num_beams=1)
    np.testing.assert_array_equal(one_beam[0], greedy[0])
    np.testing.assert_array_equal(one_beam[1], greedy[1])


# ------------------------------------------------------------------------------------------------
# parallel data


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_parallel_files_tsv_and_misaligned(tmp_path, data_dir):
    src = _write(tmp_path / "a.en", [f"source {i}" for i in range(10)])
    tgt = _write(tmp_path / "a.de", [f"ziel {i}" for i in range(10)])
    corpus = zpar.load_parallel(f"{src}:{tgt}")
    train, valid = corpus.pairs("train"), corpus.pairs("validation")
    assert train == ([f"source {i}" for i in range(9)], [f"ziel {i}" for i in range(9)])
    assert valid == (["source 9"], ["ziel 9"])
    with pytest.raises(ZooError, match="no 'test' split"):
        corpus.pairs("test")

    tsv = _write(tmp_path / "pairs.tsv", ["source\ttarget"] + [f"s{i}\tt{i}" for i in range(5)])
    assert zpar.load_parallel(tsv).pairs("train") == (["s0", "s1", "s2", "s3"],
                                                      ["t0", "t1", "t2", "t3"])
    bad_tsv = _write(tmp_path / "bad.tsv", ["a\tb", "c\td\te"])
    with pytest.raises(ZooError, match=r"bad.tsv:2: expected two tab-separated columns"):
        zpar.load_parallel(bad_tsv)

    short = _write(tmp_path / "b.de", [f"ziel {i}" for i in range(7)])
    with pytest.raises(ZooError) as err:
        zpar.load_parallel(f"{src}:{short}")
    assert all(s in str(err.value) for s in (src, short, "10 lines", "has 7"))
    with pytest.raises(ZooError, match="no such file"):
        zpar.load_parallel(f"{src}:{tmp_path / 'missing.de'}")

    forward = zpar.load_parallel("dataset:multi30k").pairs("validation")
    backward = zpar.load_parallel("dataset:multi30k:de-en").pairs("validation")
    assert backward == (forward[1], forward[0]) and len(forward[0]) == 1014
    assert forward[0][0].startswith("A group of men")
    with pytest.raises(ZooError, match="unknown direction"):
        zpar.load_parallel("dataset:multi30k:en-fr")


def test_training_batches_are_a_function_of_seed_and_step():
    source = tf.ragged.constant([[5, 6, 7], [8], [9, 10, 11, 12, 13, 14]], tf.int32)
    target = tf.ragged.constant([[20, 21], [22, 23, 24], [25]], tf.int32)
    pairs = zpar.EncodedPairs(source.flat_values.numpy(), source.row_splits.numpy(),
                              target.flat_values.numpy(), target.row_splits.numpy())
    sizes = dict(max_source_length=5, max_target_length=3)
    whole = list(zpar.training_dataset(pairs, 4, seed=3, num_steps=5, **sizes))
    later = list(zpar.training_dataset(pairs, 4, seed=3, start_step=3, num_steps=2, **sizes))
    for (a, b), (c, d) in zip(whole[3:], later, strict=True):
        for x, y in zip(tf.nest.flatten(a) + [b], tf.nest.flatten(c) + [d], strict=True):
            np.testing.assert_array_equal(x.numpy(), y.numpy())
    (src, tgt_in), tgt_out = next(iter(zpar.evaluation_dataset(pairs, 4, **sizes)))
    np.testing.assert_array_equal(src.numpy()[:, :5], [[5, 6, 7, EOS_ID, 0], [8, EOS_ID, 0, 0, 0],
                                                      [9, 10, 11, 12, EOS_ID], [0] * 5])
    np.testing.assert_array_equal(tgt_in.numpy(), [[BOS_ID, 20, 21], [BOS_ID, 22, 23],
                                                   [BOS_ID, 25, 0], [0, 0, 0]])
    np.testing.assert_array_equal(tgt_out.numpy(), [[20, 21, EOS_ID], [22, 23, 24],
                                                    [25, EOS_ID, 0], [0, 0, 0]])
    assert pairs.target_tokens(3) == int((tgt_out.numpy() > 0).sum())


# ------------------------------------------------------------------------------------------------
# a trained run (once), its export (once), a server (once)


@pytest.fixture(scope="module")
def pair_files(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    paths = []
    for lang in ("en", "de"):
        with open(os.path.join(data_dir, "multi30k", f"train.{lang}"), encoding="utf-8") as f:
            lines = [next(f) for _ in range(240)]
        path = root / f"small.{lang}"
        path.write_text("".join(lines), encoding="utf-8")
        paths.append(str(path))
    return f"{paths[0]}:{paths[1]}"


@pytest.fixture(scope="module")
def trained(pair_files, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("s2s") / "run")
    return zoo.train("transformer_seq2seq", pair_files, out, **FAST)


def test_run_layout_and_translate(trained):
    config = trained.config
    assert config["task"] == "seq2seq" and config["extra_tokenizers"] == ["source"]
    assert os.path.isfile(os.path.join(trained.path, "source_tokenizer", "tokenizer.json"))
    src_tok = trained.extra_tokenizers["source"]
    assert src_tok.kind == trained.tokenizer.kind == "sentencepiece"
    assert config["model_config"]["source_vocab_size"] == src_tok.vocab_size
    assert trained.model.source_embedding.vocab_size == src_tok.vocab_size
    assert trained.model.vocab_size == config["vocab_size"] == trained.tokenizer.vocab_size
    out = trained.translate(SOURCES)
    assert isinstance(out, list) and len(out) == 3 and all(isinstance(t, str) for t in out)
    assert trained.translate(SOURCES[0]) == out[0]
    with pytest.raises(ZooError, match="max_new_tokens"):
        trained.translate(SOURCES, max_new_tokens=500)
    with pytest.raises(ZooError, match="unknown strategy"):
        trained.translate(SOURCES, strategy="sample")


def test_keras_file_reloads_in_safe_mode(trained):
    model = keras.saving.load_model(os.path.join(trained.path, "model.keras"), safe_mode=True,
                                    compile=False)
    src = tf.constant(SOURCE_IDS)
    tgt = tf.constant([[BOS_ID, 5, 6, 7]] * 3)
    np.testing.assert_array_equal(model((src, tgt)).numpy(), trained.model((src, tgt)).numpy())
    assert model.get_config() == trained.model.get_config()


def test_evaluate_reports_loss_bleu_and_rouge(trained, capsys, monkeypatch):
    result = seq2seq.evaluate(trained, max_examples=6)
    assert result["examples"] == 6 and result["split"] == "validation"
    assert result["perplexity"] == pytest.approx(np.exp(result["loss"]))
    sources, references = zpar.load_parallel(trained.config["data"]).pairs("validation")
    hypotheses = trained.translate(sources[:6])
    assert result["bleu"] == bleu(hypotheses, references[:6])
    assert {k: result[k] for k in ("rouge1", "rouge2", "rougeL")} == rouge(hypotheses,
                                                                            references[:6])
    from zoo.cli import main

    monkeypatch.setattr("zoo.run.load", lambda path: trained)  # the compiled decoders are reused
    assert main(["eval", trained.path]) == 0  # the whole split
    printed = json.loads(capsys.readouterr().out)
    assert printed["examples"] == 24 and {"bleu", "rougeL", "loss"} <= set(printed)
    assert main(["translate", trained.path, "--text", SOURCES[0], "--strategy", "beam"]) == 0
    assert capsys.readouterr().out == trained.translate(SOURCES[0], strategy="beam") + "\n"


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("s2s_export") / "s2s")
    return export.saved_model(trained, base)  # max_new_tokens clamped to the target context


def test_saved_model_in_a_clean_interpreter_equals_run_translate(trained, exported, tmp_path):
    script = textwrap.dedent(
        """
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # the SentencePiece ops
        m = tf.saved_model.load(sys.argv[1])
        source = tf.constant(json.loads(sys.argv[2]))
        out = {name: [t.decode() for t in m.signatures[name](source=source)["target"].numpy()]
               for name in ("translate", "serving_default", "translate_beam")}
        out["modules"] = [m for m in ("zoo", "export", "serving", "keras") if m in sys.modules]
        print(json.dumps(out))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script, exported, json.dumps(SOURCES)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not {"zoo", "export", "serving"} & set(result["modules"])
    assert result["translate"] == result["serving_default"] == trained.translate(SOURCES)
    assert result["translate_beam"] == trained.translate(SOURCES, strategy="beam", num_beams=4)
    info = json.load(open(os.path.join(exported, "assets.extra", "zoo_export.json")))
    assert info["task"] == "seq2seq" and info["export"]["max_new_tokens"] == 31
    assert sorted(os.listdir(os.path.join(exported, "assets"))) == [
        "source_sentencepiece.model", "source_tokenizer.json",
        "target_sentencepiece.model", "target_tokenizer.json"]


def test_served_translate_over_rest_and_grpc(trained, exported):
    from serving.client import GrpcClient, RestClient
    from serving.config import ANY_PORT, ModelConfig, ServerConfig
    from serving.server import ModelServer

    base = os.path.dirname(exported)
    server = ModelServer(ServerConfig(models=[ModelConfig("s2s", base)], port=ANY_PORT,
                                      rest_api_port=ANY_PORT)).start(timeout=120)
    try:
        expected = trained.translate(SOURCES)
        rest = RestClient(f"http://127.0.0.1:{server.rest_port}")
        body = rest.request("POST", "/v1/models/s2s:predict",
                            {"signature_name": "translate", "instances": SOURCES})
        assert [row["target"] for row in body["predictions"]] == expected
        body = rest.request("POST", "/v1/models/s2s:predict",
                            {"inputs": {"source": SOURCES}})  # serving_default
        assert body["outputs"]["target"] == expected
        assert server.grpc_server is not None
        with GrpcClient(f"127.0.0.1:{server.grpc_port}") as client:
            out = client.predict("s2s", {"source": SOURCES}, signature_name="translate")
        assert [t.decode("utf-8") for t in out["target"]] == expected
        assert list(out["num_tokens"]) == [len(row[row > 0]) for row in out["token_ids"]]
    finally:
        server.stop()


# Last: training calls tf.random.set_seed, which clears TensorFlow's eager kernel cache and with
# it the SentencePiece model resources of tokenizers created before (a tensorflow-text
# kernel-owned resource), so runs loaded earlier in this process could not tokenize afterwards.
def test_resume_from_checkpoint_replays_the_same_batches(trained, pair_files, tmp_path):
    copy = str(tmp_path / "resumed")
    shutil.copytree(trained.path, copy)
    for name in ("model.keras", "metrics.json"):
        os.remove(os.path.join(copy, name))
    checkpoints = os.path.join(copy, "checkpoints")
    for path in glob.glob(os.path.join(checkpoints, "ckpt-4*")):
        os.remove(path)
    with open(os.path.join(checkpoints, "checkpoint"), "w") as f:  # as if killed after step 2
        f.write('model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-2"\n')
    resumed = zoo.train("transformer_seq2seq", pair_files, copy, **FAST)
    with open(os.path.join(copy, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["resumed_from_step"] == 2 and metrics["steps"] == 4
    for a, b in zip(trained.model.weights, resumed.model.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    with pytest.raises(ZooError, match="other settings"):
        zoo.train("transformer_seq2seq", pair_files, copy, **dict(FAST, max_steps=6))
