"""Per-row logit filtering and stateless, counter-based sampling.

Everything here is plain TensorFlow that runs the same way eagerly, in a ``tf.function`` on stock
CPU/GPU kernels (no XLA-only ops) and under ``jit_compile=True``. There is no stateful random
number generator: the noise for a row is a pure function of ``(seed, step, token index)``, so a
request gives the same sample whatever else shares its batch, and a decoding loop is reproducible.

Notation for one row with logits ``z`` (vocabulary ``V``), temperature ``T``, ``top_k`` = ``k``
and ``top_p`` = ``p``:

* temperature: ``z' = z / T`` (rows with ``T <= 0`` are decoded greedily and are not scaled);
* top-k (``k > 0``): keep ``z'_j`` iff ``z'_j >= z'_(k)``, the k-th largest value (ties at the
  threshold are kept, so more than ``k`` tokens survive only on exact ties);
* top-p (``p < 1``), applied to the distribution left by top-k: sort ``q = softmax(z')``
  in decreasing order and keep the first ``n`` tokens, ``n`` the smallest count with
  ``q_(1) + ... + q_(n) >= p`` (``n >= 1`` always); equivalently token ``(j)`` is kept iff the
  probability mass strictly before it, ``q_(1) + ... + q_(j-1)``, is ``< p``;
* removed tokens get ``-inf``.

Sampling uses the Gumbel-max trick: ``argmax_j (z''_j + g_j)`` with ``g_j = -log(-log u_j)`` and
``u_j`` uniform on (0, 1) is a draw from ``softmax(z'')``.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["filter_logits", "row_uniform", "gumbel_noise", "next_token"]

_MASK32 = 0xFFFFFFFF


def _static_or_dynamic(x: tf.Tensor, axis: int):
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


def filter_logits(logits, temperature, top_k, top_p) -> tf.Tensor:
    """Apply per-row temperature, top-k and top-p (nucleus) filtering.

    Args:
      logits: ``(B, V)`` float logits.
      temperature: ``(B,)``; ``T > 0`` divides the row's logits by ``T``; ``T <= 0`` leaves the
        row unscaled (such rows are decoded greedily by ``next_token``).
      top_k: ``(B,)`` int; ``<= 0`` switches top-k off for the row.
      top_p: ``(B,)`` float; ``>= 1`` switches nucleus filtering off for the row.

    Returns:
      ``(B, V)`` float32 logits, removed tokens set to ``-inf``. At least one token per row
      survives (the most probable one).
    """
    logits = tf.cast(logits, tf.float32)
    vocab = _static_or_dynamic(logits, 1)
    temperature = tf.cast(temperature, tf.float32)
    scale = tf.where(temperature > 0.0, temperature, tf.ones_like(temperature))
    x = logits / scale[:, None]
    top_k = tf.cast(top_k, tf.int32)
    top_p = tf.cast(top_p, tf.float32)
    # the sort is skipped at run time when no row filters (the common temperature-only case)
    needed = tf.reduce_any(tf.logical_or(top_k > 0, top_p < 1.0))
    return tf.cond(needed, lambda: _top_k_top_p(x, top_k, top_p, vocab), lambda: x)


def _top_k_top_p(x, top_k, top_p, vocab):
    neg_inf = tf.constant(float("-inf"), tf.float32)
    sorted_x = tf.sort(x, axis=-1, direction="DESCENDING")

    # top-k: threshold at the k-th largest value.
    k = tf.clip_by_value(top_k, 1, vocab)
    kth = tf.gather(sorted_x, k - 1, axis=1, batch_dims=1)
    kth = tf.where(top_k > 0, kth, tf.fill(tf.shape(kth), neg_inf))
    x = tf.where(x >= kth[:, None], x, neg_inf)
    sorted_x = tf.where(sorted_x >= kth[:, None], sorted_x, neg_inf)

    # top-p on what top-k left: keep sorted token j iff the mass before it is < p.
    probs = tf.nn.softmax(sorted_x, axis=-1)
    mass_before = tf.cumsum(probs, axis=-1, exclusive=True)
    keep = mass_before < top_p[:, None]
    first = tf.range(vocab)[None, :] == 0
    keep = tf.logical_or(keep, first)
    num_keep = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
    pth = tf.gather(sorted_x, num_keep - 1, axis=1, batch_dims=1)
    drop = tf.logical_and((top_p < 1.0)[:, None], x < pth[:, None])
    return tf.where(drop, neg_inf, x)


def _mul32(x: tf.Tensor, constant: int) -> tf.Tensor:
    """``(x * constant) mod 2**32`` for int64 ``x`` in ``[0, 2**32)`` without int64 overflow."""
    lo = constant & 0xFFFF
    hi = constant >> 16
    a = x * lo  # < 2**48
    b = tf.bitwise.bitwise_and(x * hi, 0xFFFF) * 0x10000  # < 2**32
    return tf.bitwise.bitwise_and(a + b, _MASK32)


def _xor(a: tf.Tensor, b) -> tf.Tensor:
    return tf.bitwise.bitwise_xor(a, b)


def _shr(a: tf.Tensor, bits: int) -> tf.Tensor:
    return tf.bitwise.right_shift(a, tf.constant(bits, tf.int64))


def _fmix32(h: tf.Tensor) -> tf.Tensor:
    """MurmurHash3's 32-bit finaliser: a bijection on [0, 2**32) with full avalanche."""
    h = _xor(h, _shr(h, 16))
    h = _mul32(h, 0x85EBCA6B)
    h = _xor(h, _shr(h, 13))
    h = _mul32(h, 0xC2B2AE35)
    return _xor(h, _shr(h, 16))


