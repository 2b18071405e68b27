"""``bert_qa``: extractive question answering, a span head over the ``bert_mlm`` encoder.

    ids = [CLS] question [SEP] context window [SEP] <pad>...        (B, T)
    h = BertEncoder(ids)                                           (B, T, d)   segment 0 / 1
    [s, e] = h W + b                                               (B, T, 2)   start, end logits
    s_t = e_t = -1e9 where ids_t is padding

Trained on the mean cross-entropy of the start and the end position (``SpanLoss``); a window
that does not hold the answer points both at ``[CLS]`` (position 0), as BERT does on SQuAD.
The encoder has exactly ``bert_mlm``'s layout, so a ``bert_mlm`` run's encoder weights can be
copied in (``model.pretrained=RUN_DIR``; ``zoo.tasks.question_answering``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
from keras import ops

from zoo.models.bert_mlm import ENCODER_FIELDS, BertEncoder
from zoo.models.registry import ModelSpec, register
from zoo.special_tokens import PAD_ID

_NEG = -1e9  # logit of a padding position


@dataclass(frozen=True)
class BertQAConfig:
    """Sizes of the encoder and the windowing of long contexts (tokens)."""

    pretrained: str = ""  # a bert_mlm run directory whose encoder (and tokenizer) to start from
    doc_stride: int = 64  # step between the starts of two windows over one context
    max_question_tokens: int = 32  # longer questions are cut (BERT's max_query_length)
    max_answer_tokens: int = 30  # the longest span the decoder picks
    max_context_tokens: int = 4096  # longer contexts (or questions) are an error
    num_layers: int = 4
    num_heads: int = 4
    d_model: int = 128
    ffn_dim: int = 512
    max_length: int = 192  # the window: [CLS] question [SEP] context piece [SEP]
    dropout: float = 0.1
    activation: str = "gelu"
    norm_first: bool = True
    layer_norm_epsilon: float = 1e-5
    type_vocab_size: int = 2

    def __post_init__(self):
        for field in ("doc_stride", "max_question_tokens", "max_answer_tokens",
                      "max_context_tokens", "num_layers", "num_heads", "d_model", "ffn_dim"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1. Received: {getattr(self, field)}")
        room = self.max_length - self.max_question_tokens - 3
        if room < 1:
            raise ValueError(
                "max_length must leave room for context after [CLS] question [SEP] ... [SEP]. "
                f"Received: max_length={self.max_length}, "
                f"max_question_tokens={self.max_question_tokens}")
        if self.doc_stride > room:
            raise ValueError(
                f"doc_stride must be <= the shortest window ({room} tokens), else context is "
                f"skipped. Received: doc_stride={self.doc_stride}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model must be divisible by num_heads. Received: "
                             f"d_model={self.d_model}, num_heads={self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: {self.dropout}")


QA_FIELDS = ("pretrained", "doc_stride", "max_question_tokens", "max_answer_tokens",
             "max_context_tokens")


@keras.saving.register_keras_serializable(package="zoo")
class SpanLoss(keras.losses.Loss):
    """Mean of the start and end cross-entropies over the positions of a window.

        L = -(1/2)(log softmax(s)_{y_start} + log softmax(e)_{y_end})

    ``y_true`` int (B, 2) ``[start, end]``; ``y_pred`` float logits (B, T, 2).
    """

    def call(self, y_true, y_pred):
        logits = ops.transpose(ops.cast(y_pred, "float32"), (0, 2, 1))  # (B, 2, T)
        ce = keras.losses.sparse_categorical_crossentropy(
            ops.cast(y_true, "int32"), logits, from_logits=True)  # (B, 2)
        return ops.mean(ce, axis=-1)


@keras.saving.register_keras_serializable(package="zoo")
class BertQA(keras.Model):
    """ids (B, T) -> float32 span logits (B, T, 2): ``[..., 0]`` start, ``[..., 1]`` end."""

    xla_on_cpu = True  # as bert_mlm: XLA speeds the training step up on a CPU

    def __init__(self, vocab_size: int, **config):
        kwargs = {k: v for k, v in config.items()
                  if k not in ENCODER_FIELDS and k not in QA_FIELDS}
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.encoder_config = {k: v for k, v in config.items() if k in ENCODER_FIELDS}
        self.qa_config = {k: v for k, v in config.items() if k in QA_FIELDS}
        self.max_length = self.encoder_config.get("max_length", 192)
        self.encoder = BertEncoder(self.vocab_size, name="encoder", dtype=self.dtype_policy,
                                   **self.encoder_config)
        self.span_head = keras.layers.Dense(2, name="span_head", dtype="float32")
        self(ops.zeros((1, 3), "int32"))  # create the weights now

    def token_embedding_layer(self) -> keras.layers.Embedding:
        """The encoder's ``(vocab_size, d_model)`` token embedding (``zoo.pretrained_vectors``)."""
        return self.encoder.token_embedding_layer()

    def call(self, token_ids, training=None):
        token_ids = ops.cast(token_ids, "int32")
        hidden = self.encoder(token_ids, training=training)  # (B, T, d)
        logits = ops.cast(self.span_head(hidden), "float32")  # (B, T, 2)
        padding = ops.equal(token_ids, PAD_ID)[:, :, None]
        return ops.where(padding, _NEG, logits)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, **self.encoder_config, **self.qa_config)
        return config


def _build(vocab_size: int, config: BertQAConfig) -> BertQA:
    return BertQA(vocab_size=vocab_size, **asdict(config))


register(
    ModelSpec(
        name="bert_qa",
        description="extractive question answering: bert_mlm encoder + start/end span head",
        config_class=BertQAConfig,
        presets={
            "tiny": dict(num_layers=2, num_heads=2, d_model=32, ffn_dim=64, max_length=64,
                         doc_stride=16, max_question_tokens=16),
            "small": dict(num_layers=4, num_heads=4, d_model=128, ffn_dim=512, max_length=192),
            "base": dict(num_layers=12, num_heads=12, d_model=768, ffn_dim=3072,
                         max_length=384, doc_stride=128, max_question_tokens=64),
        },
        builder=_build,
        task="question_answering",
    )
)
