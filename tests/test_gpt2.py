"""GPT-2 in the zoo: byte-level BPE in-graph, checkpoint import, generation, SavedModel, LiteRT.

The ``reference`` tests compare with Hugging Face's implementation (``transformers`` with a CPU
``torch``, test-only dependencies; ``pytest -m "not reference"`` skips them): the ids of
``GPT2TokenizerFast``, the logits of ``GPT2LMHeadModel`` (atol 1e-4) and its greedy tokens.
Nothing is downloaded: the tokenizer files are trained with Hugging Face's ``tokenizers`` on
tinyshakespeare, and the checkpoint is a random tiny GPT-2 written in Hugging Face's layout.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import tensorflow as tf

import export
import zoo
from zoo.cli import main as zoo_main
from zoo.errors import ZooError
from zoo.generation.decode import generate_ids
from zoo.gpt2_import import import_gpt2
from zoo.tasks.causal_lm import score_texts

tokenizers = pytest.importorskip("tokenizers")  # trains vocab.json / merges.txt
from safetensors.numpy import load_file, save_file  # noqa: E402

EOT = "<|endoftext|>"
LAYERS, HEADS, WIDTH, CONTEXT = 2, 2, 32, 64
M = 24  # new tokens: generation tests and both exports
PROMPTS = ["ROMEO:", "To be, or not to be", "First Citizen:\nBefore we proceed", "héllo 日本 🙂",
           "What's 1,234 + 56?", "  spaced\tout\n"]
TEXTS = [
    "Hello world", "The quick brown fox jumps over the lazy dog.",  # ASCII
    "Café déjà vu, naïve façade. Ünïcödé ß ΑΒΓ абв 中文字符 日本語",  # Unicode
    "a   b", "   leading and trailing   ", "tabs\t\tand\u3000ideographic\u00a0spaces",  # spaces
    "I'm sure you're right; we'll see, they've said 'd 'LL x's's'sup ''s",  # contractions
    "3.14159, 1,000,000 and 42nd Street; ½ Ⅻ ١٢٣",  # numbers
    "line one\nline two\n\n\nthree\r\nCRLF\n", "\n", "", " ",  # newlines, empty
    "emoji 😀🎉👍🏽 👨‍👩‍👧 done",  # emoji (multi-byte, joiners)
    f"one{EOT}two {EOT} three{EOT}", "ROMEO:\nWhat say'st thou?\n\nJULIET:  Nothing!!!",
]
_POOL = list("abcdeSTRLMDstremvld ") + [
    " ", "  ", "\n", "\t", "\r", "\u3000", "\u00a0", "\u2003", "'", "'s", "'t", "'re", "'ve",
    "'m", "'ll", "'d", "'S", ".", ",", "!", "?", "--", "0", "1", "42", "½", "é", "日本", "🙂",
    "👍🏽", "\x1c", "\x85", EOT, "<|", "ß", "ǅ", "\u0301", "\u200b", "١٢",
]


# ------------------------------------------------------------------------------------------------
# the checkpoint: HF config.json, model.safetensors, vocab.json, merges.txt


def hf_config(vocab_size: int) -> dict:
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "activation_function": "gelu_new", "n_layer": LAYERS, "n_head": HEADS, "n_embd": WIDTH,
        "n_positions": CONTEXT, "n_inner": None, "vocab_size": vocab_size,
        "bos_token_id": vocab_size - 1, "eos_token_id": vocab_size - 1,
        "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "tie_word_embeddings": True,
    }


def random_weights(vocab_size: int, seed: int = 9) -> dict[str, np.ndarray]:
    """GPT2LMHeadModel's tensors (``transformer.`` names), random. The rows of ids 0, 2 and
    <|endoftext|> are scaled up so that greedy decoding picks them: the zoo must neither
    suppress 0 ("!") and 2 ("#") nor miss the stop token."""
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return rng.normal(0.0, 0.1, shape).astype(np.float32)

    d = WIDTH
    t = {"wte.weight": normal(vocab_size, d), "wpe.weight": normal(CONTEXT, d),
         "ln_f.weight": 1 + normal(d), "ln_f.bias": normal(d)}
    for i in range(LAYERS):
        for name, shape in (("ln_1.weight", (d,)), ("ln_1.bias", (d,)),
                            ("attn.c_attn.weight", (d, 3 * d)), ("attn.c_attn.bias", (3 * d,)),
                            ("attn.c_proj.weight", (d, d)), ("attn.c_proj.bias", (d,)),
                            ("ln_2.weight", (d,)), ("ln_2.bias", (d,)),
                            ("mlp.c_fc.weight", (d, 4 * d)), ("mlp.c_fc.bias", (4 * d,)),
                            ("mlp.c_proj.weight", (4 * d, d)), ("mlp.c_proj.bias", (d,))):
            norm_scale = name.startswith("ln_") and name.endswith("weight")
            t[f"h.{i}.{name}"] = 1 + normal(*shape) if norm_scale else normal(*shape)
    t["wte.weight"][[0, 2, vocab_size - 1]] *= 3.0
    return {f"transformer.{name}": value for name, value in t.items()}


@pytest.fixture(scope="module")
def checkpoint(shakespeare_file, tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("gpt2") / "checkpoint"
    directory.mkdir()
    with open(shakespeare_file, encoding="utf-8") as f:
        text = f.read()
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator([text], vocab_size=500, min_frequency=2, show_progress=False)
    bpe.save_model(str(directory))
    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    vocab[EOT] = len(vocab)  # the last id, as GPT-2's 50256
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "config.json").write_text(json.dumps(hf_config(len(vocab))), encoding="utf-8")
    save_file(random_weights(len(vocab)), str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    return str(directory)


@pytest.fixture(scope="module")
def run(checkpoint, tmp_path_factory):
    return import_gpt2(checkpoint, str(tmp_path_factory.mktemp("gpt2_run") / "run"))


@pytest.fixture(scope="module")
def reference(checkpoint):
    """Hugging Face's GPT2LMHeadModel and GPT2TokenizerFast, read from the checkpoint folder."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.GPT2LMHeadModel.from_pretrained(checkpoint).eval()
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(checkpoint)
    return types.SimpleNamespace(torch=torch, model=model, tokenizer=tokenizer)


