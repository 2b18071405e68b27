"""The one decoding loop over the ``CausalLM`` cache contract (see ``zoo/models/base.py``).

    new_ids, num_new = decode(model, sampler, prompt_ids, prompt_lengths, row_max, settings)

``model`` is anything with ``init_cache(batch, length)`` and ``call_with_cache(ids, cache,
index) -> (logits, cache)``: a zoo causal LM, the translator's decoder view, the uncached
reference (``UncachedView``) or LiteRT's cell-by-cell view of a recurrent LM. ``sampler``
chooses each token (``zoo.generation.samplers``). The loop is one ``ops.while_loop`` with fixed
shapes, written with ``keras.ops``: it runs under ``tf.function`` on stock TensorFlow kernels
(what TF Serving runs; buffers are written with ``where`` masks, never with XLA-only ops), under
XLA, under ``jax.jit``, and converts to LiteRT builtins.

Layout (nanoGPT-style shapes): prompts ``(B, P)`` int32, right-padded with 0, with
``prompt_lengths (B,) >= 1``. The loop walks positions ``i`` of a ``T = P + M`` long sequence
(``M = max_new_tokens``). At each position a token is chosen from the logits of position
``i - 1``; while ``i`` is still inside a row's prompt the prompt token is kept instead, so rows
with different prompt lengths share one loop. The chosen token is then fed to
``call_with_cache`` at index ``i``. The first ``prefill_length`` prompt tokens are fed in one
call before the loop.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any, NamedTuple

from keras import ops, tree

from zoo.generation.prompts import PROMPT_BUCKET
from zoo.generation.samplers import Sampler

__all__ = [
    "SUPPRESSED_TOKEN_IDS",
    "DecodeSettings",
    "UncachedView",
    "decode",
    "feed",
    "next_logits",
    "prefill",
]

# Never generated: <pad> (0) and <bos> (2) are not text; a model sees BOS only as input. A
# tokenizer with other special ids passes its own (``Tokenizer.suppressed_ids``; GPT-2: none).
SUPPRESSED_TOKEN_IDS = (0, 2)


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    """The static settings of one decoding loop (keyword-only).

    Attributes:
      max_new_tokens: ``M``, the static bound on new tokens.
      stop_token_ids: ids that end a row (the stop token itself is not returned).
      suppressed_token_ids: ids never chosen; ``None``: ``SUPPRESSED_TOKEN_IDS`` (<pad>, <bos>).
      prefill_length: prompt tokens fed in one call before the loop, a static int in
        ``[1, min(prompt_lengths)]``; ``None``: ``min(prompt_lengths)`` rounded down to a
        multiple of ``prefill_bucket`` (at least 1), computed in the graph (needs a model that
        takes an unknown time dimension, and no XLA).
      prefill_bucket: see ``prefill_length``.
      max_length: the model's context ``L``: the cache and the loop end at ``min(P + M, L)``
        (each row's prompt length plus budget must fit in ``L``; ``window.decode_windowed``
        arranges that). ``None``: ``P + M``.
    """

    max_new_tokens: int
    stop_token_ids: tuple[int, ...] = ()
    suppressed_token_ids: tuple[int, ...] | None = None
    prefill_length: int | None = None
    prefill_bucket: int = 1
    max_length: int | None = None

    def __post_init__(self):
        try:
            max_new = operator.index(self.max_new_tokens)
        except TypeError:
            raise ValueError(f"max_new_tokens must be an int, got {self.max_new_tokens!r}") from None
        if max_new < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new}")
        object.__setattr__(self, "max_new_tokens", max_new)
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if self.suppressed_token_ids is not None:
            suppressed = tuple(int(t) for t in self.suppressed_token_ids)
            object.__setattr__(self, "suppressed_token_ids", suppressed)
        if self.prefill_length is not None:
            object.__setattr__(self, "prefill_length", operator.index(self.prefill_length))
        if self.max_length is not None:
            object.__setattr__(self, "max_length", operator.index(self.max_length))

    @property
    def suppressed(self) -> tuple[int, ...]:
        """The ids never chosen (the module default read when the loop is built)."""
        if self.suppressed_token_ids is None:
            return SUPPRESSED_TOKEN_IDS
        return self.suppressed_token_ids


def _size(x, axis: int):
    static = x.shape[axis]
    return static if static is not None else ops.shape(x)[axis]


def next_logits(logits, suppressed=None):
    """Float32 next-token logits ``(B, V)`` with the ``suppressed`` ids set to ``-inf``
    (default ``SUPPRESSED_TOKEN_IDS``)."""
    logits = ops.cast(logits, "float32")
    suppressed = SUPPRESSED_TOKEN_IDS if suppressed is None else tuple(suppressed)
    if not suppressed:
        return logits
    vocab = ops.arange(_size(logits, 1), dtype="int32")
    banned = ops.any(vocab[:, None] == ops.array(suppressed, "int32")[None, :], axis=-1)
    return ops.where(banned[None, :], float("-inf"), logits)


def feed(model, token_ids, cache, index, suppressed=None):
    """Run ``token_ids (B, n)`` at ``index``; returns ``(next-token logits (B, V), cache)``."""
    logits, cache = model.call_with_cache(token_ids, cache, index)
    return next_logits(logits[:, -1, :], suppressed), cache


def prefill(model, prompt_ids, prompt_lengths, total_length, settings: DecodeSettings):
    """Create the cache and feed the first prompt tokens at index 0 (see ``DecodeSettings``).

    Returns ``(start, last logits (B, V), cache)``; the loop continues at position ``start``.
    """
    batch = _size(prompt_ids, 0)
    cache = model.init_cache(batch, total_length)
    if settings.prefill_length is None:
        bucket = settings.prefill_bucket
        start = ops.maximum(ops.min(prompt_lengths) // bucket * bucket, 1)
        first = prompt_ids[:, :start]
    else:
        start = ops.convert_to_tensor(settings.prefill_length, "int32")
        first = prompt_ids[:, : settings.prefill_length]
    last, cache = feed(model, first, cache, ops.convert_to_tensor(0, "int32"), settings.suppressed)
    return start, last, cache


class Start(NamedTuple):
    """What every decoding loop starts from: the sizes (``B``, ``P``, ``T = P + M``), the stop
    ids, and the prefilled ``(start, last logits (B, V), cache)``."""

    batch: Any
    prompt_width: Any
    total: Any
    stop_ids: Any
    start: Any
    last: Any
    cache: Any


def begin(model, prompt_ids, prompt_lengths, settings: DecodeSettings) -> Start:
    """Sizes, stop ids and the prefill of a loop over ``prompt_ids (B, P)``."""
    batch, prompt_width = _size(prompt_ids, 0), _size(prompt_ids, 1)
    total = prompt_width + settings.max_new_tokens
    if settings.max_length is not None:
        total = (min(total, settings.max_length) if isinstance(total, int)
                 else ops.minimum(total, settings.max_length))
    start, last, cache = prefill(model, prompt_ids, prompt_lengths, total, settings)
    return Start(batch, prompt_width, total, stop_tensor(settings.stop_token_ids), start, last,
                 cache)


def _is_stop(tokens, stop_ids):
    """``tokens (...)`` int32 -> bool, True where the token is one of ``stop_ids (S,)``."""
    return ops.any(tokens[..., None] == stop_ids, axis=-1)


def stop_tensor(stop_token_ids):
    """The stop ids as an int32 vector (``[-1]``, which matches nothing, when there are none)."""
    return ops.array(list(stop_token_ids) or [-1], "int32")


def decode(model, sampler: Sampler, prompt_ids, prompt_lengths, row_max,
           settings: DecodeSettings):
    """Continue every row; returns ``(new_ids (B, M) int32, num_new (B,) int32)``.

    ``row_max (B,)`` is each row's budget (``<= M``; 0: nothing). A row stops after its budget
    or at a stop token; the loop exits as soon as every row has stopped. The new ids are padded
    with 0 after ``num_new`` tokens.
    """
    max_new, suppressed = settings.max_new_tokens, settings.suppressed
    batch, prompt_width, total, stop_ids, start, last, cache = begin(
        model, prompt_ids, prompt_lengths, settings
    )
    columns = ops.arange(max_new, dtype="int32")[None, :]
    out = ops.zeros((batch, max_new), "int32")
    num_new = ops.zeros((batch,), "int32")
    finished = row_max <= 0

    def cond(i, last, cache, out, num_new, finished):
        return ops.logical_and(i < total, ops.logical_not(ops.all(finished)))

    def body(i, last, cache, out, num_new, finished):
        chosen = sampler.choose(last, i)
        in_prompt = i < prompt_lengths
        prompt_token = ops.take(prompt_ids, ops.minimum(i, prompt_width - 1), axis=1)
        token = ops.where(in_prompt, prompt_token, chosen)
        generating = ops.logical_and(ops.logical_not(in_prompt), ops.logical_not(finished))
        stopped = ops.logical_and(generating, _is_stop(token, stop_ids))
        emit = ops.logical_and(generating, ops.logical_not(stopped))
        write = ops.logical_and(emit[:, None], columns == num_new[:, None])
        out = ops.where(write, token[:, None], out)
        num_new = num_new + ops.cast(emit, "int32")
        finished = ops.logical_or(ops.logical_or(finished, stopped), num_new >= row_max)
        last, cache = feed(model, token[:, None], cache, i, suppressed)
        return i + 1, last, cache, out, num_new, finished

    loop = ops.while_loop(cond, body, (start, last, cache, out, num_new, finished))
    return loop[3], loop[4]


class UncachedView:
    """The slow reference: every call recomputes the whole token history, nothing is kept.

    Its "cache" is ``(buffer (B, T), *context)``: the buffer only remembers the tokens fed so
    far; ``context`` holds per-row inputs the forward pass also needs (a translator's source
    ids), carried in the cache so that beam search repeats and reorders them with the rows.
    ``forward(buffer, *context) -> logits (B, T, V)`` must be causal in the buffer (the logits
    at a position depend only on the tokens up to it). Plugs into ``decode`` like a real cache.
    """

    built = True

    def __init__(self, forward, context: tuple = (), max_length: int | None = None):
        self.forward = forward
        self.context = tuple(context)
        self.max_length = max_length

    @classmethod
    def of(cls, model) -> UncachedView:
        """The view of a causal LM: ``forward(buffer) = model(buffer)``."""
        return cls(lambda buffer: model(buffer, training=False),
                   max_length=getattr(model, "max_length", None))

    def init_cache(self, batch, length):
        return (ops.zeros((batch, length), "int32"), *self.context)

    def call_with_cache(self, token_ids, cache, index):
        buffer, *context = cache
        index = ops.cast(index, "int32")
        count = _size(token_ids, 1)
        positions = ops.arange(_size(buffer, 1), dtype="int32")  # (T,)
        spread = ops.take(token_ids, ops.clip(positions - index, 0, count - 1), axis=1)  # (B, T)
        written = ops.logical_and(positions >= index, positions < index + count)[None, :]
        buffer = ops.where(written, ops.cast(spread, "int32"), buffer)
        logits = self.forward(buffer, *context)  # (B, T, V)
        picked = ops.take(logits, index + ops.arange(count, dtype="int32"), axis=1)
        return picked, (buffer, *context)


def check_prompts(model, prompt_ids, prompt_lengths, max_new_tokens: int, *,
                  capped: bool = False):
    """Validate shapes and the context bound (not with ``capped``: the loop then ends at the
    context, ``DecodeSettings.max_length``); returns the lengths' static values (NumPy) or
    ``None`` inside a graph with unknown lengths."""
    import numpy as np

    if len(prompt_ids.shape) != 2 or len(prompt_lengths.shape) != 1:
        raise ValueError(
            f"prompt_ids must be (batch, length) and prompt_lengths (batch,), got "
            f"{tuple(prompt_ids.shape)} and {tuple(prompt_lengths.shape)}"
        )
    width = prompt_ids.shape[1]
    max_length = getattr(model, "max_length", None)
    if (not capped and max_length is not None and width is not None
            and width + max_new_tokens > max_length):
        raise ValueError(
            f"prompt width {width} + max_new_tokens {max_new_tokens} exceeds the model's "
            f"max_length {max_length}"
        )
    lengths = _static_value(prompt_lengths)
    if lengths is None or not lengths.size:
        return None
    lengths = np.asarray(lengths)
    if lengths.min() < 1:
        raise ValueError("every prompt needs at least one token (prompt_lengths >= 1)")
    if width is not None and lengths.max() > width:
        raise ValueError(f"prompt_lengths {lengths.max()} exceeds the prompt width {width}")
    return lengths


def default_prefill_length(lengths, prefill_length: int | None) -> int | None:
    """The static prefill length: ``min(lengths)`` rounded down to ``PROMPT_BUCKET`` (at least
    1) when the lengths are known, else ``None``; a given one is checked against them."""
    if prefill_length is None:
        if lengths is None:
            return None
        return max(1, int(lengths.min()) // PROMPT_BUCKET * PROMPT_BUCKET)
    prefill_length = operator.index(prefill_length)
    if prefill_length < 1 or (lengths is not None and prefill_length > lengths.min()):
        raise ValueError(f"prefill_length {prefill_length} must be in [1, min(prompt_lengths)]")
    return prefill_length


def _static_value(x):
    """``x`` as NumPy when its value is known now (eager tensors, NumPy), else ``None``."""
    import numpy as np

    if isinstance(x, np.ndarray):
        return x
    try:
        import tensorflow as tf

        if isinstance(x, (tf.Tensor, tf.Variable)):
            return tf.get_static_value(x)
    except ImportError:
        pass
    try:
        return np.asarray(x)
    except Exception:  # a tracer inside jax.jit
        return None


def map_cache(fn, cache):
    """``fn`` applied to every leaf of a cache structure."""
    return tree.map_structure(fn, cache)
