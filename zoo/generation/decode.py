"""Token-level decoding entry points: ids in, new ids out, compiled for the backend.

    new_ids, num_new = generate_ids(model, prompt_ids, prompt_lengths, 32)             # greedy
    new_ids, num_new = generate_ids(model, prompt_ids, prompt_lengths, 32, temperature=0.8,
                                    top_k=40, seeds=seeds)                              # sampled
    new_ids, num_new = beam_search_ids(model, prompt_ids, prompt_lengths, 32, num_beams=4)

Each validates its arguments (Keras-style ``ValueError`` naming the argument), pads the prompt
width to a multiple of ``PROMPT_BUCKET``, builds the sampler (``zoo.generation.samplers``) and
runs the one loop (``zoo.generation.loop.decode``, or ``zoo.generation.beam.beam_search``)
through the per-model compiled-function cache (``zoo.generation.compiled``). Called inside an
outer ``tf.function`` they add the loop to that graph instead.

Randomness is counter-based (``zoo.generation.random_draw``): the noise used to choose the token
at position ``i`` of a row depends only on that row's seed and ``i``.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from zoo.backends import current
from zoo.generation import beam, compiled, loop
from zoo.generation.loop import DecodeSettings, UncachedView
from zoo.generation.prompts import PROMPT_BUCKET, prepare_prompts
from zoo.generation.random_draw import default_words
from zoo.generation.samplers import BeamSampler, GreedySampler, RandomSampler, Sampler

__all__ = [
    "PROMPT_BUCKET",
    "SUPPRESSED_TOKEN_IDS",
    "beam_search_ids",
    "decode_ids",
    "default_jit_compile",
    "generate_ids",
    "generate_ids_uncached",
    "tracing_count",
]

SUPPRESSED_TOKEN_IDS = loop.SUPPRESSED_TOKEN_IDS
default_jit_compile = compiled.default_jit_compile
tracing_count = compiled.tracing_count


def _as_int32(x):
    if current() == "tensorflow":
        import tensorflow as tf

        return tf.cast(tf.convert_to_tensor(x), tf.int32)
    return ops.cast(ops.convert_to_tensor(x), "int32")


def _per_row(value, batch, dtype: str, default):
    """A scalar or ``(B,)`` setting as a ``(B,)`` tensor of ``dtype``."""
    value = default if value is None else value
    return ops.broadcast_to(ops.cast(ops.convert_to_tensor(value), dtype), (batch,))


def _seeds(seeds, batch, words):
    if current() == "tensorflow":  # may be symbolic (inside an outer tf.function)
        return _per_row(seeds, batch, "int64", 0)
    values = np.broadcast_to(np.asarray(0 if seeds is None else seeds, np.int64), (batch,))
    return words.seed_input(values)


def _prepared(model, prompt_ids, prompt_lengths, settings: DecodeSettings):
    """Validate, pad the width to the bucket, fix the prefill length, build the model."""
    prompt_ids, prompt_lengths = _as_int32(prompt_ids), _as_int32(prompt_lengths)
    capped = settings.max_length is not None
    lengths = loop.check_prompts(model, prompt_ids, prompt_lengths, settings.max_new_tokens,
                                 capped=capped)
    prefill_length = loop.default_prefill_length(lengths, settings.prefill_length)
    settings = DecodeSettings(**{**settings.__dict__, "prefill_length": prefill_length})
    width, max_length = prompt_ids.shape[1], getattr(model, "max_length", None)
    if width is not None:
        if capped:
            cap = settings.max_length - 1
        else:
            cap = None if max_length is None else max_length - settings.max_new_tokens
        prompt_ids, _, _ = prepare_prompts(prompt_ids, prompt_lengths, bucket=PROMPT_BUCKET,
                                           max_width=cap)
    if not getattr(model, "built", True):
        model(prompt_ids[:, :1])
    return prompt_ids, prompt_lengths, settings


def _uncached_decode(model, sampler, prompt_ids, prompt_lengths, row_max, settings):
    """``loop.decode`` over ``UncachedView(model)``: the whole buffer recomputed every step."""
    return loop.decode(UncachedView.of(model), sampler, prompt_ids, prompt_lengths, row_max,
                       settings)


def decode_ids(model, sampler: Sampler, prompt_ids, prompt_lengths, settings: DecodeSettings, *,
               row_max_new_tokens=None, jit_compile: bool | None = None, cached: bool = True):
    """Decode with any sampler; returns ``(new_ids (B, M), num_new (B,))``.

    ``BeamSampler`` runs ``beam.beam_search`` (``row_max_new_tokens`` does not apply); other
    samplers run ``loop.decode`` (``cached=False``: over ``UncachedView``).
    """
    prompt_ids, prompt_lengths, settings = _prepared(model, prompt_ids, prompt_lengths, settings)
    if isinstance(sampler, BeamSampler):
        return compiled.run(model, beam.beam_search, sampler, settings,
                            (prompt_ids, prompt_lengths), jit_compile)
    batch = ops.shape(prompt_ids)[0]
    row_max = ops.minimum(
        _per_row(row_max_new_tokens, batch, "int32", settings.max_new_tokens),
        settings.max_new_tokens,
    )
    fn = loop.decode if cached else _uncached_decode
    return compiled.run(model, fn, sampler, settings, (prompt_ids, prompt_lengths, row_max),
                        jit_compile)


def _sampler(batch, temperature, top_k, top_p, seeds, step_offset=0) -> Sampler:
    if temperature is None:
        return GreedySampler()
    words = default_words()
    return RandomSampler(
        _per_row(temperature, batch, "float32", 0.0),
        _per_row(top_k, batch, "int32", 0),
        _per_row(top_p, batch, "float32", 1.0),
        _seeds(seeds, batch, words),
        step_offset,
        words=words,
    )


def _settings(max_new_tokens, stop_token_ids, suppressed_token_ids, prefill_length,
              max_length=None):
    return DecodeSettings(
        max_new_tokens=max_new_tokens,
        stop_token_ids=tuple(np.asarray(stop_token_ids, np.int64).reshape(-1).tolist()),
        suppressed_token_ids=suppressed_token_ids,
        prefill_length=prefill_length,
        max_length=max_length,
    )


def generate_ids(model, prompt_ids, prompt_lengths, max_new_tokens: int, *,
                 row_max_new_tokens=None, temperature=None, top_k=None, top_p=None, seeds=None,
                 stop_token_ids=(), jit_compile: bool | None = None,
                 prefill_length: int | None = None, suppressed_token_ids=None,
                 step_offset: int = 0, max_length: int | None = None):
    """Decode with the model's cache; returns ``(new_ids (B, max_new_tokens), num_new (B,))``.

    Args:
      model: a ``CausalLM`` (``init_cache`` / ``call_with_cache``).
      prompt_ids: ``(B, P)`` int32, right-padded with 0.
      prompt_lengths: ``(B,)`` int32, each ``>= 1``.
      max_new_tokens: static upper bound on new tokens (a Python int).
      row_max_new_tokens: ``(B,)`` per-row budget (default ``max_new_tokens`` for all rows).
      temperature, top_k, top_p, seeds: ``(B,)`` per-row sampling settings (scalars are
        broadcast). ``temperature=None`` decodes greedily (``GreedySampler``, a cheaper loop);
        otherwise ``RandomSampler``, where rows with ``temperature <= 0`` are greedy too.
      stop_token_ids: ids that end a row; the stop token itself is not returned.
      suppressed_token_ids: ids never chosen (default ``SUPPRESSED_TOKEN_IDS``, <pad> and
        <bos>; pass the tokenizer's ``suppressed_ids``).
      jit_compile: XLA or not on TensorFlow; ``None`` = XLA when a GPU is visible (JAX always
        compiles). Ignored when called inside an outer ``tf.function``.
      prefill_length: tokens fed in one call before the loop (static int in ``[1, min(P_b)]``).
        Default: ``min(prompt_lengths)`` rounded down to a multiple of ``PROMPT_BUCKET``
        (at least 1) when the lengths are known; inside an outer graph with unknown lengths,
        ``min(prompt_lengths)`` as a tensor (no XLA there: pass an int under XLA).
      step_offset: added to the position in the random draw (a sliding window's round ``r``
        passes ``r * max_length``, see ``zoo.generation.window``).
      max_length: the loop ends at this context (``DecodeSettings.max_length``): then each row's
        length plus its ``row_max_new_tokens`` must fit in it, the width need not.

    The new ids are padded with 0 after ``num_new`` tokens. A row stops after its budget or at a
    stop token; the loop exits as soon as every row has stopped. Raises ``ValueError`` if
    ``P + max_new_tokens`` exceeds ``model.max_length`` (without ``max_length``).
    """
    settings = _settings(max_new_tokens, stop_token_ids, suppressed_token_ids, prefill_length,
                         max_length)
    batch = ops.shape(prompt_ids)[0]
    sampler = _sampler(batch, temperature, top_k, top_p, seeds, step_offset)
    return decode_ids(model, sampler, prompt_ids, prompt_lengths, settings,
                      row_max_new_tokens=row_max_new_tokens, jit_compile=jit_compile)


def generate_ids_uncached(model, prompt_ids, prompt_lengths, max_new_tokens: int, *,
                          row_max_new_tokens=None, temperature=None, top_k=None, top_p=None,
                          seeds=None, stop_token_ids=(), jit_compile: bool | None = None,
                          prefill_length: int | None = None, suppressed_token_ids=None):
    """Same contract as ``generate_ids`` but runs ``model(buffer)`` over the whole
    ``(B, P + max_new_tokens)`` buffer at every step (no cache): the slow reference."""
    settings = _settings(max_new_tokens, stop_token_ids, suppressed_token_ids, prefill_length)
    batch = ops.shape(prompt_ids)[0]
    sampler = _sampler(batch, temperature, top_k, top_p, seeds)
    return decode_ids(model, sampler, prompt_ids, prompt_lengths, settings,
                      row_max_new_tokens=row_max_new_tokens, jit_compile=jit_compile,
                      cached=False)


def beam_search_ids(model, prompt_ids, prompt_lengths, max_new_tokens: int, num_beams: int, *,
                    length_penalty: float = 0.0, stop_token_ids=(),
                    jit_compile: bool | None = None, prefill_length: int | None = None,
                    suppressed_token_ids=None):
    """Beam search (``BeamSampler``, see ``zoo.generation.beam``); returns the best hypothesis
    per row as ``(new_ids (B, max_new_tokens), num_new (B,))``."""
    settings = _settings(max_new_tokens, stop_token_ids, suppressed_token_ids, prefill_length)
    sampler = BeamSampler(num_beams=num_beams, length_penalty=length_penalty)
    return decode_ids(model, sampler, prompt_ids, prompt_lengths, settings,
                      jit_compile=jit_compile)
