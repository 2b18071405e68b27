"""Labelled texts for classification: ``dataset:NAME`` or a TSV/CSV file of label and text.

A file: ``.csv`` is comma-separated (RFC 4180 quoting), anything else tab-separated when its first
line holds a tab (quotes are literal text then, as in GLUE's TSVs), else comma-separated. CRLF
line ends and a UTF-8 BOM are fine. A first row naming a label column (``label``, ``labels``,
``class``, ``category``, ``target``) is a header: the text column is the one named ``text``,
``sentence``, ``content``, ``review`` or ``document`` (or, with two columns, the other one).
Without a header a row is ``label<SEP>text``. Labels are strings (class names); a row with too
few columns or an empty label raises ``ZooError`` naming the file and line.

Splits of a file: ``train`` and ``validation`` are a fixed 90% / 10% split of its rows (a
permutation seeded with 0); ``all`` is every row. ``dataset:sst2`` has ``train``,
``validation`` (GLUE dev) and ``test`` (mirror only); its labels are named
``negative`` / ``positive``.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from zoo.data.catalog import DATASET_PREFIX
from zoo.data.corpus import labelled_texts
from zoo.errors import ZooError

LABEL_COLUMNS = ("label", "labels", "class", "category", "target")
TEXT_COLUMNS = ("text", "sentence", "content", "review", "document")
LABEL_NAMES = {"sst2": ("negative", "positive")}
TRAIN_FRACTION = 0.9
ALL = "all"


def read_labelled_file(path: str) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` of a TSV/CSV file (see the module docstring)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            content = f.read()
    except FileNotFoundError:
        raise ZooError(f"no such file: {path}") from None
    except UnicodeDecodeError as err:
        raise ZooError(f"{path} is not UTF-8 text: {err}") from None
    except OSError as err:
        raise ZooError(f"cannot read {path}: {err.strerror or err}") from None
    first_line = content.split("\n", 1)[0]
    if path.lower().endswith(".csv") or "\t" not in first_line:
        reader = csv.reader(io.StringIO(content), delimiter=",")
    else:
        reader = csv.reader(io.StringIO(content), delimiter="\t", quoting=csv.QUOTE_NONE)
    texts: list[str] = []
    labels: list[str] = []
    label_col, text_col, width = 0, 1, 2
    first = True
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if first:
                first = False
                names = [cell.strip().lower() for cell in row]
                found = [i for i, n in enumerate(names) if n in LABEL_COLUMNS]
                if found:
                    label_col = found[0]
                    texts_found = [i for i, n in enumerate(names) if n in TEXT_COLUMNS]
                    if texts_found:
                        text_col = texts_found[0]
                    elif len(names) == 2:
                        text_col = 1 - label_col
                    else:
                        raise ZooError(
                            f"{path}:{line}: header {row!r} names no text column "
                            f"(one of {', '.join(TEXT_COLUMNS)})"
                        )
                    width = max(label_col, text_col) + 1
                    continue
            if len(row) < width:
                raise ZooError(
                    f"{path}:{line}: expected {width} columns (label and text), found {len(row)}: "
                    f"{row!r:.80}"
                )
            label = row[label_col].strip()
            if not label:
                raise ZooError(f"{path}:{line}: empty label")
            labels.append(label)
            texts.append(row[text_col].strip())
    except csv.Error as err:
        raise ZooError(f"{path}:{reader.line_num}: {err}") from None
    if not texts:
        raise ZooError(f"{path} holds no labelled rows")
    return texts, labels


def _file_split(texts: list[str], labels: list[str], split: str, source: str):
    if split == ALL:
        return texts, labels
    order = np.random.default_rng(0).permutation(len(texts))
    cut = int(round(len(texts) * TRAIN_FRACTION))
    if split == "train":
        chosen = np.sort(order[:cut])
    elif split == "validation":
        chosen = np.sort(order[cut:])
    else:
        raise ZooError(f"{source} has no {split!r} split (splits: train, validation, all)")
    return [texts[i] for i in chosen], [labels[i] for i in chosen]


def load_labelled(data: str, split: str) -> tuple[list[str], list[str]]:
    """``(texts, labels as strings)`` of one split of ``data`` (``dataset:NAME`` or a file)."""
    if not isinstance(data, str) or not data.strip():
        raise ZooError("no data source given: use dataset:sst2 or a labelled TSV/CSV file")
    if data.startswith(DATASET_PREFIX):
        name = data[len(DATASET_PREFIX):].strip()
        texts, ids = labelled_texts(split, name)
        names = LABEL_NAMES.get(name)
        if names is not None:
            bad = sorted({i for i in ids if not 0 <= i < len(names)})
            if bad:
                raise ZooError(f"dataset {name!r}: unexpected labels {bad}")
            return texts, [names[i] for i in ids]
        return texts, [str(i) for i in ids]
    path = os.path.abspath(os.path.expanduser(data))
    if os.path.isdir(path):
        raise ZooError(f"{data} is a directory; give a labelled TSV/CSV file")
    texts, labels = read_labelled_file(path)
    return _file_split(texts, labels, split, data)


def class_names(labels: list[str], data: str = "") -> list[str]:
    """The sorted distinct labels (numerically when every label is an integer); a dataset with
    fixed names (sst2) keeps its own order."""
    if data.startswith(DATASET_PREFIX):
        fixed = LABEL_NAMES.get(data[len(DATASET_PREFIX):].strip())
        if fixed is not None:
            return list(fixed)
    distinct = set(labels)
    try:
        return sorted(distinct, key=int)
    except ValueError:
        return sorted(distinct)


def label_ids(labels: list[str], names: list[str], source: str = "") -> np.ndarray:
    """Class indices of ``labels``; a label outside ``names`` raises ``ZooError``."""
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ZooError(
            f"{source or 'the data'} has labels the model does not know: {unknown[:5]} "
            f"(classes: {', '.join(names)})"
        )
    return np.array([index[label] for label in labels], np.int64)
