"""Word vectors queried and evaluated in NumPy: nearest neighbours, analogies, WordSim-353 and
the Google analogy questions.

Every score is the cosine of unit vectors, cos(x, y) = x.y / (|x| |y|). Words are looked up as
given, else lower-cased (PTB is lower case, the test files are not); on a vocabulary ordered by
frequency that is what gensim's ``case_insensitive=True`` does.

* ``most_similar(word)``: the ``top_k`` words of largest cos(w, word), the word itself excluded.
* ``analogy(a, b, c)`` ("a is to b as c is to ?"), 3CosAdd: argmax_x cos(x, b) - cos(x, a) +
  cos(x, c) over the vocabulary minus {a, b, c} (gensim's ``most_similar(positive=[b, c],
  negative=[a])`` ranks the same way).
* ``wordsim_spearman``: Spearman's rho between the human scores of the word pairs whose two
  words are known and their cosines (gensim's ``evaluate_word_pairs``), with the pairs covered.
* ``analogy_accuracy``: the share of the questions whose four words are among the ``restrict``
  most frequent words that 3CosAdd (searched over those words) answers exactly (gensim's
  ``evaluate_word_analogies``, ``restrict_vocab``), with the questions covered.

The test files are the copies gensim ships (``gensim.test.utils.datapath``): ``wordsim353.tsv``
and ``questions-words.txt`` (``test_file``).
"""

from __future__ import annotations

import numpy as np

from zoo.errors import ZooError

WORDSIM_FILE = "wordsim353.tsv"
ANALOGY_FILE = "questions-words.txt"
RESTRICT_VOCAB = 30000  # gensim's evaluate_word_analogies default


def test_file(name: str) -> str:
    """The path of one of gensim's test data files (``ZooError`` without gensim)."""
    from zoo.extras import require

    utils = require("gensim.test.utils", extra="bench", package="gensim",
                    purpose="evaluating word vectors (WordSim-353, Google analogies)")
    return utils.datapath(name)


class WordVectors:
    """Words (most frequent first) and their vectors ``(V, d)``, with the unit vectors kept."""

    def __init__(self, words: list[str], vectors: np.ndarray):
        self.words = list(words)
        self.vectors = np.asarray(vectors, np.float32)
        if len(self.words) != len(self.vectors):
            raise ValueError(f"{len(self.words)} words for {len(self.vectors)} vectors")
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        self.unit = self.vectors / np.maximum(norms, 1e-12)
        self.index: dict[str, int] = {}
        for i, word in enumerate(self.words):
            self.index.setdefault(word, i)
        self._lower: dict[str, int] = {}
        for i, word in enumerate(self.words):
            self._lower.setdefault(word.lower(), i)

    def find(self, word: str) -> int | None:
        """The row of ``word`` (as given, else lower-cased), or None."""
        found = self.index.get(word)
        return found if found is not None else self._lower.get(word.lower())

    def row(self, word: str) -> int:
        """The row of ``word``; ``ZooError`` naming it when the vocabulary lacks it."""
        found = self.find(word)
        if found is None:
            raise ZooError(f"the word {word!r} is not in the vocabulary ({len(self.words)} words)")
        return found

    def _top(self, scores: np.ndarray, exclude: list[int], top_k: int) -> list[tuple[str, float]]:
        scores = scores.astype(np.float64)
        scores[exclude] = -np.inf
        top_k = min(int(top_k), len(scores) - len(exclude))
        best = np.argpartition(-scores, top_k - 1)[:top_k] if top_k > 0 else np.array([], int)
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(self.words[i], float(scores[i])) for i in best]

    def most_similar(self, word: str, top_k: int = 10) -> list[tuple[str, float]]:
        """The ``top_k`` nearest words by cosine, ``word`` excluded."""
        i = self.row(word)
        return self._top(self.unit @ self.unit[i], [i], top_k)

    def analogy(self, a: str, b: str, c: str, top_k: int = 1) -> list[tuple[str, float]]:
        """3CosAdd: the ``top_k`` x maximising cos(x, b) - cos(x, a) + cos(x, c), x not a, b, c."""
        ia, ib, ic = self.row(a), self.row(b), self.row(c)
        query = self.unit[ib] - self.unit[ia] + self.unit[ic]
        return self._top(self.unit @ query, [ia, ib, ic], top_k)


def wordsim_spearman(vectors: WordVectors, path: str | None = None) -> dict:
    """``{"spearman", "pairs", "pairs_total"}`` on a tab-separated ``word1 word2 score`` file
    (``#`` lines skipped; default WordSim-353)."""
    from scipy.stats import spearmanr

    path = path or test_file(WORDSIM_FILE)
    gold, model, total = [], [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            a, b, score = line.rstrip("\n").split("\t")[:3]
            total += 1
            ia, ib = vectors.find(a), vectors.find(b)
            if ia is None or ib is None:
                continue
            gold.append(float(score))
            model.append(float(vectors.unit[ia] @ vectors.unit[ib]))
    rho = float(spearmanr(gold, model).statistic) if len(gold) > 1 else float("nan")
    return {"spearman": rho, "pairs": len(gold), "pairs_total": total}


def analogy_accuracy(vectors: WordVectors, path: str | None = None,
                     restrict: int = RESTRICT_VOCAB, batch: int = 512) -> dict:
    """``{"accuracy", "correct", "questions", "questions_total"}`` on a word2vec
    ``questions-words.txt`` file (``:`` section lines skipped; default Google's)."""
    path = path or test_file(ANALOGY_FILE)
    limit = min(int(restrict), len(vectors.words))
    rows, total = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith(":") or not line.strip():
                continue
            total += 1
            found = [vectors.find(w) for w in line.split()[:4]]
            if all(i is not None and i < limit for i in found):
                rows.append(found)
    correct = 0
    unit = vectors.unit[:limit]
    questions = np.asarray(rows, np.int64).reshape(-1, 4)
    for start in range(0, len(questions), batch):
        q = questions[start:start + batch]
        scores = (unit[q[:, 1]] - unit[q[:, 0]] + unit[q[:, 2]]) @ unit.T  # (b, limit)
        for column in range(3):
            scores[np.arange(len(q)), q[:, column]] = -np.inf
        correct += int(np.sum(scores.argmax(axis=1) == q[:, 3]))
    accuracy = correct / len(questions) if len(questions) else float("nan")
    return {"accuracy": accuracy, "correct": correct, "questions": int(len(questions)),
            "questions_total": total}
