"""Beam search over the ``CausalLM`` cache contract, with ``keras.ops``.

    new_ids, num_new = beam_search(model, BeamSampler(num_beams=4), prompt_ids, prompt_lengths,
                                   settings)

A hypothesis is scored by the sum of its tokens' log-probabilities (a stop token counts as a
scored token but is not returned), divided by ``length ** length_penalty`` when
``length_penalty != 0`` (``length`` = scored tokens)::

    s(y) = sum_t log p(y_t | y_<t, prompt) / |y| ** alpha

Beams of a row share its prompt: the prefilled cache is expanded to ``B * K`` rows and every
step reorders every cache leaf by the source beam. Finished beams (stop token) stay in the beam
with a frozen score, so they compete with live ones, and the best finished hypothesis of each row
is also kept aside, so it cannot be lost. A row stops after ``max_new_tokens`` steps or once no
live beam can still beat its best finished hypothesis. ``num_beams=1`` is greedy decoding.
"""

from __future__ import annotations

from keras import ops, tree

from zoo.backends import current
from zoo.generation.loop import DecodeSettings, _is_stop, begin, feed
from zoo.generation.prompts import gather_rows
from zoo.generation.samplers import BeamSampler, argmax

__all__ = ["beam_search"]

_NEG_INF = float("-inf")


def _size(x, axis: int):
    static = x.shape[axis]
    return static if static is not None else ops.shape(x)[axis]


def _normalise(score, length, length_penalty: float):
    if length_penalty == 0.0:
        return score
    length = ops.cast(ops.maximum(length, 1), "float32")
    return score / ops.power(length, length_penalty)


def _gather_beams(x, index):
    """``x (B, K, N)`` gathered along K by ``index (B, K)``."""
    if current() == "tensorflow":
        import tensorflow as tf

        return tf.gather(x, index, batch_dims=1)
    return ops.take_along_axis(x, index[:, :, None], axis=1)


