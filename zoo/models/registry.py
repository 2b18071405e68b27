"""The registry of named zoo models: name -> (config dataclass, presets, model class)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import keras

from zoo.errors import ZooError
from zoo.model_catalog import catalog_entry
from zoo.special_tokens import NUM_SPECIAL


@dataclass(frozen=True)
class ModelSpec:
    """A named model: its config dataclass, presets, and a builder ``(vocab_size, config) -> Model``."""

    name: str
    description: str
    config_class: type
    presets: dict[str, dict]
    builder: Callable[[int, object], keras.Model]
    task: str = "causal_lm"


_REGISTRY: dict[str, ModelSpec] = {}
# model.<name> settings that training applies to a built model, not part of any config
# (pretrained word vectors: zoo.pretrained_vectors)
TRAINING_SETTINGS = ("embeddings", "freeze_embeddings", "source_embeddings")


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry (called at import time by each model module).

    The light catalogue ``zoo.model_catalog`` (what ``zoo models`` lists without importing Keras)
    must list the model with the same description, task and preset names, else ``RuntimeError``:
    a model added or changed here must be added or changed there too.
    """
    entry = catalog_entry(spec.name)
    registered = (spec.description, spec.task, tuple(spec.presets))
    if entry is None or (entry.description, entry.task, entry.presets) != registered:
        listed = None if entry is None else (entry.description, entry.task, entry.presets)
        raise RuntimeError(
            f"model {spec.name!r} registers (description, task, presets) = {registered!r} but "
            f"zoo/model_catalog.py lists {listed!r}; make them agree"
        )
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    """Names of every registered model, sorted (importing ``zoo.models`` registers them)."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The ``ModelSpec`` of ``name``; unknown names raise ``ZooError`` listing the valid ones."""
    if name not in _REGISTRY:
        raise ZooError(f"unknown model {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def make_config(name: str, preset: str = "tiny", **overrides):
    """The config dataclass of ``name`` at ``preset`` with ``overrides`` applied (checked).

    The settings training applies to a built model (``zoo.pretrained_vectors.SETTINGS``:
    ``embeddings``, ``freeze_embeddings``) are not part of the config and are left out."""
    spec = get_spec(name)
    if preset not in spec.presets:
        raise ZooError(
            f"unknown preset {preset!r} for model {name!r}; choose one of: {', '.join(spec.presets)}"
        )
    overrides = {k: v for k, v in overrides.items() if k not in TRAINING_SETTINGS}
    fields = {f.name for f in dataclasses.fields(spec.config_class)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ZooError(
            f"unknown setting(s) {', '.join(unknown)} for model {name!r}; "
            f"valid: {', '.join(sorted(fields | set(TRAINING_SETTINGS)))}"
        )
    types = {f.name: type(f.default) for f in dataclasses.fields(spec.config_class)}
    for key, value in overrides.items():
        expected = types[key]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            overrides[key] = float(value)
        elif expected in (int, float, bool, str) and type(value) is not expected:
            raise ZooError(
                f"model setting {key} must be {expected.__name__}. Received: {value!r}"
            )
    values = {**spec.presets[preset], **overrides}
    try:
        return spec.config_class(**values)
    except (TypeError, ValueError) as err:
        raise ZooError(f"invalid settings for model {name!r}: {err}") from err


def build_model(name: str, vocab_size: int, preset: str = "tiny", **overrides) -> keras.Model:
    """Build the named model: int ids ``(batch, time)`` -> logits ``(batch, time, vocab_size)``.

    Example:
        >>> model = build_model("transformer_lm", vocab_size=65, preset="tiny", num_layers=2)
    """
    given = sorted(set(overrides) & set(TRAINING_SETTINGS))
    if given:
        raise ZooError(
            f"{', '.join(given)}: applied by training (zoo.train), not by build_model; load word "
            "vectors into a built model with zoo.pretrained_vectors.load_into(model, tokenizer, FILE)"
        )
    if int(vocab_size) < NUM_SPECIAL + 1:
        raise ZooError(
            f"vocab_size must be at least {NUM_SPECIAL + 1} ({NUM_SPECIAL} reserved ids). "
            f"Received: {vocab_size}"
        )
    config = make_config(name, preset, **overrides)
    return get_spec(name).builder(int(vocab_size), config)
