"""The contract every causal zoo language model follows.

A zoo LM is a ``keras.Model`` mapping int token ids ``(batch, time)`` to next-token logits
``(batch, time, vocab_size)`` (float32 logits, also under mixed precision), and it can decode
incrementally with an explicit, fixed-shape cache so that the decoding loop is a compiled
``tf.while_loop`` that never recomputes the prefix:

    cache = model.init_cache(batch_size, max_length)          # nested tensors, batch on axis 0
    logits, cache = model.call_with_cache(ids, cache, index)  # ids (batch, n) at positions
                                                              # index .. index + n - 1

``call_with_cache(ids, cache, 0)`` followed by single-token calls at ``index = n, n+1, ...`` gives
exactly the logits of ``model(full_ids)`` at the same positions. Every leaf of the cache has the
batch on axis 0, so beam search can reorder beams with ``tf.gather`` on axis 0 and never needs to
know what the cache holds (transformer keys/values, RNN states, or an n-gram context window).
``index`` is a scalar int32 tensor; cache shapes never change inside the loop.
"""

from __future__ import annotations

import keras


class CausalLM(keras.Model):
    """Base class of the zoo's causal language models.

    Subclasses implement ``call(token_ids, training=None)``, ``init_cache`` and
    ``call_with_cache``. ``max_length`` is the longest sequence the model accepts
    (``None`` = unbounded, as for RNNs).
    """

    max_length: int | None = None
    # Whether XLA speeds the training step up on a CPU (zoo.fitting's jit_compile default);
    # recurrent loops run slower under XLA there.
    xla_on_cpu: bool = False

    def init_cache(self, batch_size, max_length):
        """Return the empty decoding cache for ``batch_size`` rows of up to ``max_length`` tokens."""
        raise NotImplementedError

    def call_with_cache(self, token_ids, cache, index):
        """Run ``token_ids`` ``(batch, n)`` placed at positions ``index..index+n-1``.

        Returns ``(logits (batch, n, vocab), new_cache)``.
        """
        raise NotImplementedError
