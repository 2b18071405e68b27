"""``gpt2``: GPT-2 (Radford et al., 2019), built from the zoo's Transformer layers.

    h_0 = E[w] + P[pos]                                     learned token + position embeddings
    a_l = h_{l-1} + Attn(LN_1(h_{l-1}))                     pre-norm, causal self-attention
    h_l = a_l + W_2 · GELU_tanh(W_1 · LN_2(a_l) + b_1) + b_2
    logits = LN_f(h_N) · E^T                                tied output embedding

    GELU_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))     ("gelu_new")

This is ``transformer_lm`` with GPT-2's choices fixed (pre-norm, tanh GELU, learned positions,
tied embeddings, one fused Q/K/V projection, LayerNorm epsilon 1e-5) and GPT-2's sizes as
presets. GPT-2's attention projection ``c_attn`` is a Conv1D of weight ``(d, 3d)`` computing
``x W + b`` with queries | keys | values along the columns, each split into heads of
``d / num_heads`` consecutive columns: exactly the layout of the zoo's fused ``qkv_dense``
kernel ``[W^Q | W^K | W^V]``, so it is copied as it is. ``zoo.gpt2_import`` reads a Hugging
Face checkpoint into this model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras

from zoo.models.registry import ModelSpec, register
from zoo.models.transformer_lm import TransformerLM

GPT2_VOCAB_SIZE = 50257  # 50,000 merges + 256 bytes + <|endoftext|>
_FIXED = dict(activation="gelu_tanh", norm_first=True, position="learned", tie_embeddings=True,
              fused_qkv=True)


@dataclass(frozen=True)
class GPT2Config:
    """Sizes of a GPT-2 (defaults: GPT-2 small, 124M parameters with its 50,257 tokens)."""

    num_layers: int = 12  # n_layer
    num_heads: int = 12  # n_head
    d_model: int = 768  # n_embd
    ffn_dim: int = 3072  # n_inner: 4 * n_embd
    max_length: int = 1024  # n_positions: the context
    dropout: float = 0.1  # resid_pdrop = embd_pdrop
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self):
        for field in ("num_layers", "num_heads", "d_model", "ffn_dim", "max_length"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1. Received: {getattr(self, field)}")
        if self.d_model % self.num_heads:
            raise ValueError(
                "d_model must be divisible by num_heads. "
                f"Received: d_model={self.d_model}, num_heads={self.num_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: {self.dropout}")


@keras.saving.register_keras_serializable(package="zoo")
class GPT2(TransformerLM):
    """GPT-2: a ``TransformerLM`` with pre-norm blocks, tanh GELU, learned positions, tied
    embeddings and a fused Q/K/V projection (see the module docstring for the formulas).

    Args:
        vocab_size: number of token ids (50,257 for GPT-2's tokenizer).
        num_layers, num_heads, d_model, ffn_dim, max_length, dropout, layer_norm_epsilon: see
            ``GPT2Config``.
        **kwargs: ``keras.Model`` arguments (``name``, ``dtype``).

    Example:
        >>> model = zoo.build_model("gpt2", vocab_size=50257, preset="small")  # 124,439,808
        >>> logits = model(token_ids)                                          # (B, T, 50257)
    """

    def __init__(
        self,
        vocab_size: int = GPT2_VOCAB_SIZE,
        num_layers: int = 12,
        num_heads: int = 12,
        d_model: int = 768,
        ffn_dim: int = 3072,
        max_length: int = 1024,
        dropout: float = 0.1,
        layer_norm_epsilon: float = 1e-5,
        **kwargs,
    ):
        for name in _FIXED:  # saved by TransformerLM.get_config; always GPT-2's
            kwargs.pop(name, None)
        kwargs.setdefault("name", "gpt2")
        super().__init__(
            vocab_size=vocab_size,
            num_layers=num_layers,
            num_heads=num_heads,
            d_model=d_model,
            ffn_dim=ffn_dim,
            max_length=max_length,
            dropout=dropout,
            layer_norm_epsilon=layer_norm_epsilon,
            **_FIXED,
            **kwargs,
        )

    def get_config(self):
        config = super().get_config()
        for name in _FIXED:
            config.pop(name, None)
        return config


def _build(vocab_size: int, config: GPT2Config) -> GPT2:
    return GPT2(vocab_size=vocab_size, **asdict(config))


register(
    ModelSpec(
        name="gpt2",
        description="GPT-2 (pre-norm, tanh GELU, tied embeddings); zoo import gpt2 reads checkpoints",
        config_class=GPT2Config,
        presets={
            "tiny": dict(num_layers=2, num_heads=2, d_model=32, ffn_dim=128, max_length=64,
                         dropout=0.0),
            # GPT-2 small: 124,439,808 parameters with vocab_size=50257
            "small": dict(num_layers=12, num_heads=12, d_model=768, ffn_dim=3072, max_length=1024),
        },
        builder=_build,
    )
)
