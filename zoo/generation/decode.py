"""Compiled decoding loops over the ``CausalLM`` cache contract (see ``zoo/models/base.py``).

Every loop here is a single ``tf.while_loop`` with fixed shapes. The same code runs

* under ``tf.function(jit_compile=True)`` (XLA; the default when a GPU is visible), and
* as a plain ``tf.function`` on stock TensorFlow kernels (what TF Serving runs): buffers are
  written with ``tf.where`` masks, never with XLA-only ops such as ``XlaDynamicUpdateSlice``.

Randomness is counter-based (``zoo.generation.sampling.row_uniform``): the noise used to choose
the token at position ``i`` of a row depends only on that row's seed and ``i``.

Layout: prompts are ``(B, P)`` int32, right-padded with 0, with ``prompt_lengths (B,) >= 1``.
The loop walks positions ``i`` of a ``P + max_new_tokens`` long sequence. At each position a
token is chosen from the logits of position ``i - 1``; while ``i`` is still inside a row's prompt
the prompt token is kept instead, so rows with different prompt lengths share one loop. The
chosen token is then fed to ``model.call_with_cache`` at index ``i``.

Compiled functions are built once per ``(model, kind, jit_compile)`` and kept in a
``WeakKeyDictionary`` (they only hold a weak reference to the model). ``P`` is padded up to a
multiple of ``PROMPT_BUCKET`` and the prefill length is rounded down to one, so prompts of
similar lengths reuse one trace; ``tracing_count(model)`` tells how many traces exist.
"""

from __future__ import annotations

import operator
import weakref

import numpy as np
import tensorflow as tf

from zoo.generation.sampling import next_token

__all__ = [
    "PROMPT_BUCKET",
    "beam_search_ids",
    "default_jit_compile",
    "generate_ids",
    "generate_ids_uncached",
    "tracing_count",
]

PROMPT_BUCKET = 16

_NEG_INF = float("-inf")
_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_jit_compile() -> bool:
    """XLA when a GPU is visible; on CPU XLA compiles too slowly to pay off for short runs."""
    return bool(tf.config.list_physical_devices("GPU"))


def tracing_count(model) -> int:
    """How many times the cached decoding functions of ``model`` have been traced."""
    functions = _FUNCTIONS.get(model, {})
    return sum(fn.experimental_get_tracing_count() for fn in functions.values())


# ------------------------------------------------------------------------------------------------
# helpers


def _dim(x: tf.Tensor, axis: int):
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


def _is_stop(tokens: tf.Tensor, stop_ids: tf.Tensor) -> tf.Tensor:
    """``tokens (...)`` int32 -> bool, True where the token is one of ``stop_ids (S,)``."""
    return tf.reduce_any(tf.equal(tokens[..., None], stop_ids), axis=-1)


def _prefill(model, prompt_ids, prompt_lengths, prefill_length, total_length, suppressed=None):
    """Create the cache and run the first ``prefill_length`` prompt tokens at index 0.

    ``prefill_length`` is a static int (required under XLA) or ``None`` for
    ``min(prompt_lengths)`` as a tensor (plain graphs only). Returns ``(start, last, cache)``.
    """
    batch = _dim(prompt_ids, 0)
    cache = model.init_cache(batch, total_length)
    if prefill_length is None:
        start = tf.reduce_min(prompt_lengths)
    else:
        start = tf.constant(prefill_length, tf.int32)
    logits, cache = model.call_with_cache(
        prompt_ids[:, :start] if prefill_length is None else prompt_ids[:, :prefill_length],
        cache,
        tf.constant(0, tf.int32),
    )
    return start, _next_logits(logits[:, -1, :], suppressed), cache


# Never generated: <pad> (0) and <bos> (2) are not text; a model sees BOS only as input. A
# tokenizer with other special ids passes its own (``Tokenizer.suppressed_ids``; GPT-2: none).
SUPPRESSED_TOKEN_IDS = (0, 2)


