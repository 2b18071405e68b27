"""``stream``: yield a continuation piece by piece as its tokens are produced (``zoo generate
--stream``).

The prompt is run once through ``call_with_cache``; then every new token costs one compiled
``call_with_cache`` step on the KV cache / recurrent state. Token choice is the one the compiled
loop makes (``zoo.generation.decode``: <pad>/<bos> suppressed, greedy or Gumbel-max sampling
with the row's counter-based noise at the token's absolute position), so the pieces join into
exactly what ``generate`` returns for the same prompt, settings and seed.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from zoo.errors import ZooError
from zoo.generation.api import _row_seed, _unknown_characters, _validate
from zoo.generation.decode import _next_logits
from zoo.generation.sampling import next_token
from zoo.tokenizers.base import BOS_ID, UNK_ID

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
    is known only at the end). Other arguments as ``zoo.generation.generate``. A transformer
    streams up to its context: ``max_new_tokens`` must be below its ``max_length``.
    """
    _validate(strategy, max_new_tokens, temperature, top_k, top_p, 1, seed, stop)
    if strategy == "beam":
        raise ZooError("beam search cannot stream (its best sequence is known only at the end)")
    if not isinstance(prompt, str):
        raise ZooError("stream takes one prompt string")
    ids = [int(t) for t in tokenizer.tokenize(tf.constant([prompt]))[0].numpy()]
    if getattr(tokenizer, "kind", "") == "char" and UNK_ID in ids:
        unknown = "".join(_unknown_characters(tokenizer, prompt))
        raise ZooError(f"prompt {prompt!r} contains characters the tokenizer does not know: {unknown!r}")
    if add_bos:
        ids = [getattr(tokenizer, "bos_id", BOS_ID), *ids]
    if not ids:
        raise ZooError(f"empty prompt {prompt!r}: give at least one token (or use add_bos=True)")
    max_length = getattr(model, "max_length", None)
    if max_length is not None:
        if max_new_tokens >= max_length:
            raise ZooError(
                f"streaming continues within the context: max_new_tokens={max_new_tokens} must be "
                f"smaller than the model's max_length={max_length}"
            )
        ids = ids[-(max_length - max_new_tokens):]

    sample = strategy == "sample"
    if sample and seed is None:
        seed = secrets.randbits(63)
    settings = (
        tf.constant([float(temperature) if sample else 0.0]),
        tf.constant([int(top_k)], tf.int32),
        tf.constant([float(top_p)]),
        tf.constant([_row_seed(seed, 0) if sample else 0], tf.int64),
    )
    stops = {int(t) for t in stop_token_ids}

    @tf.function(reduce_retracing=True)
    def step(token_ids, cache, index):
        logits, cache = model.call_with_cache(token_ids, cache, index)
        return _next_logits(logits[:, -1, :], getattr(tokenizer, "suppressed_ids", None)), cache

    cache = model.init_cache(1, len(ids) + max_new_tokens)
    last, cache = step(tf.constant([ids], tf.int32), cache, tf.constant(0, tf.int32))
    generated: list[int] = []
    emitted = ""
    hold = len(stop) - 1 if stop else 0
    for k in range(max_new_tokens):
        position = len(ids) + k
        token = int(next_token(last, *settings, tf.constant(position, tf.int32)).numpy()[0])
        if token in stops:
            break
        generated.append(token)
        text = tokenizer.decode(np.array(generated))
        if stop and stop in text:
            yield text[len(emitted) : text.index(stop)]
            return
        ready = text.rstrip(REPLACEMENT)
        ready = ready[: max(len(emitted), len(ready) - hold)]
        if len(ready) > len(emitted):
            yield ready[len(emitted) :]
            emitted = ready
        if k + 1 < max_new_tokens:
            last, cache = step(tf.constant([[token]], tf.int32), cache, tf.constant(position, tf.int32))
    text = tokenizer.decode(np.array(generated, dtype=np.int32)) if generated else ""
    if len(text) > len(emitted):
        yield text[len(emitted) :]
