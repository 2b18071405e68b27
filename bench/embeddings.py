"""Word vectors on PTB: the zoo's word2vec (skip-gram) and GloVe beside gensim's ``Word2Vec``.

    python bench/embeddings.py                        # size 100, window 5, 5 negatives, 3 epochs
    python bench/embeddings.py --epochs 1 --rounds 2

All three train on PTB's training split (``dataset:ptb``, its lines as sentences, PTB's
``<unk>`` left out: the zoo drops it as an out-of-vocabulary id, gensim is given the sentences
without it) with the same vector size, window, min_count and epochs; word2vec's both get the
same negatives and subsampling threshold ``sample``:

* zoo word2vec: ``zoo.train("word2vec", ...)``, the task's defaults (batch 2048, AdamW with
  learning rate 0.01, warm-up then cosine decay);
* zoo glove: ``zoo.train("glove", ...)`` with ``window`` (1/d-weighted co-occurrences), x_max 100,
  alpha 0.75, batch 2048, learning rate 0.01; final vectors W + W~;
* gensim: ``Word2Vec(sg=1, vector_size, window, negative, min_count, sample, epochs,
  workers=2)``: linear decay of the SGD rate from 0.025, Hogwild threads.

Every model is scored by the same code (``zoo.word_similarity``, equal to gensim's
``evaluate_word_pairs`` / ``evaluate_word_analogies``, tests/test_word_vectors.py): WordSim-353
Spearman rho over the pairs whose words are known, and Google analogy accuracy (3CosAdd over the
30,000 most frequent words) over the questions whose four words are among them, with coverage.
Training seconds: wall-clock of the training call (the zoo: ``metrics.json``'s
``train_seconds``, the fit loop alone; tokenizing and building the examples are reported apart
as ``setup``). With ``--rounds R`` the three train R times in rotating order; the table gives the
median seconds (scores are those of the first round: every round trains the same seeded model).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import zoo  # noqa: E402
from zoo.data import load_corpus  # noqa: E402
from zoo.files import METRICS_FILE, read_json  # noqa: E402
from zoo.word_similarity import WordVectors, analogy_accuracy, wordsim_spearman  # noqa: E402


def _scores(words: list[str], vectors) -> dict:
    wv = WordVectors(words, vectors)
    return {"wordsim": wordsim_spearman(wv), "analogy": analogy_accuracy(wv)}


def train_zoo(model: str, args, out: str) -> dict:
    """Train a zoo model on PTB; its scores, training seconds and setup seconds."""
    overrides = dict(dim=args.size, window=args.window, min_count=args.min_count)
    if model == "word2vec":
        overrides.update(negatives=args.negatives, sample=args.sample)
    else:
        overrides.update(window=args.glove_window or args.window)
    started = time.perf_counter()
    run = zoo.train(model, "dataset:ptb", out, preset="small", model_overrides=overrides,
                    epochs=args.epochs, seed=args.seed, verbose=0)
    wall = time.perf_counter() - started
    seconds = read_json(os.path.join(out, METRICS_FILE))["train_seconds"]
    return {"seconds": seconds, "setup": wall - seconds, **_scores(*run.word_vectors())}


def train_gensim(args, sentences) -> dict:
    """gensim's skip-gram with the same settings; its scores and training seconds."""
    from gensim.models import Word2Vec

    started = time.perf_counter()
    model = Word2Vec(sentences, vector_size=args.size, window=args.window, sg=1,
                     negative=args.negatives, min_count=args.min_count, sample=args.sample,
                     epochs=args.epochs, workers=2, seed=args.seed)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "setup": 0.0,
            **_scores(list(model.wv.index_to_key), model.wv.vectors)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--glove-window", type=int, help="GloVe's window (default: --window)")
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--sample", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    lines = load_corpus("dataset:ptb").lines("train")
    sentences = [[w for w in line.split() if w != "<unk>"] for line in lines]
    systems = {
        "zoo word2vec (skip-gram)": lambda out: train_zoo("word2vec", args, out),
        "zoo glove": lambda out: train_zoo("glove", args, out),
        "gensim Word2Vec (sg=1)": lambda out: train_gensim(args, sentences),
    }
    names = list(systems)
    results: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for k in range(len(names)):
                name = names[(r + k) % len(names)]
                out = os.path.join(tmp, f"{r}-{names.index(name)}")
                results[name].append(systems[name](out))
                print(f"round {r + 1}: {name}: {results[name][-1]['seconds']:.1f} s",
                      file=sys.stderr)

    print(f"\nPTB train, size {args.size}, window {args.window} (glove {args.glove_window or args.window}), "
          f"{args.negatives} negatives, min_count {args.min_count}, sample {args.sample}, "
          f"{args.epochs} epoch(s), {args.rounds} round(s)\n")
    print("| model | WordSim-353 rho (pairs) | Google analogy acc. (questions) "
          "| train s (median) | setup s |")
    print("|---|---|---|---|---|")
    for name in names:
        first = results[name][0]
        ws, an = first["wordsim"], first["analogy"]
        seconds = statistics.median(x["seconds"] for x in results[name])
        setup = statistics.median(x["setup"] for x in results[name])
        print(f"| {name} | {ws['spearman']:.3f} ({ws['pairs']}/{ws['pairs_total']}) "
              f"| {100 * an['accuracy']:.2f}% ({an['questions']}/{an['questions_total']}) "
              f"| {seconds:.1f} | {setup:.1f} |")
    median = {name: statistics.median(x["seconds"] for x in results[name]) for name in names}
    ours, theirs = results[names[0]][0], results[names[2]][0]
    rho = ours["wordsim"]["spearman"] / theirs["wordsim"]["spearman"]
    acc = ours["analogy"]["accuracy"] / max(theirs["analogy"]["accuracy"], 1e-12)
    print(f"\nzoo word2vec / gensim: WordSim rho {rho:.2f}x, analogy accuracy {acc:.2f}x, "
          f"training time {median[names[0]] / median[names[2]]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
