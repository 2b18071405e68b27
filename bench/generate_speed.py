"""Decoding speed: KV-cached loop vs recomputing the prefix, eager (optionally XLA) and through
the exported SavedModel (no XLA, as stock TF Serving runs it), side by side in one run.

    python bench/generate_speed.py --quick        # tiny transformer, < 1 minute on a 2-core CPU
    python bench/generate_speed.py --preset small --lengths 16 32 48 --batches 1 32 --jit

For each batch size and output length it prints decode tokens/s (new tokens over the wall time
of the whole call, prompt included) and the time per new token, then the time to first token
(the prompt and one new token) per batch size, for

* ``cached``: ``zoo.generation.generate_ids`` (one tf.while_loop on the KV cache),
* ``uncached``: ``generate_ids_uncached`` (the same loop recomputing ``model(prefix)`` per token),
* ``savedmodel``: the export's ``generate`` signature (tokenizer + cached loop in-graph, no XLA),

* ``keras-hub``: keras-hub's ``GPT2CausalLM.generate`` (its own cached loop) on a GPT-2 of the
  same sizes (layers, heads, width, vocabulary, random weights), greedy, ``--jit`` alike,

and the ratios cached / uncached and cached / keras-hub. With the cache the cost per token stays
flat as the output grows; without it, it grows with the length. (``pip install -e .[bench]``
installs keras-hub; ``--no-keras-hub`` leaves it out.)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from zoo.generation import generate_ids, generate_ids_uncached  # noqa: E402
from zoo.models import build_model  # noqa: E402
from zoo.tokenizers import train_tokenizer  # noqa: E402


def best_time(fn, repeats: int) -> float:
    """Fastest wall time of ``repeats`` calls after one warm-up (trace/compile) call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def keras_hub_gpt2(model, vocab_size: int, jit: bool):
    """keras-hub's GPT-2 causal LM with the sizes of the zoo ``transformer_lm`` ``model``."""
    import keras_hub

    config = model.get_config()
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=vocab_size, num_layers=config["num_layers"],
        num_heads=config["num_heads"], hidden_dim=config["d_model"],
        intermediate_dim=config["ffn_dim"], dropout=0.0, max_sequence_length=config["max_length"])
    peer = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    peer.compile(sampler="greedy", jit_compile=jit)
    return peer


def keras_hub_time(peer, prompt, n: int, repeats: int) -> float:
    """Best wall time of keras-hub ``generate`` adding exactly ``n`` tokens to ``prompt``."""
    batch, prompt_tokens = prompt.shape
    token_ids = np.zeros((batch, prompt_tokens + n), np.int32)
    token_ids[:, :prompt_tokens] = prompt.numpy()
    mask = np.zeros_like(token_ids, dtype=bool)
    mask[:, :prompt_tokens] = True
    inputs = {"token_ids": token_ids, "padding_mask": mask}
    return best_time(lambda: peer.generate(inputs, stop_token_ids=None), repeats)


def measure(model, generate, vocab_size, batch, prompt_tokens, n, jit, repeats, rng, peer=None):
    """Best wall times (s) of cached, uncached, SavedModel (and keras-hub) decoding of ``n``
    new tokens."""
    prompt = tf.constant(rng.integers(4, vocab_size, (batch, prompt_tokens)), tf.int32)
    lengths = tf.fill([batch], prompt_tokens)
    texts = tf.constant(["abc def gh"[:prompt_tokens]] * batch)
    cached = best_time(lambda: generate_ids(model, prompt, lengths, n, jit_compile=jit), repeats)
    uncached = best_time(
        lambda: generate_ids_uncached(model, prompt, lengths, n, jit_compile=jit), repeats)
    served = best_time(lambda: generate(
        prompt=texts, max_new_tokens=tf.fill([batch], n), temperature=tf.zeros([batch]),
        top_k=tf.zeros([batch], tf.int32), top_p=tf.ones([batch]),
        seed=tf.zeros([batch], tf.int64)), repeats)
    peer_time = keras_hub_time(peer, prompt, n, repeats) if peer is not None else None
    return cached, uncached, served, peer_time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32, 48])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jit", action="store_true", help="XLA for the eager-API rows")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-keras-hub", action="store_true", help="leave keras-hub out")
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths, args.batches, args.repeats = [8, 24, 48], [1, 8], 2

    text = "".join(chr(c) for c in range(ord("a"), ord("z") + 1)) + " .,\n"
    tokenizer = train_tokenizer("char", [text * 10])
    model = build_model("transformer_lm", tokenizer.vocab_size, args.preset)
    room = model.max_length - args.prompt_tokens
    lengths = [n for n in args.lengths if n < room]

    import export
    from zoo.run import LoadedRun

    with tempfile.TemporaryDirectory() as tmp:
        run = LoadedRun(path=tmp, model=model, tokenizer=tokenizer, config={
            "model": "transformer_lm", "preset": args.preset, "corpus_kind": "stream",
            "seq_len": model.max_length, "data": "bench", "vocab_size": tokenizer.vocab_size,
            "model_config": {}, "train": {"batch_size": 1}, "tokenizer": "char"})
        path = export.saved_model(run, os.path.join(tmp, "export"), max_new_tokens=max(lengths),
                                  streaming=False)
        generate = tf.saved_model.load(path).signatures["generate"]
        peer = None if args.no_keras_hub else keras_hub_gpt2(model, tokenizer.vocab_size, args.jit)

        print(f"# transformer_lm {args.preset}: {model.count_params():,} parameters, "
              f"prompt {args.prompt_tokens} tokens, XLA for eager rows: {args.jit}")
        print(f"{'batch':>5} {'new':>4} | {'cached tok/s':>12} {'ms/tok':>7} | "
              f"{'uncached tok/s':>14} {'ms/tok':>7} | {'savedmodel tok/s':>16} {'ms/tok':>7} | "
              f"{'cached/uncached':>15}" + (f" | {'keras-hub tok/s':>15} {'ms/tok':>7} | "
                                             f"{'cached/keras-hub':>16}" if peer else ""))
        rng = np.random.default_rng(0)
        first_token = []
        for batch in args.batches:
            cached, _, served, hub = measure(model, generate, tokenizer.vocab_size, batch,
                                             args.prompt_tokens, 1, args.jit, args.repeats, rng,
                                             peer)
            first_token.append((batch, cached, served, hub))
            for n in lengths:
                cached, uncached, served, hub = measure(
                    model, generate, tokenizer.vocab_size, batch, args.prompt_tokens, n, args.jit,
                    args.repeats, rng, peer)
                tokens = batch * n
                line = (f"{batch:>5} {n:>4} | {tokens / cached:>12.0f} {1e3 * cached / n:>7.2f} | "
                        f"{tokens / uncached:>14.0f} {1e3 * uncached / n:>7.2f} | "
                        f"{tokens / served:>16.0f} {1e3 * served / n:>7.2f} | "
                        f"{uncached / cached:>14.2f}x")
                if hub is not None:
                    line += (f" | {tokens / hub:>15.0f} {1e3 * hub / n:>7.2f} | "
                             f"{hub / cached:>15.2f}x")
                print(line)
        print("\ntime to first token (prompt + one new token), ms:")
        for batch, cached, served, hub in first_token:
            line = f"  batch {batch:>3}: cached {1e3 * cached:.1f}, SavedModel {1e3 * served:.1f}"
            if hub is not None:
                line += f", keras-hub {1e3 * hub:.1f} (keras-hub / cached {hub / cached:.2f}x)"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
