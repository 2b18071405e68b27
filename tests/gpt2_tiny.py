"""The random tiny GPT-2 of the GPT-2 tests, and its golden files.

The checkpoint is rebuilt the same way everywhere: the byte-level BPE files committed in
``tests/golden/gpt2_tiny/`` (``vocab.json``, ``merges.txt``: 500 tokens trained on the start of
tinyshakespeare, then ``<|endoftext|>``), Hugging Face's ``config.json`` for a 2-layer, 32-wide
GPT-2, and weights drawn from NumPy's PCG64 with a fixed seed (the same bits on every platform and
NumPy version). ``tests/golden/gpt2_tiny.json`` + ``.npz`` hold what Hugging Face's
``GPT2TokenizerFast`` and ``GPT2LMHeadModel`` computed on that checkpoint (token ids, decoded
texts, rows of logits, greedy tokens); ``tests/golden/make_gpt2_golden.py`` writes them.

This module never imports ``torch``, ``transformers`` or ``tokenizers`` at import time: only
:func:`reference_outputs` does, when it is called.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN_DIR = os.path.join(HERE, "golden")
TOKENIZER_DIR = os.path.join(GOLDEN_DIR, "gpt2_tiny")  # vocab.json, merges.txt
GOLDEN_JSON = os.path.join(GOLDEN_DIR, "gpt2_tiny.json")
GOLDEN_NPZ = os.path.join(GOLDEN_DIR, "gpt2_tiny.npz")

EOT = "<|endoftext|>"
LAYERS, HEADS, WIDTH, CONTEXT = 2, 2, 32, 64
WEIGHT_SEED = 9
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
LOGITS_TEXTS = ["ROMEO:", TEXTS[2], " ".join(TEXTS)]  # the last one fills the context
_POOL = list("abcdeSTRLMDstremvld ") + [
    " ", "  ", "\n", "\t", "\r", "\u3000", "\u00a0", "\u2003", "'", "'s", "'t", "'re", "'ve",
    "'m", "'ll", "'d", "'S", ".", ",", "!", "?", "--", "0", "1", "42", "½", "é", "日本", "🙂",
    "👍🏽", "\x1c", "\x85", EOT, "<|", "ß", "ǅ", "\u0301", "\u200b", "١٢",
]


def fuzz_texts(count: int, seed: int = 0) -> list[str]:
    """``count`` random mixtures of the pieces GPT-2's pre-tokenizer treats specially."""
    rng = random.Random(seed)
    return ["".join(rng.choice(_POOL) for _ in range(rng.randint(0, 25))) for _ in range(count)]


def decode_rows(vocab_size: int, count: int = 300, seed: int = 1) -> list[list[int]]:
    """Random id sequences (invalid UTF-8 included) for the ``detokenize`` comparison."""
    rng = random.Random(seed)
    return [[rng.randrange(vocab_size) for _ in range(rng.randint(1, 12))] for _ in range(count)]


def logits_positions(length: int) -> list[int]:
    """The positions whose logits rows the golden file keeps (the first, the last, a few between)."""
    return sorted({p for p in (0, 1, length // 4, length // 2, 3 * length // 4, length - 2,
                               length - 1) if 0 <= p < length})


# --------------------------------------------------------------------------------------------------
# the checkpoint: HF config.json, model.safetensors, vocab.json, merges.txt


def hf_config(vocab_size: int) -> dict:
    """Hugging Face's ``config.json`` of the tiny GPT-2 (no dropout, tied embeddings)."""
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "activation_function": "gelu_new", "n_layer": LAYERS, "n_head": HEADS, "n_embd": WIDTH,
        "n_positions": CONTEXT, "n_inner": None, "vocab_size": vocab_size,
        "bos_token_id": vocab_size - 1, "eos_token_id": vocab_size - 1,
        "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "tie_word_embeddings": True,
    }


def random_weights(vocab_size: int, seed: int = WEIGHT_SEED) -> dict[str, np.ndarray]:
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


