"""``export.saved_model``: TF Serving SavedModels of tiny runs, checked against the Python API."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import export
import zoo
from export.saved_model import TEMP_PREFIX, WARMUP_FILE
from zoo.errors import ZooError
from zoo.generation.api import row_seed
from zoo.tasks.causal_lm import score_texts

CAUSAL_MODELS = ["gcnn_lm", "gru_lm", "lstm_lm", "mlp_lm", "transformer_lm"]  # rnn_lm: as lstm_lm, gru_lm
FAST = dict(verbose=0, max_steps=6, batch_size=4, seq_len=32, checkpoint_every=3, eval_batches=2)
MAX_NEW = 12  # the exports' max_new_tokens (the transformer's context is 32)

# prompts of different lengths; the last one is longer than the transformer's context
PROMPTS = ["ROMEO:", "First Citizen:\nWe are", "a", "To be, or not " * 5]
UNICODE_TEXT = "Café déjà vu, naïve façade. 中文字符 and 日本語. Emoji: 😀🎉👍. Ünïcödé ß. "


class Exported:
    """A trained run, its export and the loaded SavedModel."""

    def __init__(self, run, base, **kwargs):
        self.run = run
        self.path = export.saved_model(run, base, max_new_tokens=MAX_NEW, **kwargs)
        self.loaded = tf.saved_model.load(self.path)

    def sig(self, name, **inputs):
        outputs = self.loaded.signatures[name](**inputs)
        return {key: value.numpy() for key, value in outputs.items()}

    def generate(self, prompts, max_new_tokens=MAX_NEW, temperature=0.0, top_k=0, top_p=1.0,
                 seeds=None):
        n = len(prompts)
        seeds = list(range(n)) if seeds is None else seeds
        return self.sig(
            "generate",
            prompt=tf.constant(prompts, tf.string),
            max_new_tokens=tf.constant(np.broadcast_to(max_new_tokens, [n]), tf.int32),
            temperature=tf.constant(np.broadcast_to(temperature, [n]), tf.float32),
            top_k=tf.constant(np.broadcast_to(top_k, [n]), tf.int32),
            top_p=tf.constant(np.broadcast_to(top_p, [n]), tf.float32),
            seed=tf.constant(seeds, tf.int64),
        )

    def texts(self, name, **inputs):
        return [t.decode("utf-8") for t in self.sig(name, **inputs)["text"]]


def _decode(values):
    return [v.decode("utf-8") for v in values]


@pytest.fixture(scope="module")
def exports(shakespeare_file, data_dir, tmp_path_factory):
    """Every causal model (char, stream), a line-corpus transformer, a char model whose training
    text holds accents/CJK/emoji, and a SentencePiece model; each trained a few steps and exported
    once."""
    root = tmp_path_factory.mktemp("export_runs")
    models = root / "models"
    result = {}
    for name in CAUSAL_MODELS:
        run = zoo.train(name, shakespeare_file, str(root / name), **FAST)
        result[name] = Exported(run, str(models / name))
    lines = zoo.train("transformer_lm", "dataset:multi30k", str(root / "lines"), tokenizer="char",
                      verbose=0, max_steps=4, batch_size=8, seq_len=32, checkpoint_every=2,
                      eval_batches=2)
    assert lines.line_corpus
    result["lines"] = Exported(lines, str(models / "lines"))
    with open(shakespeare_file, encoding="utf-8") as f:
        text = f.read()
    unicode_file = root / "unicode.txt"
    unicode_file.write_text((UNICODE_TEXT + "\n") * 30 + text[:5000], encoding="utf-8")
    char = zoo.train("mlp_lm", str(unicode_file), str(root / "unicode"), **FAST)
    result["unicode"] = Exported(char, str(models / "unicode"))
    sp = zoo.train("mlp_lm", shakespeare_file, str(root / "sp"), tokenizer="sentencepiece",
                   vocab_size=300, **FAST)
    result["sentencepiece"] = Exported(sp, str(models / "sp"))
    return result


# ------------------------------------------------------------------------------------------------
# generation


@pytest.mark.parametrize("name", CAUSAL_MODELS + ["lines"])
def test_greedy_generate_equals_run_generate(name, exports):
    e = exports[name]
    expected = e.run.generate(PROMPTS, strategy="greedy", max_new_tokens=MAX_NEW)
    assert e.texts("serving_default", prompt=tf.constant(PROMPTS)) == expected
    out = e.generate(PROMPTS, temperature=0.0, top_k=7, top_p=0.5)  # filters ignored when greedy
    assert _decode(out["text"]) == expected
    for row, text in enumerate(expected):
        n = int(out["num_tokens"][row])
        assert e.run.tokenizer.decode(out["token_ids"][row][:n]) == text
        assert not out["token_ids"][row][n:].any()
    # one prompt at a time gives the same text as in a batch
    for prompt, text in zip(PROMPTS, expected, strict=True):
        assert e.texts("serving_default", prompt=tf.constant([prompt])) == [text]


@pytest.mark.parametrize("name", ["transformer_lm", "gru_lm"])
def test_row_budgets_are_clamped(name, exports):
    e = exports[name]
    prompts = PROMPTS[:3]  # shorter than the context: the budget does not change the truncation
    out = e.generate(prompts, max_new_tokens=np.array([5, 1000, -3], np.int32))
    assert list(out["num_tokens"]) == [5, MAX_NEW, 0]
    full = e.run.generate(prompts, max_new_tokens=MAX_NEW)
    assert _decode(out["text"]) == [full[0][:5], full[1], ""]
    assert out["token_ids"].shape == (3, MAX_NEW)


@pytest.mark.parametrize("name", CAUSAL_MODELS + ["lines"])
def test_sampling_is_seeded_per_row_like_the_python_api(name, exports):
    e = exports[name]
    settings = dict(temperature=0.9, top_k=20, top_p=0.95)
    seeds = [row_seed(7, b) for b in range(len(PROMPTS))]
    out = e.generate(PROMPTS, seeds=seeds, **settings)
    expected = e.run.generate(PROMPTS, strategy="sample", seed=7, max_new_tokens=MAX_NEW,
                              **settings)
    assert _decode(out["text"]) == expected
    again = e.generate(PROMPTS, seeds=seeds, **settings)
    assert _decode(again["text"]) == expected
    # a row's sample does not depend on the rest of the batch
    alone = e.generate(PROMPTS[1:2], seeds=seeds[1:2], **settings)
    assert _decode(alone["text"]) == expected[1:2]
    # different seeds differ (temperature 2 on a barely trained model: nearly uniform)
    prompt = ["ROMEO:"] * 4
    hot = e.generate(prompt, temperature=2.0, seeds=[1, 2, 3, 4])
    assert len(set(_decode(hot["text"]))) == 4


def test_serving_default_with_sampling_defaults(exports, tmp_path):
    run = exports["mlp_lm"].run
    path = export.saved_model(run, str(tmp_path / "m"), max_new_tokens=MAX_NEW,
                              temperature=2.0, top_k=30)
    loaded = tf.saved_model.load(path)
    texts = [loaded.signatures["serving_default"](prompt=tf.constant(["ROMEO:"] * 3))["text"]
             for _ in range(2)]
    drawn = {t.decode() for batch in texts for t in batch.numpy()}
    assert len(drawn) > 1  # fresh seeds for every row and request
    with open(os.path.join(path, "assets.extra", "zoo_export.json")) as f:
        info = json.load(f)
    assert info["export"]["temperature"] == 2.0 and info["export"]["top_k"] == 30


def test_empty_and_long_prompts(exports):
    stream = exports["transformer_lm"]
    prompts = ["", "ROMEO:", "", "e" * 500]
    out = stream.generate(prompts)
    assert list(out["num_tokens"][[0, 2]]) == [0, 0]
    text = _decode(out["text"])
    assert text[0] == text[2] == ""
    assert text[1::2] == stream.run.generate(prompts[1::2], max_new_tokens=MAX_NEW)
    assert stream.texts("serving_default", prompt=tf.constant(["", ""])) == ["", ""]
    # an empty batch is fine too
    empty = stream.sig("serving_default", prompt=tf.constant([], tf.string))
    assert empty["text"].shape == (0,)
    # inputs of different batch sizes are an InvalidArgument error (TF Serving: HTTP 400)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one value per prompt"):
        stream.loaded.signatures["generate"](
            prompt=tf.constant(["a", "b"]), max_new_tokens=tf.constant([3]),
            temperature=tf.constant([0.0, 0.0]), top_k=tf.constant([0, 0]),
            top_p=tf.constant([1.0, 1.0]), seed=tf.constant([0, 0], tf.int64))
    # a prompt far beyond the context: the sliding window's rounds (zoo.generation.window)
    long_prompt = (PROMPTS[1] + " ") * 40
    assert stream.texts("serving_default", prompt=tf.constant([long_prompt])) == [
        stream.run.generate(long_prompt, max_new_tokens=MAX_NEW)
    ]
    # an RNN has no context limit: a long prompt is read whole
    gru = exports["gru_lm"]
    assert gru.texts("serving_default", prompt=tf.constant([long_prompt])) == [
        gru.run.generate(long_prompt, max_new_tokens=MAX_NEW)
    ]
    # a line model starts from <bos>: an empty prompt is a real prompt
    lines = exports["lines"]
    assert lines.texts("serving_default", prompt=tf.constant([""])) == [
        lines.run.generate("", max_new_tokens=MAX_NEW)
    ]


# ------------------------------------------------------------------------------------------------
# scoring


@pytest.mark.parametrize("name", CAUSAL_MODELS + ["lines", "sentencepiece"])
def test_score_equals_score_texts(name, exports):
    e = exports[name]
    texts = PROMPTS + ["", "Q", "Citizen " * 12]
    out = e.sig("score", text=tf.constant(texts))
    reference = score_texts(e.run.model, e.run.tokenizer, texts, e.run.line_corpus)
    np.testing.assert_allclose(out["log_likelihood"], [r[0] for r in reference], atol=1e-4,
                               rtol=1e-6)
    assert list(out["num_tokens"]) == [r[1] for r in reference]
    n = np.maximum(out["num_tokens"], 1)
    np.testing.assert_allclose(out["perplexity"], np.exp(-out["log_likelihood"] / n), rtol=1e-5)
    if e.run.line_corpus:
        assert out["num_tokens"][4] == 1  # "" is <bos> <eos>: <eos> is scored
    else:
        assert out["num_tokens"][4] == 0 and out["perplexity"][4] == 1.0
        if e.run.tokenizer.kind == "char":
            assert out["num_tokens"][0] == len("ROMEO:") - 1


@pytest.mark.parametrize("name", CAUSAL_MODELS)
def test_score_over_validation_windows_equals_zoo_eval(name, exports, shakespeare_file):
    """A stream split cut into zoo eval's windows (seq_len + 1 characters, stride seq_len):
    the summed log-likelihood is minus eval's total NLL, over the same number of tokens."""
    e = exports[name]
    with open(shakespeare_file, encoding="utf-8") as f:
        text = f.read()
    valid = text[int(len(text) * 0.9) :]
    seq_len = e.run.config["seq_len"]
    windows = [valid[s : s + seq_len + 1] for s in range(0, len(valid) - 1, seq_len)]
    out = e.sig("score", text=tf.constant(windows))
    result = e.run.evaluate()
    assert int(out["num_tokens"].sum()) == result["tokens"]
    assert -float(np.sum(out["log_likelihood"], dtype=np.float64)) == pytest.approx(
        result["total_nll"], rel=1e-5
    )


