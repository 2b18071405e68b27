"""SST-2 sentence classifiers side by side: TextCNN against the LSTM and Transformer classifiers.

    python bench/sst2_classifiers.py                              # 1500 steps each (this CPU: ~15 min)
    python bench/sst2_classifiers.py --models text_cnn --embeddings vectors.txt [--freeze]
    python bench/sst2_classifiers.py --models text_cnn --embedding-dim 100   # random, same width

Every model trains ``--steps`` steps of batch ``--batch-size`` (Kim 2014: 50) on the SST-2
training split with ``zoo.train`` (AdamW, warm-up + cosine schedule, the zoo's defaults), on
the same word tokenizer (every training word) and rows of ``--seq-len`` tokens, from random
embeddings unless ``--embeddings FILE`` (word2vec / GloVe text) starts ``text_cnn`` from
pretrained vectors (``--freeze``: static vectors). The table gives the parameters, the training
time and the accuracy on the whole dev split (872 sentences; the test labels are not public).

Models: ``text_cnn`` (small preset: 128-d embeddings, 100 maps of widths 3/4/5, dropout 0.5),
``lstm`` (``text_classifier`` with ``encoder=lstm``, one 128-unit layer, mean pooling) and
``transformer`` (``text_classifier`` small: 4 layers, 4 heads, width 128, mean pooling).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import zoo  # noqa: E402

PEERS = {
    "text_cnn": ("text_cnn", {}),
    "lstm": ("text_classifier", {"encoder": "lstm", "num_layers": 1, "dropout": 0.0}),
    "transformer": ("text_classifier", {}),
}


def train_one(name: str, args, root: str) -> tuple:
    """Train peer ``name``; returns ``(name, parameters, train seconds, dev accuracy)``."""
    model, overrides = PEERS[name]
    overrides = dict(overrides)
    if name == "text_cnn" and args.embedding_dim:
        overrides.update(embedding_dim=args.embedding_dim)
    if name == "text_cnn" and args.embeddings:
        overrides.update(embeddings=args.embeddings, freeze_embeddings=args.freeze)
    started = time.time()
    run = zoo.train(model, args.data, os.path.join(root, name), preset="small", tokenizer="word",
                    model_overrides=overrides, max_steps=args.steps, batch_size=args.batch_size,
                    seq_len=args.seq_len, checkpoint_every=args.steps, eval_batches=1, verbose=0)
    wall = time.time() - started
    with open(os.path.join(run.path, "metrics.json")) as f:
        metrics = json.load(f)
    accuracy = metrics["validation"]["accuracy"]
    matched = run.config.get("pretrained_embeddings", {}).get("matched")
    print(f"{name}: {args.steps} steps, {metrics['train_seconds']:.0f} s "
          f"({wall:.0f} s with tokenizer and evaluation), dev accuracy {accuracy:.4f}"
          + (f", {matched:,} tokens matched a vector" if matched else ""), flush=True)
    return name, metrics["parameters"], metrics["train_seconds"], accuracy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="dataset:sst2")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--models", nargs="+", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--embeddings", default="",
                        help="word2vec/GloVe text file to start text_cnn's embeddings from")
    parser.add_argument("--freeze", action="store_true",
                        help="keep the pretrained vectors fixed (static)")
    parser.add_argument("--embedding-dim", type=int, default=0,
                        help="text_cnn's embedding width (default: the preset's, or the "
                        "--embeddings file's)")
    args = parser.parse_args(argv)
    if args.embeddings and not args.embedding_dim:
        from zoo.pretrained_vectors import read_vectors

        args.embedding_dim = read_vectors(args.embeddings, keep=()).dim
    with tempfile.TemporaryDirectory() as root:
        rows = [train_one(name, args, root) for name in args.models]
    vectors = (f"pretrained {os.path.basename(args.embeddings)} "
               f"({'static' if args.freeze else 'fine-tuned'})" if args.embeddings else "random")
    print(f"\n# SST-2 dev, word tokenizer, {args.steps} steps of batch {args.batch_size}, rows of "
          f"{args.seq_len} tokens, text_cnn embeddings: {vectors}")
    print("| model | parameters | train s | dev accuracy |")
    print("|---|---|---|---|")
    for name, params, seconds, accuracy in rows:
        print(f"| `{name}` | {params:,} | {seconds:.0f} | {accuracy:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
