"""Samplers: small objects that choose the next token from the logits at a step.

    loop.decode(model, GreedySampler(), prompts, settings)
    loop.decode(model, RandomSampler(temperature=t, top_k=k, top_p=p, seeds=s), prompts, settings)
    beam.beam_search(model, BeamSampler(num_beams=4, length_penalty=1.0), prompts, settings)

A sampler is handed the float32 next-token logits ``z`` of every row ``(B, V)`` and the absolute
position ``step`` of the token it chooses, and returns ``(B,)`` int32 ids. Per-row settings are
tensors held by the sampler (``tensors()`` / ``rebind(...)`` carry them in and out of a compiled
function), so one compiled loop serves every request. Everything is written with ``keras.ops``
and runs eagerly, in a ``tf.function`` on stock kernels (no XLA-only ops), under XLA and under
``jax.jit``.

Filtering, for one row with temperature ``T``, ``top_k = k``, ``top_p = p``:

* temperature: ``z' = z / T`` (rows with ``T <= 0`` are decoded greedily and are not scaled);
* top-k (``k > 0``): keep ``z'_j`` iff ``z'_j >= z'_(k)``, the k-th largest value (ties at the
  threshold are kept, so more than ``k`` tokens survive only on exact ties);
* top-p (``p < 1``), applied to what top-k left: sort ``q = softmax(z')`` in decreasing order
  and keep token ``(j)`` iff the mass before it, ``q_(1) + ... + q_(j-1)``, is ``< p`` (so at
  least one token survives);
* removed tokens get ``-inf``.

Sampling uses the Gumbel-max trick: ``argmax_j (z''_j + g_j)`` with ``g_j = -log(-log u_j)`` and
``u`` the counter-based uniform noise of ``zoo.generation.random_draw`` is an exact draw from
``softmax(z'')``, deterministic given ``(seed, step)``.
"""

from __future__ import annotations

import operator

from keras import ops

from zoo.backends import current
from zoo.generation.random_draw import Words, default_words, gumbel_noise

__all__ = [
    "BeamSampler",
    "GreedySampler",
    "RandomSampler",
    "Sampler",
    "argmax",
    "filter_logits",
    "next_token",
]

_NEG_INF = float("-inf")


def argmax(x):
    """``argmax`` over the last axis as int32 (ties: the first index)."""
    if current() == "tensorflow":  # one ArgMax op: what stock TF Serving and LiteRT kernels run
        import tensorflow as tf

        return tf.argmax(x, axis=-1, output_type=tf.int32)
    return ops.cast(ops.argmax(x, axis=-1), "int32")


def _size(x, axis: int):
    static = x.shape[axis]
    return static if static is not None else ops.shape(x)[axis]


def _column(x, index):
    """``x[b, index[b]]`` for ``x (B, N)`` and ``index (B,)``: a masked max, which every backend
    and LiteRT run with plain elementwise ops."""
    columns = ops.arange(_size(x, 1), dtype="int32")[None, :]
    picked = ops.where(columns == index[:, None], x, _NEG_INF)
    return ops.max(picked, axis=1)


def filter_logits(logits, temperature, top_k, top_p):
    """Apply per-row temperature, top-k and top-p (nucleus) filtering (see the module docstring).

    Args:
      logits: ``(B, V)`` float logits.
      temperature: ``(B,)``; ``T > 0`` divides the row's logits by ``T``; ``T <= 0`` leaves the
        row unscaled (such rows are decoded greedily by ``RandomSampler``).
      top_k: ``(B,)`` int; ``<= 0`` switches top-k off for the row.
      top_p: ``(B,)`` float; ``>= 1`` switches nucleus filtering off for the row.

    Returns:
      ``(B, V)`` float32 logits, removed tokens set to ``-inf``. At least one token per row
      survives (the most probable one).
    """
    logits = ops.cast(logits, "float32")
    temperature = ops.cast(temperature, "float32")
    scale = ops.where(temperature > 0.0, temperature, ops.ones_like(temperature))
    x = logits / scale[:, None]
    top_k = ops.cast(top_k, "int32")
    top_p = ops.cast(top_p, "float32")
    # the sort is skipped at run time when no row filters (the common temperature-only case)
    needed = ops.any(ops.logical_or(top_k > 0, top_p < 1.0))
    return ops.cond(needed, lambda: _top_k_top_p(x, top_k, top_p), lambda: x)


def _top_k_top_p(x, top_k, top_p):
    vocab = _size(x, 1)
    sorted_x = ops.top_k(x, vocab, sorted=True)[0]  # decreasing

    # top-k: threshold at the k-th largest value
    kth = _column(sorted_x, ops.clip(top_k, 1, vocab) - 1)
    kth = ops.where(top_k > 0, kth, _NEG_INF)
    x = ops.where(x >= kth[:, None], x, _NEG_INF)
    sorted_x = ops.where(sorted_x >= kth[:, None], sorted_x, _NEG_INF)

    # top-p on what top-k left: keep sorted token j iff the mass before it is < p
    probs = ops.softmax(sorted_x, axis=-1)
    mass_before = ops.cumsum(ops.pad(probs[:, :-1], [[0, 0], [1, 0]]), axis=-1)
    first = ops.arange(vocab, dtype="int32")[None, :] == 0
    keep = ops.logical_or(mass_before < top_p[:, None], first)
    num_keep = ops.sum(ops.cast(keep, "int32"), axis=1)
    pth = _column(sorted_x, num_keep - 1)
    drop = ops.logical_and((top_p < 1.0)[:, None], x < pth[:, None])
    return ops.where(drop, _NEG_INF, x)


