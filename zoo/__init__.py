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

# Register the zoo's Keras classes so `keras.saving.load_model` finds them after `import zoo`.
from zoo import metrics as _metrics  # noqa: E402,F401
from zoo import models as _models  # noqa: E402,F401

_API = {
    "list_models": "zoo.models",
    "build_model": "zoo.models",
    "load": "zoo.run",
    "LoadedRun": "zoo.run",
    "train": "zoo.training",
    "evaluate": "zoo.evaluation",
    "generate": "zoo.generation",
    "ZooError": "zoo.errors",
}


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))


__all__ = list(_API)