def test_line_model_score_over_validation_equals_zoo_eval(exports):
    """Line corpus: each sentence as <bos> text <eos>, long ones in windows of the context."""
    e = exports["lines"]
    from zoo import data as zdata

    lines = zdata.load_corpus(e.run.config["data"]).lines("validation")
    total, tokens = 0.0, 0
    for start in range(0, len(lines), 256):
        out = e.sig("score", text=tf.constant(lines[start : start + 256]))
        total += float(np.sum(out["log_likelihood"], dtype=np.float64))
        tokens += int(out["num_tokens"].sum())
    result = e.run.evaluate()
    assert tokens == result["tokens"]
    assert -total == pytest.approx(result["total_nll"], rel=1e-5)


# ------------------------------------------------------------------------------------------------
# tokenizers and Unicode


def test_unicode_round_trips_with_char_tokenizer(exports):
    e = exports["unicode"]
    texts = ["Café déjà vu", "中文字符 and 日本語", "😀🎉👍 ß", "", "naïve\nfaçade"]
    tok = e.sig("tokenize", text=tf.constant(texts))
    for row, text in enumerate(texts):
        n = int(tok["num_tokens"][row])
        assert n == len(text)  # one id per code point
        assert list(tok["token_ids"][row][:n]) == list(e.run.tokenizer.tokenize_to_numpy(text))
        assert not tok["token_ids"][row][n:].any()
    back = e.texts("detokenize", token_ids=tf.constant(tok["token_ids"]))
    assert back == texts
    # characters never seen in training become <unk> (id 1), which renders as U+FFFD
    unseen = e.sig("tokenize", text=tf.constant(["a\u03a9b"]))
    assert unseen["token_ids"][0][1] == 1
    assert e.texts("serving_default", prompt=tf.constant(["\u03a9\u03a9"]))[0] is not None
    assert e.texts("detokenize", token_ids=tf.constant(unseen["token_ids"]))[0] == "a\ufffdb"
    # ids out of the vocabulary are <unk> too; 0 is padding
    assert e.texts("detokenize", token_ids=tf.constant([[0, 99999, 0]], tf.int32)) == ["\ufffd"]
    # Unicode prompts generate exactly what the Python API does
    prompts = ["Café", "中文", "😀🎉"]
    assert e.texts("serving_default", prompt=tf.constant(prompts)) == e.run.generate(
        prompts, max_new_tokens=MAX_NEW
    )


