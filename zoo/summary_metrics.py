"""ROUGE for summaries with several references, as SciTLDR reports it (Cachola et al., 2020).

For each document the reference with the best ROUGE-1 F1 against the hypothesis is chosen, and
that reference's ROUGE-1, ROUGE-2 and ROUGE-L F1 are the document's scores; the corpus figure is
the mean over the documents (the SciTLDR repository's ``scripts/cal-rouge.py``). ROUGE is
``rouge_score.rouge_scorer.RougeScorer`` with the Porter stemmer on (as ROUGE-1.5.5 ``-m``, which
``files2rouge`` runs); ROUGE-L is the sentence-level LCS (``rougeL``). Scores are fractions in
[0, 1]; a hypothesis that is empty scores 0.

This differs from ``zoo.text_metrics.rouge`` with several references (``score_multi``), which
takes the best reference of each measure separately.
"""

from __future__ import annotations

from collections.abc import Sequence

from zoo.errors import ZooError
from zoo.extras import require

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
SELECT_BY = "rouge1"

__all__ = ["ROUGE_TYPES", "best_reference_scores", "rouge_best_reference"]


def _scorer(use_stemmer: bool):
    rouge_scorer = require("rouge_score.rouge_scorer", extra="eval", package="rouge-score",
                           purpose="ROUGE")
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)


def best_reference_scores(scorer, hypothesis: str, references: Sequence[str]) -> dict[str, float]:
    """One document's F1 scores against the reference with the best ROUGE-1 F1 (the first of
    equal ones), plus ``reference``: that reference's index."""
    best, best_index = None, 0
    for index, reference in enumerate(references):
        scores = scorer.score(reference, hypothesis)  # (target, prediction)
        if best is None or scores[SELECT_BY].fmeasure > best[SELECT_BY].fmeasure:
            best, best_index = scores, index
    result = {name: float(best[name].fmeasure) for name in ROUGE_TYPES}
    result["reference"] = best_index
    return result


def rouge_best_reference(hypotheses: Sequence[str], references: Sequence,
                         use_stemmer: bool = True) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (0-1) over the documents, each scored against its reference with the
    best ROUGE-1 (see the module docstring). ``references``: per hypothesis a string or a
    non-empty list of strings (the number may differ between documents)."""
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise ZooError("hypotheses and references must be lists, not one string")
    if len(hypotheses) != len(references):
        raise ZooError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        raise ZooError("no hypotheses to score")
    scorer = _scorer(use_stemmer)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for number, (hypothesis, targets) in enumerate(zip(hypotheses, references, strict=True)):
        targets = [targets] if isinstance(targets, str) else list(targets)
        if not targets:
            raise ZooError(f"hypothesis {number} has no reference")
        scores = best_reference_scores(scorer, hypothesis, targets)
        for name in ROUGE_TYPES:
            totals[name] += scores[name]
    return {name: total / len(hypotheses) for name, total in totals.items()}
