"""zoo.text_metrics: BLEU and ROUGE equal sacrebleu / rouge-score on the same outputs, and
hand-checkable cases."""

from __future__ import annotations

import sys

import pytest
import sacrebleu

from zoo.errors import ZooError
from zoo.text_metrics import bleu, rouge

HYPOTHESES = [
    "Ein Mann in einem blauen Hemd steht auf einer Leiter.",
    "Zwei Hunde spielen im Schnee",
    "Eine Frau liest ein Buch im Park.",
    "Kinder spielen.",
]
REFERENCES = [
    "Ein Mann in einem blauen Hemd steht auf einer Leiter und putzt Fenster.",
    "Zwei Hunde spielen im Schnee.",
    "Eine Frau sitzt auf einer Bank und liest.",
    "Drei Kinder spielen Fußball auf einer Wiese.",
]


def test_bleu_equals_sacrebleu_corpus_bleu():
    expected = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score
    assert bleu(HYPOTHESES, REFERENCES) == expected
    assert 0 < expected < 100
    # the references stay paired with their hypotheses: another order scores differently
    assert bleu(HYPOTHESES, REFERENCES[::-1]) != expected
    # several references per hypothesis: sacrebleu's reference streams
    second = [r.lower() for r in REFERENCES]
    multi = bleu(HYPOTHESES, [[a, b] for a, b in zip(REFERENCES, second, strict=True)])
    assert multi == sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES, second]).score
    assert bleu(HYPOTHESES, REFERENCES, lowercase=True) == sacrebleu.corpus_bleu(
        HYPOTHESES, [REFERENCES], lowercase=True).score


def test_rouge_equals_rouge_score_mean_f_measures():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")  # the eval extra
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    scores = [scorer.score(ref, hyp) for hyp, ref in zip(HYPOTHESES, REFERENCES, strict=True)]
    expected = {k: sum(s[k].fmeasure for s in scores) / len(scores)
                for k in ("rouge1", "rouge2", "rougeL")}
    assert rouge(HYPOTHESES, REFERENCES) == pytest.approx(expected, abs=1e-12)


def test_hand_checkable_cases():
    assert bleu(REFERENCES, REFERENCES) == pytest.approx(100.0)
    assert bleu(["a b c d"], ["w x y z"]) == 0.0
    pytest.importorskip("rouge_score")  # the eval extra
    assert rouge(REFERENCES, REFERENCES) == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    # "the cat" against "the cat sat on the mat": unigram P = 2/2, R = 2/6 -> F = 0.5;
    # bigram P = 1/1, R = 1/5 -> F = 1/3; LCS = 2 -> F = 0.5
    result = rouge(["the cat"], ["the cat sat on the mat"])
    assert result == pytest.approx({"rouge1": 0.5, "rouge2": 1 / 3, "rougeL": 0.5})


def test_bad_inputs():
    with pytest.raises(ZooError, match="2 hypotheses but 1 references"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(ZooError, match="not one string"):
        rouge("a b", ["a b"])
    with pytest.raises(ZooError, match="no hypotheses"):
        bleu([], [])
    with pytest.raises(ZooError, match="same number"):
        bleu(["a", "b"], [["a"], ["b", "c"]])


def test_rouge_without_the_eval_extra_names_it(monkeypatch):
    for name in ("rouge_score", "rouge_score.rouge_scorer"):
        monkeypatch.setitem(sys.modules, name, None)  # as if rouge-score were not installed
    with pytest.raises(ZooError, match=r"ROUGE needs the rouge-score package \(the 'eval' extra\)"
                                       r".*keras-lm-zoo\[eval\]"):
        rouge(HYPOTHESES, REFERENCES)