def test_unicode_round_trips_with_sentencepiece(exports):
    e = exports["sentencepiece"]
    texts = ["ROMEO: hi", "Café déjà vu", "中文字符", "😀🎉👍", "  two  spaces\nand a line", ""]
    tok = e.sig("tokenize", text=tf.constant(texts))
    for row, text in enumerate(texts):
        n = int(tok["num_tokens"][row])
        assert list(tok["token_ids"][row][:n]) == list(e.run.tokenizer.tokenize_to_numpy(text))
    assert e.texts("detokenize", token_ids=tf.constant(tok["token_ids"])) == texts
    prompts = ["ROMEO:", "Café 中文 😀", ""]
    out = e.texts("serving_default", prompt=tf.constant(prompts))
    assert out[:2] == e.run.generate(prompts[:2], max_new_tokens=MAX_NEW) and out[2] == ""


# ------------------------------------------------------------------------------------------------
# the SavedModel itself


def test_signatures_have_documented_names_dtypes_and_shapes(exports):
    sigs = exports["transformer_lm"].loaded.signatures
    assert set(sigs) == {
        "serving_default", "generate", "score", "tokenize", "detokenize", "stream_start", "stream_step"
    }
    expected_inputs = {
        "serving_default": {"prompt": (tf.string, [None])},
        "generate": {
            "prompt": (tf.string, [None]),
            "max_new_tokens": (tf.int32, [None]),
            "temperature": (tf.float32, [None]),
            "top_k": (tf.int32, [None]),
            "top_p": (tf.float32, [None]),
            "seed": (tf.int64, [None]),
        },
        "score": {"text": (tf.string, [None])},
        "tokenize": {"text": (tf.string, [None])},
        "detokenize": {"token_ids": (tf.int32, [None, None])},
    }
    expected_outputs = {
        "serving_default": {"text": (tf.string, [None])},
        "generate": {
            "text": (tf.string, [None]),
            "token_ids": (tf.int32, [None, None]),
            "num_tokens": (tf.int32, [None]),
        },
        "score": {
            "log_likelihood": (tf.float32, [None]),
            "num_tokens": (tf.int32, [None]),
            "perplexity": (tf.float32, [None]),
        },
        "tokenize": {"token_ids": (tf.int32, [None, None]), "num_tokens": (tf.int32, [None])},
        "detokenize": {"text": (tf.string, [None])},
    }
    for name, fn in sigs.items():
        if name.startswith("stream_"):
            continue  # batch-of-one step signatures, checked in tests/test_serving_streaming.py
        args, kwargs = fn.structured_input_signature
        assert args == ()
        got = {k: (spec.dtype, spec.shape.as_list()) for k, spec in kwargs.items()}
        assert got == expected_inputs[name], name
        got = {k: (spec.dtype, spec.shape.as_list()) for k, spec in fn.structured_outputs.items()}
        assert got == expected_outputs[name], name


