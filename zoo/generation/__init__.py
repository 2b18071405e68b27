"""Text generation: one compiled decoding loop with sampler objects, for zoo causal LMs.

>>> from zoo.generation import generate
>>> generate(model, tokenizer, "ROMEO:", max_new_tokens=40, strategy="sample", seed=0)

Layout: ``prompts`` (prompt preparation), ``samplers`` (greedy, random, beam settings),
``random_draw`` (the counter-based noise), ``loop`` (the decoding loop), ``beam`` (beam
search), ``compiled`` (per-model compiled functions), ``decode`` (ids in, ids out), ``api``
(text in, text out), ``stream`` (text piece by piece).
"""

from __future__ import annotations

import importlib

# name -> module; imported on first use, so the token-level loop (``zoo.generation.decode``)
# imports without TensorFlow on JAX (the text-level ``generate`` needs TensorFlow's tokenizers)
_HOMES = {
    "STRATEGIES": "api",
    "generate": "api",
    "PROMPT_BUCKET": "decode",
    "beam_search_ids": "decode",
    "default_jit_compile": "decode",
    "generate_ids": "decode",
    "generate_ids_uncached": "decode",
    "tracing_count": "decode",
    "gumbel_noise": "random_draw",
    "row_uniform": "random_draw",
    "BeamSampler": "samplers",
    "GreedySampler": "samplers",
    "RandomSampler": "samplers",
    "Sampler": "samplers",
    "filter_logits": "samplers",
    "next_token": "samplers",
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"zoo.generation.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'zoo.generation' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_HOMES))


__all__ = [
    "PROMPT_BUCKET",
    "STRATEGIES",
    "BeamSampler",
    "GreedySampler",
    "RandomSampler",
    "Sampler",
    "beam_search_ids",
    "default_jit_compile",
    "filter_logits",
    "generate",
    "generate_ids",
    "generate_ids_uncached",
    "gumbel_noise",
    "next_token",
    "row_uniform",
    "tracing_count",
]