def hf_greedy(ref, prompt: str) -> tuple[list[int], bool]:
    """Hugging Face's greedy new ids (up to <|endoftext|>, which ends it) and whether it ended."""
    eot = ref.tokenizer.eos_token_id
    ids = ref.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with ref.torch.no_grad():
        out = ref.model.generate(ids, attention_mask=ref.torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=M, eos_token_id=eot, pad_token_id=eot)
    new = out[0, ids.shape[1]:].tolist()
    return (new[: new.index(eot)], True) if eot in new else (new, False)


def zoo_greedy(run, prompt: str) -> list[int]:
    """The zoo's greedy new ids: the same loop ``run.generate`` runs, with the run's stop ids."""
    ids = run.tokenizer.tokenize_to_numpy(prompt)
    new, num = generate_ids(run.model, ids[None, :], [len(ids)], M,
                            stop_token_ids=run.stop_token_ids,
                            suppressed_token_ids=run.tokenizer.suppressed_ids)
    return new[0, : int(num[0])].numpy().tolist()


def fuzz_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_POOL) for _ in range(rng.randint(0, 25))) for _ in range(count)]


# ------------------------------------------------------------------------------------------------
# against Hugging Face (reference)


@pytest.mark.reference
def test_token_ids_equal_gpt2_tokenizer_fast(run, reference, data_dir):
    with open(os.path.join(data_dir, "tinyshakespeare", "input.txt"), encoding="utf-8") as f:
        lines = f.read().split("\n")[-200:]  # outside the tokenizer's training text
    texts = TEXTS + fuzz_texts(400) + lines + ["\n".join(lines)]
    ours = run.tokenizer.tokenize(tf.constant(texts)).to_list()
    for text, got in zip(texts, ours, strict=True):
        assert got == reference.tokenizer(text)["input_ids"], repr(text)
    decoded = [t.decode("utf-8") for t in run.tokenizer.detokenize(tf.ragged.constant(ours)).numpy()]
    assert decoded == texts
    # any id sequence, invalid UTF-8 included, decodes as Hugging Face's decode does
    rng = random.Random(1)
    rows = [[rng.randrange(run.tokenizer.vocab_size) for _ in range(rng.randint(1, 12))]
            for _ in range(300)]
    ours = run.tokenizer.detokenize(tf.ragged.constant(rows, dtype=tf.int32)).numpy()
    assert [t.decode("utf-8") for t in ours] == [reference.tokenizer.decode(r) for r in rows]


@pytest.mark.reference
def test_logits_equal_gpt2_lm_head_model(run, reference, capsys):
    worst = 0.0
    for text in ["ROMEO:", TEXTS[2], " ".join(TEXTS)]:
        ids = reference.tokenizer(text)["input_ids"][:CONTEXT]
        with reference.torch.no_grad():
            want = reference.model(reference.torch.tensor([ids])).logits.numpy()
        got = run.model(tf.constant([ids], tf.int32)).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
        worst = max(worst, float(np.abs(got - want).max()))
    assert len(ids) == CONTEXT  # the last text fills the context
    with capsys.disabled():
        print(f"\nGPT-2 logits vs GPT2LMHeadModel: max |diff| = {worst:.2e}")


@pytest.mark.reference
def test_greedy_generation_equals_hugging_face_token_for_token(run, reference):
    seen, stopped = set(), 0
    for prompt in PROMPTS:
        want, ended = hf_greedy(reference, prompt)
        assert zoo_greedy(run, prompt) == want, prompt
        assert run.generate(prompt, max_new_tokens=M) == reference.tokenizer.decode(want)
        seen.update(want)
        stopped += ended
    # the cases that need the tokenizer's special ids: "!" (0) and "#" (2) are generated, and
    # <|endoftext|> ends a continuation early
    assert {0, 2} <= seen and stopped >= 1
    assert run.generate(PROMPTS, max_new_tokens=M) == [
        reference.tokenizer.decode(hf_greedy(reference, p)[0]) for p in PROMPTS
    ]


def test_streamed_greedy_equals_generate(run):
    """Token streaming uses the tokenizer's ids too: "!" (0) and "#" (2) are real GPT-2 tokens."""
    for prompt in PROMPTS:
        streamed = "".join(run.stream(prompt, max_new_tokens=M))
        assert streamed == run.generate(prompt, max_new_tokens=M), prompt


@pytest.mark.reference
def test_checkpoint_saved_by_transformers_imports(run, reference, checkpoint, tmp_path):
    saved = tmp_path / "saved"
    reference.model.save_pretrained(str(saved), safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(checkpoint, name), saved / name)
    again = import_gpt2(str(saved), str(tmp_path / "run"))
    ids = tf.constant([run.tokenizer.tokenize_to_numpy(TEXTS[1])])
    np.testing.assert_allclose(again.model(ids).numpy(), run.model(ids).numpy(), atol=1e-6)


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
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: ") and err.count("\n") == 1
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
