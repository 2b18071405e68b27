"""``stream``: yield a continuation piece by piece as its tokens are produced (``zoo generate
--stream``).

The prompt is prepared as everywhere else (``zoo.generation.prompts.prepare_prompts``) and run
once through ``call_with_cache``; then every new token costs one compiled ``loop.feed`` step on
the KV cache / recurrent state. Token choice is the sampler's (``GreedySampler`` or
``RandomSampler``: <pad>/<bos> suppressed, Gumbel-max sampling with the row's counter-based noise
at the token's absolute position), so the pieces join into exactly what ``generate`` returns for
the same prompt, settings and seed.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import numpy as np
from keras import ops

from zoo.errors import ZooError
from zoo.generation.api import _validate, row_seed, token_rows
from zoo.generation.loop import feed
from zoo.generation.prompts import dense_rows, prepare_prompts
from zoo.generation.random_draw import default_words
from zoo.generation.samplers import GreedySampler, RandomSampler
from zoo.generation.window import round_budget, round_context

REPLACEMENT = "\ufffd"  # a piece that ends inside a multi-byte character decodes to this


def stream(
    model,
    tokenizer,
    prompt: str,
    *,
    max_new_tokens: int = 100,
    strategy: str = "greedy",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: str | None = None,
    add_bos: bool = False,
    stop_token_ids=(),
) -> Iterator[str]:
    """Yield the continuation of one ``prompt`` in pieces, as soon as each token is chosen.

    ``strategy`` is ``"greedy"`` or ``"sample"`` (beam search cannot stream: its best sequence
    is known only at the end). Other arguments as ``zoo.generation.generate``; a transformer
    continues past its context in the same sliding-window rounds (``zoo.generation.window``).
    """
    _validate(strategy, max_new_tokens, temperature, top_k, top_p, 1, seed, stop)
    if strategy == "beam":
        raise ZooError("beam search cannot stream (its best sequence is known only at the end)")
    if not isinstance(prompt, str):
        raise ZooError("stream takes one prompt string")
    max_length = getattr(model, "max_length", None)
    prompt_tokens = token_rows(tokenizer, [prompt], add_bos=add_bos)[0]
    fits = max_length is None or len(prompt_tokens) + max_new_tokens <= max_length

    if strategy == "sample":
        if seed is None:
            seed = secrets.randbits(63)
        words = default_words()
        sampler = RandomSampler(
            np.array([temperature], np.float32), np.array([top_k], np.int32),
            np.array([top_p], np.float32), words.seed_input(np.array([row_seed(seed, 0)])),
            words=words,
        )
    else:
        sampler = GreedySampler()
    stops = {int(t) for t in stop_token_ids}
    suppressed = getattr(tokenizer, "suppressed_ids", None)
    step = _step_function(model, suppressed)

    def start_round(round_index: int, tokens: list[int], remaining: int):
        """Prefill a round's context: ``(its length, the round's budget, logits, cache)``."""
        if fits:
            context, budget = tokens, remaining
        else:
            context = round_context(tokens, round_index, max_length)
            budget = round_budget(len(context), remaining, max_length)
        ids, lengths = dense_rows([context])
        prompt_ids, _, _ = prepare_prompts(ids, lengths)
        length = int(prompt_ids.shape[1])
        cache = model.init_cache(1, length + min(remaining, budget))
        last, cache = step(prompt_ids, cache, np.int32(0))
        return length, budget, last, cache

    sequence = list(prompt_tokens)
    round_index, used = 0, 0
    length, budget, last, cache = start_round(0, sequence, max_new_tokens)
    generated: list[int] = []
    emitted = ""
    hold = len(stop) - 1 if stop else 0
    for k in range(max_new_tokens):
        if used == budget:  # the window is full: the next round slides it
            round_index, used = round_index + 1, 0
            length, budget, last, cache = start_round(round_index, sequence, max_new_tokens - k)
        position = length + used
        draw_sampler = sampler.shifted(np.int32(round_index * (max_length or 0)))
        token = int(np.asarray(draw_sampler.choose(last, np.int32(position)))[0])
        if token in stops:
            break
        generated.append(token)
        sequence.append(token)
        used += 1
        text = tokenizer.decode(np.array(generated))
        if stop and stop in text:
            yield text[len(emitted) : text.index(stop)]
            return
        ready = text.rstrip(REPLACEMENT)
        ready = ready[: max(len(emitted), len(ready) - hold)]
        if len(ready) > len(emitted):
            yield ready[len(emitted) :]
            emitted = ready
        if k + 1 < max_new_tokens and used < budget:
            last, cache = step(np.array([[token]], np.int32), cache, np.int32(position))
    text = tokenizer.decode(np.array(generated, dtype=np.int32)) if generated else ""
    if len(text) > len(emitted):
        yield text[len(emitted) :]


def _step_function(model, suppressed):
    """``loop.feed`` compiled for the backend: ``tf.function`` or ``jax.jit`` (weights passed
    in, so a model trained further is seen)."""
    from zoo.backends import current

    if current() == "jax":
        import jax
        import keras

        @jax.jit
        def jitted(values, token_ids, cache, index):
            with keras.StatelessScope(state_mapping=list(zip(model.variables, values, strict=True))):
                return feed(model, token_ids, cache, index, suppressed)

        return lambda token_ids, cache, index: jitted(
            [v.value for v in model.variables], token_ids, cache, index
        )
    import tensorflow as tf

    def run(token_ids, cache, index):
        return feed(model, ops.convert_to_tensor(token_ids), cache, index, suppressed)

    return tf.function(run, reduce_retracing=True)
