"""Named zoo models and their registry."""

# Importing the model modules registers them (registry and Keras serialization), and the losses
# and metrics their saved compile settings name.
from zoo import metrics as _metrics  # noqa: F401
from zoo.models import (  # noqa: F401
    bert_mlm,
    bert_qa,
    gcnn_lm,
    glove,
    gpt2,
    mlp_lm,
    recurrent_lm,
    summarizer,
    text_classifier,
    text_cnn,
    transformer_lm,
    transformer_seq2seq,
    word2vec,
)
from zoo.models.base import CausalLM
from zoo.models.registry import ModelSpec, build_model, get_spec, list_models, make_config

__all__ = ["CausalLM", "ModelSpec", "build_model", "get_spec", "list_models", "make_config"]
