"""Pretrained word vectors (word2vec / GloVe text files) as a model's initial token embeddings.

    E[i] = v(w_i)          for every token i whose string w_i (else lower(w_i)) the file holds
    E[i] = E_random[i]     for the others, special tokens included (the model's seeded init)

Files (auto-detected): the **word2vec text format** (a ``COUNT DIM`` header line, then one
``word v_1 ... v_DIM`` line per word: gensim's ``KeyedVectors.save_word2vec_format(binary=False)``)
and the **GloVe text format** (the same lines without the header: Stanford's ``glove.6B.100d.txt``).
UTF-8, optionally gzip-compressed (``.gz``). Binary word2vec files (``COUNT DIM``, then each word
and its DIM float32: word2vec.c's ``-binary 1``, Google's ``GoogleNews-vectors-negative300.bin``,
gensim's ``binary=True``) are read too, detected by their bytes.

Which tokens are words: every token of a ``word`` or ``char`` tokenizer; a ``wordpiece`` token
unless it is a ``##`` continuation piece; a ``sentencepiece`` (``▁``) or byte-level BPE (``Ġ``)
token only when it starts a word, matched without its marker. The reserved tokens (padding,
unknown, ``<bos>``/``<eos>`` = ``[CLS]``/``[SEP]``, ``[MASK]``) keep their random rows.

Training (``zoo train ... --set model.embeddings=FILE [--set model.freeze_embeddings=true]``):
``settings_of`` checks the settings once for every trainer (``zoo.training.make_settings``),
and ``zoo.fitting.fit_resumable`` calls ``initialise`` on each newly built model: the vectors are
set when the run starts from scratch and left alone when it resumes from a checkpoint (the
restored weights win), and the freeze (``trainable = False``: "static" vectors, as opposed to
"fine-tuned" ones) is applied in both cases. The run's ``config.json`` records the absolute path
and the matched count under ``"pretrained_embeddings"``.

Encoder-decoders have two tables: ``model.embeddings`` fills the target (decoder) table, and the
source (encoder) table too when both sides share one vocabulary (``summarizer``); a translator's
source table, with its own tokenizer, takes ``model.source_embeddings=FILE`` (vectors of the
source language), recorded under ``"pretrained_source_embeddings"``.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import logging
import os
from collections.abc import Collection, Sequence

import keras
import numpy as np

from zoo import progress
from zoo.errors import ZooError
from zoo.models.registry import TRAINING_SETTINGS, get_spec
from zoo.special_tokens import SPECIAL_TOKENS

__all__ = [
    "EMBEDDINGS",
    "FREEZE",
    "SETTINGS",
    "SOURCE",
    "Matched",
    "VectorFile",
    "embedding_layer",
    "freeze_as_recorded",
    "initialise",
    "load_into",
    "match_tokens",
    "read_vectors",
    "settings_of",
    "token_words",
    "wants_vectors",
]

log = logging.getLogger("zoo.train")

SETTINGS = TRAINING_SETTINGS  # model.<name> settings applied by training, not by the model
EMBEDDINGS, FREEZE, SOURCE = SETTINGS  # "embeddings", "freeze_embeddings", "source_embeddings"
TASKS = ("causal_lm", "masked_lm", "classification", "question_answering", "summarization",
         "seq2seq")  # the trainers that take word vectors (and hand their tokenizers over)
SOURCE_TASKS = ("seq2seq",)  # two vocabularies: model.source_embeddings fills the source side
RECORD_KEY = "pretrained_embeddings"  # config.json
SOURCE_RECORD_KEY = "pretrained_source_embeddings"  # an encoder-decoder's source table
WORD_START = {"sentencepiece": "\u2581", "byte_bpe": "\u0120"}  # "▁", "Ġ"
CONTINUATION = {"wordpiece": "##"}
# config fields that set a model's token-embedding width, in the order they are looked for
WIDTH_SETTINGS = ("embedding_dim", "d_model", "embed_dim", "hidden_size", "units")
MIN_MATCHED_FRACTION = 0.01  # fewer matched tokens than this fraction: a warning


@dataclasses.dataclass(frozen=True)
class VectorFile:
    """Vectors read from a file: ``vectors[i]`` is the vector of ``words[i]``."""

    path: str
    format: str  # "word2vec" or "glove"
    words: list[str]
    vectors: np.ndarray  # (len(words), dim) float32
    dim: int

    def index(self) -> dict[str, int]:
        """word -> row (the first row of a word listed twice)."""
        rows: dict[str, int] = {}
        for i, word in enumerate(self.words):
            rows.setdefault(word, i)
        return rows


@dataclasses.dataclass(frozen=True)
class Matched:
    """What ``load_into`` did: ``matched`` of the ``tokens`` non-special tokens got a vector
    (``exact`` of them under their own string, the rest lower-cased)."""

    path: str
    format: str
    dim: int
    matched: int
    exact: int
    tokens: int
    freeze: bool

    def message(self, what: str = "embeddings") -> str:
        """``pretrained embeddings: matched 9,123 of 10,000 tokens from FILE (fine-tuned)``
        (``what``: which table, e.g. ``"source embeddings"``)."""
        how = "static: frozen" if self.freeze else "fine-tuned"
        return (f"pretrained {what}: matched {self.matched:,} of {self.tokens:,} tokens "
                f"from {self.path} ({self.format}, {self.dim} dimensions; {how})")

    def record(self) -> dict:
        """The run's ``config.json`` entry."""
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------
# reading


