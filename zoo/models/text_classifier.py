"""``text_classifier``: a classification head over a zoo encoder.

    h = Encoder(ids)                        (B, T, d)   BertEncoder (bidirectional Transformer)
                                                        or an LSTM stack (encoder="lstm")
    v = mean_{t: ids_t != pad} h_t          (B, d)      pooling="mean" (default)
      | h_0                                             pooling="cls" (the [CLS] position)
    logits = Dropout(v) W + b               (B, C)

The Transformer encoder has exactly the layout of ``bert_mlm``'s, so a ``bert_mlm`` run's encoder
weights can be copied in (``model.pretrained=RUN_DIR``; ``zoo.tasks.classification``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
from keras import ops

from zoo.layers import RNNStack
from zoo.models.bert_mlm import ENCODER_FIELDS, BertEncoder, masked_mean
from zoo.models.registry import ModelSpec, register


@dataclass(frozen=True)
class TextClassifierConfig:
    """Sizes of the classifier; ``class_names`` and ``pretrained`` are set by the trainer."""

    encoder: str = "transformer"  # or "lstm"
    num_classes: int = 2
    class_names: tuple = ()
    pretrained: str = ""  # a bert_mlm run directory whose encoder (and tokenizer) to start from
    pooling: str = "mean"  # or "cls" (transformer only)
    classifier_dropout: float = 0.1
    num_layers: int = 4
    num_heads: int = 4
    d_model: int = 128
    ffn_dim: int = 512
    max_length: int = 128
    dropout: float = 0.1
    activation: str = "gelu"
    norm_first: bool = True
    layer_norm_epsilon: float = 1e-5
    type_vocab_size: int = 2

    def __post_init__(self):
        if self.encoder not in ("transformer", "lstm"):
            raise ValueError(f"encoder must be transformer or lstm. Received: {self.encoder!r}")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be mean or cls. Received: {self.pooling!r}")
        if self.encoder == "lstm" and self.pooling == "cls":
            raise ValueError("pooling='cls' needs the transformer encoder (an LSTM is one-way)")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2. Received: {self.num_classes}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{len(self.class_names)} class_names for num_classes={self.num_classes}"
            )
        for rate in ("dropout", "classifier_dropout"):
            if not 0.0 <= getattr(self, rate) < 1.0:
                raise ValueError(f"{rate} must be in [0, 1). Received: {getattr(self, rate)}")
        if self.encoder == "transformer" and self.d_model % self.num_heads:
            raise ValueError(
                f"d_model must be divisible by num_heads. Received: {self.d_model}, {self.num_heads}"
            )


@keras.saving.register_keras_serializable(package="zoo")
class LSTMEncoder(keras.layers.Layer):
    """Embedding then ``num_layers`` stacked LSTMs: ids (B, T) -> hidden (B, T, units).

    Run left to right over right-padded rows, so a real position never sees the padding after it.
    """

    def __init__(self, vocab_size: int, units: int = 128, num_layers: int = 1,
                 dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.units = units
        self.num_layers = num_layers
        self.dropout = dropout
        self.embedding = keras.layers.Embedding(self.vocab_size, units, name="embedding",
                                                dtype=self.dtype_policy)
        self.rnn = RNNStack("lstm", units, num_layers, dropout, name="rnn",
                            dtype=self.dtype_policy)

    def build(self, input_shape):
        self.embedding.build(tuple(input_shape))
        self.rnn.build(tuple(input_shape) + (self.units,))

    def token_embedding_layer(self) -> keras.layers.Embedding:
        """The ``(vocab_size, units)`` token embedding (``zoo.pretrained_vectors``)."""
        return self.embedding

    def call(self, token_ids, training=None):
        return self.rnn(self.embedding(ops.cast(token_ids, "int32")), training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, units=self.units, num_layers=self.num_layers,
                      dropout=self.dropout)
        return config


@keras.saving.register_keras_serializable(package="zoo")
class TextClassifier(keras.Model):
    """ids (B, T) -> float32 class logits (B, num_classes); see the module docstring."""

    @property
    def xla_on_cpu(self) -> bool:
        """XLA speeds the Transformer encoder's training step up on a CPU, not the LSTM's."""
        return self.encoder_kind == "transformer"

    def __init__(self, vocab_size: int, encoder: str = "transformer", num_classes: int = 2,
                 pooling: str = "mean", classifier_dropout: float = 0.1, **config):
        kwargs = {k: v for k, v in config.items() if k not in ENCODER_FIELDS}
        kwargs.pop("class_names", None)
        kwargs.pop("pretrained", None)
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.encoder_kind = encoder
        self.num_classes = int(num_classes)
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout
        self.encoder_config = {k: v for k, v in config.items() if k in ENCODER_FIELDS}
        self.max_length = self.encoder_config.get("max_length", 128)
        if encoder == "lstm":
            self.encoder = LSTMEncoder(
                self.vocab_size, units=self.encoder_config.get("d_model", 128),
                num_layers=self.encoder_config.get("num_layers", 1),
                dropout=self.encoder_config.get("dropout", 0.0), name="encoder",
                dtype=self.dtype_policy,
            )
        else:
            self.encoder = BertEncoder(self.vocab_size, name="encoder", dtype=self.dtype_policy,
                                       **self.encoder_config)
        self.head_dropout = keras.layers.Dropout(classifier_dropout, dtype=self.dtype_policy)
        self.head = keras.layers.Dense(self.num_classes, name="head", dtype="float32")
        self(ops.zeros((1, 3), "int32"))  # create the weights now

    def token_embedding_layer(self) -> keras.layers.Embedding:
        """The encoder's ``(vocab_size, d_model)`` token embedding, Transformer or LSTM
        (``zoo.pretrained_vectors``)."""
        return self.encoder.token_embedding_layer()

    def pool(self, token_ids, training=None):
        """The pooled sentence vector (B, d)."""
        hidden = self.encoder(token_ids, training=training)
        if self.pooling == "cls":
            return hidden[:, 0]
        return masked_mean(hidden, ops.cast(token_ids, "int32"))

    def call(self, token_ids, training=None):
        pooled = self.head_dropout(self.pool(token_ids, training=training), training=training)
        return ops.cast(self.head(pooled), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, encoder=self.encoder_kind,
                      num_classes=self.num_classes, pooling=self.pooling,
                      classifier_dropout=self.classifier_dropout, **self.encoder_config)
        return config


def _build(vocab_size: int, config: TextClassifierConfig) -> TextClassifier:
    values = asdict(config)
    values.pop("class_names")
    values.pop("pretrained")
    return TextClassifier(vocab_size=vocab_size, **values)


register(
    ModelSpec(
        name="text_classifier",
        description="text classifier: pooled Transformer (bert_mlm) or LSTM encoder + dense head",
        config_class=TextClassifierConfig,
        presets={
            "tiny": dict(num_layers=2, num_heads=2, d_model=32, ffn_dim=64, max_length=64),
            "small": dict(num_layers=4, num_heads=4, d_model=128, ffn_dim=512, max_length=128),
            "base": dict(num_layers=12, num_heads=12, d_model=768, ffn_dim=3072, max_length=512),
        },
        builder=_build,
        task="classification",
    )
)
