"""Where a registered dataset's files come from: data mirror, download cache or download.

A dataset file is looked up in three places, in order:

1. the data mirror named by ``$ZOO_DATA_DIR`` (``$ZOO_DATA_DIR/<dataset>/<file>``), whose sha256 is
   checked against the catalog once per process;
2. the download cache, ``$ZOO_CACHE_DIR/datasets/<dataset>/<file>`` (``$ZOO_CACHE_DIR`` defaults to
   ``~/.cache/zoo``);
3. the file's canonical public URL: downloaded to a temporary ``.part`` file, checked against its
   sha256 and only then renamed into the cache, so the cache never holds a partial or unverified
   file.
"""

from __future__ import annotations

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
from typing import BinaryIO

from zoo import progress
from zoo.data.catalog import DataFile, DatasetSpec, get_dataset
from zoo.errors import ZooError
from zoo.files import file_sha256

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "ZOO_DATA_DIR"
CACHE_DIR_ENV = "ZOO_CACHE_DIR"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "zoo")
DOWNLOAD_TIMEOUT_S = 60.0

_CHUNK = 1 << 20

_verified: set[tuple[str, int, int]] = set()
_verified_lock = threading.Lock()


def cache_dir() -> str:
    """Root of the dataset cache: ``$ZOO_CACHE_DIR/datasets`` (default ``~/.cache/zoo/datasets``)."""
    root = os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
    return os.path.join(os.path.abspath(os.path.expanduser(root)), "datasets")


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


def _fetch(url: str, dest: BinaryIO, name: str, filename: str) -> None:
    """Stream ``url`` into the open binary file ``dest``; network failures become ``ZooError``.
    Shows a bar in KiB (``zoo.progress``, ambient level)."""
    logger.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) // 1024 if length and length.isdigit() else None
            with progress.Bar(total, f"downloading {name}/{filename} from {url}",
                              unit="KiB") as bar:
                done = 0
                for block in iter(lambda: response.read(_CHUNK), b""):
                    dest.write(block)
                    done += len(block)
                    bar.update(done // 1024)
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
