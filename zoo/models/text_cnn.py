"""``text_cnn``: the convolutional sentence classifier of Kim (2014).

    e_t = E[w_t] · m_t                       (B, T, d)  embeddings, m_t = [w_t != pad] (padding
                                                        rows are zero vectors)
    c^k_t = ReLU(W^k · [e_t; ...; e_{t+k-1}] + b^k)     (B, T, F)  for every width k in
                                                        kernel_sizes (3, 4, 5), e past the
                                                        row's end = 0 (right zero padding)
    p^k = max_{t : m_t = 1} c^k_t            (B, F)     max-over-time pooling over the windows
                                                        starting at a real token
    z = [p^3; p^4; p^5]                      (B, F·K)   the pooled features (``features``)
    logits = Dropout(z) W + b                (B, C)     float32; softmax in the loss

A window that runs past the end of a row sees zero vectors there, so a row shorter than the
widest kernel still has windows, and the features of a row do not depend on how much padding
follows it (the model pads ``kmax - 1`` zero rows on the right itself).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
from keras import ops

from zoo.models.registry import ModelSpec, register
from zoo.special_tokens import PAD_ID


@dataclass(frozen=True)
class TextCNNConfig:
    """Sizes of the CNN classifier; ``num_classes``, ``class_names`` and ``max_length`` (the
    training ``seq_len``) are set by the classification trainer."""

    num_classes: int = 2
    class_names: tuple = ()
    pretrained: str = ""  # refused: that copies a bert_mlm encoder (text_classifier only)
    max_length: int = 64  # the rows' length (texts are cut to it); the convolutions need none
    embedding_dim: int = 128
    filters: int = 100  # feature maps per kernel width
    kernel_sizes: tuple = (3, 4, 5)
    dropout: float = 0.5  # on the pooled features (Kim 2014)

    def __post_init__(self):
        if self.pretrained:
            raise ValueError(
                f"pretrained={self.pretrained!r}: model.pretrained copies a bert_mlm run's "
                "Transformer encoder (text_classifier); text_cnn has none -- start it from word "
                "vectors with model.embeddings=FILE instead")
        widths = tuple(int(k) for k in self.kernel_sizes)
        object.__setattr__(self, "kernel_sizes", widths)
        if not widths or min(widths) < 1:
            raise ValueError(f"kernel_sizes must be >= 1. Received: {self.kernel_sizes}")
        for field in ("max_length", "embedding_dim", "filters"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1. Received: {getattr(self, field)}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2. Received: {self.num_classes}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{len(self.class_names)} class_names for num_classes={self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: {self.dropout}")


@keras.saving.register_keras_serializable(package="zoo")
class TextCNN(keras.Model):
    """ids (B, T) -> float32 class logits (B, num_classes); see the module docstring.

    Args:
        vocab_size: number of token ids.
        num_classes, max_length, embedding_dim, filters, kernel_sizes, dropout: see
            ``TextCNNConfig``.
    """

    # XLA slows this training step down on a CPU (0.54x measured: the large embedding's gradient)
    xla_on_cpu = False

    def __init__(self, vocab_size: int, num_classes: int = 2, max_length: int = 64,
                 embedding_dim: int = 128, filters: int = 100, kernel_sizes=(3, 4, 5),
                 dropout: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.num_classes = int(num_classes)
        self.max_length = int(max_length)
        self.embedding_dim = int(embedding_dim)
        self.filters = int(filters)
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.dropout = float(dropout)
        policy = self.dtype_policy
        self.embedding = keras.layers.Embedding(self.vocab_size, self.embedding_dim,
                                                name="embedding", dtype=policy)
        self.convs = [keras.layers.Conv1D(self.filters, k, padding="valid", activation="relu",
                                          name=f"conv_{k}", dtype=policy)
                      for k in self.kernel_sizes]
        self.head_dropout = keras.layers.Dropout(self.dropout, dtype=policy)
        self.head = keras.layers.Dense(self.num_classes, name="head", dtype="float32")
        self(ops.zeros((1, 3), "int32"))  # create the weights now

    def token_embedding_layer(self) -> keras.layers.Embedding:
        """The layer holding the (vocab_size, embedding_dim) token embedding matrix."""
        return self.embedding

    def features(self, token_ids):
        """The pooled features ``z (B, filters * len(kernel_sizes))`` (see the module docstring)."""
        token_ids = ops.cast(token_ids, "int32")
        mask = ops.not_equal(token_ids, PAD_ID)  # (B, T)
        e = self.embedding(token_ids) * ops.cast(mask, self.compute_dtype)[..., None]  # (B, T, d)
        widest = max(self.kernel_sizes)
        e = ops.pad(e, [[0, 0], [0, widest - 1], [0, 0]])  # (B, T + kmax - 1, d)
        steps = ops.shape(token_ids)[1]
        pooled = []
        for k, conv in zip(self.kernel_sizes, self.convs, strict=True):
            c = conv(e[:, : steps + k - 1])  # (B, T, F): windows starting at t = 0 .. T-1
            c = ops.where(mask[..., None], c, ops.cast(float("-inf"), c.dtype))
            pooled.append(ops.max(c, axis=1))  # (B, F)
        z = ops.concatenate(pooled, axis=-1)  # (B, F K)
        # a row of padding only (no window): zeros instead of -inf
        return ops.where(ops.any(mask, axis=1)[:, None], z, ops.zeros_like(z))

    def call(self, token_ids, training=None):
        z = self.head_dropout(self.features(token_ids), training=training)
        return ops.cast(self.head(z), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, num_classes=self.num_classes,
                      max_length=self.max_length, embedding_dim=self.embedding_dim,
                      filters=self.filters, kernel_sizes=list(self.kernel_sizes),
                      dropout=self.dropout)
        return config


def _build(vocab_size: int, config: TextCNNConfig) -> TextCNN:
    values = asdict(config)
    values.pop("class_names")
    values.pop("pretrained")
    return TextCNN(vocab_size=vocab_size, **values)


register(
    ModelSpec(
        name="text_cnn",
        description="Kim (2014) CNN text classifier: widths 3/4/5 over embeddings, "
                    "max-over-time pooling",
        config_class=TextCNNConfig,
        presets={
            "tiny": dict(embedding_dim=32, filters=16, max_length=64),
            "small": dict(embedding_dim=128, filters=100, max_length=64),
            # Kim (2014): 300-d vectors (word2vec), 100 maps per width
            "base": dict(embedding_dim=300, filters=100, max_length=128),
        },
        builder=_build,
        task="classification",
    )
)
