"""The causal LM's SavedModel signatures (``export.saved_model`` writes them).

Everything runs in-graph with stock TensorFlow kernels plus the tensorflow-text ops of the
run's tokenizer (``import tensorflow_text`` before loading): tokenization, prompt preparation
(``zoo.generation.prompts``), the zoo's one cached decoding loop (``zoo.generation.loop``) with
its samplers, and detokenization. No
function is compiled with XLA (stock TF Serving runs with XLA off). Signatures, all batched over
a dynamic batch dimension:

``serving_default``
    ``prompt`` string ``[B]`` -> ``text`` string ``[B]``: the continuation only, decoded with the
    export's settings (``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``; greedy by
    default). With ``temperature > 0`` every request draws fresh random seeds.

``generate``
    ``prompt`` string ``[B]``, ``max_new_tokens`` int32 ``[B]``, ``temperature`` float32 ``[B]``,
    ``top_k`` int32 ``[B]``, ``top_p`` float32 ``[B]``, ``seed`` int64 ``[B]`` ->
    ``text`` string ``[B]``, ``token_ids`` int32 ``[B, N]`` (right-padded with 0, ``N`` the
    longest continuation of the batch), ``num_tokens`` int32 ``[B]``. Per row: ``temperature
    <= 0`` is greedy; ``top_k <= 0`` and ``top_p >= 1`` switch those filters off; ``seed`` fixes
    the row's sample (the same seed, prompt and settings give the same text whatever else is in
    the batch). To reproduce ``run.generate(..., strategy="sample", seed=s)`` pass row ``b`` the
    seed ``zoo.generation.api.row_seed(s, b)``. ``max_new_tokens`` is clamped to
    ``[0, M]`` where ``M`` is the export's ``max_new_tokens`` (the static bound of the loop);
    ``0`` or less gives an empty continuation.

``score``
    ``text`` string ``[B]`` -> ``log_likelihood`` float32 ``[B]``, ``num_tokens`` int32 ``[B]``,
    ``perplexity`` float32 ``[B]`` (``exp(-log_likelihood / num_tokens)``, 1.0 when no token is
    scored). Stream model: the sum of ``log p(t_i | t_<i)`` over the text's tokens but the first
    (which has no context). Line model: the sequence ``<bos> text <eos>``, every token after
    ``<bos>`` (``<eos>`` included) scored. A transformer scores a text longer than its context
    in consecutive windows of ``max_length`` predictions, exactly as ``zoo eval`` walks a split
    (a window's first prediction sees only that window's first token). Same numbers as
    ``zoo.tasks.causal_lm.score_texts``.

``tokenize``
    ``text`` string ``[B]`` -> ``token_ids`` int32 ``[B, N]`` (right-padded with 0; no
    ``<bos>``/``<eos>`` added), ``num_tokens`` int32 ``[B]``.

``detokenize``
    ``token_ids`` int32 ``[B, N]`` (0 = padding) -> ``text`` string ``[B]``. ``<pad>``,
    ``<bos>`` and ``<eos>`` are dropped; ids outside the vocabulary render as ``<unk>``.

By default (``streaming=False`` turns it off) two more signatures expose the decoding loop one
token at a time, with the model's cache as explicit state (``init_cache`` / ``call_with_cache``;
the nested cache flattened with ``tf.nest`` into ``cache_0 .. cache_K``). They take one prompt
(batch dimension 1) and give, token for token, what ``generate`` gives for that prompt with the
same settings and seed (same prompt handling, same cache length, same per-step choice):

``stream_start``
    ``prompt`` string ``[1]``, ``temperature`` float32 ``[1]``, ``top_k`` int32 ``[1]``,
    ``top_p`` float32 ``[1]``, ``seed`` int64 ``[1]`` -> ``token_id`` int32 ``[1]`` (the first new
    token), ``position`` int32 ``[1]`` (its position in the sequence), ``done`` bool ``[1]``
    (``token_id`` is a stop token, or the prompt was empty: nothing to emit), ``budget`` int32
    ``[1]`` (how many tokens may be generated in all: the export's ``max_new_tokens``, 0 for
    an empty prompt) and the cache tensors.

``stream_step``
    ``token_id``, ``position`` (as returned by the previous call), the sampling settings and the
    cache tensors -> the next ``token_id``, ``position``, ``done`` and the updated cache. Each
    step feeds one token (flat cost per token). ``budget - 1`` steps at most.

Prompt handling mirrors ``zoo.generation.generate`` (``run.generate``):

* line models (``corpus_kind == "lines"``) get ``<bos>`` prepended and stop at ``<eos>``;
* a transformer continues past its context ``max_length`` in the sliding-window rounds of
  ``zoo.generation.window`` (the same rounds as ``run.generate``, inside the graph: a
  while_loop around the decoding loop), so ``M`` (the export's ``max_new_tokens``, default
  256) is independent of the context. What a row gets does not depend on its own
  ``max_new_tokens`` beyond where it stops (a shorter budget gives a prefix) nor on the other
  rows. The streaming signatures slide too: their state carries the sequence so far and the
  round beside the cache;
* an empty prompt of a stream model (no token to condition on) gives an empty continuation
  (``text == ""``, ``num_tokens == 0``) for that row instead of an error; the other rows of
  the batch are unaffected. A line model's empty prompt is just ``<bos>``;
* characters a character tokenizer has never seen become ``<unk>`` (the Python API refuses
  such prompts; a server cannot ask back). ``<unk>`` detokenizes to U+FFFD.

Warm-up: ``warmup_records`` gives ``PredictionLog`` records (``serving_default``, ``generate``
and ``score`` on a batch of two prompts) that TF Serving replays at load time.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import tensorflow as tf

from zoo.errors import ZooError
from zoo.export_contract import LM_SIGNATURES, STREAM_SIGNATURES
from zoo.generation.loop import DecodeSettings, decode, feed
from zoo.generation.prompts import PROMPT_BUCKET, prepare_prompts
from zoo.generation.samplers import GreedySampler, RandomSampler
from zoo.generation.window import decode_windowed, slide
from zoo.special_tokens import BOS_ID, EOS_ID
from zoo.tasks.export_module import ExportModule
from zoo.tasks.warmup import predict_logs, sample_rows, text_array

__all__ = ["CausalLMModule", "build_serving_module", "serving_module", "warmup_records"]


def _as_ragged_rows(ids) -> tf.RaggedTensor:
    """Tokenizer output -> int32 ``RaggedTensor`` ``(B, None)``."""
    if not isinstance(ids, tf.RaggedTensor):
        ids = tf.RaggedTensor.from_tensor(ids)
    if ids.ragged_rank > 1:
        ids = ids.merge_dims(1, -1)
    return tf.cast(ids, tf.int32)


def _with_bos_eos(ids: tf.RaggedTensor, bos_id: int, eos_id: int) -> tf.RaggedTensor:
    batch = ids.nrows(out_type=tf.int32)
    return tf.concat([tf.RaggedTensor.from_tensor(tf.fill([batch, 1], bos_id)), ids,
                      tf.RaggedTensor.from_tensor(tf.fill([batch, 1], eos_id))], axis=1)


def _batch_size(tensor) -> tf.Tensor:
    return tf.shape(tensor, out_type=tf.int32)[0]


class CausalLMModule(ExportModule):
    """The causal LM's signatures: ``p(x) = prod_t p(x_t | x_<t)`` served as text in, text out
    (``serving_default``, ``generate``), ``log p`` (``score``), the tokenizer both ways and,
    with ``streaming``, one decoding step per call (``stream_start`` / ``stream_step``)."""

    def __init__(self, model, tokenizer, *, line_corpus: bool, max_new_tokens: int,
                 temperature: float, top_k: int, top_p: float, asset_paths=(),
                 streaming: bool = True, stop_token_ids=None):
        super().__init__(model, name="zoo_serving", tokenizers={"tokenizer": tokenizer},
                         asset_paths=asset_paths)
        self._line = bool(line_corpus)
        self._max_new = int(max_new_tokens)
        self._defaults = (float(temperature), int(top_k), float(top_p))
        self._max_length = getattr(model, "max_length", None)
        # the tokenizer's special ids (GPT-2: <|endoftext|> as bos/eos, nothing suppressed)
        self._bos = getattr(tokenizer, "bos_id", BOS_ID)
        self._eos = getattr(tokenizer, "eos_id", EOS_ID)
        if stop_token_ids is None:
            stop_token_ids = (self._eos,) if self._line else ()
        self._settings = DecodeSettings(
            max_new_tokens=self._max_new,
            stop_token_ids=tuple(int(t) for t in stop_token_ids),
            suppressed_token_ids=getattr(tokenizer, "suppressed_ids", None),
        )

        strings = tf.TensorSpec([None], tf.string)
        ints = tf.TensorSpec([None], tf.int32)
        floats = tf.TensorSpec([None], tf.float32)
        self.serving_default = self.function(self._serving_default, strings)
        self.generate = self.function(self._generate, strings, ints, floats, ints, floats,
                                      tf.TensorSpec([None], tf.int64))
        self.score = self.function(self._score, strings)
        self.tokenize = self.function(self._tokenize, strings)
        self.detokenize = self.function(self._detokenize, tf.TensorSpec([None, None], tf.int32))
        self._streaming = bool(streaming)
        if self._streaming:
            self._build_streaming()

    def signature_names(self) -> tuple[str, ...]:
        return LM_SIGNATURES + (STREAM_SIGNATURES if self._streaming else ())

    # -- pieces ---------------------------------------------------------------------------------

    def _token_ids(self, texts) -> tf.RaggedTensor:
        return _as_ragged_rows(self.tokenizer.tokenize(texts))

    def _prompts(self, prompt):
        """Prompt strings -> ``(prompt_ids (B, P) right-padded, lengths (B,), empty (B,))``:
        ``zoo.generation.prompts.prepare_prompts`` with ``<bos>`` for line models and the width
        padded to ``PROMPT_BUCKET`` multiples, as ``run.generate`` does; nothing is cut (the
        sliding window chooses the context). Empty rows get a placeholder token (and no
        budget)."""
        ids = self._token_ids(prompt)
        return prepare_prompts(ids.to_tensor(default_value=0), ids.row_lengths(),
                               bos_id=self._bos if self._line else None, bucket=PROMPT_BUCKET)

    def _sampler(self, temperature=None, top_k=None, top_p=None, seeds=None):
        if temperature is None:
            return GreedySampler()
        return RandomSampler(temperature, top_k, top_p, seeds)

    def _decode(self, prompt, row_max, temperature=None, top_k=None, top_p=None, seeds=None):
        prompt_ids, lengths, empty = self._prompts(prompt)
        row_max = tf.where(empty, 0, tf.clip_by_value(row_max, 0, self._max_new))
        sampler = self._sampler(temperature, top_k, top_p, seeds)
        if self._max_length is None:
            new_ids, num_new = decode(self.keras_model, sampler, prompt_ids, lengths, row_max,
                                      self._settings)
        else:
            new_ids, num_new = decode_windowed(self.keras_model, sampler, prompt_ids, lengths,
                                               row_max, self._settings,
                                               max_length=self._max_length, bucket=PROMPT_BUCKET)
        text = self.tokenizer.detokenize(tf.RaggedTensor.from_tensor(new_ids, lengths=num_new))
        return text, new_ids, num_new

    # -- streaming: the decoding loop one step per call, the cache as explicit state ---------

    def _build_streaming(self) -> None:
        """Signatures ``stream_start`` / ``stream_step`` (see the module docstring).

        The cache's structure and shapes come from ``init_cache``: dimensions that change with
        the cache length (a transformer's time axis) are left unknown in the signature, the
        others are static.
        """
        model = self.keras_model
        short = model.init_cache(1, 2 * PROMPT_BUCKET)
        long = model.init_cache(1, 3 * PROMPT_BUCKET)
        if self._max_length is not None:  # the sliding window's state rides with the cache
            short = (short, self._window_state(tf.zeros([1, 2], tf.int32), 1))
            long = (long, self._window_state(tf.zeros([1, 3], tf.int32), 1))
        self._cache_structure = short
        specs = []
        for i, (a, b) in enumerate(zip(tf.nest.flatten(short), tf.nest.flatten(long), strict=True)):
            dims = [x if x == y else None for x, y in zip(a.shape.as_list(), b.shape.as_list(),
                                                          strict=True)]
            dims[0] = 1
            specs.append(tf.TensorSpec(dims, a.dtype, name=f"cache_{i}"))
        settings = [
            tf.TensorSpec([1], tf.float32, name="temperature"),
            tf.TensorSpec([1], tf.int32, name="top_k"),
            tf.TensorSpec([1], tf.float32, name="top_p"),
            tf.TensorSpec([1], tf.int64, name="seed"),
        ]
        self.stream_start = self.function(
            self._stream_start, tf.TensorSpec([1], tf.string, name="prompt"), *settings
        )
        self.stream_step = self.function(
            self._stream_step,
            tf.TensorSpec([1], tf.int32, name="token_id"),
            tf.TensorSpec([1], tf.int32, name="position"),
            *settings,
            *specs,
        )

    def _cache_outputs(self, cache) -> dict:
        return {f"cache_{i}": leaf for i, leaf in enumerate(tf.nest.flatten(cache))}

    def _is_stop(self, token):
        stops = self._settings.stop_token_ids
        if not stops:
            return tf.zeros_like(token, tf.bool)
        return tf.reduce_any(tf.equal(token[:, None], tf.constant(stops, tf.int32)[None, :]), -1)

    @staticmethod
    def _window_state(history, length, round_index=0):
        """The sliding window's part of the streaming state: the sequence so far ``(1, W)``
        (prompt and continuation), its length and the round."""
        return {"history": history, "length": tf.reshape(tf.cast(length, tf.int32), [1]),
                "round": tf.reshape(tf.cast(round_index, tf.int32), [1])}

    def _start_round(self, history, length, round_index):
        """Prefill round ``round_index`` of the window (``zoo.generation.window``) from the
        sequence ``history[0, :length]``: returns ``(context length, logits, cache)``."""
        window = self._max_length
        keep = tf.where(tf.logical_and(tf.equal(round_index, 0), length < window), length,
                        tf.minimum(length, slide(window)))
        context = history[:, length - keep:length]
        cache = self.keras_model.init_cache(1, window)
        last, cache = feed(self.keras_model, context, cache, tf.constant(0, tf.int32),
                           self._settings.suppressed)
        return keep, last, cache

    def _stream_start(self, prompt, temperature, top_k, top_p, seed):
        prompt_ids, lengths, empty = self._prompts(prompt)
        length = lengths[0]
        model = self.keras_model
        budget = tf.where(empty, 0, self._max_new)
        if self._max_length is None:
            cache = model.init_cache(1, tf.shape(prompt_ids, out_type=tf.int32)[1] + self._max_new)
            last, cache = feed(model, prompt_ids[:, :length], cache, tf.constant(0, tf.int32),
                               self._settings.suppressed)
            position = length
        else:
            history = tf.pad(prompt_ids[:, :length], [[0, 0], [0, self._max_new]])
            position, last, cache = self._start_round(history, length, 0)
            cache = (cache, self._window_state(history, length))
        token = RandomSampler(temperature, top_k, top_p, seed).choose(last, position)
        done = tf.logical_or(empty, self._is_stop(token))
        return {
            "token_id": token,
            "position": tf.reshape(position, [1]),
            "done": done,
            "budget": budget,
            **self._cache_outputs(cache),
        }

    def _stream_step(self, token_id, position, temperature, top_k, top_p, seed, *cache_leaves):
        cache = tf.nest.pack_sequence_as(self._cache_structure, list(cache_leaves))
        index = position[0]
        sampler = RandomSampler(temperature, top_k, top_p, seed)
        if self._max_length is None:
            last, cache = feed(self.keras_model, token_id[:, None], cache, index,
                               self._settings.suppressed)
            token = sampler.choose(last, index + 1)
            next_position = index + 1
        else:
            cache, state = cache
            length, round_index = state["length"][0], state["round"][0]
            history = tf.tensor_scatter_nd_update(state["history"], [[0, length]], token_id)
            length = length + 1
            window = self._max_length

            def same_round():
                last, new_cache = feed(self.keras_model, token_id[:, None], cache, index,
                                       self._settings.suppressed)
                return index + 1, round_index, last, new_cache

            def next_round():
                keep, last, new_cache = self._start_round(history, length, round_index + 1)
                return keep, round_index + 1, last, new_cache

            next_position, round_index, last, cache = tf.cond(index + 1 < window, same_round,
                                                              next_round)
            token = sampler.shifted(round_index * window).choose(last, next_position)
            cache = (cache, self._window_state(history, length, round_index))
        return {
            "token_id": token,
            "position": tf.reshape(next_position, [1]),
            "done": self._is_stop(token),
            **self._cache_outputs(cache),
        }

    # -- signatures -----------------------------------------------------------------------------

    def _serving_default(self, prompt):
        batch = _batch_size(prompt)
        row_max = tf.fill([batch], self._max_new)
        temperature, top_k, top_p = self._defaults
        if temperature > 0:
            seeds = tf.random.uniform([batch], 0, tf.int64.max, dtype=tf.int64)
            text, _, _ = self._decode(
                prompt, row_max, tf.fill([batch], temperature), tf.fill([batch], top_k),
                tf.fill([batch], top_p), seeds,
            )
        else:
            text, _, _ = self._decode(prompt, row_max)
        return {"text": text}

    def _generate(self, prompt, max_new_tokens, temperature, top_k, top_p, seed):
        batch = tf.shape(prompt)
        checks = [
            tf.debugging.assert_equal(
                tf.shape(value), batch,
                message=f"generate: '{name}' must have one value per prompt",
            )
            for name, value in (
                ("max_new_tokens", max_new_tokens), ("temperature", temperature),
                ("top_k", top_k), ("top_p", top_p), ("seed", seed),
            )
        ]
        with tf.control_dependencies(checks):
            prompt = tf.identity(prompt)
        text, new_ids, num_new = self._decode(
            prompt, max_new_tokens, temperature, top_k, top_p, seed
        )
        longest = tf.reduce_max(tf.concat([num_new, [0]], axis=0))
        return {"text": text, "token_ids": new_ids[:, :longest], "num_tokens": num_new}

    def _score(self, text):
        ids = self._token_ids(text)
        if self._line:
            ids = _with_bos_eos(ids, self._bos, self._eos)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        seq = ids.to_tensor(default_value=0)
        batch = _batch_size(seq)
        total = tf.shape(seq, out_type=tf.int32)[1]
        width = tf.maximum(total - 1, 1)  # prediction positions
        window = self._max_length
        if window is not None:
            width = (width + window - 1) // window * window
        seq = tf.pad(seq, [[0, 0], [0, width + 1 - total]])
        inputs, labels = seq[:, :-1], seq[:, 1:]
        if window is not None:  # consecutive windows of `window` predictions, as zoo eval
            inputs = tf.reshape(inputs, [-1, window])
        logits = self.keras_model(inputs, training=False)
        logits = tf.cast(logits, tf.float32)
        logits = tf.reshape(logits, tf.concat([[batch, width], tf.shape(logits)[-1:]], axis=0))
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        picked = tf.gather(log_probs, labels, batch_dims=2)
        scored = tf.range(width)[None, :] + 1 < lengths[:, None]
        picked = tf.where(scored, tf.cast(picked, tf.float64), tf.constant(0.0, tf.float64))
        log_likelihood = tf.reduce_sum(picked, axis=1)
        num_tokens = tf.reduce_sum(tf.cast(scored, tf.int32), axis=1)
        nll = -log_likelihood / tf.cast(tf.maximum(num_tokens, 1), tf.float64)
        return {
            "log_likelihood": tf.cast(log_likelihood, tf.float32),
            "num_tokens": num_tokens,
            "perplexity": tf.cast(tf.exp(nll), tf.float32),
        }

    def _tokenize(self, text):
        ids = self._token_ids(text)
        return {
            "token_ids": ids.to_tensor(default_value=0),
            "num_tokens": tf.cast(ids.row_lengths(), tf.int32),
        }

    def _detokenize(self, token_ids):
        return {"text": self.tokenizer.detokenize(token_ids)}


def build_serving_module(model, tokenizer, *, line_corpus: bool, max_new_tokens: int = 256,
                         temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                         asset_paths=(), streaming: bool = True,
                         stop_token_ids=None) -> CausalLMModule:
    """The ``tf.Module`` that ``export.saved_model`` saves (also usable eagerly, e.g. in tests).
    ``stop_token_ids``: default ``<eos>`` for a line corpus, none for a stream."""
    return CausalLMModule(
        model, tokenizer, line_corpus=line_corpus, max_new_tokens=max_new_tokens,
        temperature=temperature, top_k=top_k, top_p=top_p, asset_paths=asset_paths,
        streaming=streaming, stop_token_ids=stop_token_ids,
    )


def serving_module(run, *, max_new_tokens: int = 256, temperature: float = 0.0, top_k: int = 0,
                   top_p: float = 1.0, streaming: bool = False, **_ignored):
    """``(module, signatures, export settings)`` of a causal LM run for ``export.saved_model``.
    The tokenizer's files are the module's assets (their folder lives as long as the module)."""
    max_length = getattr(run.model, "max_length", None)
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ZooError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    line_corpus = run.config.get("corpus_kind") == "lines"
    files = tempfile.TemporaryDirectory(prefix="zoo-tokenizer-")
    run.tokenizer.save(files.name)
    asset_paths = sorted(os.path.join(files.name, name) for name in os.listdir(files.name))
    module = build_serving_module(
        run.model, run.tokenizer, line_corpus=line_corpus, max_new_tokens=max_new_tokens,
        temperature=temperature, top_k=top_k, top_p=top_p, asset_paths=asset_paths,
        streaming=streaming, stop_token_ids=getattr(run, "stop_token_ids", None),
    )
    module.keep_alive(files)
    settings = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                    top_p=top_p)
    if streaming:
        settings["streaming"] = True
    settings.update(line_corpus=line_corpus, max_length=max_length)
    return module, module.signatures(), settings


def _warmup_records(tokenizer, max_new_tokens: int) -> list[bytes]:
    first, second = sample_rows(tokenizer.vocab_size)  # two prompts of different lengths
    prompts = text_array(tokenizer.detokenize(
        tf.constant([first + [0] * (len(second) - len(first)), second], tf.int32)).numpy())
    batch = len(prompts)
    budget = min(max_new_tokens, 8)
    requests = {
        "serving_default": {"prompt": prompts},
        "generate": {
            "prompt": prompts,
            "max_new_tokens": np.full([batch], budget, np.int32),
            "temperature": np.array([0.0, 0.8], np.float32),
            "top_k": np.array([0, 10], np.int32),
            "top_p": np.array([1.0, 0.9], np.float32),
            "seed": np.array([0, 1], np.int64),
        },
        "score": {"text": prompts},
    }
    return predict_logs(requests)


def warmup_records(run, *, max_new_tokens: int = 256, **_ignored) -> list[bytes]:
    """``PredictionLog`` records for ``assets.extra/tf_serving_warmup_requests``."""
    return _warmup_records(run.tokenizer, max_new_tokens)