def _open_text(path: str):
    opener = gzip.open if path.endswith(".gz") else open
    return opener(path, "rt", encoding="utf-8", errors="strict", newline=None)


def _header(line: str) -> tuple[int, int] | None:
    """``(count, dim)`` of a word2vec header line ``"COUNT DIM"``, else ``None`` (GloVe)."""
    parts = line.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _split_row(line: str, dim: int, path: str, number: int) -> tuple[str, list[str] | str]:
    """``"word v_1 ... v_dim"`` (right-stripped) -> ``(word, the values unparsed)``; a word may
    hold spaces (GloVe's Common Crawl files have a few); a row of more or fewer numbers is
    refused. The usual layout (one space between fields) is only counted, not split."""
    if line.count(" ") == dim:
        word, _, values = line.partition(" ")
        return word, values
    parts = line.rsplit(None, dim)
    if len(parts) == dim + 1:
        head = parts[0].split()  # more than one piece: a word with spaces, or extra numbers
        if len(head) == 1 or not all(_is_number(p) for p in head[1:]):
            return parts[0], parts[1:]
    values = len(line.split()) - 1
    raise ZooError(f"{path} line {number}: {values} values after the word, but the file's "
                   f"vectors have {dim} (ragged rows: a truncated or corrupt file?)")


def _parse(values: list[str] | str, path: str, number: int) -> np.ndarray:
    if isinstance(values, str):
        values = values.split(" ")
    try:
        vector = np.array([float(v) for v in values], np.float32)
    except ValueError:
        bad = next(v for v in values if not _is_number(v))
        raise ZooError(f"{path} line {number}: {bad[:40]!r} is not a number") from None
    if not np.isfinite(vector).all():
        raise ZooError(f"{path} line {number}: the vector holds inf or nan")
    return vector


