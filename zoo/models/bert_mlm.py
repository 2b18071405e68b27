"""``bert_mlm``: a BERT-style bidirectional Transformer encoder with a masked-LM head.

    h_0 = LN(E[w] + P[pos] + S[seg])                     token + position + segment embedding
    h_l = TransformerBlock_l(h_{l-1}, padding mask)      l = 1..N, bidirectional (no causal mask)
    h   = LN_f(h_N)                                      pre-norm stacks only (norm_first=True)
    logits = LN(GELU(h W_t + b_t)) · E^T + b_out         MLM head, output tied to E

Segment ids follow from the ids (``segment_ids``: 0 up to the first ``[SEP]``,
1 after it); padding (id 0) is masked out of every attention. ``encode(ids)`` gives the final
hidden states ``(B, T, d)``: what ``embed`` pools and what ``text_classifier`` fine-tunes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
from keras import ops

from zoo.layers import TokenAndPositionEmbedding, TransformerBlock, gelu_erf
from zoo.models.registry import ModelSpec, register
from zoo.special_tokens import PAD_ID, SEP_ID


@dataclass(frozen=True)
class BertMLMConfig:
    """Sizes of a BERT-style encoder."""

    num_layers: int = 4
    num_heads: int = 4
    d_model: int = 128
    ffn_dim: int = 512
    max_length: int = 128  # longest sequence ([CLS] and [SEP] included)
    dropout: float = 0.1
    activation: str = "gelu"
    norm_first: bool = True  # pre-norm + final LayerNorm; False = BERT's original post-norm
    layer_norm_epsilon: float = 1e-5
    type_vocab_size: int = 2

    def __post_init__(self):
        for field in ("num_layers", "num_heads", "d_model", "ffn_dim", "max_length",
                      "type_vocab_size"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1. Received: {getattr(self, field)}")
        if self.d_model % self.num_heads:
            raise ValueError(
                "d_model must be divisible by num_heads. "
                f"Received: d_model={self.d_model}, num_heads={self.num_heads}"
            )
        if self.max_length < 3:
            raise ValueError(f"max_length must be >= 3 ([CLS] x [SEP]). Received: {self.max_length}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: {self.dropout}")


ENCODER_FIELDS = ("num_layers", "num_heads", "d_model", "ffn_dim", "max_length", "dropout",
                  "activation", "norm_first", "layer_norm_epsilon", "type_vocab_size")


@keras.saving.register_keras_serializable(package="zoo")
class BertEncoder(keras.layers.Layer):
    """Token + learned position + segment embedding, LayerNorm, N bidirectional blocks.

    ``call(token_ids)`` (B, T) int -> hidden states (B, T, d_model). Padding (id 0) is never
    attended to. Args: see ``BertMLMConfig`` (plus ``vocab_size``).
    """

    def __init__(self, vocab_size: int, num_layers: int = 4, num_heads: int = 4,
                 d_model: int = 128, ffn_dim: int = 512, max_length: int = 128,
                 dropout: float = 0.1, activation: str = "gelu", norm_first: bool = True,
                 layer_norm_epsilon: float = 1e-5, type_vocab_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.d_model = d_model
        self.ffn_dim = ffn_dim
        self.max_length = max_length
        self.dropout = dropout
        self.activation = activation
        self.norm_first = bool(norm_first)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.type_vocab_size = type_vocab_size
        policy = self.dtype_policy
        self.embedding = TokenAndPositionEmbedding(
            vocab_size=self.vocab_size, max_length=max_length, embedding_dim=d_model,
            position="learned", name="embedding", dtype=policy,
        )
        self.segment_embedding = keras.layers.Embedding(
            type_vocab_size, d_model, name="segment_embedding", dtype=policy
        )
        self.embedding_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="embedding_norm", dtype=policy
        )
        self.embedding_dropout = keras.layers.Dropout(dropout, dtype=policy)
        self.blocks = [
            TransformerBlock(
                d_model=d_model, num_heads=num_heads, ffn_dim=ffn_dim, rate=dropout,
                activation=activation, norm_first=norm_first, causal=False,
                layer_norm_epsilon=layer_norm_epsilon, name=f"block_{i}", dtype=policy,
            )
            for i in range(num_layers)
        ]
        self.final_norm = (
            keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="final_norm",
                                            dtype=policy)
            if self.norm_first else None
        )

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.embedding.build(shape)
        self.segment_embedding.build(shape)
        hidden = shape + (self.d_model,)
        self.embedding_norm.build(hidden)
        for block in self.blocks:
            block.build(hidden)
        if self.final_norm is not None:
            self.final_norm.build(hidden)

    def token_embedding_layer(self) -> keras.layers.Embedding:
        """The ``(vocab_size, d_model)`` token embedding (``zoo.pretrained_vectors``)."""
        return self.embedding.token_embedding

    def call(self, token_ids, training=None):
        token_ids = ops.cast(token_ids, "int32")
        padding = ops.not_equal(token_ids, PAD_ID)  # (B, T) True = real key
        h = self.embedding(token_ids) + self.segment_embedding(segment_ids(token_ids))
        h = self.embedding_dropout(self.embedding_norm(h), training=training)  # (B, T, d)
        for block in self.blocks:
            h = block(h, padding_mask=padding, training=training)
        if self.final_norm is not None:
            h = self.final_norm(h)
        return h

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.d_model,)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, num_layers=self.num_layers,
                      num_heads=self.num_heads, d_model=self.d_model, ffn_dim=self.ffn_dim,
                      max_length=self.max_length, dropout=self.dropout,
                      activation=self.activation, norm_first=self.norm_first,
                      layer_norm_epsilon=self.layer_norm_epsilon,
                      type_vocab_size=self.type_vocab_size)
        return config


def segment_ids(token_ids):
    """BERT segment ids from the ids: 0 up to and including the first ``[SEP]``, then 1.

        seg_t = min(#[SEP] among ids_<t, 1)
    """
    sep = ops.cast(ops.equal(token_ids, SEP_ID), "int32")  # (B, T)
    before = ops.cumsum(sep, axis=1) - sep  # exclusive cumulative sum: [SEP]s strictly before t
    return ops.minimum(before, 1)


def masked_mean(hidden, token_ids):
    """Mean of ``hidden`` (B, T, d) over the non-padding positions of ``token_ids`` -> (B, d)."""
    mask = ops.cast(ops.not_equal(token_ids, PAD_ID), hidden.dtype)[:, :, None]  # (B, T, 1)
    return ops.sum(hidden * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)


@keras.saving.register_keras_serializable(package="zoo")
class BertMLM(keras.Model):
    """``BertEncoder`` + MLM head: ids (B, T) -> float32 logits (B, T, vocab_size).

    Head: ``LN(GELU(h W + b)) · E^T + b_out`` with ``E`` the encoder's token embedding.
    The last id (``vocab_size - 1``) is ``[MASK]`` (see ``zoo.data.masking``).
    """

    # XLA speeds this model's training step up on a CPU (zoo.fitting picks jit_compile by it)
    xla_on_cpu = True

    def __init__(self, vocab_size: int, **config):
        kwargs = {k: v for k, v in config.items() if k not in ENCODER_FIELDS}
        encoder_config = {k: v for k, v in config.items() if k in ENCODER_FIELDS}
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.encoder_config = dict(BertMLMConfig(**encoder_config).__dict__)
        self.max_length = self.encoder_config["max_length"]
        d_model = self.encoder_config["d_model"]
        eps = self.encoder_config["layer_norm_epsilon"]
        self.encoder = BertEncoder(self.vocab_size, name="encoder", dtype=self.dtype_policy,
                                   **self.encoder_config)
        self.head_dense = keras.layers.Dense(d_model, activation=gelu_erf, name="head_dense",
                                             dtype=self.dtype_policy)
        self.head_norm = keras.layers.LayerNormalization(epsilon=eps, name="head_norm",
                                                         dtype=self.dtype_policy)
        self.output_bias = self.add_weight(name="output_bias", shape=(self.vocab_size,),
                                           initializer="zeros")
        self(ops.zeros((1, 3), "int32"))  # create the weights now

    def token_embedding_layer(self) -> keras.layers.Embedding:
        """The encoder's ``(vocab_size, d_model)`` token embedding, also the MLM head's output
        table (tied; ``zoo.pretrained_vectors``)."""
        return self.encoder.token_embedding_layer()

    def encode(self, token_ids, training=None):
        """Final hidden states (B, T, d_model)."""
        return self.encoder(token_ids, training=training)

    def project(self, hidden):
        """MLM head: hidden (..., d) -> float32 logits (..., vocab_size)."""
        t = self.head_norm(self.head_dense(hidden))
        logits = self.encoder.embedding.compute_logits(t)  # float32, tied
        return logits + ops.cast(self.output_bias, "float32")

    def call(self, token_ids, training=None):
        return self.project(self.encode(token_ids, training=training))

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, **self.encoder_config)
        return config


def _build(vocab_size: int, config: BertMLMConfig) -> BertMLM:
    return BertMLM(vocab_size=vocab_size, **asdict(config))


register(
    ModelSpec(
        name="bert_mlm",
        description="BERT-style bidirectional Transformer encoder, masked-LM head (fill-mask, embed)",
        config_class=BertMLMConfig,
        presets={
            "tiny": dict(num_layers=2, num_heads=2, d_model=32, ffn_dim=64, max_length=64),
            "small": dict(num_layers=4, num_heads=4, d_model=128, ffn_dim=512, max_length=128),
            # BERT-base sizes (110M parameters with a 30k vocabulary)
            "base": dict(num_layers=12, num_heads=12, d_model=768, ffn_dim=3072, max_length=512),
        },
        builder=_build,
        task="masked_lm",
    )
)
