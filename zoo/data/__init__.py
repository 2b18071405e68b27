"""Datasets, corpora and ``tf.data`` pipelines.

``sources``: the dataset registry, mirror / cache / download of files, ``load_corpus``.
``pipelines``: ``encode`` a corpus split with a tokenizer, then training and evaluation datasets.
"""

from zoo.data.pipelines import (
    count_eval_tokens,
    encode,
    encode_lines,
    encode_text,
    evaluation_dataset,
    steps_per_epoch,
    training_dataset,
)
from zoo.data.prepared import PreparedData, is_prepared, open_prepared, prepare
from zoo.data.sources import (
    DATASETS,
    Corpus,
    DataFile,
    DatasetSpec,
    cache_dir,
    dataset_lines,
    dataset_path,
    get_dataset,
    labelled_texts,
    list_datasets,
    load_corpus,
    split_stream,
    stream_text,
    translation_pairs,
)

__all__ = [
    "DATASETS",
    "Corpus",
    "DataFile",
    "DatasetSpec",
    "cache_dir",
    "count_eval_tokens",
    "dataset_lines",
    "dataset_path",
    "encode",
    "encode_lines",
    "encode_text",
    "evaluation_dataset",
    "get_dataset",
    "labelled_texts",
    "list_datasets",
    "load_corpus",
    "split_stream",
    "steps_per_epoch",
    "stream_text",
    "training_dataset",
    "translation_pairs",
]

__all__ += ["PreparedData", "is_prepared", "open_prepared", "prepare"]
