"""GPT-2 in the zoo: byte-level BPE in-graph, checkpoint import, generation, SavedModel, LiteRT.

The checkpoint is a random tiny GPT-2 (``tests/gpt2_tiny.py``: committed BPE files, seeded
weights). Its comparison with Hugging Face's implementation runs against golden files
(``tests/golden/gpt2_tiny.json`` + ``.npz``, written by ``tests/golden/make_gpt2_golden.py``):
the ids of ``GPT2TokenizerFast`` and its decoding, rows of ``GPT2LMHeadModel``'s logits (atol
1e-4) and its greedy tokens. Those tests need neither ``torch`` nor ``transformers``. The
``reference`` tests re-check the golden files, and the full logits, against ``transformers``
itself where the ``reference`` extra is installed, and skip otherwise. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import tensorflow as tf
from gpt2_tiny import (
    CONTEXT,
    LOGITS_TEXTS,
    PROMPTS,
    TEXTS,
    WIDTH,
    Golden,
    M,
    fuzz_texts,
    random_weights,
    reference_outputs,
    vocab_size,
    weights_digest,
    write_checkpoint,
    zoo_greedy,
    zoo_logits,
    zoo_token_ids,
)
from safetensors.numpy import load_file, save_file

import export
import zoo
from zoo.cli import main as zoo_main
from zoo.errors import ZooError
from zoo.gpt2_import import import_gpt2
from zoo.tasks.causal_lm import score_texts

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """The tiny GPT-2 in Hugging Face's layout: config.json, model.safetensors, vocab.json,
    merges.txt."""
    return write_checkpoint(str(tmp_path_factory.mktemp("gpt2") / "checkpoint"))


@pytest.fixture(scope="module")
def run(checkpoint, tmp_path_factory):
    return import_gpt2(checkpoint, str(tmp_path_factory.mktemp("gpt2_run") / "run"))


@pytest.fixture(scope="module")
def golden() -> Golden:
    return Golden.load()


@pytest.fixture(scope="module")
def reference(checkpoint):
    """Hugging Face's GPT2LMHeadModel and GPT2TokenizerFast, read from the checkpoint folder."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.GPT2LMHeadModel.from_pretrained(checkpoint).eval()
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(checkpoint)
    return types.SimpleNamespace(torch=torch, model=model, tokenizer=tokenizer)


# ------------------------------------------------------------------------------------------------
# against Hugging Face, through the golden files (no torch, no transformers)


def test_golden_files_belong_to_this_checkpoint(golden):
    size = vocab_size()
    assert golden.meta["weights_sha256"] == weights_digest(random_weights(size))
    assert golden.meta["config"]["vocab_size"] == size
    for text, entry in zip(LOGITS_TEXTS, golden.logits, strict=True):
        assert entry["positions"][-1] == len(entry["ids"]) - 1, text
    assert len(golden.logits[-1]["ids"]) == CONTEXT  # the last text fills the context
    files = ["gpt2_tiny.json", "gpt2_tiny.npz", "gpt2_tiny/vocab.json", "gpt2_tiny/merges.txt"]
    assert sum(os.path.getsize(os.path.join(HERE, "golden", f)) for f in files) < 200_000


def test_golden_token_ids_equal_gpt2_tokenizer_fast(run, golden):
    texts = golden.tokenize_texts  # varied text, fuzzed mixtures, held-out Shakespeare lines
    assert len(texts) > 600 and TEXTS[0] in texts
    ours = zoo_token_ids(run, texts)
    for text, got, want in zip(texts, ours, golden.token_ids, strict=True):
        assert got == want, repr(text)
    decoded = [t.decode("utf-8") for t in run.tokenizer.detokenize(tf.ragged.constant(ours)).numpy()]
    assert decoded == texts
    # any id sequence, invalid UTF-8 included, decodes as Hugging Face's decode does
    rows = tf.ragged.constant(golden.decode_rows, dtype=tf.int32)
    ours = run.tokenizer.detokenize(rows).numpy()
    assert [t.decode("utf-8") for t in ours] == golden.decoded


def test_golden_logits_equal_gpt2_lm_head_model(run, golden, capsys):
    worst = 0.0
    for entry in golden.logits:
        got = zoo_logits(run, entry["ids"])
        np.testing.assert_allclose(got[entry["positions"]], entry["rows"], rtol=0, atol=1e-4)
        assert got.argmax(-1).tolist() == entry["argmax"]  # every position
        worst = max(worst, float(np.abs(got[entry["positions"]] - entry["rows"]).max()))
    with capsys.disabled():
        print(f"\nGPT-2 logits vs GPT2LMHeadModel (golden): max |diff| = {worst:.2e}")


