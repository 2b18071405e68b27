"""Metrics for any text-to-text outputs (translation, summarisation): corpus BLEU and ROUGE.

    BLEU    = BP · exp(Σ_{n=1..4} ¼ · log p_n)       corpus level (Papineni et al., 2002)
      p_n   = Σ clipped n-gram matches / Σ hypothesis n-grams, over the whole corpus
      BP    = min(1, exp(1 - r / c))                  r, c: reference and hypothesis lengths
    ROUGE-N F = 2·P·R / (P + R) over n-gram overlaps; ROUGE-L F over the longest common
      subsequence (Lin, 2004); the mean over the sentences

BLEU is ``sacrebleu.corpus_bleu`` (its defaults: ``13a`` tokenisation, exponential smoothing, on
detokenized text, 0-100); ROUGE is ``rouge_score.rouge_scorer.RougeScorer`` (its default
tokenizer lowercases and keeps ASCII letters and digits, so a non-ASCII letter splits a word:
BLEU is the measure to quote for German). Hypotheses and references are plain strings, one
reference (a str) or several (a list of str, the same number for every hypothesis) each.
``rouge-score`` comes with the ``eval`` extra; without it ``rouge`` raises ``ZooError`` saying so.
"""

from __future__ import annotations

from collections.abc import Sequence

from zoo.errors import ZooError
from zoo.extras import require

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _check(hypotheses: Sequence[str], references: Sequence) -> list[list[str]]:
    """References as one list of strings per hypothesis."""
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise ZooError("hypotheses and references must be lists of strings, not one string")
    if len(hypotheses) != len(references):
        raise ZooError(
            f"{len(hypotheses)} hypotheses but {len(references)} references: one each is needed"
        )
    if not hypotheses:
        raise ZooError("no hypotheses to score")
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    counts = {len(r) for r in refs}
    if len(counts) != 1 or 0 in counts:
        raise ZooError("every hypothesis needs the same number (>= 1) of references")
    return refs


def bleu(hypotheses: Sequence[str], references: Sequence, **options) -> float:
    """Corpus BLEU (0-100) of ``hypotheses`` against ``references`` (``sacrebleu.corpus_bleu``;
    ``options`` such as ``tokenize="intl"`` or ``lowercase=True`` are passed on)."""
    import sacrebleu

    refs = _check(hypotheses, references)
    streams = [list(stream) for stream in zip(*refs, strict=True)]  # sacrebleu: one per reference
    return float(sacrebleu.corpus_bleu(list(hypotheses), streams, **options).score)


def rouge(hypotheses: Sequence[str], references: Sequence,
          rouge_types: Sequence[str] = ROUGE_TYPES, use_stemmer: bool = False) -> dict[str, float]:
    """Mean ROUGE F-measures (0-1) over the sentences: ``{"rouge1": ..., "rouge2": ...,
    "rougeL": ...}``. With several references a sentence scores its best one (``score_multi``)."""
    refs = _check(hypotheses, references)
    rouge_scorer = require("rouge_score.rouge_scorer", extra="eval", package="rouge-score",
                           purpose="ROUGE")
    scorer = rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=use_stemmer)
    totals = dict.fromkeys(rouge_types, 0.0)
    for hypothesis, targets in zip(hypotheses, refs, strict=True):
        if len(targets) == 1:
            scores = scorer.score(targets[0], hypothesis)  # (target, prediction)
        else:
            scores = scorer.score_multi(targets, hypothesis)
        for name in rouge_types:
            totals[name] += scores[name].fmeasure
    return {name: total / len(refs) for name, total in totals.items()}
