"""LiteRT-friendly decoding and scoring for ``export.tflite``.

The zoo's own loop (``zoo.generation.decode``) converts to LiteRT builtins for ``transformer_lm``
and ``mlp_lm``, but not for the recurrent models: a Keras RNN layer runs its time steps in a
nested ``while`` over TensorLists, which the converter cannot lower inside the decoding
``WHILE`` ("Lowering tensor list ops is failed"). So the loop here drives every model through a
small *stepper*:

* transformer / MLP: the model's own ``init_cache`` / ``call_with_cache``;
* recurrent models: one Keras cell call per token (``layer.cell``, the same function the Keras
  layer applies at every step), with the states as the cache.

Greedy semantics are those of ``zoo.generation.generate(strategy="greedy")``: the prompt is
prefilled in one call of ``max(1, shortest // 16 * 16)`` tokens (the Python API's prefill
length), the rest of the prompt is fed token by token, ``<pad>`` and ``<bos>`` are never chosen,
stop ids end a row. Sampling reproduces ``zoo.generation.sampling.next_token`` bit for bit: the
same filters (``filter_logits``) and the same counter-based hash, rewritten with int64
multiply/``FLOOR_MOD`` and int32 ``BITWISE_XOR``/``RIGHT_SHIFT`` (LiteRT has no int64 bitwise
builtins).
"""

from __future__ import annotations

import tensorflow as tf

from zoo.errors import ZooError
from zoo.generation.decode import PROMPT_BUCKET, SUPPRESSED_TOKEN_IDS
from zoo.generation.sampling import filter_logits

# LiteRT stores -inf constants as the lowest float; any very negative value behaves the same.
_NEG = float("-inf")
_U32 = 1 << 32


# ------------------------------------------------------------------------------------------------
# steppers


class _CacheStepper:
    """Transformer / MLP: the model's own cache contract."""

    def __init__(self, model):
        self.model = model

    def init(self, batch, total):
        return self.model.init_cache(batch, total)

    def step(self, ids, cache, index):
        logits, cache = self.model.call_with_cache(ids, cache, index)
        return logits[:, -1, :], cache

    def sequence_logits(self, ids):
        return tf.cast(self.model(ids, training=False), tf.float32)


class _RecurrentStepper:
    """Recurrent LM: ``embedding -> cell_1 -> ... -> cell_L -> lm_head`` one token at a time."""

    def __init__(self, model):
        self.model = model
        self.rnn = model.rnn
        self.vocab_size = model.vocab_size

    def init(self, batch, total):
        del total
        return tuple(self.rnn.get_initial_state(batch))

    def _one(self, token, states):
        x = self.model.embedding(token[:, None])[:, 0, :]
        per_layer = self.rnn.states_per_layer
        new_states = []
        for i, layer in enumerate(self.rnn.rnn_layers):
            state = list(states[i * per_layer : (i + 1) * per_layer])
            x, state = layer.cell(x, state, training=False)
            new_states.extend(state if isinstance(state, (list, tuple)) else [state])
        return tf.cast(self.model.lm_head(x), tf.float32), tuple(new_states)

    def step(self, ids, states, index):
        del index
        if ids.shape[1] == 1:
            return self._one(ids[:, 0], states)
        steps = tf.shape(ids)[1]
        logits = tf.zeros(tf.stack([tf.shape(ids)[0], self.vocab_size]), tf.float32)

        def body(t, logits, states):
            logits, states = self._one(tf.gather(ids, t, axis=1), states)
            return t + 1, logits, states

        _, logits, states = tf.while_loop(
            lambda t, *_: t < steps, body, (tf.constant(0), logits, states)
        )
        return logits, states

    def sequence_log_likelihood(self, inputs, labels, scored):
        """Sum of ``log p(labels | inputs prefix)`` over the ``scored`` positions (B,)."""
        batch = tf.shape(inputs)[0]
        steps = tf.shape(inputs)[1]
        total = tf.zeros(tf.stack([batch]), tf.float32)

        def body(t, total, states):
            logits, states = self._one(tf.gather(inputs, t, axis=1), states)
            log_probs = tf.nn.log_softmax(logits, axis=-1)
            picked = tf.gather(log_probs, tf.gather(labels, t, axis=1), batch_dims=1)
            total = total + tf.where(tf.gather(scored, t, axis=1), picked, 0.0)
            return t + 1, total, states

        _, total, _ = tf.while_loop(
            lambda t, *_: t < steps, body, (tf.constant(0), total, self.init(batch, None))
        )
        return total


