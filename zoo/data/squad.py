"""SQuAD-style extractive question answering data: reading and the split by article.

Source: ``dataset:squad`` (the SQuAD v1.1 development set, ``zoo.data.catalog``) or any file in
SQuAD's JSON layout ``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id",
"question", "answers": [{"text", "answer_start"}]}]}]}]}``.

Split, by article, never by question (a test article's paragraphs are never seen in training).
Only SQuAD v1.1 dev is available here, so its 48 articles are cut in order:

    n articles        test = the last round(n / 6)                  (SQuAD: the last 8)
                      train + validation = the first n - test       (SQuAD: the first 40)
                      validation = the last round(n / 12) of those  (SQuAD: articles 37-40)

each at least one article. ``validation`` is what checkpoints are scored on while training;
``train`` is the first 36 articles; ``train_all`` (training and validation articles) is there for
runs that want all of the first 40.
"""

from __future__ import annotations

import dataclasses
import json
import os

from zoo.data.catalog import DATASET_PREFIX, QA, TEST, TRAIN, VALIDATION, get_dataset
from zoo.errors import ZooError

TRAIN_ALL = "train_all"
SPLITS = (TRAIN, VALIDATION, TEST, TRAIN_ALL)


@dataclasses.dataclass(frozen=True)
class QAExample:
    """One question on one paragraph, with its gold answers (character spans of ``context``)."""

    id: str
    article: int  # index of the article in the file
    question: str
    context: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]

    @property
    def first_span(self) -> tuple[int, int]:
        """The first gold answer as ``(start, end)`` characters (end exclusive)."""
        return self.answer_starts[0], self.answer_starts[0] + len(self.answers[0])


def source_path(data: str) -> str:
    """The JSON file of ``data`` (``dataset:squad`` through the mirror, cache or download)."""
    if data.startswith(DATASET_PREFIX):
        from zoo.data.download import dataset_path

        name = data[len(DATASET_PREFIX):]
        spec = get_dataset(name)
        if spec.kind != QA:
            raise ZooError(f"dataset {name!r} is not a question-answering dataset "
                           f"(kind {spec.kind!r}); use dataset:squad or a SQuAD JSON file")
        return dataset_path(name, spec.split_filename(TRAIN))
    if not os.path.isfile(data):
        raise ZooError(f"question-answering data {data!r} is neither dataset:squad nor a file")
    return data


def read_articles(path: str) -> list[dict]:
    """The ``data`` list of a SQuAD JSON file (``ZooError`` for another layout)."""
    try:
        with open(path, encoding="utf-8") as f:
            articles = json.load(f)["data"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ZooError(f"{path} is not a SQuAD JSON file ({type(err).__name__}: {err})") from None
    if not isinstance(articles, list) or not articles:
        raise ZooError(f"{path} holds no articles")
    return articles


def split_articles(num_articles: int) -> dict[str, range]:
    """Article indices of each split (see the module docstring)."""
    if num_articles < 3:
        raise ZooError(f"splitting by article needs at least 3 articles. Received: {num_articles}")
    test = max(1, round(num_articles / 6))
    first = num_articles - test
    validation = max(1, round(num_articles / 12))
    return {
        TRAIN: range(0, first - validation),
        VALIDATION: range(first - validation, first),
        TEST: range(first, num_articles),
        TRAIN_ALL: range(0, first),
    }


def examples_of(articles: list[dict], indices) -> list[QAExample]:
    """Every question of the articles ``indices``, in file order."""
    examples = []
    for a in indices:
        for paragraph in articles[a]["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                answers = qa.get("answers") or []
                examples.append(QAExample(
                    id=str(qa["id"]), article=a, question=qa["question"], context=context,
                    answers=tuple(x["text"] for x in answers),
                    answer_starts=tuple(int(x["answer_start"]) for x in answers),
                ))
    return examples


def load_examples(data: str, split: str) -> list[QAExample]:
    """The questions of ``split`` (``train``, ``validation``, ``test`` or ``train_all``)."""
    if split not in SPLITS:
        raise ZooError(f"unknown split {split!r} for question answering "
                       f"(splits: {', '.join(SPLITS)})")
    articles = read_articles(source_path(data))
    return examples_of(articles, split_articles(len(articles))[split])


def contexts_of(data: str, split: str) -> list[str]:
    """The distinct paragraphs of ``split``, in order (for tokenizers and masked-LM
    pre-training)."""
    return list(dict.fromkeys(e.context for e in load_examples(data, split)))
