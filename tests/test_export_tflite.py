"""LiteRT export (export/tflite.py): tokenizer inside, builtin ops only, same results as Python."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.errors import ZooError

pytest.importorskip("ai_edge_litert")

from export import tflite as litert  # noqa: E402
from zoo.generation.api import row_seed  # noqa: E402

FAST = dict(max_steps=6, batch_size=4, seq_len=32, checkpoint_every=3, eval_batches=2)
M = 96  # max_new_tokens of the exports: 3x the transformer's context (32), so it slides
PROMPTS = [
    "ROMEO:",
    "First Citizen:\nBefore we proceed any further, hear me speak.",  # longer than the context
    "a",
    "What, ho! ",
]
USED_CUSTOM_OPS = {"TFText>ByteSplitWithOffsets", "RaggedTensorToTensor", "TFText>NgramsStringJoin"}


def _export(run, tmp_path_factory, name, **kwargs):
    path = tmp_path_factory.mktemp("litert") / f"{name}.tflite"
    return litert.export_tflite(run, str(path), max_new_tokens=M, **kwargs)


def reference_log_likelihood(run, text):
    """Sum of log p(t_i | t_<i) from the Keras model's own logits (windows of max_length)."""
    ids = [int(i) for i in run.tokenizer.tokenize_to_numpy(text)]
    if run.line_corpus:
        ids = [2, *ids, 3]
    if len(ids) < 2:
        return 0.0, 0
    inputs, labels = ids[:-1], np.array(ids[1:])
    window = run.model.max_length or len(inputs)
    total = 0.0
    for start in range(0, len(inputs), window):
        x = np.array([inputs[start : start + window]], np.int32)
        logits = run.model(x).numpy()[0].astype(np.float64)
        log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
        total += log_probs[np.arange(x.shape[1]), labels[start : start + window]].sum()
    return total, len(labels)


def check_greedy_and_score(run, lm, prompts=PROMPTS):
    expected = [run.generate(p, strategy="greedy", max_new_tokens=M) for p in prompts]
    assert lm.generate(prompts) == expected  # one batched call
    assert lm.generate(prompts[0]) == expected[0]
    log_likelihood, num_tokens = lm.score(prompts)
    for text, got, n in zip(prompts, log_likelihood, num_tokens, strict=True):
        want, want_n = reference_log_likelihood(run, text)
        assert n == want_n, text
        assert abs(got - want) <= 1e-4 * max(1.0, abs(want)), (text, got, want)


