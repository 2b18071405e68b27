"""Keras 3 / TensorFlow language-model zoo.

    >>> import zoo
    >>> zoo.list_models()
    >>> model = zoo.build_model("transformer_lm", vocab_size=65, preset="tiny")
    >>> run = zoo.train("lstm_lm", "dataset:tinyshakespeare", "runs/lstm", max_steps=200)
    >>> run.generate("ROMEO:", max_new_tokens=40)
    >>> zoo.evaluate("runs/lstm")
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Nothing heavy is imported here: Keras fixes its backend on first import, and the command line
# selects it (``zoo train --backend jax``) before anything imports Keras. ``import zoo.models``
# (which ``zoo.build_model``, ``zoo.load`` and ``zoo.train`` do) registers the zoo's Keras classes
# so that ``keras.saving.load_model`` finds them.
_API = {
    "list_models": "zoo.models",
    "build_model": "zoo.models",
    "load": "zoo.run",
    "LoadedRun": "zoo.run",
    "train": "zoo.training",
    "evaluate": "zoo.run",
    "generate": "zoo.generation",
    "build_index": "zoo.index",
    "load_index": "zoo.index",
    "search": "zoo.index",
    "ZooError": "zoo.errors",
}


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))


__all__ = list(_API)
