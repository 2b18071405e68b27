"""Training FLOPs per token (the PaLM / nanoGPT model-FLOPs estimate).

    F = 6 N + 12 L H Q T

N: parameters, without a learned position table (a lookup, not a matmul); L layers, H heads,
Q the head width, T the sequence length. 6N counts the forward (2N) and backward (4N) matmul
FLOPs of the weights, 12LHQT those of attention's QK^T and AV (PaLM, Chowdhery et al. 2022,
appendix B). Models without attention have only the 6N term. Model FLOPs utilisation is then
MFU = tokens/s x F / (the device's peak FLOP/s).
"""

from __future__ import annotations


def flops_per_token(num_params: int, num_layers: int = 0, num_heads: int = 0, head_dim: int = 0,
                    seq_len: int = 0) -> int:
    """``6 N + 12 L H Q T``: training FLOPs per token (attention term 0 when ``num_layers`` is 0)."""
    return 6 * int(num_params) + 12 * num_layers * num_heads * head_dim * seq_len


def _position_params(sizes: dict) -> int:
    if sizes.get("position", "learned") != "learned" or "max_length" not in sizes:
        return 0
    return int(sizes["max_length"]) * int(sizes["d_model"])


def training_flops_per_token(model, seq_len: int | None = None, sizes: dict | None = None) -> int:
    """``F`` of a built model whose ``sizes`` (its config: num_layers, num_heads, d_model,
    max_length, position) are given or read from ``model.get_config()``. ``seq_len`` defaults to
    the context ``max_length``. Models without ``num_heads`` (RNN, MLP) get ``6 N``."""
    sizes = dict(sizes or model.get_config())
    num_params = model.count_params()
    if "num_heads" not in sizes or "d_model" not in sizes:
        return flops_per_token(num_params)
    seq_len = seq_len or int(sizes["max_length"])
    return flops_per_token(
        num_params - _position_params(sizes), int(sizes["num_layers"]), int(sizes["num_heads"]),
        int(sizes["d_model"]) // int(sizes["num_heads"]), seq_len,
    )