def _next_logits(logits, suppressed=None):
    """Float32 next-token logits (B, V) with the suppressed ids (default
    ``SUPPRESSED_TOKEN_IDS``) set to -inf."""
    logits = tf.cast(logits, tf.float32)
    suppressed = SUPPRESSED_TOKEN_IDS if suppressed is None else tuple(suppressed)
    if not suppressed:
        return logits
    vocab = tf.range(tf.shape(logits)[-1])
    banned = tf.reduce_any(vocab[:, None] == tf.constant(suppressed)[None, :], axis=-1)
    return tf.where(banned[None, :], tf.constant(float("-inf")), logits)


def _choose(last, sample, temperature, top_k, top_p, seeds, step):
    if sample:
        return next_token(last, temperature, top_k, top_p, seeds, step)
    return tf.argmax(last, axis=-1, output_type=tf.int32)


def _advance(
    step, tok_choice, prompt_ids, prompt_lengths, row_max, stop_ids, out, num_new, finished
):
    """Shared bookkeeping for one position: returns ``(tok, out, num_new, finished)``."""
    prompt_len = _dim(prompt_ids, 1)
    max_new = _dim(out, 1)
    in_prompt = step < prompt_lengths
    prompt_tok = tf.gather(prompt_ids, tf.minimum(step, prompt_len - 1), axis=1)
    tok = tf.where(in_prompt, prompt_tok, tok_choice)
    generating = tf.logical_and(tf.logical_not(in_prompt), tf.logical_not(finished))
    stopped = tf.logical_and(generating, _is_stop(tok, stop_ids))
    emit = tf.logical_and(generating, tf.logical_not(stopped))
    write = tf.logical_and(emit[:, None], tf.range(max_new)[None, :] == num_new[:, None])
    out = tf.where(write, tok[:, None], out)
    num_new = num_new + tf.cast(emit, tf.int32)
    finished = tf.logical_or(tf.logical_or(finished, stopped), num_new >= row_max)
    return tok, out, num_new, finished


# ------------------------------------------------------------------------------------------------
# loop bodies (pure graph code; wrapped in cached tf.functions below)


def _sample_cached(
    model,
    prompt_ids,
    prompt_lengths,
    row_max,
    temperature,
    top_k,
    top_p,
    seeds,
    stop_ids,
    *,
    max_new_tokens,
    prefill_length,
    sample,
    suppressed=None,
):
    batch = _dim(prompt_ids, 0)
    total = _dim(prompt_ids, 1) + max_new_tokens
    start, last, cache = _prefill(
        model, prompt_ids, prompt_lengths, prefill_length, total, suppressed
    )
    out = tf.zeros([batch, max_new_tokens], tf.int32)
    num_new = tf.zeros([batch], tf.int32)
    finished = row_max <= 0

    def cond(i, last, cache, out, num_new, finished):
        return tf.logical_and(i < total, tf.logical_not(tf.reduce_all(finished)))

    def body(i, last, cache, out, num_new, finished):
        choice = _choose(last, sample, temperature, top_k, top_p, seeds, i)
        tok, out, num_new, finished = _advance(
            i, choice, prompt_ids, prompt_lengths, row_max, stop_ids, out, num_new, finished
        )
        logits, cache = model.call_with_cache(tok[:, None], cache, i)
        return i + 1, _next_logits(logits[:, -1, :], suppressed), cache, out, num_new, finished

    loop = tf.while_loop(cond, body, (start, last, cache, out, num_new, finished))
    return loop[3], loop[4]


