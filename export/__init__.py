"""Export trained zoo runs for serving.

    import export
    export.saved_model("runs/shakespeare", "models/shakespeare")   # -> "models/shakespeare/1"

``export.saved_model`` writes a TF Serving SavedModel (see ``export/saved_model.py`` for the
signatures and behaviours); the module is imported on first use, so ``import export`` (and the
CLI hook ``export.cli``) stay cheap. ``export.saved_model`` is the module itself, made callable.
"""

from __future__ import annotations

import importlib

_LAZY = {"saved_model": "export.saved_model", "tflite": "export.tflite"}


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(_LAZY[name])
    raise AttributeError(f"module 'export' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = list(_LAZY)
