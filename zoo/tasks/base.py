"""Tasks: what a model is trained to do, as small registered objects, and the registry of them.

A model family names its task (``ModelSpec.task``); a run records it in ``config.json``. Each task
is a ``Task`` subclass in its own module, registered with ``@register_task``, and owns its
trainer, its ``zoo eval`` metrics and its SavedModel signatures:

    causal_lm        L = -1/N sum_t log p(x_t | x_<t)                    zoo.tasks.causal_lm
    masked_lm        L = -1/N sum_{masked i} log p(w_i | masked text)     zoo.tasks.masked_lm
    seq2seq          L = -1/N sum_t log p(y_t | y_<t, x)  (teacher-forced) zoo.tasks.seq2seq
    classification   L = -1/N sum_n log softmax(z_n)_{y_n}                zoo.tasks.classification
    question_answering L = -1/2N sum_n (log p(start_n) + log p(end_n))   zoo.tasks.question_answering
    word_vectors     L = -log s(u_o.v_c) - sum_k log s(-u_k.v_c) (word2vec), GloVe's J  zoo.tasks.word_vectors

``get_task(name)`` imports the task's module on first use (``TASK_MODULES``), so importing the
registry imports no task, no Keras and no TensorFlow: ``zoo.run`` (whose ``LoadedRun`` dispatches
through it) sits above this module and the task modules above ``zoo.run``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from zoo.errors import ZooError

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["DEFAULT_TASK", "TASK_MODULES", "Run", "Task", "get_task", "register_task", "task_of"]

# task name -> the module that defines (and registers) its class
TASK_MODULES: dict[str, str] = {
    "causal_lm": "zoo.tasks.causal_lm",
    "masked_lm": "zoo.tasks.masked_lm",
    "seq2seq": "zoo.tasks.seq2seq",
    "classification": "zoo.tasks.classification",
    "summarization": "zoo.tasks.summarization",
    "question_answering": "zoo.tasks.question_answering",
    "word_vectors": "zoo.tasks.word_vectors",
}
DEFAULT_TASK = "causal_lm"  # the task of runs written before runs recorded one


class Run(Protocol):
    """A trained run as a task reads it; ``zoo.run.LoadedRun`` (what ``zoo.load`` returns) is one.

    Named by its fields rather than imported: ``zoo.run`` imports this registry.
    """

    path: str
    model: Any  # keras.Model
    tokenizer: Any  # the (target) tokenizer; None where TensorFlow is not installed
    config: dict  # the run's config.json
    extra_tokenizers: dict  # more tokenizers by name (translation: "source")


class Task:
    """One job a model is trained for: its trainer, its evaluation and its export.

    A subclass sets ``name`` (a key of ``TASK_MODULES``), implements the four methods and is
    registered with ``@register_task``; ``get_task(name)`` returns its one instance. Tasks hold
    no state: every method takes the run it works on.

    Example:
        >>> task = get_task("masked_lm")
        >>> run = task.train("bert_mlm", "dataset:tinyshakespeare", "runs/mlm", max_steps=200)
        >>> task.evaluate(run)["masked_accuracy"]
    """

    name: ClassVar[str]

    def train(self, model: str, data: str, out: str, *, preset: str = "tiny",
              tokenizer: str | None = None, model_overrides: dict | None = None,
              verbose: int = 1, **train_settings) -> Run:
        """Train ``model`` on ``data`` into the run directory ``out`` and return the loaded run.

        Resumable (``zoo.fitting.fit_resumable``): the same call on the same ``out`` after an
        interruption continues from the last checkpoint; on a finished run it loads the result.
        ``train_settings`` are ``zoo.config.TrainConfig`` fields (``max_steps``, ``batch_size``...).
        """
        raise NotImplementedError(f"task {self.name!r} does not train")

    def evaluate(self, run: Run, data: str | None = None, split: str = "validation",
                 batch_size: int | None = None) -> dict:
        """``zoo eval``'s JSON: the task's metrics over ``split`` of ``data`` (default: the
        data the run was trained on)."""
        raise NotImplementedError(f"task {self.name!r} does not evaluate")

    def serving_module(self, run: Run, **export_settings) -> tuple[tf.Module, dict, dict]:
        """``(module, signatures, export settings)``: the ``tf.Module`` that
        ``export.saved_model`` saves, its signatures by name, and the settings recorded in the
        export's info file. Settings that do not apply to the task are ignored."""
        raise NotImplementedError(f"task {self.name!r} has no SavedModel export")

    def warmup_records(self, run: Run, **export_settings) -> list[bytes]:
        """Serialized ``PredictionLog`` records a server replays before answering (may be
        empty)."""
        return []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


_TaskClass = TypeVar("_TaskClass", bound=type[Task])
_REGISTERED: dict[str, Task] = {}


def register_task(cls: _TaskClass) -> _TaskClass:
    """Class decorator: make ``cls`` (a ``Task`` subclass) the task ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"register_task expects a Task subclass. Received: {cls!r}")
    name = getattr(cls, "name", None)
    if name not in TASK_MODULES:
        raise ValueError(f"a task's name must be one of {', '.join(TASK_MODULES)}. "
                         f"Received: name={name!r} ({cls.__name__})")
    if name in _REGISTERED and type(_REGISTERED[name]).__qualname__ != cls.__qualname__:
        raise ValueError(f"task {name!r} is already registered "
                         f"({type(_REGISTERED[name]).__name__}). Received: {cls.__name__}")
    _REGISTERED[name] = cls()
    return cls


def get_task(name: str) -> Task:
    """The task called ``name``, its module imported on first use; ``ZooError`` for an
    unknown name."""
    if name not in TASK_MODULES:
        raise ZooError(f"unknown task {name!r}; tasks: {', '.join(TASK_MODULES)}")
    if name not in _REGISTERED:
        importlib.import_module(TASK_MODULES[name])
        if name not in _REGISTERED:
            raise ZooError(f"{TASK_MODULES[name]} registers no task {name!r}")
    return _REGISTERED[name]


def task_of(config: dict) -> str:
    """The task of a run from its ``config.json`` record: the recorded one, else its model's
    (runs written before runs recorded it), else ``causal_lm``."""
    if "task" in config:
        return config["task"]
    from zoo.models import get_spec

    try:
        return get_spec(config["model"]).task
    except (KeyError, ZooError):
        return DEFAULT_TASK
