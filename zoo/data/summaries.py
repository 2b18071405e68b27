"""Documents and their reference summaries, for the ``summarizer`` task.

Data sources (``load_summaries``):

* ``dataset:scitldr`` -- SciTLDR-A (Cachola et al., 2020): a computer-science paper's abstract ->
  its one-sentence TLDR. Splits train / validation / test (the repository's train / dev / test
  files; train has one TLDR a paper, dev and test one to four). An abstract is its ``source``
  sentences joined with a space.
* a ``.jsonl`` file -- one object a line with ``source`` and ``target``, each a string or a list
  (a list ``source`` is sentences, joined with a space; a list ``target`` is several references).
* a ``.tsv`` file -- ``source<TAB>summary`` a line (an optional header ``source<TAB>target``).

A file is split like a file of translation pairs: the first 90% of the documents train, the rest
validation. Documents with an empty source or no non-empty reference are dropped.

Each document keeps its sentences, so that the lead-1 baseline (the first sentence of the
document) is the dataset's own first sentence where it has them; a plain-string source is split
at sentence ends (``.``, ``!`` or ``?`` followed by white space).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable

from zoo.data.catalog import DATASET_PREFIX, STREAM_TRAIN_FRACTION, TRAIN, VALIDATION, get_dataset
from zoo.data.corpus import read_text
from zoo.errors import ZooError

SUMMARIES = "summaries"  # the DatasetSpec kind of a summarisation dataset
FILE_SPLITS = (TRAIN, VALIDATION)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

__all__ = ["SUMMARIES", "Document", "SummaryCorpus", "lead", "load_summaries", "split_sentences"]


@dataclasses.dataclass(frozen=True)
class Document:
    """A document to summarise: its sentences and its reference summaries (one or more)."""

    sentences: tuple[str, ...]
    references: tuple[str, ...]

    @property
    def text(self) -> str:
        """The document as one string: its sentences joined with a space."""
        return " ".join(self.sentences)


def split_sentences(text: str) -> list[str]:
    """``text`` cut after ``.``, ``!`` or ``?`` followed by white space (empty pieces dropped)."""
    return [piece.strip() for piece in _SENTENCE_END.split(text) if piece.strip()]


def lead(document: Document, count: int = 1) -> str:
    """The lead-``count`` extractive baseline: the document's first ``count`` sentences."""
    return " ".join(document.sentences[:count])


def _clean(values) -> tuple[str, ...]:
    if isinstance(values, str):
        values = [values]
    return tuple(" ".join(str(v).split()) for v in values if str(v).strip())


def _document(source, target) -> Document | None:
    sentences = _clean(source) if not isinstance(source, str) else _clean(split_sentences(source))
    references = _clean(target)
    if not sentences or not references:
        return None
    return Document(sentences, references)


def read_jsonl(path: str) -> list[Document]:
    """Documents of a JSON-lines file with ``source`` and ``target`` fields (see the module
    docstring); a line that is not such an object is a ``ZooError`` naming it."""
    documents = []
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            document = _document(row["source"], row["target"])
        except (ValueError, KeyError, TypeError) as err:
            raise ZooError(f"{path}:{number}: expected a JSON object with 'source' and 'target' "
                           f"fields ({type(err).__name__}: {err})") from None
        if document is not None:
            documents.append(document)
    return documents


def read_tsv(path: str) -> list[Document]:
    """Documents of a ``source<TAB>summary`` file; a line without exactly one tab is a
    ``ZooError`` naming it."""
    documents = []
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if number == 1 and [f.strip().lower() for f in fields] in (["source", "target"],
                                                                     ["source", "summary"]):
            continue
        if len(fields) != 2:
            raise ZooError(f"{path}:{number}: expected two tab-separated columns (source, "
                           f"summary), found {len(fields)}")
        document = _document(fields[0], fields[1])
        if document is not None:
            documents.append(document)
    return documents


@dataclasses.dataclass
class SummaryCorpus:
    """Documents with named splits, loaded lazily (``documents(split)``)."""

    name: str
    splits: tuple[str, ...]
    loader: Callable[[str], list[Document]]
    _loaded: dict = dataclasses.field(default_factory=dict, repr=False)

    def documents(self, split: str) -> list[Document]:
        """The documents of ``split``."""
        if split not in self.splits:
            raise ZooError(f"{self.name} has no {split!r} split (splits: {', '.join(self.splits)})")
        if split not in self._loaded:
            self._loaded[split] = self.loader(split)
            if not self._loaded[split]:
                raise ZooError(f"the {split} split of {self.name} holds no documents")
        return self._loaded[split]

    def pairs(self, split: str) -> tuple[list[str], list[str]]:
        """``(texts, summaries)`` for training: a document once per reference."""
        texts, summaries = [], []
        for document in self.documents(split):
            for reference in document.references:
                texts.append(document.text)
                summaries.append(reference)
        return texts, summaries


def _split_file(documents: list[Document], split: str) -> list[Document]:
    if len(documents) < 2:
        raise ZooError(f"{len(documents)} document(s): need at least 2 (train and validation)")
    cut = min(max(int(len(documents) * STREAM_TRAIN_FRACTION), 1), len(documents) - 1)
    return documents[:cut] if split == TRAIN else documents[cut:]


def _dataset(name: str) -> SummaryCorpus:
    from zoo.data.download import dataset_path

    spec = get_dataset(name)
    if spec.kind != SUMMARIES:
        raise ZooError(f"dataset {name!r} is not a summarisation dataset; use dataset:scitldr")
    return SummaryCorpus(name, spec.splits,
                         lambda split: read_jsonl(dataset_path(name, spec.split_filename(split))))


def load_summaries(source: str) -> SummaryCorpus:
    """A ``SummaryCorpus`` from ``dataset:scitldr``, a ``.jsonl`` or a ``.tsv`` file."""
    if not isinstance(source, str) or not source.strip():
        raise ZooError("no data given: use dataset:scitldr, a .jsonl or a source<TAB>summary .tsv")
    if source.startswith(DATASET_PREFIX):
        return _dataset(source[len(DATASET_PREFIX):].strip())
    path = os.path.expanduser(source)
    if not os.path.isfile(path):
        raise ZooError(f"no such file: {source} (summarisation data is dataset:scitldr, a .jsonl "
                       "file with source/target fields or a source<TAB>summary .tsv file)")
    read = read_jsonl if path.endswith((".jsonl", ".json")) else read_tsv
    documents = read(path)
    name = os.path.splitext(os.path.basename(path))[0]
    return SummaryCorpus(name, FILE_SPLITS, lambda split: _split_file(documents, split))