def read_vectors(path: str, keep: Collection[str] | None = None) -> VectorFile:
    """Read a word2vec or GloVe text file (the format is detected from its first line), or a
    binary word2vec file (a ``COUNT DIM`` line followed by bytes that are not UTF-8 text).

    ``keep``: only these words' vectors are parsed and returned (every row's length is still
    checked); None reads all. Bad input raises ``ZooError``: a missing or empty file, a
    non-UTF-8 file without a header, a truncated binary file, a header that is not ``COUNT DIM``
    or disagrees with the rows, a row with a different number of values than the others
    (ragged), a value that is not a finite number.
    """
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isfile(path):
        raise ZooError(f"no word-vector file {path}")
    if _is_binary(path):
        return _read_binary(path, keep)
    words: list[str] = []
    vectors: list[np.ndarray] = []
    try:
        with _open_text(path) as f:
            first = f.readline()
            if not first.strip():
                raise ZooError(f"{path} is empty: expected word2vec or GloVe text vectors")
            header = _header(first)
            if header is not None:
                count, dim = header
                fmt, rows, number = "word2vec", [], 1
            else:
                fmt, rows, number = "glove", [first], 0
                dim = len(first.split()) - 1
            if dim < 1:
                raise ZooError(f"{path} line 1: expected 'COUNT DIM' (word2vec) or "
                               "'word v_1 ... v_d' (GloVe)")
            for line in itertools.chain(rows, f):
                number += 1
                line = line.rstrip()  # the newline; word2vec's C tool ends rows with a space
                if not line:
                    continue
                word, values = _split_row(line, dim, path, number)
                if keep is None or word in keep:
                    words.append(word)
                    vectors.append(_parse(values, path, number))
                if header is not None:
                    count -= 1
    except UnicodeDecodeError:
        raise ZooError(f"{path} is not UTF-8 text, and has no 'COUNT DIM' line of a binary "
                       "word2vec file") from None
    except (OSError, EOFError) as err:  # an unreadable or truncated .gz
        raise ZooError(f"cannot read {path}: {err}") from None
    if header is not None and count != 0:
        raise ZooError(f"{path}: the header announces {header[0]:,} vectors but the file holds "
                       f"{header[0] - count:,}")
    matrix = np.stack(vectors) if vectors else np.zeros([0, dim], np.float32)
    return VectorFile(path=path, format=fmt, words=words, vectors=matrix, dim=dim)