def row_uniform(seeds, step, vocab_size) -> tf.Tensor:
    """Counter-based uniform noise: ``(B, V)`` float32 values strictly inside (0, 1).

    ``u[b, j]`` is a pure function of ``(seeds[b], step, j)``: a row's noise depends only on its
    own seed and the step, never on the batch it shares. The hash works on 32-bit words held in
    int64 tensors (every product stays below 2**63, so no op overflows and stock CPU/GPU kernels
    and XLA agree bit for bit):

        s_lo, s_hi = seed mod 2**32, (seed >> 32) mod 2**32
        key        = fmix32(s_lo ^ fmix32(s_hi ^ 0x9E3779B9))
        k_t        = fmix32((key + 0x9E3779B1 * (step + 1)) mod 2**32)
        h[j]       = fmix32((fmix32(k_t ^ (0x27D4EB2F * (j + 1) mod 2**32)) + k_t) mod 2**32)
        u[j]       = ((h[j] >> 8) + 0.5) / 2**24

    ``fmix32`` is MurmurHash3's finaliser. The top 24 bits of ``h`` are used so that ``u`` is
    exactly representable in float32 and lies in ``[2**-25, 1 - 2**-25]``.

    Args:
      seeds: ``(B,)`` int32 or int64 seeds (negative values are fine).
      step: scalar int (the decoding position); any int32/int64 value.
      vocab_size: int or scalar int tensor ``V``.
    """
    seeds = tf.cast(seeds, tf.int64)
    s_lo = tf.bitwise.bitwise_and(seeds, _MASK32)
    s_hi = tf.bitwise.bitwise_and(_shr(seeds, 32), _MASK32)
    key = _fmix32(_xor(s_lo, _fmix32(_xor(s_hi, 0x9E3779B9))))

    step = tf.bitwise.bitwise_and(tf.cast(step, tf.int64) + 1, _MASK32)
    k_t = _fmix32(tf.bitwise.bitwise_and(key + _mul32(step, 0x9E3779B1), _MASK32))  # (B,)

    j = tf.range(1, tf.cast(vocab_size, tf.int64) + 1, dtype=tf.int64)  # (V,)
    cj = _mul32(j, 0x27D4EB2F)
    h = _fmix32(_xor(k_t[:, None], cj[None, :]))
    h = _fmix32(tf.bitwise.bitwise_and(h + k_t[:, None], _MASK32))
    top24 = tf.cast(_shr(h, 8), tf.float32)
    return (top24 + 0.5) * (1.0 / 16777216.0)


def gumbel_noise(seeds, step, vocab_size) -> tf.Tensor:
    """``g = -log(-log u)`` with ``u = row_uniform(seeds, step, vocab_size)``: standard Gumbel."""
    u = row_uniform(seeds, step, vocab_size)
    return -tf.math.log(-tf.math.log(u))


def next_token(logits, temperature, top_k, top_p, seeds, step) -> tf.Tensor:
    """Choose one token per row: ``(B,)`` int32.

    Rows with ``temperature <= 0``: ``argmax_j z_j`` (greedy, filters ignored).
    Other rows: ``argmax_j (filter_logits(z)_j + g_j)`` with Gumbel noise
    ``g = -log(-log u)``, ``u = row_uniform(seeds, step, V)`` -- an exact draw from
    ``softmax(filter_logits(z))`` that is deterministic given ``(seed, step)``.
    """
    logits = tf.cast(logits, tf.float32)
    temperature = tf.cast(temperature, tf.float32)
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    filtered = filter_logits(logits, temperature, top_k, top_p)
    noise = gumbel_noise(seeds, step, _static_or_dynamic(logits, 1))
    sampled = tf.argmax(filtered + noise, axis=-1, output_type=tf.int32)
    return tf.where(temperature > 0.0, sampled, greedy)