def make_stepper(model):
    from zoo.models.mlp_lm import MLPLM
    from zoo.models.recurrent_lm import RecurrentLM
    from zoo.models.transformer_lm import TransformerLM

    if isinstance(model, RecurrentLM):
        return _RecurrentStepper(model)
    if isinstance(model, (TransformerLM, MLPLM)):
        return _CacheStepper(model)
    raise ZooError(f"LiteRT export: unsupported model class {type(model).__name__}")


# ------------------------------------------------------------------------------------------------
# sampling noise (zoo.generation.sampling.row_uniform with LiteRT builtins only)


def _to_i32(x):
    """uint32 held in int64 -> the same bits as int32."""
    return tf.cast(tf.where(x >= (1 << 31), x - _U32, x), tf.int32)


def _to_u32(x):
    """int32 bits -> uint32 held in int64."""
    return tf.math.floormod(tf.cast(x, tf.int64), _U32)


def _xor(a, b):
    return _to_u32(tf.bitwise.bitwise_xor(_to_i32(a), _to_i32(b)))


def _shr(a, bits: int):
    shifted = tf.bitwise.right_shift(_to_i32(a), tf.constant(bits, tf.int32))  # arithmetic
    return tf.math.floormod(tf.cast(shifted, tf.int64), 1 << (32 - bits))


def _mul32(x, constant: int):
    lo, hi = constant & 0xFFFF, constant >> 16
    return tf.math.floormod(x * lo + tf.math.floormod(x * hi, 1 << 16) * (1 << 16), _U32)


def _fmix32(h):
    h = _xor(h, _shr(h, 16))
    h = _mul32(h, 0x85EBCA6B)
    h = _xor(h, _shr(h, 13))
    h = _mul32(h, 0xC2B2AE35)
    return _xor(h, _shr(h, 16))


def _seed_words(seeds):
    """int64 seeds -> ``(seed mod 2**32, (seed >> 32) mod 2**32)`` without int64 shifts."""
    seeds = tf.cast(seeds, tf.int64)
    low = tf.math.floormod(seeds, _U32)
    rest = seeds - low  # 2**32 * (seed >> 32), exactly
    part = tf.math.floormod(rest, 1 << 48)  # 2**32 * (bits 32..47)
    mid = tf.cast(tf.cast(part, tf.float32) * (2.0**-32), tf.int64)  # exact: <= 16 bits
    top = tf.cast(tf.cast(rest - part, tf.float32) * (2.0**-48), tf.int64)  # exact: <= 16 bits
    high = tf.math.floormod(top, 1 << 16) * (1 << 16) + mid
    return low, high


def row_uniform(seeds, step, vocab_size):
    """Bit-identical to ``zoo.generation.sampling.row_uniform`` (B, V) float32."""
    s_lo, s_hi = _seed_words(seeds)
    key = _fmix32(_xor(s_lo, _fmix32(_xor(s_hi, tf.constant(0x9E3779B9, tf.int64)))))
    step = tf.math.floormod(tf.cast(step, tf.int64) + 1, _U32)
    k_t = _fmix32(tf.math.floormod(key + _mul32(step, 0x9E3779B1), _U32))
    j = tf.range(1, vocab_size + 1, dtype=tf.int64)
    cj = _mul32(j, 0x27D4EB2F)
    h = _fmix32(_xor(k_t[:, None], cj[None, :]))
    h = _fmix32(tf.math.floormod(h + k_t[:, None], _U32))
    top24 = tf.cast(_shr(h, 8), tf.float32)
    return (top24 + 0.5) * (1.0 / 16777216.0)


def next_token(logits, temperature, top_k, top_p, seeds, step, vocab_size):
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    filtered = filter_logits(logits, temperature, top_k, top_p)
    u = row_uniform(seeds, step, vocab_size)
    noise = -tf.math.log(-tf.math.log(u))
    sampled = tf.argmax(filtered + noise, axis=-1, output_type=tf.int32)
    return tf.where(temperature > 0.0, sampled, greedy)


# ------------------------------------------------------------------------------------------------
# the loop


def _suppress(logits, vocab_size, suppressed=SUPPRESSED_TOKEN_IDS):
    if not suppressed:
        return tf.cast(logits, tf.float32)
    banned = tf.reduce_any(
        tf.range(vocab_size)[:, None] == tf.constant(list(suppressed), tf.int32)[None, :],
        axis=-1,
    )
    return tf.where(banned[None, :], tf.constant(_NEG, tf.float32), tf.cast(logits, tf.float32))


