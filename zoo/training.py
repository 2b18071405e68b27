"""``zoo.train``: train a named model into a run directory, whatever its task.

The model's family names its task (``ModelSpec.task``: causal LM, masked LM, translation,
classification) and the task's trainer does the work (``zoo.tasks``), on the loop every task
shares (``zoo.fitting``): training cut into segments of ``checkpoint_every`` steps, each ending
with a validation pass and a checkpoint, so that a run killed at any moment and started again
with the same command continues from its last checkpoint and sees exactly the batches an
uninterrupted run would have seen.

Optimiser: AdamW, learning rate warm-up then cosine decay, global gradient-norm clipping.

Distribution (``distribute=``: none, mirrored, multiworker, tpu; see ``zoo.distribute``): the model
and optimiser are built inside ``strategy.scope()``; ``batch_size`` is the global batch, split
across replicas, and the learning rate is not rescaled, so the same settings train the same model
whatever the strategy. Under multi-worker training only the chief writes the run directory.

What the trainers share lives here: ``make_settings`` turns ``zoo.train``'s arguments into a
checked ``TrainConfig``.
"""

from __future__ import annotations

from zoo import backends, progress
from zoo.config import TrainConfig
from zoo.errors import ZooError
from zoo.fitting import gpu_available
from zoo.models import get_spec
from zoo.pretrained_vectors import settings_of
from zoo.run import LoadedRun
from zoo.tasks import get_task

__all__ = ["gpu_available", "make_settings", "train"]


def make_settings(model: str, data: str, preset: str, tokenizer: str | None,
                  model_overrides: dict | None, train_settings: dict,
                  default_tokenizer: str = "char") -> TrainConfig:
    """``TrainConfig`` from ``zoo.train``'s arguments; a bad setting raises ``ZooError``.

    ``backend`` defaults to the Keras backend of the process, and must be it. Pretrained word
    vectors (``model.embeddings`` / ``model.freeze_embeddings``) are checked and kept in
    ``model_overrides`` with an absolute path (``zoo.pretrained_vectors.settings_of``): recorded
    in ``config.json``, applied by ``zoo.fitting.fit_resumable``."""
    try:
        settings = TrainConfig(
            model=model,
            data=data,
            preset=preset,
            tokenizer=tokenizer or default_tokenizer,
            model_overrides=settings_of(dict(model_overrides or {}), get_spec(model).task),
            **train_settings,
        )
    except TypeError as err:
        raise ZooError(f"invalid training setting: {err}") from err
    settings.backend = settings.backend or backends.current()
    backends.ensure(settings.backend)
    return settings


def train(
    model: str,
    data: str,
    out: str,
    *,
    preset: str = "tiny",
    tokenizer: str | None = None,
    model_overrides: dict | None = None,
    verbose: int = 1,
    **train_settings,
) -> LoadedRun:
    """Train ``model`` on ``data`` into the run directory ``out`` and return the loaded result.

    Rerunning the same call on the same ``out`` after an interruption resumes from the last
    checkpoint; on a finished run it returns the finished model. The model's task trains it
    (``zoo.tasks.get_task(name).train``; the language models: ``zoo.tasks.causal_lm``).

    ``tokenizer``: ``char`` (the language models' default), ``word``, ``wordpiece`` or
    ``sentencepiece``; for prepared data (``data="prepared:DIR"``) the tokenizer it was prepared
    with (None takes it). ``distribute``: ``none`` (default), ``mirrored``, ``multiworker`` or
    ``tpu`` (see ``zoo.distribute``); ``batch_size`` is the global batch under every strategy.
    ``verbose``: 1 shows progress on stderr (``step k/N`` lines, a line per checkpoint, the
    tokenizer and evaluation stages), 2 only a line per checkpoint and stage, 0 nothing.

    Example:
        >>> run = zoo.train("transformer_lm", "dataset:tinyshakespeare", "runs/tiny", max_steps=200)
        >>> run.generate("ROMEO:", max_new_tokens=50)
    """
    with progress.verbosity(verbose):  # also for the steps in between (a dataset download)
        return get_task(get_spec(model).task).train(
            model, data, out, preset=preset, tokenizer=tokenizer, model_overrides=model_overrides,
            verbose=verbose, **train_settings,
        )
