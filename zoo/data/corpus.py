"""Reading text corpora: registered datasets' splits, text files and the :class:`Corpus`.

``load_corpus`` turns ``dataset:NAME``, a text file or a directory of ``.txt`` files into a
:class:`Corpus` with named splits. A single text (a ``stream``) is split nanoGPT-style by
characters (:func:`split_stream`); the other dataset kinds have one file a split.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable

from zoo.data.catalog import (
    DATASET_PREFIX,
    LABELLED,
    LINES,
    PAIRS,
    STREAM,
    STREAM_SPLITS,
    STREAM_TRAIN_FRACTION,
    TEST,
    TRAIN,
    VALIDATION,
    DatasetSpec,
    get_dataset,
    list_datasets,
)
from zoo.data.download import DATA_DIR_ENV, dataset_path
from zoo.errors import ZooError


def read_text(path: str) -> str:
    """A whole file as text: UTF-8 (a leading BOM dropped), universal newlines ('\\r\\n' -> '\\n')."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ZooError(f"{path} is not UTF-8 text: {e}") from e
    except OSError as e:
        raise ZooError(f"cannot read {path}: {e.strerror or e}") from e


def _nonempty_lines(text: str) -> list[str]:
    return [s for s in (line.strip() for line in text.split("\n")) if s]


def split_stream(
    text: str, split: str, train_fraction: float = STREAM_TRAIN_FRACTION, name: str = "corpus"
) -> str:
    """nanoGPT's split of one text: the first ``int(n * fraction)`` characters are train."""
    cut = int(len(text) * train_fraction)
    if split == TRAIN:
        return text[:cut]
    if split == VALIDATION:
        return text[cut:]
    if split == TEST:
        raise ZooError(
            f"{name} has no test split: a single text is split {train_fraction:.0%} train / "
            f"{1 - train_fraction:.0%} validation (use 'validation')"
        )
    raise ZooError(f"{name} has no {split!r} split (splits: {', '.join(STREAM_SPLITS)})")


def _check_split(spec: DatasetSpec, split: str) -> None:
    if spec.kind == STREAM:
        if split not in STREAM_SPLITS:
            split_stream("", split, spec.train_fraction, spec.name)  # raises the right error
    elif split not in spec.splits:
        raise ZooError(
            f"dataset {spec.name!r} has no {split!r} split (splits: {', '.join(spec.splits)})"
        )


def stream_text(name: str, split: str) -> str:
    """One split of a stream dataset (``tinyshakespeare``, ``warandpeace``)."""
    spec = get_dataset(name)
    if spec.kind != STREAM:
        raise ZooError(f"dataset {name!r} is not a single text (kind {spec.kind!r})")
    _check_split(spec, split)
    text = read_text(dataset_path(name, spec.split_filename(split)))
    return split_stream(text, split, spec.train_fraction, name)


def dataset_lines(name: str, split: str, lang: str | None = None) -> list[str]:
    """The sentences of one split: stripped, empty lines dropped.

    For ``pairs`` datasets ``lang`` picks the side (default: the first language) -- use
    :func:`translation_pairs` to keep both sides aligned; for ``labelled`` datasets the texts.
    """
    spec = get_dataset(name)
    _check_split(spec, split)
    if spec.kind == LINES:
        return _nonempty_lines(read_text(dataset_path(name, spec.split_filename(split))))
    if spec.kind == PAIRS:
        lang = lang or spec.languages[0]
        return _aligned_lines(spec, split, lang)
    if spec.kind == LABELLED:
        return labelled_texts(split, name)[0]
    return [line for line in stream_text(name, split).split("\n") if line.strip()]


def _aligned_lines(spec: DatasetSpec, split: str, lang: str) -> list[str]:
    if lang not in spec.languages:
        raise ZooError(
            f"dataset {spec.name!r} has no language {lang!r} (languages: "
            f"{', '.join(spec.languages)})"
        )
    text = read_text(dataset_path(spec.name, spec.split_filename(split, lang)))
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start a new one
    return [line.strip() for line in lines]


def translation_pairs(
    split: str, src: str = "en", tgt: str = "de", name: str = "multi30k"
) -> tuple[list[str], list[str]]:
    """``(source_lines, target_lines)`` of a line-aligned translation dataset, same length."""
    spec = get_dataset(name)
    if spec.kind != PAIRS:
        raise ZooError(f"dataset {name!r} is not a translation dataset (kind {spec.kind!r})")
    if src == tgt:
        raise ZooError(f"source and target language are both {src!r}")
    _check_split(spec, split)
    source = _aligned_lines(spec, split, src)
    target = _aligned_lines(spec, split, tgt)
    if len(source) != len(target):
        raise ZooError(
            f"{name} {split}: {len(source)} {src} lines but {len(target)} {tgt} lines; "
            "the files are not aligned"
        )
    return source, target


