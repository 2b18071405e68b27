"""The counter-based random draw of the samplers: uniform noise from ``(seed, step, token)``.

There is no stateful random number generator: the noise for a row is a pure function of
``(seed, step, token index)``, so a request gives the same sample whatever else shares its batch
and a decoding loop is reproducible. The hash is written once (``row_uniform``) over a small
*word arithmetic* object, so each runtime does the same 32-bit arithmetic with the integer ops it
has, bit for bit:

* ``Int64Words``: 32-bit words held in int64 tensors with TensorFlow's bitwise ops (every product
  stays below 2**63, so stock CPU/GPU kernels and XLA agree) -- the TensorFlow backend and the
  SavedModel export;
* ``LiteRTWords``: the same words, but xor and shifts on int32 bit patterns and products reduced
  with ``FLOOR_MOD`` (LiteRT has no int64 bitwise builtins) -- the LiteRT export;
* ``Uint32Words``: native wrapping uint32 arithmetic with ``keras.ops`` -- the JAX backend (JAX
  has no int64 unless x64 is switched on, so its seeds come in as two uint32 words).

The hash, with ``fmix32`` MurmurHash3's 32-bit finaliser (a bijection with full avalanche)::

    s_lo, s_hi = seed mod 2**32, (seed >> 32) mod 2**32
    key        = fmix32(s_lo ^ fmix32(s_hi ^ 0x9E3779B9))
    k_t        = fmix32((key + 0x9E3779B1 * (step + 1)) mod 2**32)
    h[j]       = fmix32((fmix32(k_t ^ (0x27D4EB2F * (j + 1) mod 2**32)) + k_t) mod 2**32)
    u[j]       = ((h[j] >> 8) + 0.5) / 2**24

The top 24 bits of ``h`` are used so that ``u`` is exactly representable in float32 and lies in
``[2**-25, 1 - 2**-25]``.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from zoo.backends import current

__all__ = [
    "Int64Words",
    "LiteRTWords",
    "Uint32Words",
    "Words",
    "default_words",
    "gumbel_noise",
    "row_uniform",
]

_MASK32 = 0xFFFFFFFF
_U32 = 1 << 32


class Words:
    """32-bit word arithmetic for ``row_uniform``: subclasses choose the integer ops.

    A *word* is a tensor holding values in ``[0, 2**32)``; the methods return words.
    """

    def split_seed(self, seeds):
        """Per-row seeds -> ``(low word, high word)``, each ``(B,)``."""
        raise NotImplementedError

    def seed_input(self, seeds: np.ndarray):
        """NumPy int64 seeds ``(B,)`` -> the array ``split_seed`` expects."""
        return np.asarray(seeds, np.int64)

    def constant(self, value: int):
        """A scalar word."""
        raise NotImplementedError

    def counter(self, start, stop):
        """Words ``start, start + 1, ..., stop - 1`` (``stop`` may be a scalar tensor)."""
        raise NotImplementedError

    def from_int(self, value):
        """An int32/int64 scalar or tensor -> its value mod 2**32 as a word."""
        raise NotImplementedError

    def add(self, a, b):
        """``(a + b) mod 2**32``."""
        raise NotImplementedError

    def mul(self, x, constant: int):
        """``(x * constant) mod 2**32``."""
        raise NotImplementedError

    def xor(self, a, b):
        """``a ^ b``."""
        raise NotImplementedError

    def shr(self, a, bits: int):
        """``a >> bits`` (logical)."""
        raise NotImplementedError

    def to_float(self, a):
        """Words below 2**24 -> float32, exactly."""
        return ops.cast(a, "float32")


class Int64Words(Words):
    """Words in int64 tensors with TensorFlow's int64 bitwise ops (TensorFlow and SavedModel)."""

    def split_seed(self, seeds):
        import tensorflow as tf

        seeds = tf.cast(seeds, tf.int64)
        low = tf.bitwise.bitwise_and(seeds, _MASK32)
        high = tf.bitwise.bitwise_and(self.shr(seeds, 32), _MASK32)
        return low, high

    def constant(self, value: int):
        import tensorflow as tf

        return tf.constant(value, tf.int64)

    def counter(self, start, stop):
        import tensorflow as tf

        return tf.range(start, tf.cast(stop, tf.int64), dtype=tf.int64)

    def from_int(self, value):
        import tensorflow as tf

        return tf.bitwise.bitwise_and(tf.cast(value, tf.int64), _MASK32)

    def add(self, a, b):
        import tensorflow as tf

        return tf.bitwise.bitwise_and(a + b, _MASK32)

    def mul(self, x, constant: int):
        # two 16-bit halves of the constant keep every product below 2**48
        import tensorflow as tf

        low = x * (constant & 0xFFFF)
        high = tf.bitwise.bitwise_and(x * (constant >> 16), 0xFFFF) * 0x10000
        return tf.bitwise.bitwise_and(low + high, _MASK32)

    def xor(self, a, b):
        import tensorflow as tf

        return tf.bitwise.bitwise_xor(a, b)

    def shr(self, a, bits: int):
        import tensorflow as tf

        return tf.bitwise.right_shift(a, tf.constant(bits, tf.int64))


