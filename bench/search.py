"""Semantic search on SQuAD's test articles: the zoo's embeddings against BM25, and latency at 10k.

    python bench/search.py --train-steps 800             # train the encoder, then measure
    python bench/search.py --run runs/search-bert        # measure an existing encoder run

Retrieval quality (``zoo.retrieval``): the 8 test articles of ``dev-v1.1.json`` (the last 8;
their paragraphs are the documents, every question a query, its own paragraph the one relevant
document). Each query ranks every document; recall@1/5/10 and MRR over the full ranking for

* the zoo: a ``bert_mlm`` encoder, L2-normalised mean-pooled hidden states, searched with the
  FAISS index ``zoo index`` writes (``zoo.index``), and
* BM25 (``rank_bm25.BM25Okapi``, k1 = 1.5, b = 0.75; lower-cased ``\\w+`` tokens), in the same run.

The encoder (unless ``--run``) is a ``bert_mlm`` (small preset: 4 layers, width 128, context
128, WordPiece 4,000) trained with masked-token prediction on the paragraphs of the 40 training
articles only, ``--train-steps`` steps of 16 x 128 tokens; the script reports its training time.
Documents longer than the context are embedded from their first 126 tokens.

Latency at 10k documents: the first 10,000 sentences of all SQuAD contexts, embedded and indexed;
one query at a time (200 test questions): the query's embedding, the FAISS search, both
together, the in-graph search of the exported ``search`` signature (``export.search_index``,
called in-process) and BM25's scoring of the same 10k sentences, as median and 95th percentile.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import numpy as np  # noqa: E402

import zoo  # noqa: E402
from zoo.embedding import embed_texts  # noqa: E402
from zoo.retrieval import retrieval_metrics, squad_retrieval_set  # noqa: E402

TOKEN = re.compile(r"\w+")
TRAIN = dict(preset="small", batch_size=16, seq_len=128, checkpoint_every=200, eval_batches=10)


def tokens(text: str) -> list[str]:
    """BM25's tokens: lower-cased word characters."""
    return TOKEN.findall(text.lower())


