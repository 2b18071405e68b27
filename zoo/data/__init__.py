"""Datasets, corpora, training windows and ``tf.data`` pipelines.

``catalog``: the named datasets (``dataset:NAME``): their files, URLs and sha256 digests.
``download``: a dataset file from the mirror (``$ZOO_DATA_DIR``), the cache or its public URL.
``corpus``: reading text (datasets' splits, files, directories): ``load_corpus`` and ``Corpus``.
``windows``: a causal LM's training and evaluation windows in NumPy (every backend).
``pipelines``: ``encode`` a corpus split with a tokenizer, then ``tf.data`` datasets.
``prepared``: token ids tokenized once into shards (``zoo prepare``).

Names are imported on first use, so that ``zoo.data.windows`` and ``zoo.data.prepared`` (reading
prepared shards) work without TensorFlow.
"""

from __future__ import annotations

import importlib

from zoo.data.catalog import DATASETS, DataFile, DatasetSpec, get_dataset, list_datasets
from zoo.data.corpus import (
    Corpus,
    dataset_lines,
    labelled_texts,
    load_corpus,
    split_stream,
    stream_text,
    translation_pairs,
)
from zoo.data.download import cache_dir, dataset_path

_LAZY = {
    **dict.fromkeys(
        ("count_eval_tokens", "encode", "encode_lines", "encode_text", "evaluation_dataset",
         "steps_per_epoch", "training_dataset"),
        "zoo.data.pipelines",
    ),
    **dict.fromkeys(("PreparedData", "is_prepared", "open_prepared", "prepare"), "zoo.data.prepared"),
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo.data' has no attribute {name!r}")


__all__ = [
    "DATASETS",
    "Corpus",
    "DataFile",
    "DatasetSpec",
    "cache_dir",
    "dataset_lines",
    "dataset_path",
    "get_dataset",
    "labelled_texts",
    "list_datasets",
    "load_corpus",
    "split_stream",
    "stream_text",
    "translation_pairs",
    *_LAZY,
]
