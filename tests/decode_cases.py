"""The decoding cases ``tests/test_backends.py`` runs on TensorFlow and ``tests/jax_worker.py``
runs on JAX: the outputs must be equal token for token."""

from __future__ import annotations

import numpy as np

from zoo.generation.decode import beam_search_ids, generate_ids

# prompts of different lengths for the decoding comparison (ids >= 4: no special tokens)
DECODE_PROMPTS = np.array([[5, 9, 13, 7, 22, 31], [11, 4, 0, 0, 0, 0], [8, 8, 30, 2 + 4, 19, 0]],
                          np.int32)
DECODE_LENGTHS = np.array([6, 2, 5], np.int32)
DECODE_SEEDS = np.array([3, -7, 2**40 + 5], np.int64)


def decode_outputs(model) -> dict:
    """Greedy, seeded sampling (temperature, top-k, top-p per row) and beam search of ``model``
    on ``DECODE_PROMPTS``, 7 new tokens each, as NumPy arrays; the same on every backend."""
    args = (model, DECODE_PROMPTS, DECODE_LENGTHS, 7)
    greedy = generate_ids(*args, stop_token_ids=(3,))
    sampled = generate_ids(*args, temperature=np.array([0.7, 1.3, 0.0], np.float32),
                           top_k=np.array([0, 5, 0], np.int32),
                           top_p=np.array([1.0, 1.0, 0.8], np.float32), seeds=DECODE_SEEDS)
    beam = beam_search_ids(*args, num_beams=3, length_penalty=1.0)
    return {f"{kind}_{part}": np.asarray(value)
            for kind, pair in (("greedy", greedy), ("sampled", sampled), ("beam", beam))
            for part, value in zip(("ids", "num"), pair, strict=True)}