def _sample_uncached(
    model,
    prompt_ids,
    prompt_lengths,
    row_max,
    temperature,
    top_k,
    top_p,
    seeds,
    stop_ids,
    *,
    max_new_tokens,
    prefill_length,
    sample,
    suppressed=None,
):
    del prefill_length  # every step recomputes the whole buffer
    batch = _dim(prompt_ids, 0)
    total = _dim(prompt_ids, 1) + max_new_tokens
    buffer = tf.pad(prompt_ids, [[0, 0], [0, max_new_tokens]])
    positions = tf.range(total)[None, :]
    out = tf.zeros([batch, max_new_tokens], tf.int32)
    num_new = tf.zeros([batch], tf.int32)
    finished = row_max <= 0

    def cond(i, buffer, out, num_new, finished):
        return tf.logical_and(i < total, tf.logical_not(tf.reduce_all(finished)))

    def body(i, buffer, out, num_new, finished):
        logits = model(buffer, training=False)
        last = _next_logits(tf.gather(logits, i - 1, axis=1), suppressed)
        choice = _choose(last, sample, temperature, top_k, top_p, seeds, i)
        tok, out, num_new, finished = _advance(
            i, choice, prompt_ids, prompt_lengths, row_max, stop_ids, out, num_new, finished
        )
        buffer = tf.where(positions == i, tok[:, None], buffer)
        return i + 1, buffer, out, num_new, finished

    # position 0 is always a prompt token (prompt_lengths >= 1)
    loop = tf.while_loop(cond, body, (tf.constant(1, tf.int32), buffer, out, num_new, finished))
    return loop[2], loop[3]


def _normalise(score, length, length_penalty: float):
    if length_penalty == 0.0:
        return score
    length = tf.cast(tf.maximum(length, 1), tf.float32)
    return score / tf.pow(length, length_penalty)