def labelled_texts(split: str, name: str = "sst2") -> tuple[list[str], list[int]]:
    """``(texts, labels)`` of a labelled TSV dataset.

    Reads both layouts: the mirror's ``label<TAB>sentence`` (or ``label<TAB>content``, CRLF or LF)
    and GLUE's ``sentence<TAB>label``. GLUE's unlabelled ``test.tsv`` (``index<TAB>sentence``)
    gives a ``ZooError``.
    """
    spec = get_dataset(name)
    if spec.kind != LABELLED:
        raise ZooError(f"dataset {name!r} is not a labelled dataset (kind {spec.kind!r})")
    _check_split(spec, split)
    path = dataset_path(name, spec.split_filename(split))
    rows = [line.rstrip("\r") for line in read_text(path).split("\n")]
    rows = [row for row in rows if row.strip()]
    if not rows:
        raise ZooError(f"{path} is empty")
    header = [h.strip().lower() for h in rows[0].split("\t")]
    if "label" not in header:
        raise ZooError(
            f"{path} has no label column (header {rows[0]!r}); for {name}, labelled {split} data "
            f"is only available from a data mirror ({DATA_DIR_ENV})"
        )
    label_col = header.index("label")
    text_cols = [i for i, h in enumerate(header) if h in ("sentence", "content", "text")]
    text_col = text_cols[0] if text_cols else 1 - label_col
    texts: list[str] = []
    labels: list[int] = []
    for number, row in enumerate(rows[1:], start=2):
        fields = row.split("\t")
        try:
            label = int(fields[label_col])
            text = fields[text_col].strip()
        except (IndexError, ValueError):
            raise ZooError(f"{path}:{number}: malformed row {row[:80]!r}") from None
        texts.append(text)
        labels.append(label)
    return texts, labels



class Corpus:
    """Text with named splits, loaded lazily and kept once loaded.

    ``kind == "stream"``: one text per split (``text(split)``); ``lines(split)`` gives its
    non-empty lines. ``kind == "lines"``: a list of sentences per split (``lines(split)``);
    ``text(split)`` joins them with newlines.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        splits: tuple[str, ...],
        loader: Callable[[str], str | list[str]],
        description: str = "",
    ):
        if kind not in (STREAM, LINES):
            raise ValueError(f"corpus kind must be 'stream' or 'lines', not {kind!r}")
        self.name = name
        self.kind = kind
        self.splits = tuple(splits)
        self.description = description
        self._loader = loader
        self._loaded: dict[str, str | list[str]] = {}

    def __repr__(self) -> str:
        return f"Corpus(name={self.name!r}, kind={self.kind!r}, splits={self.splits!r})"

    def _get(self, split: str) -> str | list[str]:
        if split not in self.splits:
            if self.kind == STREAM and split == TEST:
                split_stream("", TEST, name=self.name)  # raises: no test split
            raise ZooError(f"{self.name} has no {split!r} split (splits: {', '.join(self.splits)})")
        if split not in self._loaded:
            self._loaded[split] = self._loader(split)
        return self._loaded[split]

    def text(self, split: str) -> str:
        """One split as a single text (a ``lines`` corpus's sentences joined with newlines)."""
        data = self._get(split)
        return data if isinstance(data, str) else "\n".join(data)

    def lines(self, split: str) -> list[str]:
        """One split as a list of lines (a stream's non-empty lines)."""
        data = self._get(split)
        if isinstance(data, str):
            return [line for line in data.split("\n") if line.strip()]
        return list(data)

    def training_texts(self) -> list[str]:
        """What a tokenizer should learn from: the train split.

        A stream's train text is given as its lines *with* their newline characters, so every
        character of the stream (newlines included) is seen and no single string is huge.
        """
        if self.kind == STREAM:
            return self.text(TRAIN).splitlines(keepends=True)
        return self.lines(TRAIN)


def _dataset_corpus(spec_name: str) -> Corpus:
    name, _, lang = spec_name.partition(":")
    spec = get_dataset(name)
    if lang and spec.kind != PAIRS:
        raise ZooError(f"dataset {name!r} has no languages; use dataset:{name}")
    if spec.kind == STREAM:
        return Corpus(
            name, STREAM, spec.splits, lambda split: stream_text(name, split), spec.description
        )
    if spec.kind == PAIRS:
        lang = lang or spec.languages[0]
        if lang not in spec.languages:
            raise ZooError(
                f"dataset {name!r} has no language {lang!r} (languages: "
                f"{', '.join(spec.languages)})"
            )
        return Corpus(
            f"{name}:{lang}",
            LINES,
            spec.splits,
            lambda split: dataset_lines(name, split, lang),
            spec.description,
        )
    return Corpus(
        name, LINES, spec.splits, lambda split: dataset_lines(name, split), spec.description
    )


def load_corpus(source: str) -> Corpus:
    """A :class:`Corpus` from ``dataset:NAME``, a text file, or a directory of ``.txt`` files.

    ``dataset:multi30k`` is the English side; ``dataset:multi30k:de`` the German one. A file or a
    directory (its ``*.txt`` files sorted by name, joined with ``"\\n"``) is a stream corpus split
    90% train / 10% validation by characters.
    """
    if not isinstance(source, str) or not source.strip():
        raise ZooError("no data source given: use dataset:NAME, a text file or a directory")
    if source.startswith(DATASET_PREFIX):
        return _dataset_corpus(source[len(DATASET_PREFIX) :].strip())

    path = os.path.abspath(os.path.expanduser(source))
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.txt")))
        files = [f for f in files if os.path.isfile(f)]
        if not files:
            raise ZooError(f"directory {source} holds no .txt files")
        texts = [t for t in (read_text(f) for f in files) if t]
        text = "\n".join(texts)
        name = os.path.basename(path.rstrip(os.sep)) or "corpus"
    elif os.path.isfile(path):
        text = read_text(path)
        name = os.path.splitext(os.path.basename(path))[0]
    elif os.path.exists(path):
        raise ZooError(f"{source} is neither a file nor a directory")
    else:
        known = ", ".join(f"{DATASET_PREFIX}{n}" for n in list_datasets())
        raise ZooError(f"no such file or directory: {source} (or use one of: {known})")
    if not text.strip():
        raise ZooError(f"{source} is empty: there is no text to train on")

    return Corpus(
        name,
        STREAM,
        STREAM_SPLITS,
        lambda split: split_stream(text, split, name=name),
        f"text from {source}",
    )
