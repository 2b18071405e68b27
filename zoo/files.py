"""Files on disk: a run directory's names, JSON read and written safely, and file digests.

A low module (standard library only) that every layer may import::

    RUN/config.json      model name, sizes, training settings, tokenizer kind, data source
    RUN/tokenizer/       the tokenizer's files
    RUN/checkpoints/     checkpoints (model + optimizer), for resuming: tf.train checkpoints
                         (TensorFlow) or ckpt-<step>.weights.h5 Keras weights files (JAX)
    RUN/logs/            TensorBoard logs
    RUN/model.keras      the final model
    RUN/metrics.json     history, final evaluation, timings
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

from zoo.errors import ZooError

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_PREFIX",
    "CHECKPOINT_SUFFIX",
    "CONFIG_FILE",
    "LOG_DIR",
    "METRICS_FILE",
    "MODEL_FILE",
    "TOKENIZER_DIR",
    "file_sha256",
    "portable_checkpoints",
    "read_json",
    "write_json_atomic",
]

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
CHECKPOINT_PREFIX, CHECKPOINT_SUFFIX = "ckpt-", ".weights.h5"

_CHUNK = 1 << 20


def portable_checkpoints(checkpoint_dir: str) -> list[tuple[int, str]]:
    """``[(step, path), ...]`` of the Keras weights checkpoints (``ckpt-<step>.weights.h5``,
    written by training on JAX) in ``checkpoint_dir``, oldest first."""
    if not os.path.isdir(checkpoint_dir):
        return []
    found = []
    for name in os.listdir(checkpoint_dir):
        middle = name[len(CHECKPOINT_PREFIX) : -len(CHECKPOINT_SUFFIX)]
        if name.startswith(CHECKPOINT_PREFIX) and name.endswith(CHECKPOINT_SUFFIX) and middle.isdigit():
            found.append((int(middle), os.path.join(checkpoint_dir, name)))
    return sorted(found)


def write_json_atomic(path: str, data: dict) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def read_json(path: str, *, missing: str = "not found") -> dict:
    """The JSON object in ``path``; ``ZooError`` naming the file when it is missing, unreadable,
    not JSON or not an object (``missing`` words the first case, e.g. "not found: not a GPT-2
    checkpoint folder")."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ZooError(f"{path} {missing}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ZooError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ZooError(f"{path}: expected a JSON object")
    return data


def file_sha256(path: str) -> str:
    """Hex SHA-256 digest of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