def test_golden_greedy_generation_equals_hugging_face_token_for_token(run, golden):
    seen, stopped = set(), 0
    for prompt, (want, ended), text in zip(PROMPTS, golden.greedy, golden.greedy_texts,
                                           strict=True):
        assert zoo_greedy(run, prompt) == want, prompt
        assert run.generate(prompt, max_new_tokens=M) == text
        seen.update(want)
        stopped += ended
    # the cases that need the tokenizer's special ids: "!" (0) and "#" (2) are generated, and
    # <|endoftext|> ends a continuation early
    assert {0, 2} <= seen and stopped >= 1
    assert run.generate(PROMPTS, max_new_tokens=M) == golden.greedy_texts


def test_golden_tests_import_neither_torch_nor_transformers():
    """The golden comparisons run where the ``reference`` extra is not installed: collecting and
    running them imports neither torch nor transformers (nor tokenizers)."""
    script = textwrap.dedent(
        """
        import sys
        import pytest
        code = pytest.main(["-q", "-p", "no:cacheprovider", "tests/test_gpt2.py",
                            "-m", "not reference", "-k", "golden and not import_neither"])
        loaded = sorted(m for m in ("torch", "transformers", "tokenizers") if m in sys.modules)
        print("LOADED", loaded)
        sys.exit(code or (3 if loaded else 0))
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "LOADED []" in proc.stdout and " passed" in proc.stdout


# ------------------------------------------------------------------------------------------------
# against Hugging Face itself (the ``reference`` extra; skipped without it)


@pytest.mark.reference
def test_golden_files_equal_what_transformers_computes_now(checkpoint, golden, reference):
    fresh = reference_outputs(checkpoint, golden.tokenize_texts)
    assert fresh.token_ids == golden.token_ids
    assert fresh.decoded == golden.decoded
    for now, then in zip(fresh.logits, golden.logits, strict=True):
        assert now["ids"] == then["ids"] and now["positions"] == then["positions"]
        np.testing.assert_allclose(now["rows"], then["rows"], rtol=0, atol=1e-5)
        assert now["argmax"] == then["argmax"]
    assert fresh.greedy == golden.greedy and fresh.greedy_texts == golden.greedy_texts


@pytest.mark.reference
def test_logits_equal_gpt2_lm_head_model(run, reference, capsys):
    worst = 0.0
    for text in LOGITS_TEXTS + [t for t in fuzz_texts(8, seed=7) if t]:
        ids = reference.tokenizer(text)["input_ids"][:CONTEXT]
        with reference.torch.no_grad():
            want = reference.model(reference.torch.tensor([ids])).logits.numpy()[0]
        got = zoo_logits(run, ids)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)  # every position and token
        worst = max(worst, float(np.abs(got - want).max()))
    with capsys.disabled():
        print(f"\nGPT-2 logits vs GPT2LMHeadModel: max |diff| = {worst:.2e}")


@pytest.mark.reference
def test_checkpoint_saved_by_transformers_imports(run, reference, checkpoint, tmp_path):
    saved = tmp_path / "saved"
    reference.model.save_pretrained(str(saved), safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(checkpoint, name), saved / name)
    again = import_gpt2(str(saved), str(tmp_path / "run"))
    ids = tf.constant([run.tokenizer.tokenize_to_numpy(TEXTS[1])])
    np.testing.assert_allclose(again.model(ids).numpy(), run.model(ids).numpy(), atol=1e-6)


def test_streamed_greedy_equals_generate(run):
    """Token streaming uses the tokenizer's ids too: "!" (0) and "#" (2) are real GPT-2 tokens."""
    for prompt in PROMPTS:
        streamed = "".join(run.stream(prompt, max_new_tokens=M))
        assert streamed == run.generate(prompt, max_new_tokens=M), prompt


# ------------------------------------------------------------------------------------------------
# the model, the import and the run directory


def test_gpt2_presets_and_serialization():
    assert "gpt2" in zoo.list_models()
    small = zoo.build_model("gpt2", vocab_size=50257, preset="small")
    assert small.count_params() == 124_439_808  # GPT-2 small
    assert (small.num_layers, small.d_model, small.max_length) == (12, 768, 1024)
    tiny = zoo.build_model("gpt2", vocab_size=300, preset="tiny")
    config = tiny.get_config()
    assert "activation" not in config and tiny.blocks[0].activation == "gelu_tanh"
    rebuilt = type(tiny).from_config(config)
    assert rebuilt.get_config() == config


def test_import_writes_a_run_the_cli_uses(run, checkpoint, shakespeare_file, tmp_path, capsys):
    for name in ("config.json", "model.keras", "metrics.json", "tokenizer/vocab.json",
                 "tokenizer/merges.txt", "tokenizer/tokenizer.json"):
        assert os.path.isfile(os.path.join(run.path, name)), name
    eot = run.tokenizer.vocab_size - 1
    assert run.config["model"] == "gpt2" and run.tokenizer.kind == "byte_bpe"
    assert run.stop_token_ids == (eot,) and run.tokenizer.end_of_text_id == eot
    assert run.tokenizer.suppressed_ids == ()
    loaded = zoo.load(run.path)  # model.keras with safe_mode=True
    assert type(loaded.model).__name__ == "GPT2"
    ids = tf.constant([run.tokenizer.tokenize_to_numpy(TEXTS[0])])
    np.testing.assert_array_equal(loaded.model(ids).numpy(), run.model(ids).numpy())

    out = tmp_path / "cli_run"
    assert zoo_main(["import", "gpt2", checkpoint, "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["run"] == str(out) and report["vocab_size"] == eot + 1
    assert zoo_main(["generate", str(out), "--prompt", PROMPTS[0], "--max-new-tokens",
                     str(M)]) == 0
    assert capsys.readouterr().out == run.generate(PROMPTS[0], max_new_tokens=M) + "\n"
    assert zoo_main(["eval", str(out), "--data", shakespeare_file]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] > 100
    assert zoo_main(["eval", str(out)]) == 2  # an imported run records no corpus
    assert "--data" in capsys.readouterr().err


def test_eval_scores_every_token(run, shakespeare_file, tmp_path):
    from zoo import data as zdata

    corpus = tmp_path / "exclaim.txt"  # its last 10% (the validation split) is full of ! and #
    with open(shakespeare_file, encoding="utf-8") as f:
        corpus.write_text(f.read(6000) + "O! Alas! #1, #2!!\n" * 40, encoding="utf-8")
    ids = zdata.encode(run.tokenizer, zdata.load_corpus(str(corpus)), "validation")
    assert 0 in ids and 2 in ids  # real tokens ("!" and "#"): a <pad>/<bos> mask would drop them
    result = zoo.evaluate(run, data=str(corpus))
    assert result["tokens"] == ids.size - 1
    total = 0.0
    for start in range(0, ids.size - 1, CONTEXT):
        x, y = ids[start : start + CONTEXT], ids[start + 1 : start + CONTEXT + 1]
        logits = run.model(tf.constant([x[: len(y)]])).numpy()[0].astype(np.float64)
        log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        total -= float(np.sum(logits[np.arange(len(y)), y] - log_z))
    assert result["total_nll"] == pytest.approx(total, rel=1e-4)


def _broken_copy(checkpoint, tmp_path, name="broken"):
    target = tmp_path / name
    shutil.copytree(checkpoint, target)
    return target


def _edit_config(directory, **changes):
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _edit_tensors(directory, drop=(), replace=None):
    tensors = load_file(str(directory / "model.safetensors"))
    for name in drop:
        del tensors[name]
    tensors.update(replace or {})
    save_file(tensors, str(directory / "model.safetensors"))


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no_vocab", "vocab.json not found"),
        ("no_weights", "has no model.safetensors"),
        ("no_config", "config.json not found"),
        ("missing_tensor", "lacks tensor.*h.1.mlp.c_fc.bias"),
        ("wrong_shape", r"h.0.attn.c_attn.weight has shape \(32, 90\), expected \(32, 96\)"),
        ("activation", "unsupported activation_function 'relu'"),
        ("vocab_size", r"vocab.json has \d+ tokens but config.json says vocab_size=600"),
        ("untied", "untied"),
    ],
)
def test_import_errors_are_one_line(breakage, message, checkpoint, tmp_path, capsys):
    directory = _broken_copy(checkpoint, tmp_path)
    if breakage == "no_vocab":
        os.remove(directory / "vocab.json")
    elif breakage == "no_weights":
        os.remove(directory / "model.safetensors")
    elif breakage == "no_config":
        os.remove(directory / "config.json")
    elif breakage == "missing_tensor":
        _edit_tensors(directory, drop=["transformer.h.1.mlp.c_fc.bias"])
    elif breakage == "wrong_shape":
        _edit_tensors(directory, replace={"transformer.h.0.attn.c_attn.weight":
                                          np.zeros([32, 90], np.float32)})
    elif breakage == "activation":
        _edit_config(directory, activation_function="relu")
    elif breakage == "vocab_size":
        _edit_config(directory, vocab_size=600)
    elif breakage == "untied":
        vocab_size = json.loads((directory / "config.json").read_text())["vocab_size"]
        _edit_tensors(directory, replace={"lm_head.weight": np.zeros([vocab_size, WIDTH],
                                                                     np.float32)})
    out = tmp_path / "run"
    with pytest.raises(ZooError, match=message):
        import_gpt2(str(directory), str(out))
    assert zoo_main(["import", "gpt2", str(directory), "--out", str(out)]) == 2
    err = capsys.readouterr().err  # the stages done so far (zoo.progress), then the error
    errors = [line for line in err.splitlines() if line.startswith("zoo: error: ")]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n") and "Traceback" not in err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_import_refuses_an_existing_run(run, checkpoint):
    with pytest.raises(ZooError, match="already exists"):
        import_gpt2(checkpoint, run.path)


# ------------------------------------------------------------------------------------------------
# exports: greedy output equals the Python API's


@pytest.fixture(scope="module")
def saved_model_path(run, tmp_path_factory):
    return export.saved_model(run, str(tmp_path_factory.mktemp("gpt2_sm") / "gpt2"),
                              max_new_tokens=M)


def test_saved_model_serves_python_greedy_with_only_tensorflow(run, saved_model_path, tmp_path):
    script = textwrap.dedent(
        """
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (its ops: ByteSplitWithOffsets)
        m = tf.saved_model.load(sys.argv[1])
        prompts = json.loads(sys.argv[2])
        text = m.signatures["serving_default"](prompt=tf.constant(prompts))["text"]
        n = len(prompts)
        gen = m.signatures["generate"](
            prompt=tf.constant(prompts), max_new_tokens=tf.constant([1000] * n),
            temperature=tf.zeros([n]), top_k=tf.zeros([n], tf.int32), top_p=tf.ones([n]),
            seed=tf.zeros([n], tf.int64))
        score = m.signatures["score"](text=tf.constant(prompts))
        tok = m.signatures["tokenize"](text=tf.constant(prompts))
        print(json.dumps({
            "text": [t.decode() for t in text.numpy()],
            "ids": [r[:k].tolist() for r, k in zip(gen["token_ids"].numpy(),
                                                 gen["num_tokens"].numpy())],
            "log_likelihood": score["log_likelihood"].numpy().tolist(),
            "tokens": [r[:k].tolist() for r, k in zip(tok["token_ids"].numpy(),
                                                    tok["num_tokens"].numpy())],
            "modules": [m for m in ("zoo", "export", "serving") if m in sys.modules]}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-c", script, saved_model_path, json.dumps(PROMPTS)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    assert served["modules"] == []
    assert served["text"] == run.generate(PROMPTS, max_new_tokens=M)
    greedy = [zoo_greedy(run, p) for p in PROMPTS]
    assert served["ids"] == greedy and {0, 2} <= {t for row in greedy for t in row}
    assert served["tokens"] == run.tokenizer.tokenize(tf.constant(PROMPTS)).to_list()
    want = [ll for ll, _ in score_texts(run.model, run.tokenizer, PROMPTS, line_corpus=False)]
    np.testing.assert_allclose(served["log_likelihood"], want, rtol=1e-4, atol=1e-4)


def test_litert_greedy_equals_python(run, tmp_path_factory):
    pytest.importorskip("ai_edge_litert")  # the litert extra runs the flatbuffer
    from export import tflite as litert

    path = tmp_path_factory.mktemp("gpt2_litert") / "gpt2.tflite"
    info = litert.export_tflite(run, str(path), max_new_tokens=M)
    custom = {op.split(":", 1)[1] for op in info["ops"] if op.startswith("CUSTOM:")}
    assert custom <= {"TFText>ByteSplitWithOffsets", "RaggedTensorToTensor",
                      "TFText>NgramsStringJoin"}  # builtins + TF Text, no Flex
    lm = litert.LiteRTModel(info["path"])
    assert lm.generate(PROMPTS) == run.generate(PROMPTS, max_new_tokens=M)
    out = lm.runner("generate")(prompt=np.array([p.encode() for p in PROMPTS], dtype=object))
    ids = [row[:n].tolist() for row, n in zip(out["token_ids"], out["num_tokens"], strict=True)]
    assert ids == [zoo_greedy(run, p) for p in PROMPTS]
    texts = TEXTS + fuzz_texts(40, seed=3)
    assert lm.tokenize(texts) == run.tokenizer.tokenize(tf.constant(texts)).to_list()
    log_likelihood, counts = lm.score(PROMPTS)
    want = score_texts(run.model, run.tokenizer, PROMPTS, line_corpus=False)
    np.testing.assert_allclose(log_likelihood, [w for w, _ in want], rtol=1e-4, atol=1e-4)
    assert counts.tolist() == [n for _, n in want]
