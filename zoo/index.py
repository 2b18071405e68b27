"""Semantic search: embed documents with an encoder run, index them with FAISS, search them.

    run = zoo.load("runs/bert")
    index = zoo.build_index(run, "docs.jsonl", "indexes/docs")   # or: zoo index RUN --data ...
    zoo.search("indexes/docs", "who wrote the report?", top_k=10)

Embeddings come from the run's encoder (``zoo.embedding``: masked LM, classifier or any model
with an ``encode`` method), L2-normalised, so the index's inner product is the cosine similarity

    score(q, d) = <e(q), e(d)> / (|e(q)| |e(d)|)  in [-1, 1].

The index is exact (FAISS ``IndexFlatIP``: every document scored, no approximation), which is
what a few hundred thousand documents need on a CPU; FAISS is used because it is the maintained
reference library for dense vector search, installs from PyPI as ``faiss-cpu`` and runs in the
process with no service.

An index directory holds ``index.faiss`` (the FAISS index), ``documents.jsonl`` (one
``{"id", "text"}`` object a line, in index order) and ``index.json`` (the run it was built with,
the dimension, the count and the data source). Documents (``--data``): a ``.jsonl`` file of
objects with ``text`` (and optionally ``id``), a ``.txt`` file (one document a line, ids are the
line numbers from 0), a SQuAD-format ``.json`` file (its paragraphs) or ``dataset:squad`` (the
paragraphs of the test articles, ``zoo.retrieval``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time

import numpy as np

from zoo.errors import ZooError

__all__ = ["DOCS_FILE", "FAISS_FILE", "META_FILE", "SearchIndex", "build_index", "load_index",
           "read_documents", "search"]

FAISS_FILE = "index.faiss"
DOCS_FILE = "documents.jsonl"
META_FILE = "index.json"
INDEX_FORMAT = 1
DEFAULT_TOP_K = 10
# Fewer queries than this are searched on one thread: on a busy CPU, FAISS's OpenMP threads
# waiting for cores made one query at 10k documents 0.26 ms median but 24 ms at the 95th
# percentile, against 0.10 / 0.26 ms on one thread (bench/search.py).
_FEW_QUERIES = 16
_THREADS_LOCK = threading.Lock()


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - an extra of the package
        raise ZooError("semantic search needs FAISS: pip install 'keras-lm-zoo[eval]' "
                       "(faiss-cpu)") from err
    return faiss


# ------------------------------------------------------------------------------------------------
# documents


def read_documents(data: str) -> tuple[list[str], list[str]]:
    """``(ids, texts)`` of the documents in ``data`` (see the module docstring for the forms)."""
    if data.startswith("dataset:"):
        from zoo.retrieval import squad_retrieval_set

        if data != "dataset:squad":
            raise ZooError(f"documents to index: dataset:squad, a .jsonl, .json or .txt file. "
                           f"Received: {data!r}")
        docs = squad_retrieval_set("dataset:squad").documents
        return [d[0] for d in docs], [d[1] for d in docs]
    if not os.path.isfile(data):
        raise ZooError(f"no such documents file: {data!r}")
    if data.endswith(".json"):
        from zoo.retrieval import squad_retrieval_set

        docs = squad_retrieval_set(data, split="all").documents
        return [d[0] for d in docs], [d[1] for d in docs]
    ids, texts = [], []
    try:
        with open(data, encoding="utf-8") as f:
            for number, line in enumerate(f):
                if not line.strip():
                    continue
                if data.endswith(".jsonl"):
                    try:
                        row = json.loads(line)
                        text = row["text"]
                    except (ValueError, KeyError, TypeError):
                        raise ZooError(f"{data}:{number + 1}: expected a JSON object with a "
                                       f"'text' field") from None
                    doc_id = str(row.get("id", len(ids)))
                else:
                    text, doc_id = line.rstrip("\n"), str(number)
                if not isinstance(text, str) or not text.strip():
                    raise ZooError(f"{data}:{number + 1}: empty document text")
                ids.append(doc_id)
                texts.append(text)
    except UnicodeDecodeError as err:
        raise ZooError(f"{data} is not UTF-8 text: {err}") from None
    if not texts:
        raise ZooError(f"{data} holds no documents")
    if len(set(ids)) != len(ids):
        raise ZooError(f"{data}: document ids are not unique")
    return ids, texts


# ------------------------------------------------------------------------------------------------
# the index


def _check_query(query) -> list[str]:
    queries = [query] if isinstance(query, str) else list(query)
    if not queries:
        raise ZooError("no query given")
    for q in queries:
        if not isinstance(q, str):
            raise ZooError(f"a query must be a string. Received: {q!r}")
        if not q.strip():
            raise ZooError("empty query: give some text to search for")
    return queries


def _check_top_k(top_k) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ZooError(f"top_k must be an integer >= 1. Received: {top_k!r}")
    return int(top_k)


@dataclasses.dataclass
class SearchIndex:
    """A loaded index: the FAISS index, the documents and the encoder run that embeds queries.

    ``run`` is loaded on the first query (``zoo.load`` of the recorded run path) unless given.
    """

    path: str
    faiss_index: object
    ids: list[str]
    texts: list[str]
    meta: dict
    run: object = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def vectors(self) -> np.ndarray:
        """The indexed unit vectors ``(N, d)`` float32, in document order."""
        return self.faiss_index.reconstruct_n(0, self.faiss_index.ntotal)

    def encoder_run(self):
        """The run whose encoder embeds the queries (loaded once)."""
        if self.run is None:
            from zoo.run import load_finished

            self.run = load_finished(self.meta["run_path"])
        return self.run

    def search_vectors(self, vectors: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)`` of the ``top_k`` best documents for each query vector, best first
        (``rows`` index ``ids``/``texts``)."""
        k = min(_check_top_k(top_k), len(self))
        vectors = np.ascontiguousarray(vectors, np.float32)
        if len(vectors) >= _FEW_QUERIES:
            return self.faiss_index.search(vectors, k)
        faiss = _faiss()
        with _THREADS_LOCK:  # a few queries: FAISS's OpenMP threads cost more than they save
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                return self.faiss_index.search(vectors, k)
            finally:
                faiss.omp_set_num_threads(threads)

    def search(self, query, top_k: int = DEFAULT_TOP_K) -> list[dict] | list[list[dict]]:
        """The ``top_k`` documents nearest to ``query`` (a string, or a list of strings), best
        first: ``{"rank", "id", "score", "text"}`` dicts (a list of such lists for a list)."""
        from zoo.embedding import embed_texts

        queries = _check_query(query)
        top_k = _check_top_k(top_k)
        scores, rows = self.search_vectors(embed_texts(self.encoder_run(), queries), top_k)
        results = [
            [{"rank": r + 1, "id": self.ids[i], "score": float(s), "text": self.texts[i]}
             for r, (s, i) in enumerate(zip(score_row, row, strict=True)) if i >= 0]
            for score_row, row in zip(scores, rows, strict=True)
        ]
        return results[0] if isinstance(query, str) else results


