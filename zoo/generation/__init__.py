"""Text generation: compiled greedy / sampling / beam-search decoding for zoo causal LMs.

>>> from zoo.generation import generate
>>> generate(model, tokenizer, "ROMEO:", max_new_tokens=40, strategy="sample", seed=0)
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
from zoo.generation.sampling import filter_logits, gumbel_noise, next_token, row_uniform

__all__ = [
    "PROMPT_BUCKET",
    "STRATEGIES",
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