def _beam(
    model,
    prompt_ids,
    prompt_lengths,
    stop_ids,
    *,
    max_new_tokens,
    num_beams,
    length_penalty,
    prefill_length,
    suppressed=None,
):
    n_new, beams, alpha = max_new_tokens, num_beams, float(length_penalty)
    batch = _dim(prompt_ids, 0)
    prompt_len = _dim(prompt_ids, 1)
    total = prompt_len + n_new
    start, last, cache = _prefill(
        model, prompt_ids, prompt_lengths, prefill_length, total, suppressed
    )
    # beams share the prompt: expand the prefilled cache to batch * beams rows
    cache = tf.nest.map_structure(lambda leaf: tf.repeat(leaf, beams, axis=0), cache)
    last = tf.repeat(last, beams, axis=0)
    vocab = _dim(last, 1)
    neg_inf = tf.constant(_NEG_INF, tf.float32)

    # only beam 0 is live at first, so the first expansion does not pick duplicates
    first_scores = tf.constant([0.0] + [_NEG_INF] * (beams - 1), tf.float32)
    state = dict(
        scores=tf.tile(first_scores[None, :], [batch, 1]),  # summed log-probabilities
        finished=tf.zeros([batch, beams], tf.bool),  # beam ended with a stop token
        scored=tf.zeros([batch, beams], tf.int32),  # scored tokens (stop token included)
        ntok=tf.zeros([batch, beams], tf.int32),  # tokens in seqs (stop token excluded)
        seqs=tf.zeros([batch, beams, n_new], tf.int32),
        best_score=tf.fill([batch], neg_inf),  # best finished hypothesis (normalised)
        best_seq=tf.zeros([batch, n_new], tf.int32),
        best_len=tf.zeros([batch], tf.int32),
        done=tf.zeros([batch], tf.bool),
    )
    beam_range = tf.range(beams)
    row_offset = (tf.range(batch) * beams)[:, None]
    token_range = tf.range(vocab)
    column_range = tf.range(n_new)

    def cond(i, last, cache, s):
        return tf.logical_and(i < total, tf.logical_not(tf.reduce_all(s["done"])))

    def body(i, last, cache, s):
        gen = tf.logical_and(i >= prompt_lengths, tf.logical_not(s["done"]))  # (B,)
        scores, finished = s["scores"], s["finished"]
        logp = tf.reshape(tf.nn.log_softmax(last, axis=-1), [-1, beams, vocab])
        # a finished beam has one continuation ("stay", token slot 0) at its own score
        stay = tf.where(token_range[None, None, :] == 0, scores[:, :, None], neg_inf)
        cand = tf.where(finished[:, :, None], stay, scores[:, :, None] + logp)
        vals, flat = tf.math.top_k(tf.reshape(cand, [-1, beams * vocab]), k=beams)
        src = flat // vocab
        tok = flat % vocab
        src_fin = tf.gather(finished, src, batch_dims=1)
        tok_stop = tf.logical_and(tf.logical_not(src_fin), _is_stop(tok, stop_ids))
        appended = tf.logical_not(tf.logical_or(src_fin, tok_stop))
        g_ntok = tf.gather(s["ntok"], src, batch_dims=1)
        g_scored = tf.gather(s["scored"], src, batch_dims=1) + tf.cast(
            tf.logical_not(src_fin), tf.int32
        )
        g_seqs = tf.gather(s["seqs"], src, batch_dims=1)
        write = tf.logical_and(
            appended[:, :, None], column_range[None, None, :] == g_ntok[:, :, None]
        )
        g_seqs = tf.where(write, tok[:, :, None], g_seqs)
        g_ntok = g_ntok + tf.cast(appended, tf.int32)
        g_fin = tf.logical_or(src_fin, tok_stop)

        # hypotheses that just emitted a stop token enter the pool of finished ones
        stop_norm = _normalise(vals, g_scored, alpha)
        stop_norm = tf.where(tf.logical_and(tok_stop, gen[:, None]), stop_norm, neg_inf)
        pick = tf.argmax(stop_norm, axis=1, output_type=tf.int32)
        pick_score = tf.reduce_max(stop_norm, axis=1)
        better = pick_score > s["best_score"]
        best_score = tf.where(better, pick_score, s["best_score"])
        best_seq = tf.where(better[:, None], tf.gather(g_seqs, pick, batch_dims=1), s["best_seq"])
        best_len = tf.where(better, tf.gather(g_ntok, pick, batch_dims=1), s["best_len"])

        # rows still reading their prompt (or done) keep their beams in place
        g2 = gen[:, None]
        src = tf.where(g2, src, beam_range[None, :])
        scores = tf.where(g2, vals, scores)
        finished = tf.where(g2, g_fin, finished)
        scored = tf.where(g2, g_scored, s["scored"])
        ntok = tf.where(g2, g_ntok, s["ntok"])
        seqs = tf.where(gen[:, None, None], g_seqs, s["seqs"])
        prompt_tok = tf.gather(prompt_ids, tf.minimum(i, prompt_len - 1), axis=1)
        feed = tf.where(g2, tok, tf.broadcast_to(prompt_tok[:, None], tf.shape(tok)))

        # a row is done after max_new_tokens steps, or when no live beam can still beat the
        # best finished hypothesis (log-probabilities only decrease as a beam grows):
        #   alpha > 0:  s' / n'^alpha <= s / max_new^alpha
        #   alpha <= 0: s' / n'^alpha <= s / (n + 1)^alpha
        live = tf.logical_and(tf.logical_not(finished), scores > neg_inf)
        if alpha > 0.0:
            bound = _normalise(scores, tf.fill(tf.shape(scored), n_new), alpha)
        else:
            bound = _normalise(scores, scored + 1, alpha)
        bound = tf.reduce_max(tf.where(live, bound, neg_inf), axis=1)
        early = best_score >= bound
        reached = i - prompt_lengths + 1 >= n_new
        done = tf.logical_or(s["done"], tf.logical_and(gen, tf.logical_or(reached, early)))

        # reorder every cache leaf by the source beam, then feed the chosen tokens at index i
        order = tf.reshape(row_offset + src, [-1])
        cache = tf.nest.map_structure(lambda leaf: tf.gather(leaf, order, axis=0), cache)
        logits, cache = model.call_with_cache(tf.reshape(feed, [-1, 1]), cache, i)
        new_state = dict(
            scores=scores,
            finished=finished,
            scored=scored,
            ntok=ntok,
            seqs=seqs,
            best_score=best_score,
            best_seq=best_seq,
            best_len=best_len,
            done=done,
        )
        return i + 1, _next_logits(logits[:, -1, :], suppressed), cache, new_state

    _, _, _, s = tf.while_loop(cond, body, (start, last, cache, state))
    # live beams that used the whole budget compete with the best finished hypothesis
    complete = tf.logical_and(tf.logical_not(s["finished"]), s["ntok"] >= n_new)
    live_norm = tf.where(complete, _normalise(s["scores"], s["scored"], alpha), neg_inf)
    pick = tf.argmax(live_norm, axis=1, output_type=tf.int32)
    use_live = tf.reduce_max(live_norm, axis=1) > s["best_score"]
    new_ids = tf.where(use_live[:, None], tf.gather(s["seqs"], pick, batch_dims=1), s["best_seq"])
    num_new = tf.where(use_live, tf.fill(tf.shape(use_live), n_new), s["best_len"])
    return new_ids, num_new