@pytest.fixture(scope="module")
def char_runs(shakespeare_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {
        name: zoo.train(name, shakespeare_file, str(root / name), verbose=0, **FAST)
        for name in ("transformer_lm", "lstm_lm")
    }


@pytest.fixture(scope="module")
def float_exports(char_runs, tmp_path_factory):
    return {name: _export(run, tmp_path_factory, name) for name, run in char_runs.items()}


@pytest.mark.parametrize("name", ["transformer_lm", "lstm_lm"])
def test_greedy_generate_and_score_match_the_keras_model(name, char_runs, float_exports):
    run, info = char_runs[name], float_exports[name]
    assert info["quantize"] == "none" and info["bytes"] == os.path.getsize(info["path"])
    lm = litert.LiteRTModel(info["path"])
    check_greedy_and_score(run, lm)
    # the tokenizer inside the model gives the zoo tokenizer's ids
    assert lm.tokenize(PROMPTS) == [run.tokenizer.tokenize_to_numpy(p).tolist() for p in PROMPTS]
    # a continuation has exactly M characters (stream model, no stop token)
    out = lm.runner("generate")(prompt=np.array([b"ROMEO:"], dtype=object))
    assert out["num_tokens"].tolist() == [M] and out["token_ids"].shape == (1, M)


def test_sample_signature_reproduces_python_sampling(char_runs, float_exports):
    run = char_runs["transformer_lm"]
    lm = litert.LiteRTModel(float_exports["transformer_lm"]["path"])
    prompts = PROMPTS[:3]
    for kwargs in (dict(temperature=0.8), dict(temperature=1.0, top_k=5), dict(top_p=0.9)):
        expected = run.generate(prompts, strategy="sample", seed=11, max_new_tokens=M, **kwargs)
        seeds = [row_seed(11, b) for b in range(len(prompts))]
        got = lm.sample(prompts, seed=seeds, **{"temperature": 1.0, **kwargs})
        assert got == expected, kwargs
    # temperature 0 is greedy
    assert lm.sample(prompts, temperature=0.0) == lm.generate(prompts)


@pytest.mark.parametrize("name", ["transformer_lm", "lstm_lm"])
def test_flatbuffer_has_only_builtins_and_tf_text_ops(name, float_exports):
    with open(float_exports[name]["path"], "rb") as f:
        flatbuffer = f.read()
    ops = litert.model_ops(flatbuffer)
    assert ops == float_exports[name]["ops"]
    custom = {op.split(":", 1)[1] for op in ops if op.startswith("CUSTOM:")}
    assert custom == USED_CUSTOM_OPS  # no Flex op, no other custom op
    assert not any("Flex" in op for op in ops)
    assert "WHILE" in ops  # the decoding loop is in the model
    interpreter = litert.load_interpreter(flatbuffer)
    assert set(interpreter.get_signature_list()) == set(litert.SIGNATURES)


# mlp_lm: see the Unicode test; rnn_lm runs through the same per-cell stepper as lstm/gru
# (it passes too; left out to keep this file near two minutes on two cores)
@pytest.mark.parametrize("name", ["gru_lm"])
def test_other_model_families(name, shakespeare_file, tmp_path_factory):
    run = zoo.train(name, shakespeare_file, str(tmp_path_factory.mktemp(name) / "run"), verbose=0,
                    **FAST)
    lm = litert.LiteRTModel(_export(run, tmp_path_factory, name)["path"])
    check_greedy_and_score(run, lm, PROMPTS[:2])


def test_sentencepiece_run(shakespeare_file, data_dir, tmp_path_factory):
    run = zoo.train("transformer_lm", shakespeare_file, str(tmp_path_factory.mktemp("sp") / "run"),
                    verbose=0, tokenizer="sentencepiece", vocab_size=400, **FAST)
    assert run.tokenizer.model_type == "bpe"
    lm = litert.LiteRTModel(_export(run, tmp_path_factory, "sp")["path"])
    with open(os.path.join(data_dir, "tinyshakespeare", "input.txt"), encoding="utf-8") as f:
        lines = f.read().split("\n")[-300:]  # real lines, outside the tokenizer's training text
    lines += ["héllo wörld 日本語 🙂", "  two  spaces ", "", "tab\tand\nnewline", "Zany quixotic jazz"]
    expected = run.tokenizer.tokenize(tf.constant(lines)).to_list()
    assert lm.tokenize(lines) == expected  # byte fallback included (rare letters, CJK, emoji)
    check_greedy_and_score(run, lm, PROMPTS[:3] + ["Vexing zeal, 日本 🙂"])


def test_quantization_modes(char_runs, float_exports, tmp_path_factory, capsys):
    run = char_runs["transformer_lm"]
    validation = litert.corpus_windows(run, "validation", 200)
    assert len(validation) == 200
    float_info = float_exports["transformer_lm"]
    float_ppl = litert.LiteRTModel(float_info["path"]).perplexity(validation)
    assert float_ppl == pytest.approx(run.evaluate()["perplexity"], rel=0.05)
    rows = [("none", float_info["bytes"], float_ppl)]
    for mode in ("float16", "dynamic", "int8"):
        info = _export(run, tmp_path_factory, mode, quantize=mode, validation_texts=validation)
        assert info["quantize"] == mode and os.path.getsize(info["path"]) == info["bytes"]
        lm = litert.LiteRTModel(info["path"])
        text = lm.generate("ROMEO:")
        assert isinstance(text, str) and len(text) == M
        assert np.isfinite(info["perplexity"])
        rows.append((mode, info["bytes"], info["perplexity"]))
    sizes = {mode: size for mode, size, _ in rows}
    ppl = {mode: value for mode, _, value in rows}
    assert sizes["float16"] < sizes["none"] and sizes["dynamic"] < sizes["none"]
    assert ppl["float16"] == pytest.approx(ppl["none"], rel=1e-3)
    assert ppl["dynamic"] == pytest.approx(ppl["none"], rel=0.05)
    assert ppl["int8"] == pytest.approx(ppl["none"], rel=0.10)
    with capsys.disabled():
        print("\nLiteRT quantization (tiny transformer_lm, 200 validation windows):")
        for mode, size, value in rows:
            print(f"  {mode:8s} {size:9d} bytes  perplexity {value:.4f} ({value / float_ppl - 1:+.3%})")


def test_unicode_prompts_round_trip_and_empty_prompt(shakespeare_file, tmp_path_factory):
    with open(shakespeare_file, encoding="utf-8") as f:
        text = f.read()
    extra = "Café naïve Øresund façade — “quoted” 日本語のテキスト 中文 🙂🎉👍🏽 ñandú\n"
    corpus = tmp_path_factory.mktemp("unicode") / "unicode.txt"
    corpus.write_text((text[:4000] + extra) * 3, encoding="utf-8")
    run = zoo.train("mlp_lm", str(corpus), str(tmp_path_factory.mktemp("uni") / "run"), verbose=0,
                    **FAST)
    info = _export(run, tmp_path_factory, "unicode")
    lm = litert.LiteRTModel(info["path"])
    prompts = ["Café naïve", "日本語の", "🙂🎉👍🏽", "ñandú — “q", "a\u00a0e"]
    assert lm.tokenize(prompts) == [run.tokenizer.tokenize_to_numpy(p).tolist() for p in prompts]
    check_greedy_and_score(run, lm, prompts[:4])
    # ids -> text inside LiteRT: the codec's decode, converted alone
    from export._tflite_text import build_codec

    codec = build_codec(run.tokenizer)
    width = 16

    class RoundTrip(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def round_trip(self, text):
            ids, lengths = codec.encode(text)
            ids = tf.reshape(tf.pad(ids, [[0, 0], [0, width]])[:, :width], [-1, width])
            return {"text": codec.decode(ids, lengths)}

        def signatures(self):
            return {"round_trip": self.round_trip.get_concrete_function()}

    flatbuffer = litert._convert(RoundTrip(), "none", None)
    runner = litert.load_interpreter(flatbuffer).get_signature_runner("round_trip")
    out = runner(text=np.array([p.encode("utf-8") for p in prompts], dtype=object))["text"]
    assert [t.decode("utf-8") for t in out] == prompts[:4] + ["a\ufffde"]  # U+00A0 is <unk>
    # an empty prompt (stream model) gives an empty continuation instead of an error
    out = lm.runner("generate")(prompt=np.array([b"", "日本".encode()], dtype=object))
    assert out["text"][0] == b"" and out["num_tokens"][0] == 0
    assert out["text"][1].decode("utf-8") == run.generate("日本", max_new_tokens=M)
    assert lm.score([""])[1].tolist() == [0]


def test_errors(char_runs, tmp_path):
    from zoo.run import LoadedRun
    from zoo.tokenizers import WordTokenizer

    run = char_runs["transformer_lm"]
    with pytest.raises(ZooError, match="quantize"):
        litert.export_tflite(run, str(tmp_path / "x.tflite"), quantize="int4")
    with pytest.raises(ZooError, match="max_new_tokens"):
        litert.export_tflite(run, str(tmp_path / "x.tflite"), max_new_tokens=0)
    word_run = LoadedRun(path=run.path, model=run.model, config=run.config,
                         tokenizer=WordTokenizer.train(["a b c"]))
    with pytest.raises(ZooError, match="'word'"):
        litert.export_tflite(word_run, str(tmp_path / "x.tflite"), max_new_tokens=8)
    assert not (tmp_path / "x.tflite").exists()
