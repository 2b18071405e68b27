"""Named zoo models and their registry."""

# Importing the model modules registers them (registry and Keras serialization).
from zoo.models import mlp_lm, recurrent_lm, transformer_lm  # noqa: F401
from zoo.models.base import CausalLM
from zoo.models.registry import ModelSpec, build_model, get_spec, list_models, make_config

__all__ = ["CausalLM", "ModelSpec", "build_model", "get_spec", "list_models", "make_config"]