def train_encoder(out: str, steps: int) -> tuple[object, float]:
    """A bert_mlm trained on the training articles' paragraphs (resumable); its train seconds."""
    train = squad_retrieval_set("dataset:squad", split="train")
    os.makedirs(out, exist_ok=True)
    corpus = os.path.join(out + "-corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(text for _, text in train.documents) + "\n")
    run = zoo.train("bert_mlm", corpus, out, max_steps=steps, verbose=1, **TRAIN)
    with open(os.path.join(run.path, "metrics.json")) as f:
        return run, float(json.load(f)["train_seconds"])


def bm25_rankings(documents: list[str], queries: list[str]) -> np.ndarray:
    """Every query's full ranking of the documents by BM25, best first."""
    from rank_bm25 import BM25Okapi

    bm25 = BM25Okapi([tokens(d) for d in documents])
    return np.stack([np.argsort(-bm25.get_scores(tokens(q)), kind="stable") for q in queries])


def quality(run, root: str) -> dict:
    """recall@1/5/10 and MRR of the zoo index and of BM25 on the test articles."""
    test = squad_retrieval_set("dataset:squad", split="test")
    path = os.path.join(root, "test.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for doc_id, text in test.documents:
            f.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    start = time.perf_counter()
    index = zoo.build_index(run, path, os.path.join(root, "test-index"))
    queries = embed_texts(run, test.queries)
    _, rows = index.search_vectors(queries, len(index))
    zoo_seconds = time.perf_counter() - start
    start = time.perf_counter()
    bm25 = bm25_rankings([t for _, t in test.documents], test.queries)
    bm25_seconds = time.perf_counter() - start
    return {"documents": len(test.documents), "queries": len(test.queries),
            "zoo": {**retrieval_metrics(rows, test.relevant), "seconds": round(zoo_seconds, 1)},
            "bm25": {**retrieval_metrics(bm25, test.relevant),
                     "seconds": round(bm25_seconds, 1)},
            "random_recall@10": 10 / len(test.documents)}


def _sentences(count: int) -> list[str]:
    everything = squad_retrieval_set("dataset:squad", split="all")
    out = []
    for _, text in everything.documents:
        out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 20]
    if len(out) < count:
        raise SystemExit(f"only {len(out)} sentences")
    return out[:count]


def _stats(seconds: list[float]) -> dict:
    ms = 1000 * np.asarray(seconds)
    return {"median_ms": round(float(np.median(ms)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def latency(run, root: str, size: int, num_queries: int) -> dict:
    """Per-query latency (batch of one) at ``size`` documents."""
    import tensorflow as tf
    from rank_bm25 import BM25Okapi

    from export.search_index import export_search_model

    docs = _sentences(size)
    path = os.path.join(root, "sentences.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(docs) + "\n")
    start = time.perf_counter()
    index = zoo.build_index(run, path, os.path.join(root, "index-10k"))
    build_seconds = time.perf_counter() - start
    exported = export_search_model(index, os.path.join(root, "export"), top_k=10)
    signature = tf.saved_model.load(exported).signatures["search"]
    bm25 = BM25Okapi([tokens(d) for d in docs])
    queries = squad_retrieval_set("dataset:squad", split="test").queries[:num_queries]
    for q in queries[:5]:  # warm up (tracing)
        index.search(q, top_k=10)
        signature(query=tf.constant([q]))
    times = {"embed": [], "faiss": [], "zoo.search": [], "savedmodel": [], "bm25": []}
    for q in queries:
        t0 = time.perf_counter()
        vector = embed_texts(run, [q])
        t1 = time.perf_counter()
        index.search_vectors(vector, 10)
        t2 = time.perf_counter()
        index.search(q, top_k=10)
        t3 = time.perf_counter()
        signature(query=tf.constant([q]))["ids"].numpy()
        t4 = time.perf_counter()
        np.argsort(-bm25.get_scores(tokens(q)))[:10]
        t5 = time.perf_counter()
        for name, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4),
                                 strict=True):
            times[name].append(seconds)
    return {"documents": size, "queries": len(queries), "index_build_seconds": round(build_seconds, 1),
            **{name: _stats(values) for name, values in times.items()}}


def main() -> None:
    """Train (or load) the encoder, measure quality and latency, print JSON and a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="an existing encoder run (bert_mlm, text_classifier)")
    parser.add_argument("--out", default="runs/search-bert", help="where to train the encoder")
    parser.add_argument("--train-steps", type=int, default=800)
    parser.add_argument("--latency-docs", type=int, default=10000)
    parser.add_argument("--latency-queries", type=int, default=200)
    args = parser.parse_args()
    train_seconds = None
    if args.run:
        run = zoo.load(args.run)
    else:
        run, train_seconds = train_encoder(args.out, args.train_steps)
    with tempfile.TemporaryDirectory() as root:
        report = {"run": run.path, "model": run.config["model"], "preset": run.config["preset"],
                  "train_steps": run.config["train"].get("max_steps"),
                  "train_seconds": train_seconds, "quality": quality(run, root),
                  "latency": latency(run, root, args.latency_docs, args.latency_queries)}
    print(json.dumps(report, indent=2))
    q = report["quality"]
    print("\n| method | recall@1 | recall@5 | recall@10 | MRR |\n|---|---|---|---|---|")
    for name, label in (("zoo", "zoo bert_mlm + FAISS"), ("bm25", "BM25 (rank-bm25)")):
        m = q[name]
        print(f"| {label} | {m['recall@1']:.3f} | {m['recall@5']:.3f} | {m['recall@10']:.3f} "
              f"| {m['mrr']:.3f} |")


if __name__ == "__main__":
    main()
