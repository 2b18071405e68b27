"""Shared fixtures: the data mirror, a tiny corpus, quiet TensorFlow."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
_MIRROR = os.path.abspath(os.path.join(_HERE, "..", "..", "shared", "data"))
if not os.environ.get("ZOO_DATA_DIR") and os.path.isdir(_MIRROR):
    os.environ["ZOO_DATA_DIR"] = _MIRROR


@pytest.fixture(scope="session")
def data_dir() -> str:
    path = os.environ.get("ZOO_DATA_DIR")
    if not path or not os.path.isdir(path):
        pytest.skip("no data mirror: set ZOO_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def shakespeare_file(data_dir, tmp_path_factory) -> str:
    """The first 20,000 characters of tinyshakespeare as a small stream corpus file."""
    with open(os.path.join(data_dir, "tinyshakespeare", "input.txt"), encoding="utf-8") as f:
        text = f.read(20000)
    path = tmp_path_factory.mktemp("corpus") / "shakespeare_small.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)