_IMPLS = {
    "greedy": (_sample_cached, {"sample": False}),
    "sample": (_sample_cached, {"sample": True}),
    "uncached_greedy": (_sample_uncached, {"sample": False}),
    "uncached_sample": (_sample_uncached, {"sample": True}),
    "beam": (_beam, {}),
}


def _compiled(model, kind: str, jit_compile: bool):
    """The cached ``tf.function`` for ``(model, kind, jit_compile)``."""
    try:
        per_model = _FUNCTIONS.setdefault(model, {})
    except TypeError:  # not weak-referenceable: build a throw-away function
        per_model = {}
    key = (kind, bool(jit_compile))
    fn = per_model.get(key)
    if fn is None:
        fn = tf.function(_Decoder(model, kind), jit_compile=bool(jit_compile))
        per_model[key] = fn
    return fn


class _Decoder:
    """The Python function behind one cached ``tf.function``: holds the model weakly.

    A callable object rather than a closure, so that TensorFlow's "frequent retracing" warning
    (keyed on the Python function's code) does not fire when many models are decoded.
    """

    def __init__(self, model, kind: str):
        self._model = weakref.ref(model)
        self._impl, self._fixed = _IMPLS[kind]
        self.__name__ = f"zoo_decode_{kind}"

    def __call__(self, *tensors, **static):
        model = self._model()
        if model is None:
            raise RuntimeError("the model of this decoding function was deleted")
        return self._impl(model, *tensors, **static, **self._fixed)


def _run(model, kind, jit_compile, tensors, static):
    if tf.executing_eagerly():
        if jit_compile is None:
            jit_compile = default_jit_compile()
        return _compiled(model, kind, jit_compile)(*tensors, **static)
    # already inside a graph (e.g. an export): the caller's tf.function is the compile unit
    impl, fixed = _IMPLS[kind]
    return impl(model, *tensors, **static, **fixed)


# ------------------------------------------------------------------------------------------------
# argument preparation


