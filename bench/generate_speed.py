"""Decoding speed: KV-cached loop vs recomputing the prefix, eager (optionally XLA) and through
the exported SavedModel (no XLA, as stock TF Serving runs it), side by side in one run.

    python bench/generate_speed.py --quick        # tiny transformer, about a minute on a 2-core CPU
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

Fair timing on a shared machine (``bench/_rounds.py``): for each batch size and length every
system is warmed up once (tracing, compilation), then timed in ``--rounds`` alternating rounds,
each round making ``--repeats`` calls of every system in turn (the system going first rotating);
a round's time is the median of its calls. Printed: each system's median over rounds, and for
each ratio the median of the per-round ratios with its min-max (IQR too for time to first
token).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench._rounds import median, run_rounds, speed_ratio, time_calls  # noqa: E402
from zoo.generation import generate_ids, generate_ids_uncached  # noqa: E402
from zoo.models import build_model  # noqa: E402
from zoo.tokenizers import train_tokenizer  # noqa: E402


def finished(outputs) -> None:
    """Read every output tensor back, so the call has really finished on an accelerator."""
    for value in tf.nest.flatten(outputs):
        np.asarray(value)


LOADS: list[float] = []  # other processes' load (cores) during every timed round


def compare(calls: dict, rounds: int, repeats: int) -> dict[str, list[float]]:
    """Per-round median wall times (s) of every call in ``calls``, in alternating rounds, after
    one warm-up (trace/compile) call each."""
    for fn in calls.values():
        fn()
    measured = run_rounds(
        {name: (lambda fn=fn: time_calls(fn, repeats)) for name, fn in calls.items()}, rounds)
    LOADS.extend(v for load in measured.other_load.values() for v in load if not math.isnan(v))
    return measured.times


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


def keras_hub_call(peer, prompt, n: int):
    """A call of keras-hub ``generate`` adding exactly ``n`` tokens to ``prompt``."""
    batch, prompt_tokens = prompt.shape
    token_ids = np.zeros((batch, prompt_tokens + n), np.int32)
    token_ids[:, :prompt_tokens] = prompt.numpy()
    mask = np.zeros_like(token_ids, dtype=bool)
    mask[:, :prompt_tokens] = True
    inputs = {"token_ids": token_ids, "padding_mask": mask}
    return lambda: finished(peer.generate(inputs, stop_token_ids=None))


def measure(model, generate, vocab_size, batch, prompt_tokens, n, jit, rounds, repeats, rng,
            peer=None, uncached=True) -> dict[str, list[float]]:
    """Per-round wall times (s) of cached, uncached, SavedModel (and keras-hub) decoding of
    ``n`` new tokens, in alternating rounds."""
    prompt = tf.constant(rng.integers(4, vocab_size, (batch, prompt_tokens)), tf.int32)
    lengths = tf.fill([batch], prompt_tokens)
    texts = tf.constant(["abc def gh"[:prompt_tokens]] * batch)
    calls = {"cached": lambda: finished(generate_ids(model, prompt, lengths, n, jit_compile=jit))}
    if uncached:
        calls["uncached"] = lambda: finished(
            generate_ids_uncached(model, prompt, lengths, n, jit_compile=jit))
    calls["savedmodel"] = lambda: finished(generate(
        prompt=texts, max_new_tokens=tf.fill([batch], n), temperature=tf.zeros([batch]),
        top_k=tf.zeros([batch], tf.int32), top_p=tf.ones([batch]),
        seed=tf.zeros([batch], tf.int64)))
    if peer is not None:
        calls["keras-hub"] = keras_hub_call(peer, prompt, n)
    return compare(calls, rounds, repeats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32, 48])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds")
    parser.add_argument("--repeats", type=int, default=3, help="calls of each system per round")
    parser.add_argument("--jit", action="store_true", help="XLA for the eager-API rows")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-keras-hub", action="store_true", help="leave keras-hub out")
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths, args.batches = [8, 24, 48], [1, 8]
    rounds, repeats = args.rounds, args.repeats
    if min(rounds, repeats) < 1:
        parser.error("--rounds and --repeats must be >= 1")

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
              f"prompt {args.prompt_tokens} tokens, XLA for eager rows: {args.jit}; "
              f"{rounds} alternating rounds of {repeats} call(s) per system, medians over rounds; "
              "ratios: median [min-max] of the per-round ratios")
        print(f"{'batch':>5} {'new':>4} | {'cached tok/s':>12} {'ms/tok':>7} | "
              f"{'uncached tok/s':>14} {'ms/tok':>7} | {'savedmodel tok/s':>16} {'ms/tok':>7} | "
              f"{'cached/uncached':>21}" + (f" | {'keras-hub tok/s':>15} {'ms/tok':>7} | "
                                             f"{'cached/keras-hub':>21}" if peer else ""))
        rng = np.random.default_rng(0)
        first_token = []
        for batch in args.batches:
            first_token.append((batch, measure(
                model, generate, tokenizer.vocab_size, batch, args.prompt_tokens, 1, args.jit,
                rounds, repeats, rng, peer, uncached=False)))
            for n in lengths:
                times = measure(model, generate, tokenizer.vocab_size, batch, args.prompt_tokens,
                                n, args.jit, rounds, repeats, rng, peer)
                cached, uncached, served = (median(times[k])
                                            for k in ("cached", "uncached", "savedmodel"))
                tokens = batch * n
                line = (f"{batch:>5} {n:>4} | {tokens / cached:>12.0f} {1e3 * cached / n:>7.2f} | "
                        f"{tokens / uncached:>14.0f} {1e3 * uncached / n:>7.2f} | "
                        f"{tokens / served:>16.0f} {1e3 * served / n:>7.2f} | "
                        f"{speed_ratio(times['cached'], times['uncached']).short():>21}")
                if peer is not None:
                    hub = median(times["keras-hub"])
                    line += (f" | {tokens / hub:>15.0f} {1e3 * hub / n:>7.2f} | "
                             f"{speed_ratio(times['cached'], times['keras-hub']).short():>21}")
                print(line)
        if LOADS:
            print(f"(other processes' load while timing: median {statistics.median(LOADS):.2f} "
                  "cores)")
        print("\ntime to first token (prompt + one new token), ms, medians over rounds:")
        for batch, times in first_token:
            line = (f"  batch {batch:>3}: cached {1e3 * median(times['cached']):.1f}, "
                    f"SavedModel {1e3 * median(times['savedmodel']):.1f}")
            if peer is not None:
                line += (f", keras-hub {1e3 * median(times['keras-hub']):.1f} (cached / keras-hub "
                         f"speed {speed_ratio(times['cached'], times['keras-hub'])})")
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
