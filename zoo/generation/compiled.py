"""Compiled decoding functions, built once per model and kept while the model lives.

``run(model, fn, sampler, settings, tensors, jit_compile)`` calls
``fn(model, sampler, *tensors, settings=settings)``:

* inside an outer ``tf.function`` (an export), directly: the caller's graph is the compile unit;
* on TensorFlow, through a ``tf.function`` (``jit_compile``: XLA) cached per
  ``(model, fn, sampler.key(), jit_compile)``; the settings travel as plain Python values, so
  each distinct one is a trace of that function, and the sampler's per-row tensors
  (``sampler.tensors()``) are arguments;
* on JAX, through ``jax.jit`` cached per ``(model, fn, sampler.key(), settings)``, with the
  model's weights passed in at every call (``keras.StatelessScope``), so training between
  calls is seen.

Functions live in a ``WeakKeyDictionary`` keyed by the model (they hold it weakly). Prompt widths
are padded to ``PROMPT_BUCKET`` multiples by the callers, so similar prompts reuse one trace;
``tracing_count(model)`` tells how many traces exist.
"""

from __future__ import annotations

import dataclasses
import weakref

from zoo.backends import current, gpu_available
from zoo.generation.loop import DecodeSettings
from zoo.generation.samplers import Sampler

__all__ = ["default_jit_compile", "run", "tracing_count"]

_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_jit_compile() -> bool:
    """XLA when a GPU is visible (always on JAX); on CPU XLA compiles too slowly to pay off for
    short TensorFlow runs."""
    return current() == "jax" or gpu_available()


def tracing_count(model) -> int:
    """How many times the compiled decoding functions of ``model`` have been traced."""
    total = 0
    for fn in _FUNCTIONS.get(model, {}).values():
        total += fn.traces if isinstance(fn, _JaxFunction) else fn.experimental_get_tracing_count()
    return total


class _Traced:
    """The Python function behind one compiled function: holds the model weakly.

    A callable object rather than a closure, so that TensorFlow's "frequent retracing" warning
    (keyed on the Python function's code) does not fire when many models are decoded.
    """

    def __init__(self, model, fn, sampler: Sampler, name: str):
        self._model = weakref.ref(model)
        self._fn = fn
        self._sampler = sampler  # the prototype: its key() is this function's
        self._num_sampler_tensors = len(sampler.tensors())
        self.__name__ = name

    def model(self):
        model = self._model()
        if model is None:
            raise RuntimeError("the model of this decoding function was deleted")
        return model

    def __call__(self, *tensors, **settings):
        split = len(tensors) - self._num_sampler_tensors
        sampler = self._sampler.rebind(*tensors[split:])
        return self._fn(self.model(), sampler, *tensors[:split],
                        settings=DecodeSettings(**settings))


class _JaxFunction:
    """``jax.jit`` of a decoding function with the model's variables as explicit inputs."""

    def __init__(self, traced: _Traced, static: dict):
        import jax

        self.traces = 0
        self._traced = traced
        self._static = static

        def stateless(values, *tensors):
            import keras

            self.traces += 1
            model = traced.model()
            mapping = list(zip(model.variables, values, strict=True))
            with keras.StatelessScope(state_mapping=mapping):
                return traced(*tensors, **static)

        self._jitted = jax.jit(stateless)

    def __call__(self, *tensors):
        values = [v.value for v in self._traced.model().variables]
        return self._jitted(values, *tensors)


def _in_tf_graph() -> bool:
    if current() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.executing_eagerly()


def _per_model(model) -> dict:
    try:
        return _FUNCTIONS.setdefault(model, {})
    except TypeError:  # not weak-referenceable: build throw-away functions
        return {}


def run(model, fn, sampler: Sampler, settings: DecodeSettings, tensors: tuple,
        jit_compile: bool | None):
    """``fn(model, sampler, *tensors, settings=settings)``, compiled for the backend (see the
    module docstring)."""
    if _in_tf_graph():
        return fn(model, sampler, *tensors, settings=settings)
    if jit_compile is None:
        jit_compile = default_jit_compile()
    functions = _per_model(model)
    static = dataclasses.asdict(settings)
    arguments = (*tensors, *sampler.tensors())
    name = f"zoo_{fn.__name__.strip('_')}"
    if current() == "jax":
        key = (fn, sampler.key(), tuple(sorted(static.items())))
        compiled = functions.get(key)
        if compiled is None:
            compiled = functions[key] = _JaxFunction(_Traced(model, fn, sampler, name), static)
        return compiled(*arguments)
    import tensorflow as tf

    key = (fn, sampler.key(), bool(jit_compile))
    compiled = functions.get(key)
    if compiled is None:
        compiled = tf.function(_Traced(model, fn, sampler, name), jit_compile=bool(jit_compile))
        functions[key] = compiled
    return compiled(*arguments, **static)