def _prepare(model, prompt_ids, prompt_lengths, max_new_tokens, prefill_length):
    """Validate, pad the prompt width to the bucket, choose the prefill length."""
    try:
        max_new_tokens = operator.index(max_new_tokens)
    except TypeError:
        raise ValueError(f"max_new_tokens must be an int, got {max_new_tokens!r}") from None
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    prompt_ids = tf.cast(tf.convert_to_tensor(prompt_ids), tf.int32)
    prompt_lengths = tf.cast(tf.convert_to_tensor(prompt_lengths), tf.int32)
    if prompt_ids.shape.rank != 2 or prompt_lengths.shape.rank != 1:
        raise ValueError(
            f"prompt_ids must be (batch, length) and prompt_lengths (batch,), got "
            f"{prompt_ids.shape} and {prompt_lengths.shape}"
        )
    width = prompt_ids.shape[1]
    max_length = getattr(model, "max_length", None)
    if max_length is not None and width is not None and width + max_new_tokens > max_length:
        raise ValueError(
            f"prompt width {width} + max_new_tokens {max_new_tokens} exceeds the model's "
            f"max_length {max_length}"
        )
    lengths = tf.get_static_value(prompt_lengths)
    if lengths is not None and lengths.size:
        lengths = np.asarray(lengths)
        if lengths.min() < 1:
            raise ValueError("every prompt needs at least one token (prompt_lengths >= 1)")
        if width is not None and lengths.max() > width:
            raise ValueError(f"prompt_lengths {lengths.max()} exceeds the prompt width {width}")
    if prefill_length is None:
        if lengths is not None and lengths.size:
            shortest = int(lengths.min())
            prefill_length = max(1, shortest // PROMPT_BUCKET * PROMPT_BUCKET)
    else:
        prefill_length = operator.index(prefill_length)
        if prefill_length < 1 or (
            lengths is not None and lengths.size and prefill_length > lengths.min()
        ):
            raise ValueError(f"prefill_length {prefill_length} must be in [1, min(prompt_lengths)]")
    if width is not None:
        padded = -(-width // PROMPT_BUCKET) * PROMPT_BUCKET
        if max_length is not None:
            padded = min(padded, max_length - max_new_tokens)
        padded = max(padded, width)
        if padded > width:
            prompt_ids = tf.pad(prompt_ids, [[0, 0], [0, padded - width]])
    if not getattr(model, "built", True):
        model(prompt_ids[:, :1])
    return prompt_ids, prompt_lengths, max_new_tokens, prefill_length


def _per_row(value, batch, dtype, default):
    if value is None:
        value = default
    value = tf.cast(tf.convert_to_tensor(value), dtype)
    return tf.broadcast_to(value, [batch])


def _add_suppressed(static: dict, suppressed_token_ids) -> None:
    """Pass non-default suppressed ids to the loop (the default keeps the usual trace)."""
    if suppressed_token_ids is not None:
        suppressed = tuple(int(t) for t in suppressed_token_ids)
        if suppressed != SUPPRESSED_TOKEN_IDS:
            static["suppressed"] = suppressed


def _stop_tensor(stop_token_ids):
    return tf.reshape(tf.cast(tf.convert_to_tensor(list(stop_token_ids), tf.int32), tf.int32), [-1])


# ------------------------------------------------------------------------------------------------
# public API


def _sampling_decode(
    cached,
    model,
    prompt_ids,
    prompt_lengths,
    max_new_tokens,
    row_max_new_tokens,
    temperature,
    top_k,
    top_p,
    seeds,
    stop_token_ids,
    jit_compile,
    prefill_length,
    suppressed_token_ids=None,
):
    prompt_ids, prompt_lengths, max_new_tokens, prefill_length = _prepare(
        model, prompt_ids, prompt_lengths, max_new_tokens, prefill_length
    )
    batch = _dim(prompt_ids, 0)
    sample = temperature is not None
    row_max = tf.minimum(
        _per_row(row_max_new_tokens, batch, tf.int32, max_new_tokens), max_new_tokens
    )
    tensors = (
        prompt_ids,
        prompt_lengths,
        row_max,
        _per_row(temperature, batch, tf.float32, 0.0),
        _per_row(top_k, batch, tf.int32, 0),
        _per_row(top_p, batch, tf.float32, 1.0),
        _per_row(seeds, batch, tf.int64, 0),
        _stop_tensor(stop_token_ids),
    )
    kind = (
        ("sample" if sample else "greedy")
        if cached
        else ("uncached_sample" if sample else "uncached_greedy")
    )
    static = {"max_new_tokens": max_new_tokens, "prefill_length": prefill_length}
    _add_suppressed(static, suppressed_token_ids)
    return _run(model, kind, jit_compile, tensors, static)


def generate_ids(
    model,
    prompt_ids,
    prompt_lengths,
    max_new_tokens: int,
    *,
    row_max_new_tokens=None,
    temperature=None,
    top_k=None,
    top_p=None,
    seeds=None,
    stop_token_ids=(),
    jit_compile: bool | None = None,
    prefill_length: int | None = None,
    suppressed_token_ids=None,
):
    """Decode with the model's cache; returns ``(new_ids (B, max_new_tokens), num_new (B,))``.

    Args:
      model: a ``CausalLM`` (``init_cache`` / ``call_with_cache``).
      prompt_ids: ``(B, P)`` int32, right-padded with 0.
      prompt_lengths: ``(B,)`` int32, each ``>= 1``.
      max_new_tokens: static upper bound on new tokens (a Python int).
      row_max_new_tokens: ``(B,)`` per-row budget (default ``max_new_tokens`` for all rows).
      temperature, top_k, top_p, seeds: ``(B,)`` per-row sampling settings (scalars are
        broadcast). ``temperature=None`` decodes greedily (a cheaper specialised loop); rows
        with ``temperature <= 0`` are greedy too. See ``zoo.generation.sampling``.
      stop_token_ids: ids that end a row; the stop token itself is not returned.
      suppressed_token_ids: ids never chosen (default ``SUPPRESSED_TOKEN_IDS``, <pad> and
        <bos>; pass the tokenizer's ``suppressed_ids``).
      jit_compile: XLA or not; ``None`` = XLA when a GPU is visible. Ignored when called inside
        an outer ``tf.function`` (the outer function decides).
      prefill_length: tokens fed in one call before the loop (static int in ``[1, min(P_b)]``).
        Default: ``min(prompt_lengths)`` rounded down to a multiple of ``PROMPT_BUCKET``
        (at least 1) when the lengths are known; inside an outer graph with unknown lengths,
        ``min(prompt_lengths)`` as a tensor (needs a model that accepts an unknown time
        dimension, and no XLA -- pass an int under XLA).

    The new ids are padded with 0 after ``num_new`` tokens. A row stops after its budget or at a
    stop token; the loop exits as soon as every row has stopped. Raises ``ValueError`` if
    ``P + max_new_tokens`` exceeds ``model.max_length``.
    """
    return _sampling_decode(
        True,
        model,
        prompt_ids,
        prompt_lengths,
        max_new_tokens,
        row_max_new_tokens,
        temperature,
        top_k,
        top_p,
        seeds,
        stop_token_ids,
        jit_compile,
        prefill_length,
        suppressed_token_ids,
    )


def generate_ids_uncached(
    model,
    prompt_ids,
    prompt_lengths,
    max_new_tokens: int,
    *,
    row_max_new_tokens=None,
    temperature=None,
    top_k=None,
    top_p=None,
    seeds=None,
    stop_token_ids=(),
    jit_compile: bool | None = None,
    prefill_length: int | None = None,
    suppressed_token_ids=None,
):
    """Same contract as ``generate_ids`` but runs ``model(buffer)`` over the whole
    ``(B, P + max_new_tokens)`` buffer at every step (no cache): the slow reference."""
    return _sampling_decode(
        False,
        model,
        prompt_ids,
        prompt_lengths,
        max_new_tokens,
        row_max_new_tokens,
        temperature,
        top_k,
        top_p,
        seeds,
        stop_token_ids,
        jit_compile,
        prefill_length,
        suppressed_token_ids,
    )


def beam_search_ids(
    model,
    prompt_ids,
    prompt_lengths,
    max_new_tokens: int,
    num_beams: int,
    *,
    length_penalty: float = 0.0,
    stop_token_ids=(),
    jit_compile: bool | None = None,
    prefill_length: int | None = None,
    suppressed_token_ids=None,
):
    """Beam search; returns the best hypothesis per row as ``(new_ids (B, N), num_new (B,))``.

    A hypothesis is scored by the sum of its tokens' log-probabilities (a stop token counts as a
    scored token but is not returned), divided by ``length ** length_penalty`` when
    ``length_penalty != 0`` (``length`` = scored tokens). Beams of a row share its prompt: the
    prefilled cache is expanded to ``B * num_beams`` rows and every step reorders every cache
    leaf with ``tf.gather(leaf, beam_indices)``.

    Finished beams (stop token) stay in the beam with a frozen score, so they compete with live
    ones, and the best finished hypothesis of each row is also kept aside, so it cannot be lost.
    A row stops after ``max_new_tokens`` steps or once no live beam can still beat its best
    finished hypothesis. ``num_beams=1`` is exactly greedy decoding.
    """
    prompt_ids, prompt_lengths, max_new_tokens, prefill_length = _prepare(
        model, prompt_ids, prompt_lengths, max_new_tokens, prefill_length
    )
    num_beams = operator.index(num_beams)
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    tensors = (prompt_ids, prompt_lengths, _stop_tensor(stop_token_ids))
    static = {
        "max_new_tokens": max_new_tokens,
        "num_beams": num_beams,
        "length_penalty": float(length_penalty),
        "prefill_length": prefill_length,
    }
    _add_suppressed(static, suppressed_token_ids)
    return _run(model, "beam", jit_compile, tensors, static)