class Sampler:
    """Chooses the next token from the logits at a step.

    ``choose(logits (B, V) float32, step) -> (B,) int32``. Per-row settings are tensors;
    ``tensors()`` lists them and ``rebind(*tensors)`` makes the same sampler over other tensors
    (the traced ones inside a compiled function). ``key()`` names what a compiled loop
    specialises on (the class and static settings).
    """

    def choose(self, logits, step):
        raise NotImplementedError

    def tensors(self) -> tuple:
        return ()

    def rebind(self, *tensors) -> Sampler:
        del tensors
        return self

    def key(self) -> tuple:
        return (type(self).__name__,)

    def shifted(self, offset) -> Sampler:
        """The sampler whose draw at step ``t`` is this one's at ``t + offset`` (a sliding
        window's later round); samplers without randomness return themselves."""
        del offset
        return self


class GreedySampler(Sampler):
    """Greedy decoding: ``x_t = argmax_j z_j`` (ties: the smallest id)."""

    def choose(self, logits, step):
        del step
        return argmax(logits)


class RandomSampler(Sampler):
    """Per-row temperature / top-k / top-p sampling with the counter-based Gumbel-max draw:

        x_t = argmax_j (filter_logits(z)_j + g_j),   g_j = -log(-log u_j),
        u = row_uniform(seed, t, V)

    an exact draw from ``softmax(filter_logits(z))``. Rows with ``temperature <= 0`` take
    ``argmax_j z_j`` (greedy, filters ignored). ``words`` is the integer arithmetic of the draw
    (``zoo.generation.random_draw``; default: the backend's; LiteRT passes ``LiteRTWords``).

    Args:
      temperature: ``(B,)`` float32.
      top_k: ``(B,)`` int32 (``<= 0``: off).
      top_p: ``(B,)`` float32 (``>= 1``: off).
      seeds: ``(B,)`` int64 seeds (or ``words.seed_input(seeds)``).
      step_offset: int32 scalar added to ``t`` in the draw: the sliding window's round ``r``
        passes ``r * L`` so that no two rounds reuse a draw (``zoo.generation.window``).
    """

    def __init__(self, temperature, top_k, top_p, seeds, step_offset=0, *,
                 words: Words | None = None):
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.seeds = seeds
        self.step_offset = ops.convert_to_tensor(step_offset, "int32")
        self.words = default_words() if words is None else words

    def choose(self, logits, step):
        logits = ops.cast(logits, "float32")
        temperature = ops.cast(self.temperature, "float32")
        greedy = argmax(logits)
        filtered = filter_logits(logits, temperature, self.top_k, self.top_p)
        noise = gumbel_noise(self.seeds, step + self.step_offset, _size(logits, 1), self.words)
        sampled = argmax(filtered + noise)
        return ops.where(temperature > 0.0, sampled, greedy)

    def tensors(self) -> tuple:
        return (self.temperature, self.top_k, self.top_p, self.seeds, self.step_offset)

    def shifted(self, offset) -> RandomSampler:
        """The same sampler drawing at ``t + offset`` (added to the current offset)."""
        return RandomSampler(self.temperature, self.top_k, self.top_p, self.seeds,
                             self.step_offset + offset, words=self.words)

    def rebind(self, *tensors) -> RandomSampler:
        return RandomSampler(*tensors, words=self.words)

    def key(self) -> tuple:
        return (type(self).__name__, type(self.words).__name__)


class BeamSampler(Sampler):
    """Beam search settings (the search itself is ``zoo.generation.beam.beam_search``).

    A hypothesis ``y`` is scored by ``s(y) = sum_t log p(y_t | y_<t) / |y| ** length_penalty``
    (``|y|`` counts a final stop token; no division when ``length_penalty == 0``); each step
    keeps the ``num_beams`` best extensions of the live beams. ``num_beams=1`` is greedy.
    """

    def __init__(self, num_beams: int = 4, length_penalty: float = 0.0):
        try:
            num_beams = operator.index(num_beams)
        except TypeError:
            raise ValueError(f"num_beams must be an int, got {num_beams!r}") from None
        if num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
        self.num_beams = num_beams
        self.length_penalty = float(length_penalty)

    def choose(self, logits, step):
        raise TypeError("BeamSampler keeps several hypotheses: run it with beam.beam_search")

    def key(self) -> tuple:
        return (type(self).__name__, self.num_beams, self.length_penalty)


def next_token(logits, temperature, top_k, top_p, seeds, step):
    """``RandomSampler(temperature, top_k, top_p, seeds).choose(logits, step)``: ``(B,)`` int32."""
    return RandomSampler(temperature, top_k, top_p, seeds).choose(logits, step)
