"""Text generation: one compiled decoding loop with sampler objects, for zoo causal LMs.

>>> from zoo.generation import generate
>>> generate(model, tokenizer, "ROMEO:", max_new_tokens=40, strategy="sample", seed=0)

Layout: ``prompts`` (prompt preparation), ``samplers`` (greedy, random, beam settings),
``random_draw`` (the counter-based noise), ``loop`` (the decoding loop), ``beam`` (beam
search), ``compiled`` (per-model compiled functions), ``decode`` (ids in, ids out), ``api``
(text in, text out), ``stream`` (text piece by piece).
"""

from zoo.generation.api import STRATEGIES, generate
from zoo.generation.decode import (
    PROMPT_BUCKET,
    beam_search_ids,
    default_jit_compile,
    generate_ids,
    generate_ids_uncached,
    tracing_count,
)
from zoo.generation.random_draw import gumbel_noise, row_uniform
from zoo.generation.samplers import (
    BeamSampler,
    GreedySampler,
    RandomSampler,
    Sampler,
    filter_logits,
    next_token,
)

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