def build_index(run_or_dir, data: str, out: str, *, batch_size: int = 64,
                verbose: int | None = None) -> SearchIndex:
    """Embed the documents of ``data`` with the run's encoder and write the index to ``out``.

    ``out`` must not exist, or be an index directory (it is replaced). Returns the loaded index.
    """
    from zoo import progress
    from zoo.embedding import embed_texts
    from zoo.run import load_finished

    if os.path.exists(out) and not os.path.isfile(os.path.join(out, META_FILE)):
        raise ZooError(f"{out} exists and is not an index directory: choose a new --out")
    run = load_finished(run_or_dir)
    ids, texts = read_documents(data)
    faiss = _faiss()
    start = time.perf_counter()
    with progress.verbosity(verbose), progress.stage(f"embedding {len(texts)} documents"):
        vectors = embed_texts(run, texts, batch_size=batch_size)
    seconds = time.perf_counter() - start
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    meta = {"format": INDEX_FORMAT, "kind": "faiss.IndexFlatIP", "metric": "cosine",
            "dimension": int(vectors.shape[1]), "count": len(ids), "data": data,
            "run_path": os.path.abspath(run.path), "task": run.task,
            "model": run.config.get("model"), "embed_seconds": round(seconds, 3)}
    tmp = out.rstrip("/") + ".tmp-index"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    faiss.write_index(index, os.path.join(tmp, FAISS_FILE))
    with open(os.path.join(tmp, DOCS_FILE), "w", encoding="utf-8") as f:
        for doc_id, text in zip(ids, texts, strict=True):
            f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
    with open(os.path.join(tmp, META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    return SearchIndex(os.path.abspath(out), index, ids, texts, meta, run)


def load_index(path: str, run=None) -> SearchIndex:
    """The index directory ``path`` (``ZooError`` when it is not one); ``run`` overrides the
    recorded encoder run (a ``LoadedRun`` or a run directory)."""
    if isinstance(path, SearchIndex):
        return path
    meta_path = os.path.join(os.fspath(path), META_FILE)
    if not os.path.isfile(meta_path):
        raise ZooError(f"{path!r} is not a search index (no {META_FILE}): build one with zoo index")
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    ids, texts = [], []
    with open(os.path.join(path, DOCS_FILE), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            ids.append(row["id"])
            texts.append(row["text"])
    index = _faiss().read_index(os.path.join(path, FAISS_FILE))
    if index.ntotal != len(ids):
        raise ZooError(f"{path}: the FAISS index holds {index.ntotal} vectors for {len(ids)} "
                       f"documents")
    if run is not None and not hasattr(run, "model"):
        from zoo.run import load_finished

        run = load_finished(run)
    return SearchIndex(os.path.abspath(path), index, ids, texts, meta, run)


def search(index, query, top_k: int = DEFAULT_TOP_K) -> list[dict] | list[list[dict]]:
    """``zoo.search(index_dir_or_index, query, top_k=10)``: the documents nearest to ``query``;
    see ``SearchIndex.search``."""
    top_k = _check_top_k(top_k)
    _check_query(query)
    return load_index(index).search(query, top_k=top_k)
