"""The zoo's named models as plain data: name, one-line description, task and preset names.

Standard library only (and cheap ones: no ``dataclasses``), so that ``zoo models`` (and shell completion, ``--help`` texts, ...) can
list the zoo without importing Keras, which imports TensorFlow and takes seconds. The models
themselves live in ``zoo.models``: each model module registers a ``ModelSpec`` with its config
class, preset sizes and builder, and ``zoo.models.registry.register`` refuses a spec that this
catalogue does not list with the same description, task and preset names -- so the two cannot
drift apart unnoticed (``tests/test_cli_startup.py`` checks the whole of both).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["MODELS", "CatalogEntry", "catalog_entry", "model_names"]


class CatalogEntry(NamedTuple):
    """What ``zoo models`` says about a model, and the names of its presets (in order)."""

    name: str
    description: str
    task: str
    presets: tuple[str, ...]


_BASE = ("tiny", "small", "base")

MODELS: dict[str, CatalogEntry] = {
    entry.name: entry
    for entry in (
        CatalogEntry(
            "bert_mlm",
            "BERT-style bidirectional Transformer encoder, masked-LM head (fill-mask, embed)",
            "masked_lm", _BASE,
        ),
        CatalogEntry(
            "bert_qa",
            "extractive question answering: bert_mlm encoder + start/end span head",
            "question_answering", _BASE,
        ),
        CatalogEntry(
            "gpt2",
            "GPT-2 (pre-norm, tanh GELU, tied embeddings); zoo import gpt2 reads checkpoints",
            "causal_lm", ("tiny", "small"),
        ),
        CatalogEntry(
            "gcnn_lm",
            "Dauphin et al. (2017) gated convolutional language model (causal GLU blocks)",
            "causal_lm", _BASE,
        ),
        CatalogEntry(
            "glove",
            "GloVe word vectors: weighted least squares on log co-occurrence counts",
            "word_vectors", _BASE,
        ),
        CatalogEntry("gru_lm", "GRU stack language model", "causal_lm", _BASE),
        CatalogEntry("lstm_lm", "LSTM stack language model", "causal_lm", _BASE),
        CatalogEntry(
            "mlp_lm", "Bengio et al. (2003) feed-forward n-gram language model", "causal_lm", _BASE
        ),
        CatalogEntry("rnn_lm", "SimpleRNN (Elman) stack language model", "causal_lm", _BASE),
        CatalogEntry(
            "summarizer",
            "Encoder-decoder Transformer summarizer, one shared vocabulary (SciTLDR)",
            "summarization", _BASE,
        ),
        CatalogEntry(
            "text_classifier",
            "text classifier: pooled Transformer (bert_mlm) or LSTM encoder + dense head",
            "classification", _BASE,
        ),
        CatalogEntry(
            "text_cnn",
            "Kim (2014) CNN text classifier: widths 3/4/5 over embeddings, max-over-time pooling",
            "classification", _BASE,
        ),
        CatalogEntry(
            "transformer_lm",
            "GPT-style decoder-only Transformer (causal self-attention)",
            "causal_lm", _BASE,
        ),
        CatalogEntry(
            "transformer_seq2seq",
            "Encoder-decoder Transformer for translation (Vaswani et al., 2017)",
            "seq2seq", _BASE,
        ),
        CatalogEntry(
            "word2vec",
            "word2vec word vectors: skip-gram (or CBOW) with negative sampling",
            "word_vectors", _BASE,
        ),
    )
}


def model_names() -> list[str]:
    """Every catalogued model name, sorted (the order ``zoo models`` prints them in)."""
    return sorted(MODELS)


def catalog_entry(name: str) -> CatalogEntry | None:
    """The catalogue's entry for ``name``, or ``None`` when the catalogue does not list it."""
    return MODELS.get(name)
