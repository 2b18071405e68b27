"""Named zoo models and their registry."""

from zoo.models.base import CausalLM
from zoo.models.registry import ModelSpec, build_model, get_spec, list_models, make_config

__all__ = ["CausalLM", "ModelSpec", "build_model", "get_spec", "list_models", "make_config"]