class LiteRTWords(Int64Words):
    """Words in int64 tensors using only LiteRT builtins: int64 multiply and ``FLOOR_MOD``,
    int32 ``BITWISE_XOR`` / ``RIGHT_SHIFT`` on the words' bit patterns."""

    def split_seed(self, seeds):
        # seed mod 2**32 and (seed >> 32) mod 2**32 without int64 shifts: the high half is cut
        # into two 16-bit pieces that float32 holds exactly
        import tensorflow as tf

        seeds = tf.cast(seeds, tf.int64)
        low = tf.math.floormod(seeds, _U32)
        rest = seeds - low  # 2**32 * (seed >> 32), exactly
        part = tf.math.floormod(rest, 1 << 48)  # 2**32 * (bits 32..47)
        middle = tf.cast(tf.cast(part, tf.float32) * (2.0**-32), tf.int64)
        top = tf.cast(tf.cast(rest - part, tf.float32) * (2.0**-48), tf.int64)
        return low, tf.math.floormod(top, 1 << 16) * (1 << 16) + middle

    def from_int(self, value):
        import tensorflow as tf

        return tf.math.floormod(tf.cast(value, tf.int64), _U32)

    def add(self, a, b):
        import tensorflow as tf

        return tf.math.floormod(a + b, _U32)

    def mul(self, x, constant: int):
        import tensorflow as tf

        low, high = constant & 0xFFFF, constant >> 16
        return tf.math.floormod(x * low + tf.math.floormod(x * high, 1 << 16) * (1 << 16), _U32)

    @staticmethod
    def _to_int32(x):
        import tensorflow as tf

        return tf.cast(tf.where(x >= (1 << 31), x - _U32, x), tf.int32)

    def xor(self, a, b):
        import tensorflow as tf

        mixed = tf.bitwise.bitwise_xor(self._to_int32(a), self._to_int32(b))
        return tf.math.floormod(tf.cast(mixed, tf.int64), _U32)

    def shr(self, a, bits: int):
        import tensorflow as tf

        shifted = tf.bitwise.right_shift(self._to_int32(a), tf.constant(bits, tf.int32))
        return tf.math.floormod(tf.cast(shifted, tf.int64), 1 << (32 - bits))  # arithmetic -> logical


class Uint32Words(Words):
    """Native wrapping uint32 words with ``keras.ops`` (the JAX backend). Seeds arrive as
    ``(B, 2)`` uint32 ``[low, high]`` words (``seed_input`` makes them from int64 seeds)."""

    def split_seed(self, seeds):
        seeds = ops.convert_to_tensor(seeds, "uint32")
        return seeds[:, 0], seeds[:, 1]

    def seed_input(self, seeds: np.ndarray):
        seeds = np.asarray(seeds, np.int64).astype(np.uint64)
        return np.stack([seeds & _MASK32, seeds >> np.uint64(32)], axis=1).astype(np.uint32)

    def constant(self, value: int):
        return ops.convert_to_tensor(np.uint32(value), "uint32")

    def counter(self, start, stop):
        return ops.cast(ops.arange(start, stop), "uint32")

    def from_int(self, value):
        return ops.cast(ops.cast(value, "int32"), "uint32")

    def add(self, a, b):
        return ops.add(a, b)

    def mul(self, x, constant: int):
        return ops.multiply(x, self.constant(constant))

    def xor(self, a, b):
        return ops.bitwise_xor(a, b)

    def shr(self, a, bits: int):
        return ops.right_shift(a, self.constant(bits))


def default_words() -> Words:
    """The word arithmetic of the current Keras backend."""
    return Uint32Words() if current() == "jax" else Int64Words()


def _fmix32(words: Words, h):
    """MurmurHash3's 32-bit finaliser."""
    h = words.xor(h, words.shr(h, 16))
    h = words.mul(h, 0x85EBCA6B)
    h = words.xor(h, words.shr(h, 13))
    h = words.mul(h, 0xC2B2AE35)
    return words.xor(h, words.shr(h, 16))


def row_uniform(seeds, step, vocab_size, words: Words | None = None):
    """Counter-based uniform noise: ``(B, V)`` float32 values strictly inside (0, 1).

    ``u[b, j]`` is a pure function of ``(seeds[b], step, j)`` (see the module docstring): a row's
    noise depends only on its own seed and the step, never on the batch it shares.

    Args:
      seeds: ``(B,)`` int32/int64 seeds (negative values are fine), or what ``words.seed_input``
        made of them.
      step: scalar int (the decoding position).
      vocab_size: int or scalar int tensor ``V``.
      words: the word arithmetic (default: the backend's, ``default_words()``).
    """
    w = default_words() if words is None else words
    low, high = w.split_seed(seeds)
    key = _fmix32(w, w.xor(low, _fmix32(w, w.xor(high, w.constant(0x9E3779B9)))))
    counter = w.add(w.from_int(step), w.constant(1))
    k_t = _fmix32(w, w.add(key, w.mul(counter, 0x9E3779B1)))  # (B,)
    token = w.mul(w.counter(1, vocab_size + 1), 0x27D4EB2F)  # (V,)
    h = _fmix32(w, w.xor(k_t[:, None], token[None, :]))
    h = _fmix32(w, w.add(h, k_t[:, None]))
    top24 = w.to_float(w.shr(h, 8))
    return (top24 + 0.5) * (1.0 / 16777216.0)


def gumbel_noise(seeds, step, vocab_size, words: Words | None = None):
    """``g = -log(-log u)`` with ``u = row_uniform(seeds, step, vocab_size)``: standard Gumbel."""
    u = row_uniform(seeds, step, vocab_size, words)
    return -ops.log(-ops.log(u))
