"""A run directory and the trained model it holds.

    RUN/config.json      model name, sizes, training settings, tokenizer kind, data source
    RUN/tokenizer/       the tokenizer's files
    RUN/checkpoints/     tf.train checkpoints (model + optimizer), for resuming
    RUN/logs/            TensorBoard logs
    RUN/model.keras      the final model
    RUN/metrics.json     history, final evaluation, timings
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

import keras
import tensorflow as tf

from zoo.errors import ZooError
from zoo.tokenizers.base import EOS_ID, Tokenizer

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"


def write_json_atomic(path: str, data: dict) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ZooError(f"{path} not found") from None
    except json.JSONDecodeError as err:
        raise ZooError(f"{path} is not valid JSON: {err}") from None


@dataclass
class LoadedRun:
    """A trained model with its tokenizer and settings (what ``zoo.load`` returns)."""

    path: str
    model: keras.Model
    tokenizer: Tokenizer
    config: dict

    @property
    def line_corpus(self) -> bool:
        """Trained on sentences ([BOS] ... [EOS]) rather than a continuous stream."""
        return self.config.get("corpus_kind") == "lines"

    def generate(self, prompts, **kwargs):
        """Continue ``prompts`` (a str or a list of str); see ``zoo.generation.generate``."""
        from zoo.generation import generate

        if self.line_corpus:
            kwargs.setdefault("add_bos", True)
            kwargs.setdefault("stop_token_ids", (EOS_ID,))
        return generate(self.model, self.tokenizer, prompts, **kwargs)

    def stream(self, prompt: str, **kwargs):
        """Yield the continuation of ``prompt`` piece by piece; see ``zoo.generation.stream``."""
        from zoo.generation.stream import stream

        if self.line_corpus:
            kwargs.setdefault("add_bos", True)
            kwargs.setdefault("stop_token_ids", (EOS_ID,))
        return stream(self.model, self.tokenizer, prompt, **kwargs)

    def evaluate(self, data: str | None = None, split: str = "validation", batch_size: int | None = None):
        """Loss, perplexity (and bits per character) over a whole split; see ``zoo.evaluate``."""
        from zoo.evaluation import evaluate_run

        return evaluate_run(self, data=data, split=split, batch_size=batch_size)


def load(run_dir: str, checkpoint: bool = False) -> LoadedRun:
    """Load a run directory: ``model.keras`` (``safe_mode=True``) and its tokenizer.

    With ``checkpoint=True``, or when training has not finished yet, the latest checkpoint is
    loaded into a freshly built model instead.
    """
    from zoo.models import build_model
    from zoo.tokenizers import load_tokenizer

    if not os.path.isdir(run_dir):
        raise ZooError(f"run directory {run_dir!r} does not exist")
    config = read_json(os.path.join(run_dir, CONFIG_FILE))
    tokenizer = load_tokenizer(os.path.join(run_dir, TOKENIZER_DIR))
    model_path = os.path.join(run_dir, MODEL_FILE)
    if os.path.exists(model_path) and not checkpoint:
        try:
            model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
        except Exception as err:  # a damaged file: say which one
            raise ZooError(f"cannot load {model_path}: {err}") from err
    else:
        latest = tf.train.latest_checkpoint(os.path.join(run_dir, CHECKPOINT_DIR))
        if latest is None:
            raise ZooError(f"{run_dir} has neither {MODEL_FILE} nor a checkpoint: train it first")
        model = build_model(
            config["model"], config["vocab_size"], config["preset"], **config["model_config"]
        )
        tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    return LoadedRun(path=run_dir, model=model, tokenizer=tokenizer, config=config)