def _graph_ops(path):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    graph = proto.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
        assert not function.attr.get("_XlaMustCompile", tf.compat.v1.AttrValue()).b, (
            function.signature.name
        )
    return ops


def test_graph_has_no_xla_ops(exports):
    for name, e in exports.items():
        ops = _graph_ops(e.path)
        assert "While" in ops or "StatelessWhile" in ops, name  # the decoding loop is in-graph
        xla = sorted(op for op in ops if op.startswith("Xla") or op.startswith("_Xla"))
        assert not xla, (name, xla)
    # SentencePiece runs on tensorflow-text ops (registered by `import tensorflow_text`)
    sp_ops = _graph_ops(exports["sentencepiece"].path)
    assert {"SentencepieceOp", "SentencepieceTokenizeOp", "SentencepieceDetokenizeOp"} <= sp_ops


def test_warmup_requests_parse_and_run(exports):
    from tensorflow_serving.apis import prediction_log_pb2

    for name in ("transformer_lm", "lines", "sentencepiece"):
        e = exports[name]
        path = os.path.join(e.path, "assets.extra", WARMUP_FILE)
        seen = []
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            log = prediction_log_pb2.PredictionLog.FromString(record)
            assert log.WhichOneof("log_type") == "predict_log"
            request = log.predict_log.request
            signature = request.model_spec.signature_name
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            assert set(inputs) == set(e.loaded.signatures[signature].structured_input_signature[1])
            outputs = e.loaded.signatures[signature](**inputs)
            assert all(v.shape[0] == 2 for v in outputs.values())
            seen.append(signature)
        assert seen == ["serving_default", "generate", "score"]
    assert sorted(os.listdir(os.path.join(exports["unicode"].path, "assets"))) == [
        "char_vocab.json", "tokenizer.json"
    ]


