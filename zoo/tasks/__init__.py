"""Zoo tasks beyond next-token prediction, each a module with one job.

A model's ``ModelSpec.task`` names its task. ``causal_lm`` (the language models) is handled by
``zoo.training`` / ``zoo.evaluation`` / ``export.saved_model`` directly; every other task is a
module here that provides:

    train(model, data, out, *, preset, tokenizer, model_overrides, verbose, **train_settings)
        -> zoo.LoadedRun          (built on zoo.fitting.fit_resumable: resumable, distributable)
    evaluate(run, data=None, split="validation", batch_size=None) -> dict   (zoo eval's JSON)
    serving_module(run, **export_settings) -> (tf.Module, signatures dict, info dict)
        the SavedModel export's signatures (export.saved_model writes it)
    warmup_records(run) -> list[bytes]   PredictionLog records for assets.extra (may be empty)

Task names: ``masked_lm`` (bert_mlm), ``seq2seq`` (transformer_seq2seq), ``classification``
(text_classifier).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from zoo.errors import ZooError

TASK_MODULES = {
    "masked_lm": "zoo.tasks.masked_lm",
    "seq2seq": "zoo.tasks.seq2seq",
    "classification": "zoo.tasks.classification",
}


def get_task(name: str) -> ModuleType:
    """The module implementing task ``name`` (see this package's docstring)."""
    if name not in TASK_MODULES:
        raise ZooError(f"unknown task {name!r}; tasks: causal_lm, {', '.join(TASK_MODULES)}")
    return importlib.import_module(TASK_MODULES[name])


def task_of(config: dict) -> str:
    """The task of a run from its ``config.json`` record (runs before tasks: ``causal_lm``)."""
    if "task" in config:
        return config["task"]
    from zoo.models import get_spec

    try:
        return get_spec(config["model"]).task
    except (KeyError, ZooError):
        return "causal_lm"