def _is_binary(path: str) -> bool:
    """Whether ``path`` starts like a binary word2vec file: a ``COUNT DIM`` line, then bytes
    that are not UTF-8 (a multi-byte character cut by the sample's end aside)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            first = f.readline(256).decode("ascii", "replace")
            sample = f.read(1 << 16) if _header(first) is not None else b""
    except (OSError, EOFError) as err:
        raise ZooError(f"cannot read {path}: {err}") from None
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start < len(sample) - 3
    return False


def _read_binary(path: str, keep: Collection[str] | None) -> VectorFile:
    """Read a binary word2vec file: the ``COUNT DIM`` text line, then per word its UTF-8 bytes,
    a space and DIM little-endian float32 (word2vec.c ends each row with a newline, gensim does
    not; a newline before a word is skipped). Bytes that are not UTF-8 in a word are replaced."""
    opener = gzip.open if path.endswith(".gz") else open
    words: list[str] = []
    vectors: list[np.ndarray] = []
    try:
        with opener(path, "rb") as f:
            count, dim = _header(f.readline().decode("ascii", "replace"))
            width = 4 * dim
            buffer, start = b"", 0
            for number in range(1, count + 1):
                while True:  # the word: up to its space, then the vector's bytes
                    space = buffer.find(b" ", start)
                    if space >= 0 and len(buffer) >= space + 1 + width:
                        break
                    chunk = f.read(1 << 20)
                    if not chunk:
                        raise ZooError(f"{path}: the header announces {count:,} vectors but the "
                                       f"file holds {number - 1:,} (a truncated binary file?)")
                    buffer, start = buffer[start:] + chunk, 0
                word = buffer[start:space].lstrip(b"\n").decode("utf-8", "replace")
                if keep is None or word in keep:
                    vector = np.frombuffer(buffer, "<f4", dim, space + 1).astype(np.float32)
                    if not np.isfinite(vector).all():
                        raise ZooError(f"{path} vector {number} ({word!r}): inf or nan")
                    words.append(word)
                    vectors.append(vector)
                start = space + 1 + width
    except (OSError, EOFError) as err:  # an unreadable or truncated .gz
        raise ZooError(f"cannot read {path}: {err}") from None
    matrix = np.stack(vectors) if vectors else np.zeros([0, dim], np.float32)
    return VectorFile(path=path, format="word2vec", words=words, vectors=matrix, dim=dim)


# ------------------------------------------------------------------------------------------------
# matching tokens to words


def _vocabulary(tokenizer) -> list[str]:
    """Token strings by id (a byte-level BPE's ``{token: id}`` turned into a list)."""
    vocabulary = tokenizer.vocabulary
    if isinstance(vocabulary, dict):
        table = [""] * (max(vocabulary.values()) + 1 if vocabulary else 0)
        for token, i in vocabulary.items():
            table[i] = token
        return table
    return [str(token) for token in vocabulary]


def _special_ids(tokenizer) -> set[int]:
    names = ("pad_id", "unk_id", "bos_id", "eos_id", "end_of_text_id")
    return {i for i in (getattr(tokenizer, n, None) for n in names) if i is not None}


def token_words(kind: str, vocabulary: Sequence[str], special_ids: Collection[int] = ()) -> dict[int, str]:
    """``{token id: the word it stands for}`` of the tokens that are whole words.

    ``kind``: the tokenizer's kind. Left out: ``special_ids`` and the reserved token strings;
    ``##`` pieces (wordpiece); pieces without the word-start marker ``▁`` (sentencepiece) or
    ``Ġ`` (byte_bpe), whose marker is removed from the others.
    """
    words = {}
    start, continuation = WORD_START.get(kind), CONTINUATION.get(kind)
    for i, token in enumerate(vocabulary):
        if i in special_ids or token in SPECIAL_TOKENS or not token:
            continue
        if continuation and token.startswith(continuation):
            continue
        if start:
            if not token.startswith(start) or len(token) == len(start):
                continue
            token = token[len(start):]
        words[i] = token
    return words


def match_tokens(words: dict[int, str], index: dict[str, int]) -> tuple[dict[int, int], int]:
    """``({token id: row of its vector}, how many matched exactly)``: each word looked up as it
    is, else lower-cased."""
    rows, exact = {}, 0
    for i, word in words.items():
        if word in index:
            rows[i], exact = index[word], exact + 1
        elif word.lower() in index:
            rows[i] = index[word.lower()]
    return rows, exact


# ------------------------------------------------------------------------------------------------
# into a model


def embedding_layer(model):
    """``model.token_embedding_layer()``; ``ZooError`` for a model without one."""
    method = getattr(model, "token_embedding_layer", None)
    if method is None:
        raise ZooError(f"model {model.name!r} has no token embedding (token_embedding_layer): "
                       "model.embeddings cannot initialise it")
    return method()


def load_into(model, tokenizer, path: str, *, freeze: bool = False,
              width_setting: str | None = None, verbose: int | None = None,
              layer: keras.layers.Embedding | None = None,
              what: str = "embeddings", read: dict | None = None) -> Matched:
    """Set the rows of ``model.token_embedding_layer()`` (or ``layer``, another table of
    ``model``) of every token of ``tokenizer`` found in the word2vec/GloVe file ``path``; the
    other rows keep their values (``what``: the table's name in the message). ``read``: files
    already read, reused when the same words are wanted again (a shared vocabulary's tables).

    ``freeze``: the layer stops training (``trainable = False``). ``width_setting``: the model
    setting that sets the embedding width, named in the error when the file's vectors have
    another one. Writes ``Matched.message()`` (``verbose`` > 0; None: the ambient level) and
    warns when fewer than 1% of the tokens matched.
    """
    layer = embedding_layer(model) if layer is None else layer
    vocabulary = _vocabulary(tokenizer)
    if len(vocabulary) > layer.input_dim:
        raise ZooError(f"the tokenizer has {len(vocabulary):,} tokens but the model's embedding "
                       f"only {layer.input_dim:,} rows")
    special = {i for i, token in enumerate(vocabulary)
               if i in _special_ids(tokenizer) or token in SPECIAL_TOKENS}
    words = token_words(tokenizer.kind, vocabulary, special)
    wanted = set(words.values()) | {w.lower() for w in words.values()}
    key = (os.path.abspath(os.path.expanduser(str(path))), frozenset(wanted))
    vectors = read.get(key) if read is not None else None
    if vectors is None:
        vectors = read_vectors(path, keep=wanted)
        if read is not None:
            read[key] = vectors
    if vectors.dim != layer.output_dim:
        setting = width_setting or "the embedding width"
        raise ZooError(
            f"{vectors.path} holds {vectors.dim}-dimensional vectors but the model's token "
            f"embeddings are {layer.output_dim}-dimensional: set model.{setting}={vectors.dim} "
            f"(--set model.{setting}={vectors.dim}), or use {layer.output_dim}-dimensional "
            "vectors")
    rows, exact = match_tokens(words, vectors.index())
    if rows:
        table = np.array(keras.ops.convert_to_numpy(layer.embeddings), np.float32)  # (V, d)
        ids = np.fromiter(rows, np.int64, len(rows))
        table[ids] = vectors.vectors[np.fromiter(rows.values(), np.int64, len(rows))]
        layer.embeddings.assign(table.astype(layer.embeddings.dtype))
    if freeze:
        layer.trainable = False
    matched = Matched(path=vectors.path, format=vectors.format, dim=vectors.dim,
                      matched=len(rows), exact=exact, tokens=len(vocabulary) - len(special),
                      freeze=bool(freeze))
    progress.echo(matched.message(what), verbose)
    if matched.matched < MIN_MATCHED_FRACTION * max(matched.tokens, 1):
        log.warning("only %d of %d tokens (%.2f%%) have a vector in %s: is the tokenizer (%s) "
                    "word-level, and the file's case and language the corpus'?", matched.matched,
                    matched.tokens, 100.0 * matched.matched / max(matched.tokens, 1),
                    vectors.path, tokenizer.kind)
    return matched


# ------------------------------------------------------------------------------------------------
# training


def settings_of(overrides: dict, task: str) -> dict:
    """``overrides`` (``model.<name>`` settings) with ``embeddings``, ``source_embeddings`` and
    ``freeze_embeddings`` checked and made canonical: each file an absolute path to an existing
    file, ``freeze_embeddings`` a bool beside them; all absent when no file is set.

    Refused (``ZooError``): a model whose ``task`` does not take them (``source_embeddings``:
    only translation, ``seq2seq``), a freeze without vectors, vectors together with another
    initialisation of the embeddings (``model.pretrained``, ``model.init_encoder``).
    """
    overrides = dict(overrides)
    paths = {name: overrides.pop(name, None) for name in (EMBEDDINGS, SOURCE)}
    paths = {name: path for name, path in paths.items() if path not in (None, "")}
    freeze = overrides.pop(FREEZE, False)
    if not isinstance(freeze, bool):
        raise ZooError(f"model.{FREEZE} must be true or false. Received: {freeze!r}")
    if not paths:
        if freeze:
            raise ZooError(f"model.{FREEZE}=true needs model.{EMBEDDINGS}=FILE (word vectors)")
        return overrides
    if task not in TASKS:
        raise ZooError(f"model.{next(iter(paths))} initialises the token embeddings of the "
                       f"language models, masked LMs, classifiers, QA, summarization and "
                       f"translation models, not of a {task} model")
    if SOURCE in paths and task not in SOURCE_TASKS:
        raise ZooError(f"model.{SOURCE} initialises a translation model's source embeddings; "
                       f"a {task} model has one vocabulary: use model.{EMBEDDINGS}")
    for other in ("pretrained", "init_encoder"):
        if overrides.get(other):
            raise ZooError(f"model.{next(iter(paths))} and model.{other} both initialise the "
                           "token embeddings: choose one")
    for name, path in paths.items():
        if not isinstance(path, str):
            raise ZooError(f"model.{name} must be the path of a word2vec or GloVe text file. "
                           f"Received: {path!r}")
        path = os.path.abspath(os.path.expanduser(path))
        if not os.path.isfile(path):
            raise ZooError(f"model.{name}: no such file {path}")
        overrides[name] = path
    overrides[FREEZE] = freeze
    return overrides


def wants_vectors(overrides: dict) -> bool:
    """Whether ``overrides`` name a word-vector file (``model.embeddings`` or
    ``model.source_embeddings``)."""
    return bool(overrides.get(EMBEDDINGS) or overrides.get(SOURCE))


def _width_setting(model_name: str | None) -> str | None:
    if not model_name:
        return None
    fields = {f.name for f in dataclasses.fields(get_spec(model_name).config_class)}
    return next((name for name in WIDTH_SETTINGS if name in fields), None)


@dataclasses.dataclass(frozen=True)
class _Table:
    """One embedding table that a run's settings fill: from the file of ``model.<setting>``,
    matched against ``tokenizer``, recorded in ``config.json`` under ``record_key``."""

    setting: str
    record_key: str
    layer: keras.layers.Embedding
    tokenizer: object

    @property
    def name(self) -> str:
        """``embeddings`` or ``source embeddings``, for messages."""
        return "source embeddings" if self.record_key == SOURCE_RECORD_KEY else "embeddings"


def _source_layer(model):
    """The source table of an encoder-decoder ``model`` (``source_token_embedding_layer``), or
    None for a model with one table."""
    method = getattr(model, "source_token_embedding_layer", None)
    return None if method is None else method()


def _tables(model, overrides: dict, tokenizer, source_tokenizer) -> list[_Table]:
    """The tables ``overrides`` fill in ``model``: ``model.embeddings`` the run's (target)
    table, and the source table too when both sides share ``tokenizer`` (summarization);
    ``model.source_embeddings`` the source table with ``source_tokenizer`` (translation)."""
    tables = []
    if overrides.get(EMBEDDINGS):
        tables.append(_Table(EMBEDDINGS, RECORD_KEY, embedding_layer(model), tokenizer))
    source = _source_layer(model)
    if overrides.get(SOURCE):
        if source is None:
            raise ZooError(f"model.{SOURCE}: model {model.name!r} has no source embedding")
        tables.append(_Table(SOURCE, SOURCE_RECORD_KEY, source, source_tokenizer))
    elif overrides.get(EMBEDDINGS) and source is not None and source_tokenizer is tokenizer:
        tables.append(_Table(EMBEDDINGS, SOURCE_RECORD_KEY, source, tokenizer))
    return tables


def _record(out: str, entries: dict[str, Matched]) -> None:
    """Add ``entries`` (``config.json`` key -> what ``load_into`` did) to ``out/config.json``."""
    from zoo.files import CONFIG_FILE, read_json, write_json_atomic

    config_path = os.path.join(out, CONFIG_FILE)
    record = read_json(config_path) if os.path.isfile(config_path) else {}
    record.update({key: matched.record() for key, matched in entries.items()})
    write_json_atomic(config_path, record)


def freeze_as_recorded(model, config: dict):
    """Set ``model``'s token embeddings static again where the run that trained it kept them
    frozen (``config``: its ``config.json``, whose ``RECORD_KEY`` / ``SOURCE_RECORD_KEY``
    entries say so); returns the model. ``zoo.load`` calls it before a checkpoint is restored,
    since a training checkpoint lists the trainable variables without the frozen tables."""
    if config.get(RECORD_KEY, {}).get("freeze"):
        embedding_layer(model).trainable = False
    source = _source_layer(model)
    if config.get(SOURCE_RECORD_KEY, {}).get("freeze") and source is not None:
        source.trainable = False
    return model


def initialise(model, overrides: dict, tokenizer, *, out: str, resuming: bool,
               is_chief: bool = True, model_name: str | None = None,
               verbose: int | None = None, source_tokenizer=None):
    """Apply a run's ``model.embeddings`` / ``model.source_embeddings`` /
    ``model.freeze_embeddings`` (``overrides``, as ``settings_of`` made them) to its freshly
    built ``model``; returns the model.

    ``resuming`` (a checkpoint is about to be restored): only the freeze is applied, the vectors
    are not read again. Else the vectors are loaded (``load_into``) and, on the chief, recorded in
    ``out/config.json``. ``tokenizer``: the run's (None: ``ZooError``); ``source_tokenizer``: an
    encoder-decoder's source side (the same object when the vocabulary is shared).
    """
    if not wants_vectors(overrides):
        return model
    freeze = bool(overrides.get(FREEZE, False))
    tables = _tables(model, overrides, tokenizer, source_tokenizer)
    if resuming:
        for table in tables:
            if freeze:
                table.layer.trainable = False
            progress.echo(f"pretrained {table.name} from "
                          f"{overrides[table.setting]}: restored from the checkpoint"
                          + (" (static: frozen)" if freeze else ""), verbose)
        return model
    entries, read = {}, {}
    for table in tables:
        if table.tokenizer is None or not hasattr(table.tokenizer, "vocabulary"):
            raise ZooError(f"model.{table.setting} needs the run's tokenizer, which this trainer "
                           "does not provide (with TensorFlow installed, every trainer but "
                           "word2vec/glove does)")
        entries[table.record_key] = load_into(
            model, table.tokenizer, overrides[table.setting], freeze=freeze,
            width_setting=_width_setting(model_name), verbose=verbose, layer=table.layer,
            what=table.name, read=read)
    if is_chief:
        _record(out, entries)
    return model