def beam_search(model, sampler: BeamSampler, prompt_ids, prompt_lengths,
                settings: DecodeSettings):
    """The best hypothesis of every row: ``(new_ids (B, M) int32, num_new (B,) int32)``."""
    n_new, beams, alpha = settings.max_new_tokens, sampler.num_beams, sampler.length_penalty
    suppressed = settings.suppressed
    batch, prompt_len, total, stop_ids, start, last, cache = begin(
        model, prompt_ids, prompt_lengths, settings
    )
    # beams share the prompt: expand the prefilled cache to batch * beams rows
    cache = tree.map_structure(lambda leaf: ops.repeat(leaf, beams, axis=0), cache)
    last = ops.repeat(last, beams, axis=0)
    vocab = _size(last, 1)

    # only beam 0 is live at first, so the first expansion does not pick duplicates
    first_scores = ops.array([0.0] + [_NEG_INF] * (beams - 1), "float32")
    state = dict(
        scores=ops.tile(first_scores[None, :], (batch, 1)),  # summed log-probabilities
        finished=ops.zeros((batch, beams), "bool"),  # beam ended with a stop token
        scored=ops.zeros((batch, beams), "int32"),  # scored tokens (stop token included)
        ntok=ops.zeros((batch, beams), "int32"),  # tokens in seqs (stop token excluded)
        seqs=ops.zeros((batch, beams, n_new), "int32"),
        best_score=ops.full((batch,), _NEG_INF, "float32"),  # best finished (normalised)
        best_seq=ops.zeros((batch, n_new), "int32"),
        best_len=ops.zeros((batch,), "int32"),
        done=ops.zeros((batch,), "bool"),
    )
    beam_range = ops.arange(beams, dtype="int32")
    row_offset = (ops.arange(batch, dtype="int32") * beams)[:, None]
    token_range = ops.arange(vocab, dtype="int32")
    column_range = ops.arange(n_new, dtype="int32")

    def cond(i, last, cache, s):
        return ops.logical_and(i < total, ops.logical_not(ops.all(s["done"])))

    def body(i, last, cache, s):
        gen = ops.logical_and(i >= prompt_lengths, ops.logical_not(s["done"]))  # (B,)
        scores, finished = s["scores"], s["finished"]
        logp = ops.reshape(ops.log_softmax(last, axis=-1), (-1, beams, vocab))
        # a finished beam has one continuation ("stay", token slot 0) at its own score
        stay = ops.where(token_range[None, None, :] == 0, scores[:, :, None], _NEG_INF)
        cand = ops.where(finished[:, :, None], stay, scores[:, :, None] + logp)
        vals, flat = ops.top_k(ops.reshape(cand, (-1, beams * vocab)), beams)
        flat = ops.cast(flat, "int32")
        src = flat // vocab
        tok = flat % vocab
        src_fin = gather_rows(finished, src)
        tok_stop = ops.logical_and(ops.logical_not(src_fin), _is_stop(tok, stop_ids))
        appended = ops.logical_not(ops.logical_or(src_fin, tok_stop))
        g_ntok = gather_rows(s["ntok"], src)
        g_scored = gather_rows(s["scored"], src) + ops.cast(ops.logical_not(src_fin), "int32")
        g_seqs = _gather_beams(s["seqs"], src)
        write = ops.logical_and(appended[:, :, None],
                                column_range[None, None, :] == g_ntok[:, :, None])
        g_seqs = ops.where(write, tok[:, :, None], g_seqs)
        g_ntok = g_ntok + ops.cast(appended, "int32")
        g_fin = ops.logical_or(src_fin, tok_stop)

        # hypotheses that just emitted a stop token enter the pool of finished ones
        stop_norm = _normalise(vals, g_scored, alpha)
        stop_norm = ops.where(ops.logical_and(tok_stop, gen[:, None]), stop_norm, _NEG_INF)
        pick = argmax(stop_norm)
        pick_score = ops.max(stop_norm, axis=1)
        better = pick_score > s["best_score"]
        best_score = ops.where(better, pick_score, s["best_score"])
        best_seq = ops.where(better[:, None], _gather_beams(g_seqs, pick[:, None])[:, 0],
                             s["best_seq"])
        best_len = ops.where(better, gather_rows(g_ntok, pick[:, None])[:, 0], s["best_len"])

        # rows still reading their prompt (or done) keep their beams in place
        g2 = gen[:, None]
        src = ops.where(g2, src, beam_range[None, :])
        scores = ops.where(g2, vals, scores)
        finished = ops.where(g2, g_fin, finished)
        scored = ops.where(g2, g_scored, s["scored"])
        ntok = ops.where(g2, g_ntok, s["ntok"])
        seqs = ops.where(gen[:, None, None], g_seqs, s["seqs"])
        prompt_tok = ops.take(prompt_ids, ops.minimum(i, prompt_len - 1), axis=1)
        feed_tokens = ops.where(g2, tok, ops.broadcast_to(prompt_tok[:, None], ops.shape(tok)))

        # a row is done after max_new_tokens steps, or when no live beam can still beat the
        # best finished hypothesis (log-probabilities only decrease as a beam grows):
        #   alpha > 0:  s' / n'^alpha <= s / max_new^alpha
        #   alpha <= 0: s' / n'^alpha <= s / (n + 1)^alpha
        live = ops.logical_and(ops.logical_not(finished), scores > _NEG_INF)
        if alpha > 0.0:
            bound = _normalise(scores, ops.full(ops.shape(scored), n_new, "int32"), alpha)
        else:
            bound = _normalise(scores, scored + 1, alpha)
        bound = ops.max(ops.where(live, bound, _NEG_INF), axis=1)
        early = best_score >= bound
        reached = i - prompt_lengths + 1 >= n_new
        done = ops.logical_or(s["done"], ops.logical_and(gen, ops.logical_or(reached, early)))

        # reorder every cache leaf by the source beam, then feed the chosen tokens at index i
        order = ops.reshape(row_offset + src, (-1,))
        cache = tree.map_structure(lambda leaf: ops.take(leaf, order, axis=0), cache)
        last, cache = feed(model, ops.reshape(feed_tokens, (-1, 1)), cache, i, suppressed)
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
        return i + 1, last, cache, new_state

    _, _, _, s = ops.while_loop(cond, body, (start, last, cache, state))
    # live beams that used the whole budget compete with the best finished hypothesis
    complete = ops.logical_and(ops.logical_not(s["finished"]), s["ntok"] >= n_new)
    live_norm = ops.where(complete, _normalise(s["scores"], s["scored"], alpha), _NEG_INF)
    pick = argmax(live_norm)
    use_live = ops.max(live_norm, axis=1) > s["best_score"]
    new_ids = ops.where(use_live[:, None], _gather_beams(s["seqs"], pick[:, None])[:, 0],
                        s["best_seq"])
    num_new = ops.where(use_live, ops.full(ops.shape(use_live), n_new, "int32"), s["best_len"])
    return new_ids, num_new
