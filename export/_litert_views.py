"""Model views and scoring for the LiteRT export (``export.tflite``).

Decoding runs the zoo's one loop (``zoo.generation.loop.decode``) with its samplers; what is
LiteRT-specific lives here:

* ``RecurrentCellView``: a Keras RNN layer runs its time steps in a nested ``while`` over
  TensorLists, which the converter cannot lower inside the decoding ``WHILE`` ("Lowering tensor
  list ops is failed"), so a recurrent LM is decoded one Keras cell call per token
  (``layer.cell``, the same function the Keras layer applies at every step) with the states as
  the cache. Transformer and MLP models use their own ``init_cache`` / ``call_with_cache``.
* ``log_likelihood``: ``score``'s sum of ``log p(t_i | t_<i)``, in windows of the context.

Sampling draws with ``LiteRTWords`` (``zoo.generation.random_draw``): the same counter-based hash
as every other runtime, on int32 bitwise builtins and ``FLOOR_MOD``.
"""

from __future__ import annotations

import tensorflow as tf

from zoo.errors import ZooError

# ------------------------------------------------------------------------------------------------
# views


class CacheView:
    """Transformer / MLP / gated CNN: the model's own cache contract."""

    def __init__(self, model):
        self.model = model

    def init_cache(self, batch, total):
        return self.model.init_cache(batch, total)

    def call_with_cache(self, ids, cache, index):
        return self.model.call_with_cache(ids, cache, index)

    def sequence_logits(self, ids):
        return tf.cast(self.model(ids, training=False), tf.float32)


class RecurrentCellView:
    """Recurrent LM: ``embedding -> cell_1 -> ... -> cell_L -> lm_head`` one token at a time:
    ``h_t^l = cell_l(h_t^(l-1), h_(t-1)^l)``, the states ``h^l`` as the cache."""

    def __init__(self, model):
        self.model = model
        self.rnn = model.rnn
        self.vocab_size = model.vocab_size

    def init_cache(self, batch, total):
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

    def call_with_cache(self, ids, states, index):
        """Logits of the last token ``(B, 1, V)`` and the new states."""
        del index
        if ids.shape[1] == 1:
            logits, states = self._one(ids[:, 0], states)
            return logits[:, None, :], states
        steps = tf.shape(ids)[1]
        logits = tf.zeros(tf.stack([tf.shape(ids)[0], self.vocab_size]), tf.float32)

        def body(t, logits, states):
            logits, states = self._one(tf.gather(ids, t, axis=1), states)
            return t + 1, logits, states

        _, logits, states = tf.while_loop(
            lambda t, *_: t < steps, body, (tf.constant(0), logits, states)
        )
        return logits[:, None, :], states

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
            lambda t, *_: t < steps, body, (tf.constant(0), total, self.init_cache(batch, None))
        )
        return total


def make_view(model):
    """The view the LiteRT export decodes and scores ``model`` through."""
    from zoo.models.gcnn_lm import GatedCNNLM
    from zoo.models.mlp_lm import MLPLM
    from zoo.models.recurrent_lm import RecurrentLM
    from zoo.models.transformer_lm import TransformerLM

    if isinstance(model, RecurrentLM):
        return RecurrentCellView(model)
    if isinstance(model, (TransformerLM, MLPLM, GatedCNNLM)):
        return CacheView(model)
    raise ZooError(f"LiteRT export: unsupported model class {type(model).__name__}")


# ------------------------------------------------------------------------------------------------
# scoring


def log_likelihood(view, seq, lengths, max_length):
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
    if isinstance(view, RecurrentCellView):
        return view.sequence_log_likelihood(inputs, labels, scored), num_tokens
    if max_length is not None:
        inputs = tf.reshape(inputs, [-1, max_length])
    logits = view.sequence_logits(inputs)
    logits = tf.reshape(logits, tf.concat([tf.stack([batch, width]), tf.shape(logits)[-1:]], 0))
    picked = tf.gather(tf.nn.log_softmax(logits, axis=-1), labels, batch_dims=2)
    return tf.reduce_sum(tf.where(scored, picked, 0.0), axis=1), num_tokens
