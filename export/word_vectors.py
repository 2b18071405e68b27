"""Word vectors as text files: the word2vec text format and the GloVe text format.

    word2vec:   "COUNT DIM" on the first line, then "word v_1 ... v_DIM" per word
    glove:      "word v_1 ... v_DIM" per word (no header)

Words most frequent first; values written with 9 significant digits, so float32 vectors read
back exactly (gensim: ``KeyedVectors.load_word2vec_format(path, binary=False)``, GloVe files
with ``no_header=True``). ``zoo export RUN --vectors FILE [--vectors-format word2vec|glove]``.
"""

from __future__ import annotations

import os

import numpy as np

from zoo.errors import ZooError

FORMATS = ("word2vec", "glove")


def write_vectors(words: list[str], vectors: np.ndarray, path: str,
                  fmt: str = "word2vec") -> dict:
    """Write ``words`` and their ``vectors (V, d)`` to ``path`` in ``fmt``; returns
    ``{"path", "format", "words", "dim", "bytes"}``. Written beside, then renamed."""
    if fmt not in FORMATS:
        raise ZooError(f"unknown vectors format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2 or len(words) != len(vectors):
        raise ZooError(f"{len(words)} words for vectors of shape {vectors.shape}")
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        if fmt == "word2vec":
            f.write(f"{len(words)} {vectors.shape[1]}\n")
        for word, row in zip(words, vectors, strict=True):
            f.write(word + " " + " ".join(f"{v:.9g}" for v in row.tolist()) + "\n")
    os.replace(tmp, path)
    return {"path": path, "format": fmt, "words": len(words), "dim": int(vectors.shape[1]),
            "bytes": os.path.getsize(path)}


def export_vectors(run, path: str, fmt: str = "word2vec") -> dict:
    """Write a word-vectors run's vectors (``run.word_vectors()``); ``ZooError`` for a run of
    another task."""
    if run.task != "word_vectors":
        raise ZooError(f"--vectors needs a word_vectors run (word2vec, glove); {run.path} holds "
                       f"a {run.task} model ({run.config.get('model')})")
    words, vectors = run.word_vectors()
    return write_vectors(words, vectors, path, fmt)
