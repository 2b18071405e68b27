"""A search index as a TF Serving SavedModel: the ``search`` signature.

TF Serving cannot call FAISS, so the export holds the index's unit vectors ``D`` (``[N, d]``,
a non-trainable variable) and the encoder, and searches exactly in the graph:

    q = e(query) / |e(query)|         scores = q D^T  ([B, N])        top_k(scores, K)

which ranks like the FAISS ``IndexFlatIP`` the index was built with (same vectors, same inner
product). Signatures, over a dynamic batch ``B``; ``K`` = the export's ``top_k`` (at most ``N``):

``search`` (also ``serving_default``)
    ``query`` string ``[B]`` -> ``ids`` string ``[B, K]`` (document ids, best first),
    ``indices`` int32 ``[B, K]`` (rows of ``documents.jsonl``) and ``scores`` float32 ``[B, K]``
    (cosine similarities). An empty (or all-space) query fails with INVALID_ARGUMENT.
``embed``
    ``text`` string ``[B]`` -> ``embedding`` float32 ``[B, d]``: the unit vectors indexed.

Written like ``export.saved_model`` (``BASE/<version>/``, a temporary folder renamed when
complete), with warm-up records and ``assets.extra/zoo_export.json`` (task ``search``).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import tensorflow as tf

from zoo.errors import ZooError
from zoo.tasks.export_module import ExportModule

__all__ = ["SEARCH_SIGNATURE", "export_search_model"]

SEARCH_SIGNATURE = "search"
DEFAULT_TOP_K = 10


class _SearchModule(ExportModule):
    """The encoder's variables and tokenizers, the document vectors and ids, ``search``/``embed``."""

    def __init__(self, run, embedder, vectors: np.ndarray, ids: list[str], top_k: int):
        super().__init__(run.model, name="zoo_search", tokenizers=embedder.tokenizers)
        self.document_vectors = tf.Variable(vectors.astype(np.float32), trainable=False,
                                            name="document_vectors")
        self.document_ids = tf.Variable(tf.constant(ids, tf.string), trainable=False,
                                        name="document_ids")
        self._embed_fn = embedder.function
        self._top_k = int(top_k)
        self.search = self.function(self._search, tf.TensorSpec([None], tf.string, name="query"))
        self.embed = self.function(self._embed, tf.TensorSpec([None], tf.string, name="text"))

    def _search(self, query):
        nonempty = tf.debugging.assert_greater(
            tf.strings.length(tf.strings.strip(query)), 0,
            message="empty query: give some text to search for")
        with tf.control_dependencies([nonempty]):
            vectors = self._embed_fn(query)
        scores = tf.matmul(vectors, self.document_vectors, transpose_b=True)  # (B, N)
        best = tf.math.top_k(scores, k=self._top_k)
        return {"ids": tf.gather(self.document_ids, best.indices),
                "indices": tf.cast(best.indices, tf.int32), "scores": best.values}

    def _embed(self, text):
        return {"embedding": self._embed_fn(text)}


def _warmup_records(texts: list[str]) -> list[bytes]:
    from zoo.tasks.warmup import predict_logs, text_array

    return predict_logs({SEARCH_SIGNATURE: {"query": text_array(texts)}})


def export_search_model(index, base: str, version: int | None = None,
                        top_k: int = DEFAULT_TOP_K) -> str:
    """Export the index (a directory or ``zoo.index.SearchIndex``) with its encoder run as the
    SavedModel ``BASE/<version>/`` (default version: the next free one); returns its path."""
    from export.saved_model import _make_temp_dir, _publish, _versions, write_warmup_file
    from zoo.embedding import embedder
    from zoo.export_contract import EXPORT_FORMAT, EXPORT_INFO_FILE, EXTRA_ASSETS_DIR, WARMUP_FILE
    from zoo.index import _check_top_k, load_index

    top_k = _check_top_k(top_k)
    index = load_index(index)
    run = index.encoder_run()
    k = min(top_k, len(index))
    base = os.path.abspath(os.fspath(base))
    if os.path.exists(base) and not os.path.isdir(base):
        raise ZooError(f"{base} exists and is not a directory")
    os.makedirs(base, exist_ok=True)
    tmp = _make_temp_dir(base)
    try:
        module = _SearchModule(run, embedder(run), index.vectors, index.ids, k)
        search = module.search.get_concrete_function()
        signatures = {"serving_default": search, SEARCH_SIGNATURE: search,
                      "embed": module.embed.get_concrete_function()}
        tf.saved_model.save(module, tmp, signatures=signatures)
        extra = os.path.join(tmp, EXTRA_ASSETS_DIR)
        os.makedirs(extra, exist_ok=True)
        write_warmup_file(os.path.join(extra, WARMUP_FILE), _warmup_records(index.texts[:2]))
        info = {"format": EXPORT_FORMAT, "task": "search", "signatures": list(signatures),
                "export": {"top_k": k, "documents": len(index), "index": index.path},
                "tokenizer": {"kind": run.tokenizer.kind, "vocab_size": run.tokenizer.vocab_size},
                "run": run.config, "run_path": os.path.abspath(run.path),
                "versions": _versions()}
        with open(os.path.join(extra, EXPORT_INFO_FILE), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2, default=str)
        return _publish(tmp, base, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
