"""Input pipeline vs training throughput, prepared shards vs in-memory ids.

    python bench/input_pipeline.py --quick            # < 1 minute on a 2-core CPU
    python bench/input_pipeline.py --data dataset:tinyshakespeare --preset small --batches 500

For each pipeline (``in-memory``: ``zoo.data.training_dataset`` on ids tokenized at start-up;
``prepared``: windows gathered from the memory-mapped shards of ``zoo prepare``) it prints

* input tokens/s: ``batches x batch_size x seq_len`` over the time to iterate that many batches
  (after one warm-up batch), i.e. what the pipeline alone can deliver;
* training tokens/s: the same count over the time of ``model.fit`` steps fed by that pipeline
  (after a warm-up step that traces and compiles);
* their ratio: how many times faster the input is than the training it feeds (> 1: the input is
  not the bottleneck).

It also prints the one-off costs: tokenizing the corpus at start-up (what ``prepare`` saves on
every training start) against preparing once and opening (sha256-verifying) the shards.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from zoo import data as zdata  # noqa: E402
from zoo.metrics import masked_lm_loss  # noqa: E402
from zoo.models import build_model  # noqa: E402
from zoo.tokenizers import train_tokenizer  # noqa: E402


def input_throughput(dataset: tf.data.Dataset, batches: int, tokens_per_batch: int) -> float:
    iterator = iter(dataset)
    next(iterator)  # warm-up: the first batch pays for tracing the map function
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * tokens_per_batch / (time.perf_counter() - started)


class _Timer(keras.callbacks.Callback):
    def __init__(self, warmup: int):
        super().__init__()
        self.warmup, self.started, self.ended, self.seen = warmup, None, None, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.warmup:
            self.started = time.perf_counter()
        self.ended = time.perf_counter()


def training_throughput(args, vocab_size: int, dataset: tf.data.Dataset, tokens_per_batch: int) -> float:
    keras.utils.set_random_seed(0)
    overrides = {"max_length": args.seq_len} if args.model == "transformer_lm" else {}
    model = build_model(args.model, vocab_size, args.preset, **overrides)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=masked_lm_loss)
    timer = _Timer(warmup=2)
    model.fit(dataset, steps_per_epoch=args.train_steps + 2, epochs=1, verbose=0, callbacks=[timer],
              shuffle=False)
    return args.train_steps * tokens_per_batch / (timer.ended - timer.started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="dataset:tinyshakespeare")
    parser.add_argument("--tokenizer", default="char")
    parser.add_argument("--model", default="transformer_lm")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batches", type=int, default=500, help="batches timed for input throughput")
    parser.add_argument("--train-steps", type=int, default=30, help="fit steps timed")
    parser.add_argument("--shard-tokens", type=int, default=1 << 22)
    parser.add_argument("--quick", action="store_true",
                        help="tiny model, seq 64, 200 input batches, 10 training steps (< 1 min on CPU)")
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.seq_len, args.batches, args.train_steps = "tiny", 64, 200, 10

    tokens_per_batch = args.batch_size * args.seq_len
    corpus = zdata.load_corpus(args.data)
    started = time.perf_counter()
    tok = train_tokenizer(args.tokenizer, corpus.training_texts())
    ids = zdata.encode(tok, corpus, "train")
    tokenize_s = time.perf_counter() - started
    kind = corpus.kind

    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        out = os.path.join(tmp, "prepared")
        started = time.perf_counter()
        zdata.prepare(args.data, out, tokenizer=args.tokenizer, shard_tokens=args.shard_tokens)
        prepare_s = time.perf_counter() - started
        started = time.perf_counter()
        prepared = zdata.open_prepared(out)
        open_s = time.perf_counter() - started
        train_tokens = prepared.num_tokens("train")
        shards = len(prepared.manifest["splits"]["train"]["shards"])

        def pipelines():
            common = dict(seq_len=args.seq_len, batch_size=args.batch_size, seed=0)
            yield "in-memory", zdata.training_dataset(ids, kind, **common)
            yield "prepared", prepared.training_dataset(**common)

        rows = []
        for name, dataset in pipelines():
            feed = input_throughput(dataset, args.batches, tokens_per_batch)
            fit = training_throughput(args, tok.vocab_size, dataset, tokens_per_batch)
            rows.append((name, feed, fit))

    print(f"data {args.data}: {train_tokens:,} training tokens ({args.tokenizer}), "
          f"{shards} shard(s) of <= {args.shard_tokens:,}")
    print(f"model {args.model}/{args.preset}, batch {args.batch_size} x seq {args.seq_len} "
          f"= {tokens_per_batch:,} tokens a step; {args.batches} input batches, "
          f"{args.train_steps} training steps timed; devices: "
          f"{', '.join(d.name for d in tf.config.list_logical_devices() if 'CPU' in d.name or 'GPU' in d.name)}")
    print(f"one-off: tokenize at start-up {tokenize_s:.2f} s | prepare once {prepare_s:.2f} s, "
          f"open + sha256 verify {open_s:.3f} s")
    print(f"{'pipeline':<10} {'input tokens/s':>16} {'training tokens/s':>18} {'input / training':>17}")
    for name, feed, fit in rows:
        print(f"{name:<10} {feed:>16,.0f} {fit:>18,.0f} {feed / fit:>16.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
