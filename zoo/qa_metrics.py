"""SQuAD's answer metrics: exact match and token F1 after answer normalisation.

Normalisation (as SQuAD v1.1's official evaluation): lower case, drop ASCII punctuation
(``string.punctuation``), drop the articles ``a``, ``an``, ``the`` as whole words, collapse white
space. With ``p`` and ``g`` the normalised prediction and gold answer split on white space:

    EM(p, g) = 1 if p == g else 0
    F1(p, g) = 2 P R / (P + R),  P = |p ∩ g| / |p|,  R = |p ∩ g| / |g|   (∩: multiset overlap;
                                                                        F1 = 0 when it is empty)

A question scores the maximum over its gold answers; a set scores the mean over questions, in
percent. Standard library only.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

__all__ = ["exact_match", "normalize_answer", "squad_scores", "token_f1"]

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD's normalisation)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """F1 of the normalised tokens (multiset overlap); see the module docstring."""
    predicted = normalize_answer(prediction).split()
    wanted = normalize_answer(gold).split()
    common = sum((Counter(predicted) & Counter(wanted)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict:
    """``{"exact_match", "f1", "examples"}``: percentages, each question's best gold answer."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions")
    em = f1 = 0.0
    for prediction, answers in zip(predictions, golds, strict=True):
        if not answers:
            raise ValueError("every question needs at least one gold answer")
        em += max(exact_match(prediction, g) for g in answers)
        f1 += max(token_f1(prediction, g) for g in answers)
    n = max(len(predictions), 1)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n, "examples": len(predictions)}