def test_loads_and_serves_without_the_zoo(exports, tmp_path):
    """A clean interpreter that imports only tensorflow and tensorflow_text."""
    script = textwrap.dedent(
        """
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # registers the SentencePiece ops
        out = {}
        for path in sys.argv[1:]:
            m = tf.saved_model.load(path)
            text = m.signatures["serving_default"](prompt=tf.constant(["ROMEO:", ""]))["text"]
            gen = m.signatures["generate"](
                prompt=tf.constant(["ROMEO:", "To be"]),
                max_new_tokens=tf.constant([4, 6]), temperature=tf.constant([0.0, 0.8]),
                top_k=tf.constant([0, 5]), top_p=tf.constant([1.0, 0.9]),
                seed=tf.constant([1, 2], tf.int64))
            out[path] = {"default": [t.decode() for t in text.numpy()],
                         "generate": [t.decode() for t in gen["text"].numpy()],
                         "num_tokens": gen["num_tokens"].numpy().tolist()}
        out["modules"] = [m for m in ("zoo", "export", "serving", "keras") if m in sys.modules]
        print(json.dumps(out))
        """
    )
    paths = [exports["transformer_lm"].path, exports["sentencepiece"].path]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-c", script, *paths], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # `import tensorflow` itself imports keras; the zoo's packages are never needed
    assert not {"zoo", "export", "serving"} & set(result["modules"])
    for name in ("transformer_lm", "sentencepiece"):
        e = exports[name]
        assert result[e.path]["default"] == e.texts(
            "serving_default", prompt=tf.constant(["ROMEO:", ""])
        )
        assert result[e.path]["num_tokens"][0] == 4


# ------------------------------------------------------------------------------------------------
# versions and atomic writes


def _complete(path):
    return (
        os.path.isfile(os.path.join(path, "saved_model.pb"))
        and os.path.isfile(os.path.join(path, "variables", "variables.index"))
        and os.path.isfile(os.path.join(path, "assets.extra", WARMUP_FILE))
    )


