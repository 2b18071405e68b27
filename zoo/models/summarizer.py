"""``summarizer``: the encoder-decoder Transformer of ``transformer_seq2seq`` set up to summarise.

The same network (``zoo.models.transformer_seq2seq.TransformerSeq2Seq``) with one shared
vocabulary for the document and the summary (one tokenizer; ``source_vocab_size`` is always the
model's ``vocab_size``), a long source context (documents are cut to ``max_source_length - 1``
tokens, then <eos>) and a short target one (``max_target_length``: <bos> + the summary, the
decoding bound). ``init_encoder`` names a finished ``bert_mlm`` run whose encoder initialises
this one (``zoo.tasks.summarization``: ``--set model.init_encoder=RUN``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from zoo.models.registry import ModelSpec, register
from zoo.models.transformer_seq2seq import TransformerSeq2Seq, TransformerSeq2SeqConfig

SUMMARIZER = "summarizer"


@dataclass(frozen=True)
class SummarizerConfig(TransformerSeq2SeqConfig):
    """``TransformerSeq2SeqConfig`` with a long source, a short target and ``init_encoder`` (a
    ``bert_mlm`` run directory, "" for none); ``source_vocab_size`` is ignored (shared)."""

    max_source_length: int = 256
    max_target_length: int = 48
    init_encoder: str = ""


def network_config(config: SummarizerConfig) -> dict:
    """The ``TransformerSeq2Seq`` arguments of ``config`` (shared vocabulary, no run path)."""
    sizes = asdict(config)
    sizes.pop("init_encoder")
    sizes["source_vocab_size"] = 0
    return sizes


def _build(vocab_size: int, config: SummarizerConfig) -> TransformerSeq2Seq:
    return TransformerSeq2Seq(vocab_size=vocab_size, **network_config(config))


register(
    ModelSpec(
        name=SUMMARIZER,
        description="Encoder-decoder Transformer summarizer, one shared vocabulary (SciTLDR)",
        config_class=SummarizerConfig,
        presets={
            "tiny": dict(num_encoder_layers=2, num_decoder_layers=2, num_heads=2, d_model=32,
                         ffn_dim=64, max_source_length=64, max_target_length=32, dropout=0.0),
            # trains on SciTLDR on 2 CPU cores in tens of minutes (bench/summarization.py)
            "small": dict(num_encoder_layers=3, num_decoder_layers=3, num_heads=4, d_model=128,
                          ffn_dim=512, max_source_length=256, max_target_length=48, dropout=0.1),
            "base": dict(num_encoder_layers=6, num_decoder_layers=6, num_heads=8, d_model=512,
                         ffn_dim=2048, max_source_length=512, max_target_length=64, dropout=0.1),
        },
        builder=_build,
        task="summarization",
    )
)
