"""The base ``tf.Module`` of every export (the four SavedModel tasks and LiteRT).

An export's object graph holds the model's variables (tracked, so they are saved), its
tokenizers (tracked: their lookup tables) and, for reference, the tokenizer files as assets. The
Keras model itself is kept out of the object graph, so the SavedModel holds no Keras objects and
loads with TensorFlow and tensorflow-text alone. Subclasses name their signatures and build them
with ``function`` (a ``tf.function`` with a fixed input signature, no autograph, no XLA: stock
TF Serving and LiteRT kernels).
"""

from __future__ import annotations

import types
from typing import ClassVar

import tensorflow as tf

__all__ = ["ExportModule"]


class ExportModule(tf.Module):
    """Variables, tokenizers and assets of an export, and its signature functions.

    Args:
      model: the Keras model (its variables are tracked; the model is not).
      name: the module's name.
      tokenizers: attribute name -> tokenizer, tracked (e.g. ``{"tokenizer": tok}``).
      asset_paths: files saved under ``assets/``.
    """

    SIGNATURES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model, *, name: str, tokenizers: dict | None = None, asset_paths=()):
        super().__init__(name=name)
        self.model_variables = list(model.variables)
        for attribute, tokenizer in (tokenizers or {}).items():
            setattr(self, attribute, tokenizer)
        if asset_paths:
            self.tokenizer_assets = [tf.saved_model.Asset(path) for path in asset_paths]
        # plain Python state, not tracked
        self._ref = types.SimpleNamespace(model=model, keep_alive=[])

    @property
    def keras_model(self):
        """The Keras model the signatures call."""
        return self._ref.model

    def keep_alive(self, resource) -> None:
        """Hold ``resource`` (e.g. the temporary folder of the asset files) as long as the
        module lives."""
        self._ref.keep_alive.append(resource)

    @staticmethod
    def function(fn, *input_signature: tf.TensorSpec):
        """``fn`` as a signature function: fixed inputs, no autograph, no XLA."""
        return tf.function(fn, input_signature=list(input_signature), autograph=False)

    def signature_names(self) -> tuple[str, ...]:
        """The signatures this module exports (default: ``SIGNATURES``)."""
        return self.SIGNATURES

    def signatures(self) -> dict:
        """Signature name -> concrete function, for ``tf.saved_model.save``."""
        return {name: getattr(self, name).get_concrete_function() for name in self.signature_names()}
