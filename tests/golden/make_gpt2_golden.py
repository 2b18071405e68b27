"""Write the golden files of the GPT-2 tests from Hugging Face's implementation.

Run once, from the repository root, where the ``reference`` extra is installed (``transformers``,
a CPU ``torch``; ``tokenizers`` comes with ``transformers``)::

    python tests/golden/make_gpt2_golden.py                      # keep the committed BPE files
    python tests/golden/make_gpt2_golden.py --retrain-tokenizer  # train them again first

1. With ``--retrain-tokenizer`` (or when they are missing): a 500-token byte-level BPE is trained
   with ``tokenizers`` on the first 20,000 characters of tinyshakespeare and ``<|endoftext|>`` is
   appended as the last id -> ``tests/golden/gpt2_tiny/vocab.json`` and ``merges.txt``.
2. The tiny GPT-2 is written in Hugging Face's layout into a temporary folder
   (``tests/gpt2_tiny.py``: those files, ``config.json``, weights from a fixed NumPy seed).
3. ``GPT2TokenizerFast`` and ``GPT2LMHeadModel`` run on it: token ids of varied texts (the last
   200 lines of tinyshakespeare, outside the BPE's training text, included), decoded random id
   rows, logits rows, greedy tokens.
4. The zoo imports the same checkpoint and must agree (ids and greedy tokens exactly, logits to
   1e-4); nothing is written otherwise.
5. ``tests/golden/gpt2_tiny.json`` (texts, metadata) and ``gpt2_tiny.npz`` (numbers) are written.

The tests (``tests/test_gpt2.py``) compare the zoo with these files always, and the files with
``transformers`` itself where it is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/

import gpt2_tiny as g  # noqa: E402

BPE_TRAINING_CHARS = 20_000
BPE_VOCAB = 500
HELD_OUT_LINES = 200


def shakespeare() -> str:
    """tinyshakespeare (the data mirror of ``ZOO_DATA_DIR``, else downloaded and checked)."""
    from zoo.data.download import dataset_path

    with open(dataset_path("tinyshakespeare", "input.txt"), encoding="utf-8") as f:
        return f.read()


def train_tokenizer(text: str) -> None:
    """The byte-level BPE files of ``tests/golden/gpt2_tiny/``."""
    import tokenizers

    os.makedirs(g.TOKENIZER_DIR, exist_ok=True)
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator([text[:BPE_TRAINING_CHARS]], vocab_size=BPE_VOCAB, min_frequency=2,
                            show_progress=False)
    bpe.save_model(g.TOKENIZER_DIR)
    path = os.path.join(g.TOKENIZER_DIR, "vocab.json")
    with open(path, encoding="utf-8") as f:
        vocab = json.load(f)
    vocab[g.EOT] = len(vocab)  # the last id, as GPT-2's 50256
    with open(path, "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)


def check_zoo(checkpoint: str, golden: g.Golden, workdir: str) -> float:
    """The zoo's import of ``checkpoint`` against ``golden``; returns the largest logits
    difference. Raises ``AssertionError`` on any disagreement."""
    from zoo.gpt2_import import import_gpt2

    run = import_gpt2(checkpoint, os.path.join(workdir, "run"))
    ours = g.zoo_token_ids(run, golden.tokenize_texts)
    for text, got, want in zip(golden.tokenize_texts, ours, golden.token_ids, strict=True):
        assert got == want, f"token ids differ on {text!r}"
    worst = 0.0
    for entry in golden.logits:
        got = g.zoo_logits(run, entry["ids"])
        np.testing.assert_allclose(got[entry["positions"]], entry["rows"], rtol=0, atol=1e-4)
        assert got.argmax(-1).tolist() == entry["argmax"]
        worst = max(worst, float(np.abs(got[entry["positions"]] - entry["rows"]).max()))
    for prompt, (want, _) in zip(g.PROMPTS, golden.greedy, strict=True):
        assert g.zoo_greedy(run, prompt) == want, f"greedy tokens differ for {prompt!r}"
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--retrain-tokenizer", action="store_true",
                        help="train the byte-level BPE files again (they are committed)")
    args = parser.parse_args(argv)
    text = shakespeare()
    if args.retrain_tokenizer or not os.path.isfile(os.path.join(g.TOKENIZER_DIR, "merges.txt")):
        train_tokenizer(text)
    lines = text.split("\n")[-HELD_OUT_LINES:]
    texts = g.TEXTS + g.fuzz_texts(400) + lines + ["\n".join(lines)]
    with tempfile.TemporaryDirectory(prefix="gpt2-golden-") as workdir:
        checkpoint = g.write_checkpoint(os.path.join(workdir, "checkpoint"))
        golden = g.reference_outputs(checkpoint, texts)
        tensors = g.random_weights(g.vocab_size())
        golden.meta.update(
            generator="tests/golden/make_gpt2_golden.py",
            weights_sha256=g.weights_digest(tensors),
            config=g.hf_config(g.vocab_size()),
        )
        worst = check_zoo(checkpoint, golden, workdir)
    golden.meta["zoo_max_abs_logits_difference"] = float(f"{worst:.3g}")
    golden.save()
    sizes = {p: os.path.getsize(p) for p in (g.GOLDEN_JSON, g.GOLDEN_NPZ)}
    print(f"wrote {', '.join(f'{os.path.relpath(p)} ({n:,} bytes)' for p, n in sizes.items())}; "
          f"zoo vs GPT2LMHeadModel: max |logits difference| {worst:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
