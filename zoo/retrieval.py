"""Retrieval evaluation: SQuAD as a search benchmark, recall@k and mean reciprocal rank.

SQuAD as retrieval (``squad_retrieval_set``): every paragraph of the chosen articles is a
document (id ``ARTICLE-PARAGRAPH``, both counted from 0 in the file), every question a query,
and its own paragraph the one relevant document. The split is by article, as for question
answering (``zoo.data.squad.split_articles``): the first 40 articles of ``dev-v1.1.json`` train
(``split="train"``: training and validation articles), the last 8 test (``split="test"``).

For queries ``q`` with relevant document ``d_q`` found at rank ``r_q`` (1 = first; infinite when
it is not in the ranking):

    recall@k = (1/|Q|) sum_q [r_q <= k]          MRR = (1/|Q|) sum_q 1 / r_q
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import numpy as np

from zoo.errors import ZooError

__all__ = ["RetrievalSet", "ranks_of", "retrieval_metrics",
           "squad_retrieval_set"]

@dataclasses.dataclass
class RetrievalSet:
    """Documents ``(id, text)``, queries and, for each query, the row of its relevant document."""

    documents: list[tuple[str, str]]
    queries: list[str]
    relevant: list[int]


def _squad_file(source: str) -> str:
    if source == "dataset:squad":
        from zoo.data.download import dataset_path

        return dataset_path("squad", "dev-v1.1.json")
    return source


def squad_retrieval_set(source: str = "dataset:squad", split: str = "test") -> RetrievalSet:
    """The paragraphs and questions of ``split`` (``train``: the first 40 articles of SQuAD,
    ``test``: the last 8, ``all``) of a SQuAD-format file (``dataset:squad`` or a path)."""
    path = _squad_file(source)
    try:
        with open(path, encoding="utf-8") as f:
            articles = json.load(f)["data"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ZooError(f"cannot read SQuAD-format JSON from {path}: {err}") from None
    from zoo.data.squad import TEST, TRAIN_ALL, split_articles

    if split not in ("train", "test", "all"):
        raise ZooError(f"split must be train, test or all. Received: {split!r}")
    chosen = {"all": range(len(articles)), "test": split_articles(len(articles))[TEST],
              "train": split_articles(len(articles))[TRAIN_ALL]}[split]
    numbered = [(a, articles[a]) for a in chosen]
    documents, queries, relevant = [], [], []
    for a, article in numbered:
        for p, paragraph in enumerate(article["paragraphs"]):
            row = len(documents)
            documents.append((f"{a}-{p}", paragraph["context"]))
            for qa in paragraph.get("qas", ()):
                queries.append(qa["question"])
                relevant.append(row)
    return RetrievalSet(documents, queries, relevant)


def ranks_of(rankings: np.ndarray | Sequence[Sequence[int]], relevant: Sequence[int]) -> np.ndarray:
    """The 1-based rank of each query's relevant document in its ranking (rows of document
    indices, best first); ``inf`` where it is missing."""
    ranks = np.full(len(relevant), np.inf)
    for q, (ranking, target) in enumerate(zip(rankings, relevant, strict=True)):
        hits = np.flatnonzero(np.asarray(ranking) == target)
        if hits.size:
            ranks[q] = hits[0] + 1
    return ranks


def retrieval_metrics(rankings, relevant: Sequence[int], ks: Sequence[int] = (1, 5, 10)) -> dict:
    """``{"recall@k": ..., "mrr": ..., "queries": n}`` of rankings against the relevant rows."""
    if len(relevant) == 0:
        raise ZooError("no queries to score")
    ranks = ranks_of(rankings, relevant)
    metrics = {f"recall@{k}": float(np.mean(ranks <= k)) for k in ks}
    metrics["mrr"] = float(np.mean(1.0 / ranks))
    metrics["queries"] = len(relevant)
    return metrics
