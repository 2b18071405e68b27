"""Which Keras backend runs the zoo's models, and what the device under it can do.

Keras fixes its backend when it is first imported (``KERAS_BACKEND``). The zoo's Keras core
(``zoo.layers``, ``zoo.models``, ``zoo.metrics``, ``zoo.fitting``) runs on every backend listed in
``SUPPORTED``; tokenizers, ``tf.data`` text pipelines, export, LiteRT, serving and ``tf.distribute``
stay TensorFlow's. Nothing here imports TensorFlow or JAX until asked about a device.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from zoo.errors import ZooError

SUPPORTED = ("tensorflow", "jax")
DEFAULT = "tensorflow"


def check_name(name: str) -> str:
    """``name`` if it is a supported backend, else ``ZooError`` naming the supported ones."""
    if name not in SUPPORTED:
        raise ZooError(f"unsupported backend {name!r}; the zoo trains on: {', '.join(SUPPORTED)}")
    return name


def requested() -> str:
    """The backend ``KERAS_BACKEND`` asks for (default ``tensorflow``), checked."""
    return check_name(os.environ.get("KERAS_BACKEND", DEFAULT) or DEFAULT)


def select(name: str | None) -> str:
    """Make ``name`` (default: ``KERAS_BACKEND``, else tensorflow) the Keras backend of this
    process. Must run before Keras is imported; afterwards only the backend in use is accepted."""
    name = check_name(name) if name else requested()
    if "keras" in sys.modules:
        running = current()
        if running != name:
            raise ZooError(
                f"Keras already runs on {running} in this process; start a new one with "
                f"KERAS_BACKEND={name} (or zoo ... --backend {name})"
            )
        return name
    os.environ["KERAS_BACKEND"] = name
    return name


def current() -> str:
    """The backend Keras runs on (imports Keras)."""
    import keras

    return keras.backend.backend()


def ensure(name: str) -> None:
    """``ZooError`` unless Keras runs on ``name`` (a supported backend) in this process."""
    check_name(name)
    running = current()
    if running != name:
        raise ZooError(
            f"this process runs Keras on {running}, not {name}: set KERAS_BACKEND={name} before "
            f"importing keras or zoo (the CLI's --backend {name} does it)"
        )


def tensorflow_installed() -> bool:
    """Whether TensorFlow can be imported (without importing it)."""
    return importlib.util.find_spec("tensorflow") is not None


def _gpus():
    if current() == "jax":
        import jax

        return [d for d in jax.devices() if d.platform == "gpu"]
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def gpu_available() -> bool:
    """True when the backend's framework sees a GPU."""
    return bool(_gpus())


def gpu_compute_capability() -> float | None:
    """The first GPU's CUDA compute capability (``8.0`` for an A100, ``9.0`` for an H100), or
    ``None`` without a GPU or where the framework does not say."""
    gpus = _gpus()
    if not gpus:
        return None
    try:
        if current() == "jax":
            return float(gpus[0].compute_capability)
        import tensorflow as tf

        major, minor = tf.config.experimental.get_device_details(gpus[0])["compute_capability"]
        return major + minor / 10
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


# Keras dtype policies a run may train under (``TrainConfig.mixed_precision`` takes these names).
PRECISION_POLICIES = ("mixed_bfloat16", "mixed_float16", "float32")


def policy_for_capability(capability: float | None, mixed: bool | None = None) -> str:
    """The Keras dtype policy for training on a GPU of CUDA compute ``capability`` (``None``: no
    GPU, or one that does not say).

    ``mixed=None`` (the default choice): ``mixed_bfloat16`` from 8.0 on (Ampere, Hopper and later
    compute in bfloat16 natively); ``mixed_float16`` on 7.x (Volta, Turing: float16 tensor cores,
    no bfloat16), trained with loss scaling; ``float32`` elsewhere (CPUs, GPUs before 7.0).
    ``mixed=True`` asks for mixed precision anyway: ``mixed_float16`` on 7.x, ``mixed_bfloat16``
    everywhere else (on a CPU that only exercises the code path). ``mixed=False``: ``float32``.
    """
    if mixed is False:
        return "float32"
    if capability is not None and 7.0 <= capability < 8.0:
        return "mixed_float16"
    if mixed or (capability is not None and capability >= 8.0):
        return "mixed_bfloat16"
    return "float32"


def mixed_precision_policy(mixed: bool | str | None = None) -> str:
    """The dtype policy a training setting ``mixed`` means on this process's first GPU: a policy
    name (one of ``PRECISION_POLICIES``) is taken as it is, ``None`` / ``True`` / ``False`` as
    :func:`policy_for_capability` says. The device is asked only when the answer depends on it."""
    if isinstance(mixed, str):
        if mixed not in PRECISION_POLICIES:
            raise ZooError(f"unknown mixed_precision {mixed!r}; use true, false, null (the "
                           f"device's default) or one of: {', '.join(PRECISION_POLICIES)}")
        return mixed
    if mixed is False:
        return "float32"
    return policy_for_capability(gpu_compute_capability(), mixed)


def default_mixed_precision() -> str:
    """The dtype policy training uses by default on this device: ``mixed_bfloat16`` on GPUs of
    compute capability >= 8.0, ``mixed_float16`` (with loss scaling) on 7.x, ``float32``
    elsewhere (CPUs, older GPUs)."""
    return mixed_precision_policy(None)


class _LazyTensorFlow:
    """``tensorflow``, imported on first attribute access: modules that need TensorFlow only
    for some of their functions (``tf.distribute``) stay importable without it."""

    def __getattr__(self, name: str):
        import tensorflow

        return getattr(tensorflow, name)


lazy_tensorflow = _LazyTensorFlow()


def model_function(model, fn):
    """Compile ``fn(call, *args)`` for the backend, where ``call(inputs)`` runs ``model`` in
    inference mode: a ``tf.function`` on TensorFlow, ``jax.jit`` over the model's stateless call
    on JAX (the current weights are passed in at every call). ``fn`` is written with
    ``keras.ops``; the returned function takes NumPy arrays (or nests of them) and returns
    ``fn``'s tensors.
    """
    if current() == "jax":
        import jax

        @jax.jit
        def jitted(trainable, non_trainable, *args):
            def call(inputs):
                return model.stateless_call(trainable, non_trainable, inputs, training=False)[0]

            return fn(call, *args)

        def run(*args):
            return jitted([v.value for v in model.trainable_variables],
                          [v.value for v in model.non_trainable_variables], *args)

        return run
    import tensorflow as tf

    return tf.function(lambda *args: fn(lambda inputs: model(inputs, training=False), *args),
                       reduce_retracing=True)
