"""``transformer_lm``: a GPT-style decoder-only Transformer language model.

    h_0 = E[w] + P[pos]                                   token + position embedding
    h_l = TransformerBlock_l(h_{l-1})  (causal)           l = 1..N
    logits = LN(h_N) · E^T      (tied)   or   LN(h_N) · W_out + b

Each block's self-attention is softmax(Q K^T / sqrt(d_k) + causal mask) V. During decoding every
block keeps its keys and values in a fixed-size cache (B, 2, max_length, heads, head_dim), so a
new token attends to the cached prefix instead of recomputing it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
from keras import ops

from zoo.layers import TokenAndPositionEmbedding, TransformerBlock
from zoo.models.base import CausalLM
from zoo.models.registry import ModelSpec, register


@dataclass(frozen=True)
class TransformerLMConfig:
    """Sizes of a GPT-style decoder."""

    num_layers: int = 4
    num_heads: int = 4
    d_model: int = 128
    ffn_dim: int = 512  # 4 * d_model, as in GPT
    max_length: int = 64  # context window (block size)
    dropout: float = 0.0
    activation: str = "gelu"
    norm_first: bool = True  # pre-norm, as GPT-2 and nanoGPT; False = the original post-norm
    position: str = "learned"  # or "sinusoidal"
    tie_embeddings: bool = True
    layer_norm_epsilon: float = 1e-5
    fused_qkv: bool = False  # one Q/K/V matmul of width 3 * d_model (see MultiHeadAttention)

    def __post_init__(self):
        for field in ("num_layers", "num_heads", "d_model", "ffn_dim", "max_length"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1. Received: {getattr(self, field)}")
        if self.d_model % self.num_heads:
            raise ValueError(
                "d_model must be divisible by num_heads. "
                f"Received: d_model={self.d_model}, num_heads={self.num_heads}"
            )
        if self.position not in ("learned", "sinusoidal"):
            raise ValueError(f"position must be learned or sinusoidal. Received: {self.position!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: {self.dropout}")


@keras.saving.register_keras_serializable(package="zoo")
class TransformerLM(CausalLM):
    """Token + position embedding, N causal ``TransformerBlock``s, (tied) output projection.

    Args:
        vocab_size: number of token ids.
        num_layers, num_heads, d_model, ffn_dim, max_length, dropout, activation, norm_first,
        position, tie_embeddings, layer_norm_epsilon, fused_qkv: see ``TransformerLMConfig``.
    """

    # XLA speeds this model's training step up on a CPU (zoo.fitting picks jit_compile by it)
    xla_on_cpu = True

    def __init__(
        self,
        vocab_size: int,
        num_layers: int = 4,
        num_heads: int = 4,
        d_model: int = 128,
        ffn_dim: int = 512,
        max_length: int = 64,
        dropout: float = 0.0,
        activation: str = "gelu",
        norm_first: bool = True,
        position: str = "learned",
        tie_embeddings: bool = True,
        layer_norm_epsilon: float = 1e-5,
        fused_qkv: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.d_model = d_model
        self.ffn_dim = ffn_dim
        self.max_length = max_length
        self.dropout = dropout
        self.activation = activation
        self.norm_first = norm_first
        self.position = position
        self.tie_embeddings = tie_embeddings
        self.layer_norm_epsilon = layer_norm_epsilon
        self.fused_qkv = bool(fused_qkv)
        self.head_dim = d_model // num_heads

        self.embedding = TokenAndPositionEmbedding(
            vocab_size=vocab_size,
            max_length=max_length,
            embedding_dim=d_model,
            position=position,
            name="embedding",
            dtype=self.dtype_policy,
        )
        self.embedding_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.blocks = [
            TransformerBlock(
                d_model=d_model,
                num_heads=num_heads,
                ffn_dim=ffn_dim,
                rate=dropout,
                activation=activation,
                norm_first=norm_first,
                causal=True,
                layer_norm_epsilon=layer_norm_epsilon,
                fused_qkv=self.fused_qkv,
                name=f"block_{i}",
                dtype=self.dtype_policy,
            )
            for i in range(num_layers)
        ]
        # Pre-norm stacks end with a final LayerNorm (GPT-2's ln_f); post-norm blocks already end
        # normalised.
        self.final_norm = (
            keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="final_norm",
                                            dtype=self.dtype_policy)
            if norm_first
            else None
        )
        self.lm_head = (
            None
            if tie_embeddings
            else keras.layers.Dense(vocab_size, dtype="float32", name="lm_head")
        )
        self(ops.zeros((1, min(2, max_length)), "int32"))  # create the weights now

    def token_embedding_layer(self) -> keras.layers.Embedding:
        """The ``(vocab_size, d_model)`` token embedding, also the output projection when the
        embeddings are tied (``zoo.pretrained_vectors``)."""
        return self.embedding.token_embedding

    def _project(self, h):
        """(B, T, d) hidden states -> (B, T, V) float32 logits."""
        if self.final_norm is not None:
            h = self.final_norm(h)
        if self.lm_head is not None:
            return self.lm_head(h)
        table = ops.cast(self.embedding.token_embedding.embeddings, h.dtype)  # (V, d)
        return ops.cast(ops.einsum("btd,vd->btv", h, table), "float32")

    def call(self, token_ids, training=None):
        h = self.embedding_dropout(self.embedding(token_ids), training=training)  # (B, T, d)
        for block in self.blocks:
            h = block(h, training=training)
        return self._project(h)

    def init_cache(self, batch_size, max_length=None):
        length = self.max_length if max_length is None else max_length
        shape = [batch_size, 2, length, self.num_heads, self.head_dim]
        return tuple(ops.zeros(shape, self.compute_dtype) for _ in self.blocks)

    def call_with_cache(self, token_ids, cache, index):
        index = ops.cast(index, "int32")
        h = self.embedding(token_ids, start_index=index)
        new_cache = []
        for block, layer_cache in zip(self.blocks, cache, strict=True):
            h, layer_cache = block(h, cache=layer_cache, cache_update_index=index)
            new_cache.append(layer_cache)
        return self._project(h), tuple(new_cache)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            d_model=self.d_model,
            ffn_dim=self.ffn_dim,
            max_length=self.max_length,
            dropout=self.dropout,
            activation=self.activation,
            norm_first=self.norm_first,
            position=self.position,
            tie_embeddings=self.tie_embeddings,
            layer_norm_epsilon=self.layer_norm_epsilon,
            fused_qkv=self.fused_qkv,
        )
        return config


def _build(vocab_size: int, config: TransformerLMConfig) -> TransformerLM:
    return TransformerLM(vocab_size=vocab_size, **asdict(config))


register(
    ModelSpec(
        name="transformer_lm",
        description="GPT-style decoder-only Transformer (causal self-attention)",
        config_class=TransformerLMConfig,
        presets={
            "tiny": dict(num_layers=2, num_heads=2, d_model=32, ffn_dim=64, max_length=64),
            # nanoGPT's CPU configuration for tinyshakespeare-char
            "small": dict(num_layers=4, num_heads=4, d_model=128, ffn_dim=512, max_length=64),
            # nanoGPT's shakespeare_char GPU configuration (10.7M parameters)
            "base": dict(
                num_layers=6, num_heads=6, d_model=384, ffn_dim=1536, max_length=256, dropout=0.2
            ),
        },
        builder=_build,
    )
)