def test_versions_increment_and_appear_complete(exports, tmp_path, monkeypatch, capsys):
    run = exports["mlp_lm"].run
    base = str(tmp_path / "base")
    module = sys.modules["export.saved_model"]
    real_rename = os.rename
    renames = []

    def watching_rename(src, dst):
        # at the moment of the rename the temporary directory is complete and the version is not
        # visible yet
        renames.append((os.path.basename(src), os.path.basename(dst), _complete(src),
                        os.path.exists(dst)))
        return real_rename(src, dst)

    monkeypatch.setattr(module.os, "rename", watching_rename)
    first = export.saved_model(run.path, base, max_new_tokens=4)  # from a run directory
    second = export.saved_model(run, base, max_new_tokens=4)  # from a LoadedRun
    assert (first, second) == (os.path.join(base, "1"), os.path.join(base, "2"))
    assert [r[1:] for r in renames] == [("1", True, False), ("2", True, False)]
    assert all(r[0].startswith(TEMP_PREFIX) and not r[0].isdigit() for r in renames)
    with pytest.raises(ZooError, match="already exists"):
        export.saved_model(run, base, version=2, max_new_tokens=4)
    os.makedirs(os.path.join(base, "9"))  # a version from elsewhere: the next one is 10
    # the CLI hook
    from export.cli import add_export_parser

    parser = argparse.ArgumentParser(prog="zoo")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", run.path, "--saved-model", base, "--max-new-tokens", "4",
                              "--temperature", "0.5", "--top-k", "3"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == os.path.join(base, "10")
    assert sorted(os.listdir(base)) == ["1", "10", "2", "9"]
    assert all(_complete(os.path.join(base, v)) for v in ("1", "2", "10"))
    # readable by a server running as another user: the permissions of any new directory
    os.mkdir(tmp_path / "plain")
    mode = os.stat(tmp_path / "plain").st_mode & 0o777
    assert all(os.stat(os.path.join(base, v)).st_mode & 0o777 == mode for v in ("1", "2", "10"))


def test_failed_exports_leave_nothing_behind(exports, tmp_path, monkeypatch):
    run = exports["mlp_lm"].run
    # a half-written run: no model.keras (training still running), no tokenizer, no config
    for missing in ("model.keras", "tokenizer", "config.json"):
        broken = tmp_path / f"no-{missing}"
        shutil.copytree(run.path, broken)
        target = broken / missing
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
        base = tmp_path / f"base-{missing}"
        with pytest.raises(ZooError, match="missing"):
            export.saved_model(str(broken), str(base))
        assert not base.exists()
    with pytest.raises(ZooError, match="does not exist"):
        export.saved_model(str(tmp_path / "nowhere"), str(tmp_path / "b0"))
    for bad in (dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_p=0.0),
                dict(top_k=-2)):
        with pytest.raises(ZooError):
            export.saved_model(run, str(tmp_path / "b2"), **bad)
    assert not (tmp_path / "b2").exists()

    # an exception in the middle of the write (after saved_model.pb, before the warm-up file)
    base = tmp_path / "base"
    base.mkdir()
    (base / "1").mkdir()
    module = sys.modules["export.saved_model"]
    seen = {}

    def failing_warmup(path, *args, **kwargs):
        tmp = os.path.dirname(os.path.dirname(path))
        seen["tmp"] = os.path.basename(tmp)
        seen["half_written"] = os.path.isfile(os.path.join(tmp, "saved_model.pb"))
        seen["visible"] = sorted(os.listdir(base))
        raise RuntimeError("disk full")

    monkeypatch.setattr(module, "write_warmup_file", failing_warmup)
    with pytest.raises(RuntimeError, match="disk full"):
        export.saved_model(run, str(base), max_new_tokens=4)
    assert seen["half_written"] and seen["tmp"].startswith(TEMP_PREFIX)
    assert seen["visible"] == sorted(["1", seen["tmp"]])  # only the hidden temporary directory
    assert sorted(os.listdir(base)) == ["1"]  # no version 2, no temporary directory
    # and a failure inside tf.saved_model.save itself
    monkeypatch.setattr(module.tf.saved_model, "save", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        export.saved_model(run, str(tmp_path / "fresh"))
    assert not (tmp_path / "fresh").exists()
