"""``generate``: text in, continuation text out, for any zoo ``CausalLM`` and tokenizer."""

from __future__ import annotations

import numbers
import secrets

import numpy as np
import tensorflow as tf

from zoo.errors import ZooError
from zoo.generation.decode import beam_search_ids, default_jit_compile, generate_ids
from zoo.generation.prompts import PROMPT_BUCKET, dense_rows, prepare_prompts
from zoo.generation.window import round_budget, round_context
from zoo.special_tokens import BOS_ID, UNK_ID

__all__ = ["generate", "STRATEGIES", "row_seed", "token_rows", "unknown_characters"]

STRATEGIES = ("greedy", "sample", "beam")
_MASK63 = (1 << 63) - 1


def row_seed(seed: int, row: int) -> int:
    """SplitMix64 of ``(seed, row)``: distinct, well-mixed 63-bit seeds for the rows of a call."""
    z = (seed * 0x9E3779B97F4A7C15 + (row + 1) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (z ^ (z >> 31)) & _MASK63


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _validate(strategy, max_new_tokens, temperature, top_k, top_p, num_beams, seed, stop):
    if strategy not in STRATEGIES:
        raise ZooError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise ZooError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not _is_number(temperature) or not temperature >= 0:
        raise ZooError(f"temperature must be a number >= 0, got {temperature!r}")
    if not _is_int(top_k) or top_k < 0:
        raise ZooError(f"top_k must be an integer >= 0 (0 = off), got {top_k!r}")
    if not _is_number(top_p) or not 0 < top_p <= 1:
        raise ZooError(f"top_p must be in (0, 1], got {top_p!r}")
    if not _is_int(num_beams) or num_beams < 1:
        raise ZooError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    if seed is not None and not _is_int(seed):
        raise ZooError(f"seed must be an integer or None, got {seed!r}")
    if stop is not None and (not isinstance(stop, str) or not stop):
        raise ZooError(f"stop must be a non-empty string or None, got {stop!r}")


def unknown_characters(tokenizer, prompt: str) -> list[str]:
    """The characters of ``prompt`` that ``tokenizer`` maps to ``<unk>``."""
    chars = sorted(set(prompt))
    if not chars:
        return []
    ids = tokenizer.tokenize(tf.constant(chars))
    return [c for c, row in zip(chars, ids.to_list(), strict=True) if UNK_ID in row]


def token_rows(tokenizer, texts: list[str], *, add_bos: bool = False) -> list[list[int]]:
    """The prompts' ids as Python lists (``<bos>`` first with ``add_bos``); ``ZooError`` for an
    empty prompt (without ``add_bos``) and for characters a character tokenizer does not know."""
    rows = tokenizer.tokenize(tf.constant(texts)).to_list()
    if getattr(tokenizer, "kind", "") == "char":
        for row, text in zip(rows, texts, strict=True):
            if UNK_ID in row:
                unknown = "".join(unknown_characters(tokenizer, text))
                raise ZooError(
                    f"prompt {text!r} contains characters the tokenizer does not know: {unknown!r}"
                )
    if add_bos:
        bos_id = getattr(tokenizer, "bos_id", BOS_ID)
        if bos_id is None:
            raise ZooError("add_bos=True, but this tokenizer has no beginning-of-sequence id")
        rows = [[bos_id, *row] for row in rows]
    for text, row in zip(texts, rows, strict=True):
        if not row:
            raise ZooError(f"empty prompt {text!r}: give at least one token (or use add_bos=True)")
    return [[int(t) for t in row] for row in rows]


def generate(
    model,
    tokenizer,
    prompts,
    *,
    max_new_tokens: int = 100,
    strategy: str = "greedy",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    num_beams: int = 4,
    seed: int | None = None,
    stop: str | None = None,
    add_bos: bool = False,
    stop_token_ids=(),
    jit_compile: bool | None = None,
):
    """Continue ``prompts`` with ``model``; returns the continuations only.

    Args:
      model: a zoo ``CausalLM``.
      tokenizer: a zoo ``Tokenizer`` (used in-graph: ``tokenize`` / ``detokenize``).
      prompts: one string (a string is returned) or a list of strings (a list is returned).
      max_new_tokens: tokens to generate at most (per prompt).
      strategy: ``"greedy"``, ``"sample"`` (``temperature``, ``top_k``, ``top_p``, ``seed``)
        or ``"beam"`` (``num_beams``).
      temperature: ``>= 0``; 0 samples greedily.
      top_k: keep the k most probable tokens (0 = off).
      top_p: nucleus sampling in (0, 1] (1 = off).
      num_beams: beam width for ``strategy="beam"``.
      seed: sampling seed; ``None`` draws one at random. Row ``b`` of the batch uses a seed
        derived from ``(seed, b)``, so the same call gives the same text.
      stop: cut each continuation at the first occurrence of this string.
      add_bos: prepend ``<bos>`` (models trained on line corpora); then an empty prompt is fine.
      stop_token_ids: token ids that end a continuation (e.g. ``(3,)`` = ``<eos>``).
      jit_compile: XLA or not; ``None`` = XLA when a GPU is visible.

    A transformer continues past its context ``max_length`` in sliding-window rounds
    (``zoo.generation.window``): a prompt and continuation that fit in it are one pass; a prompt
    longer than the context conditions on its last ``max_length - max_length // 2`` tokens.
    Raises ``ZooError`` for bad arguments, empty prompts (without ``add_bos``) and characters a
    character tokenizer does not know.
    """
    _validate(strategy, max_new_tokens, temperature, top_k, top_p, num_beams, seed, stop)
    single = isinstance(prompts, str)
    texts = [prompts] if single else list(prompts)
    if not all(isinstance(t, str) for t in texts):
        raise ZooError("prompts must be a string or a list of strings")
    if not texts:
        return []
    if jit_compile is None:
        jit_compile = default_jit_compile()

    prompt_rows = token_rows(tokenizer, texts, add_bos=add_bos)

    max_length = getattr(model, "max_length", None)
    if max_length is not None and max_length < 2:
        raise ZooError(f"the model's max_length={max_length} leaves no room to generate")
    if seed is None and strategy == "sample":
        seed = secrets.randbits(63)
    stop_token_ids = tuple(int(t) for t in stop_token_ids)
    decode_args = dict(
        strategy=strategy, temperature=temperature, top_k=top_k, top_p=top_p,
        num_beams=num_beams, stop_token_ids=stop_token_ids, jit_compile=jit_compile,
        suppressed_token_ids=getattr(tokenizer, "suppressed_ids", None),
    )

    if max_length is None or all(len(row) + max_new_tokens <= max_length for row in prompt_rows):
        # Prompt and continuation fit in the context: one pass.
        keep = None if max_length is None else max_length - max_new_tokens
        rows, _ = _decode(model, prompt_rows, keep, max_new_tokens, seed, **decode_args)
    elif strategy == "beam":
        # Beam search decodes one budget for the whole batch: each row slides on its own.
        rows = [_windowed(model, [row], max_new_tokens, max_length, seed, **decode_args)[0]
                for row in prompt_rows]
    else:
        rows = _windowed(model, prompt_rows, max_new_tokens, max_length, seed, **decode_args)
    ragged = _ragged(rows)
    strings = tokenizer.detokenize(ragged).numpy()
    outputs = []
    for raw in strings:
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        if stop is not None:
            cut = text.find(stop)
            if cut >= 0:
                text = text[:cut]
        outputs.append(text)
    return outputs[0] if single else outputs


def _ragged(rows: list[list[int]]) -> tf.RaggedTensor:
    """Python lists of ids (possibly empty) -> int32 RaggedTensor (len(rows), None)."""
    flat = [t for row in rows for t in row]
    return tf.RaggedTensor.from_row_lengths(
        tf.constant(flat, tf.int32, shape=[len(flat)]),
        tf.constant([len(row) for row in rows], tf.int64, shape=[len(rows)]),
    )


def _windowed(model, prompt_rows: list[list[int]], max_new_tokens: int, max_length: int, seed,
              **decode_args) -> list[list[int]]:
    """The sliding-window rounds of ``zoo.generation.window`` from Python: the new ids per row."""
    contexts = [list(row) for row in prompt_rows]
    rows: list[list[int]] = [[] for _ in prompt_rows]
    finished = [False] * len(prompt_rows)
    round_index = 0
    while not all(finished):
        context = [round_context(c, round_index, max_length) for c in contexts]
        budgets = [0 if done else round_budget(len(c), max_new_tokens - len(row), max_length)
                   for c, row, done in zip(context, rows, finished, strict=True)]
        new, _ = _decode(model, context, None, min(max_new_tokens, max_length - 1), seed,
                         row_max=budgets, step_offset=round_index * max_length,
                         max_length=max_length, **decode_args)
        for b, tokens in enumerate(new):
            if finished[b]:
                continue
            tokens = tokens[: budgets[b]]
            rows[b].extend(tokens)
            contexts[b].extend(tokens)
            finished[b] = len(tokens) < budgets[b] or len(rows[b]) >= max_new_tokens
        round_index += 1
    return rows


def _decode(model, rows: list[list[int]], keep: int | None, max_new_tokens: int, seed, *,
            strategy, temperature, top_k, top_p, num_beams, stop_token_ids, jit_compile,
            suppressed_token_ids=None, row_max=None, step_offset: int = 0,
            max_length: int | None = None):
    """One compiled decoding pass over the last ``keep`` tokens of every row (``row_max``: each
    row's budget, ``max_length``: the loop's context bound, as ``generate_ids`` takes them).
    Returns (new token ids per row, whether each row stopped early)."""
    ids, lengths = dense_rows(rows)
    if strategy == "beam" and row_max is not None:  # one row: its budget is the loop's
        max_new_tokens, max_length = int(row_max[0]), None
        keep = getattr(model, "max_length", None)
        keep = None if keep is None else keep - max_new_tokens
    cap = keep if max_length is None else max_length - 1
    prompt_ids, prompt_lengths, _ = prepare_prompts(ids, lengths, keep=keep, bucket=PROMPT_BUCKET,
                                                    max_width=cap)
    batch = len(rows)
    common = dict(stop_token_ids=stop_token_ids, jit_compile=jit_compile,
                  suppressed_token_ids=suppressed_token_ids)
    if strategy == "beam":
        new_ids, num_new = beam_search_ids(model, prompt_ids, prompt_lengths, max_new_tokens,
                                           num_beams, **common)
        budgets = np.full([batch], max_new_tokens)
    else:
        budgets = np.full([batch], max_new_tokens) if row_max is None else np.asarray(row_max)
        windowing = dict(row_max_new_tokens=budgets.astype(np.int32), max_length=max_length,
                         step_offset=step_offset)
        if strategy == "sample":
            new_ids, num_new = generate_ids(
                model, prompt_ids, prompt_lengths, max_new_tokens,
                temperature=np.full([batch], float(temperature), np.float32),
                top_k=np.full([batch], int(top_k), np.int32),
                top_p=np.full([batch], float(top_p), np.float32),
                seeds=np.array([row_seed(seed, b) for b in range(batch)], np.int64),
                **windowing, **common,
            )
        else:
            new_ids, num_new = generate_ids(model, prompt_ids, prompt_lengths, max_new_tokens,
                                            **windowing, **common)
    counts = np.asarray(num_new)
    new_rows = [list(map(int, row[:n])) for row, n in zip(np.asarray(new_ids), counts, strict=True)]
    return new_rows, counts < budgets