def weights_digest(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over the tensors' names, shapes and float32 bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = np.ascontiguousarray(tensors[name], dtype=np.float32)
        digest.update(f"{name}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def vocab_size() -> int:
    """Tokens in the committed ``vocab.json`` (``<|endoftext|>`` is the last id)."""
    with open(os.path.join(TOKENIZER_DIR, "vocab.json"), encoding="utf-8") as f:
        return len(json.load(f))


def write_checkpoint(directory: str) -> str:
    """Write the tiny GPT-2 in Hugging Face's layout into ``directory`` (created); returns it."""
    os.makedirs(directory, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(TOKENIZER_DIR, name), os.path.join(directory, name))
    size = vocab_size()
    with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hf_config(size), f)
    save_file(random_weights(size), os.path.join(directory, "model.safetensors"),
              metadata={"format": "pt"})
    return directory


# --------------------------------------------------------------------------------------------------
# golden values


def _flatten(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = [len(r) for r in rows]
    flat = np.array([t for r in rows for t in r], dtype=np.int32)
    return flat, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)


def _unflatten(flat: np.ndarray, offsets: np.ndarray) -> list[list[int]]:
    return [flat[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


@dataclasses.dataclass
class Golden:
    """What Hugging Face computed on the tiny GPT-2 (see the module docstring).

    ``logits`` holds, per text of ``LOGITS_TEXTS``: its ids (truncated to ``CONTEXT``), the kept
    ``positions``, the float32 logits ``rows`` [positions, vocab] there, and the ``argmax`` at every
    position. ``greedy`` holds, per prompt of ``PROMPTS``: the new ids up to ``<|endoftext|>``
    (excluded) and whether it ended there.
    """

    meta: dict
    tokenize_texts: list[str]
    token_ids: list[list[int]]
    decode_rows: list[list[int]]
    decoded: list[str]
    logits: list[dict]
    greedy: list[tuple[list[int], bool]]
    greedy_texts: list[str]

    def save(self, json_path: str = GOLDEN_JSON, npz_path: str = GOLDEN_NPZ) -> None:
        """Texts and metadata as JSON, numbers as a compressed ``.npz``."""
        arrays = {}
        arrays["token_ids"], arrays["token_offsets"] = _flatten(self.token_ids)
        arrays["decode_ids"], arrays["decode_offsets"] = _flatten(self.decode_rows)
        for i, entry in enumerate(self.logits):
            arrays[f"logits{i}_ids"] = np.asarray(entry["ids"], np.int32)
            arrays[f"logits{i}_positions"] = np.asarray(entry["positions"], np.int32)
            arrays[f"logits{i}_rows"] = np.asarray(entry["rows"], np.float32)
            arrays[f"logits{i}_argmax"] = np.asarray(entry["argmax"], np.int32)
        arrays["greedy_ids"], arrays["greedy_offsets"] = _flatten([ids for ids, _ in self.greedy])
        arrays["greedy_ended"] = np.array([ended for _, ended in self.greedy], dtype=bool)
        np.savez_compressed(npz_path, **arrays)
        text = {"meta": self.meta, "tokenize_texts": self.tokenize_texts,
                "decoded": self.decoded, "greedy_texts": self.greedy_texts}
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(text, f, ensure_ascii=False, indent=0)
            f.write("\n")

    @classmethod
    def load(cls, json_path: str = GOLDEN_JSON, npz_path: str = GOLDEN_NPZ) -> Golden:
        with open(json_path, encoding="utf-8") as f:
            text = json.load(f)
        with np.load(npz_path) as z:
            arrays = {k: z[k] for k in z.files}
        logits = []
        for i in range(len(LOGITS_TEXTS)):
            logits.append({"ids": arrays[f"logits{i}_ids"].tolist(),
                           "positions": arrays[f"logits{i}_positions"].tolist(),
                           "rows": arrays[f"logits{i}_rows"],
                           "argmax": arrays[f"logits{i}_argmax"].tolist()})
        greedy_ids = _unflatten(arrays["greedy_ids"], arrays["greedy_offsets"])
        return cls(
            meta=text["meta"],
            tokenize_texts=text["tokenize_texts"],
            token_ids=_unflatten(arrays["token_ids"], arrays["token_offsets"]),
            decode_rows=_unflatten(arrays["decode_ids"], arrays["decode_offsets"]),
            decoded=text["decoded"],
            logits=logits,
            greedy=list(zip(greedy_ids, arrays["greedy_ended"].tolist(), strict=True)),
            greedy_texts=text["greedy_texts"],
        )


def reference_outputs(checkpoint: str, tokenize_texts: list[str]) -> Golden:
    """Run Hugging Face's ``GPT2TokenizerFast`` and ``GPT2LMHeadModel`` (CPU ``torch``) on the
    checkpoint folder: the golden values. Imports ``torch`` and ``transformers``."""
    import torch
    import transformers

    model = transformers.GPT2LMHeadModel.from_pretrained(checkpoint).eval()
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(checkpoint)
    eot = tokenizer.eos_token_id
    token_ids = [tokenizer(text)["input_ids"] for text in tokenize_texts]
    rows = decode_rows(len(tokenizer))
    decoded = [tokenizer.decode(r) for r in rows]
    logits = []
    for text in LOGITS_TEXTS:
        ids = tokenizer(text)["input_ids"][:CONTEXT]
        with torch.no_grad():
            full = model(torch.tensor([ids])).logits.numpy()[0].astype(np.float32)
        positions = logits_positions(len(ids))
        logits.append({"ids": ids, "positions": positions, "rows": full[positions],
                       "argmax": full.argmax(-1).tolist()})
    greedy, greedy_texts = [], []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=M, eos_token_id=eot, pad_token_id=eot)
        new = out[0, ids.shape[1]:].tolist()
        ended = eot in new
        new = new[: new.index(eot)] if ended else new
        greedy.append((new, ended))
        greedy_texts.append(tokenizer.decode(new))
    meta = {"transformers": transformers.__version__, "torch": torch.__version__}
    return Golden(meta=meta, tokenize_texts=list(tokenize_texts), token_ids=token_ids,
                  decode_rows=rows, decoded=decoded, logits=logits, greedy=greedy,
                  greedy_texts=greedy_texts)


# --------------------------------------------------------------------------------------------------
# the zoo's side (TensorFlow; imported when called)


def zoo_token_ids(run, texts: list[str]) -> list[list[int]]:
    """The zoo tokenizer's ids of ``texts`` (in-graph byte-level BPE)."""
    import tensorflow as tf

    return run.tokenizer.tokenize(tf.constant(texts)).to_list()


def zoo_greedy(run, prompt: str) -> list[int]:
    """The zoo's greedy new ids: the same loop ``run.generate`` runs, with the run's stop ids."""
    from zoo.generation.decode import generate_ids

    ids = run.tokenizer.tokenize_to_numpy(prompt)
    new, num = generate_ids(run.model, ids[None, :], [len(ids)], M,
                            stop_token_ids=run.stop_token_ids,
                            suppressed_token_ids=run.tokenizer.suppressed_ids)
    return new[0, : int(num[0])].numpy().tolist()


def zoo_logits(run, ids: list[int]) -> np.ndarray:
    """The zoo model's float32 logits [len(ids), vocab] for one id sequence."""
    import tensorflow as tf

    return run.model(tf.constant([ids], tf.int32)).numpy()[0]