def decode(stepper, prompt_ids, lengths, row_max, *, max_new_tokens, vocab_size, stop_ids=(),
           sampling=None, suppressed=SUPPRESSED_TOKEN_IDS):
    """Continue ``prompt_ids`` (B, P) (right-padded, ``lengths >= 1``).

    ``row_max`` (B,): new tokens allowed per row (0 = none). ``sampling``: ``None`` (greedy) or
    ``(temperature, top_k, top_p, seeds)`` per row. ``suppressed``: ids never chosen (the
    tokenizer's ``suppressed_ids``). Returns ``(new_ids (B, M), num_new (B,))``.
    """
    batch = tf.shape(prompt_ids)[0]
    width = tf.shape(prompt_ids)[1]
    total = width + max_new_tokens
    start = tf.maximum(1, tf.reduce_min(lengths) // PROMPT_BUCKET * PROMPT_BUCKET)
    state = stepper.init(batch, total)
    last, state = stepper.step(prompt_ids[:, :start], state, tf.constant(0, tf.int32))
    last = _suppress(last, vocab_size, suppressed)
    out = tf.zeros(tf.stack([batch, max_new_tokens]), tf.int32)
    num_new = tf.zeros(tf.stack([batch]), tf.int32)
    finished = row_max <= 0
    stop = tf.constant(list(stop_ids) or [-1], tf.int32)
    columns = tf.range(max_new_tokens)[None, :]

    def cond(i, last, state, out, num_new, finished):
        return tf.logical_and(i < total, tf.logical_not(tf.reduce_all(finished)))

    def body(i, last, state, out, num_new, finished):
        if sampling is None:
            choice = tf.argmax(last, axis=-1, output_type=tf.int32)
        else:
            choice = next_token(last, *sampling, i, vocab_size)
        in_prompt = i < lengths
        prompt_tok = tf.gather(prompt_ids, tf.minimum(i, width - 1), axis=1)
        tok = tf.where(in_prompt, prompt_tok, choice)
        generating = tf.logical_and(tf.logical_not(in_prompt), tf.logical_not(finished))
        stopped = tf.logical_and(
            generating, tf.reduce_any(tf.equal(tok[:, None], stop[None, :]), axis=-1)
        )
        emit = tf.logical_and(generating, tf.logical_not(stopped))
        write = tf.logical_and(emit[:, None], columns == num_new[:, None])
        out = tf.where(write, tok[:, None], out)
        num_new = num_new + tf.cast(emit, tf.int32)
        finished = tf.logical_or(tf.logical_or(finished, stopped), num_new >= row_max)
        logits, state = stepper.step(tok[:, None], state, i)
        return i + 1, _suppress(logits, vocab_size, suppressed), state, out, num_new, finished

    loop = tf.while_loop(cond, body, (start, last, state, out, num_new, finished))
    return loop[3], loop[4]


# ------------------------------------------------------------------------------------------------
# scoring


def log_likelihood(stepper, seq, lengths, max_length):
    """Sum of ``log p(t_i | t_<i)`` for ``i = 1 .. length - 1`` of every row of ``seq`` (B, T).

    A transformer scores in consecutive windows of ``max_length`` predictions (as ``zoo eval``
    and the SavedModel's ``score``): a window's first prediction sees only its first token.
    Returns ``(log_likelihood (B,) float32, num_tokens (B,) int32)``.
    """
    batch = tf.shape(seq)[0]
    total = tf.shape(seq)[1]
    width = tf.maximum(total - 1, 1)  # prediction positions
    if max_length is not None:
        width = (width + max_length - 1) // max_length * max_length
    seq = tf.pad(seq, tf.stack([[0, 0], [0, width + 1 - total]]))
    inputs, labels = seq[:, :-1], seq[:, 1:]
    scored = tf.range(width)[None, :] + 1 < lengths[:, None]
    num_tokens = tf.reduce_sum(tf.cast(scored, tf.int32), axis=1)
    if isinstance(stepper, _RecurrentStepper):
        return stepper.sequence_log_likelihood(inputs, labels, scored), num_tokens
    if max_length is not None:
        inputs = tf.reshape(inputs, [-1, max_length])
    logits = stepper.sequence_logits(inputs)
    logits = tf.reshape(logits, tf.concat([tf.stack([batch, width]), tf.shape(logits)[-1:]], 0))
    picked = tf.gather(tf.nn.log_softmax(logits, axis=-1), labels, batch_dims=2)
    return tf.reduce_sum(tf.where(scored, picked, 0.0), axis=1), num_tokens
