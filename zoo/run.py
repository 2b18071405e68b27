"""A run directory and the trained model it holds: ``load``, ``load_finished`` and ``LoadedRun``
(generate, stream, evaluate and the task's own methods). The directory's layout and file names
are in ``zoo.files``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import keras

from zoo import progress
from zoo.errors import ZooError
from zoo.files import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    MODEL_FILE,
    TOKENIZER_DIR,
    portable_checkpoints,
    read_json,
)
from zoo.special_tokens import EOS_ID

if TYPE_CHECKING:
    from zoo.tokenizers.base import Tokenizer

# What a finished run directory holds (``load_finished`` checks them).
_FINISHED_RUN_FILES = (CONFIG_FILE, os.path.join(TOKENIZER_DIR, "tokenizer.json"), MODEL_FILE)


@dataclass
class LoadedRun:
    """A trained model with its tokenizer and settings (what ``zoo.load`` returns)."""

    path: str
    model: keras.Model
    tokenizer: Tokenizer | None  # None where TensorFlow is not installed
    config: dict
    # More tokenizers a task needs, by name (translation: "source"), from RUN/<name>_tokenizer/.
    extra_tokenizers: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        """``causal_lm``, ``masked_lm``, ``seq2seq`` or ``classification``."""
        from zoo.tasks.base import task_of

        return task_of(self.config)

    def _task_call(self, verb: str, task: str, *args, **kwargs):
        """``get_task(task).<verb>(self, ...)``: a method only one task's runs have."""
        if self.task != task:
            raise ZooError(
                f"{verb} needs a {task} run; {self.path} holds a {self.task} model "
                f"({self.config.get('model')})"
            )
        from zoo.tasks.base import get_task

        return getattr(get_task(task), verb)(self, *args, **kwargs)

    def translate(self, texts, **kwargs):
        """Translate source text(s) (str or list); see ``zoo.tasks.seq2seq.translate``."""
        return self._task_call("translate", "seq2seq", texts, **kwargs)

    def fill_mask(self, texts, **kwargs):
        """Top-k candidates for each ``[MASK]``; see ``zoo.tasks.masked_lm.fill_mask``."""
        return self._task_call("fill_mask", "masked_lm", texts, **kwargs)

    def embed(self, texts, **kwargs):
        """Pooled sentence vectors; see ``zoo.tasks.masked_lm.embed``."""
        return self._task_call("embed", "masked_lm", texts, **kwargs)

    def classify(self, texts, **kwargs):
        """Labels and class scores; see ``zoo.tasks.classification.classify``."""
        return self._task_call("classify", "classification", texts, **kwargs)

    def summarize(self, texts, **kwargs):
        """Summarise document(s) (str or list); see ``zoo.tasks.summarization.summarize``."""
        return self._task_call("summarize", "summarization", texts, **kwargs)

    def most_similar(self, word: str, top_k: int = 10):
        """The nearest words by cosine; see ``zoo.tasks.word_vectors.most_similar``."""
        return self._task_call("most_similar", "word_vectors", word, top_k)

    def analogy(self, a: str, b: str, c: str, top_k: int = 1):
        """a is to b as c is to ? (3CosAdd); see ``zoo.tasks.word_vectors.analogy``."""
        return self._task_call("analogy", "word_vectors", a, b, c, top_k)

    def word_vectors(self):
        """``(words, vectors)``; see ``zoo.tasks.word_vectors.word_vectors``."""
        return self._task_call("word_vectors", "word_vectors")

    def build_index(self, data: str, out: str, **kwargs):
        """Embed the documents of ``data`` with this run's encoder into a FAISS index at
        ``out``; see ``zoo.index.build_index`` (search it with ``zoo.search``)."""
        import importlib

        # zoo.index sits above this module (it loads runs), as the tasks do: looked up, not imported
        return importlib.import_module("zoo.index").build_index(self, data, out, **kwargs)

    def answer(self, question, context):
        """The answer span of a question on a context; see ``zoo.tasks.question_answering``."""
        return self._task_call("answer", "question_answering", question, context)

    @property
    def line_corpus(self) -> bool:
        """Trained on sentences ([BOS] ... [EOS]) rather than a continuous stream."""
        return self.config.get("corpus_kind") == "lines"

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """Ids that end a continuation: ``<eos>`` for a line corpus, plus those recorded in
        ``config.json`` (``stop_token_ids``; an imported GPT-2: ``<|endoftext|>``)."""
        stops = [getattr(self.tokenizer, "eos_id", EOS_ID)] if self.line_corpus else []
        return tuple(int(t) for t in [*stops, *self.config.get("stop_token_ids", ())])

    def generate(self, prompts, **kwargs):
        """Continue ``prompts`` (a str or a list of str); see ``zoo.generation.generate``."""
        from zoo.generation import generate

        if self.line_corpus:
            kwargs.setdefault("add_bos", True)
        if self.stop_token_ids:
            kwargs.setdefault("stop_token_ids", self.stop_token_ids)
        return generate(self.model, self.tokenizer, prompts, **kwargs)

    def stream(self, prompt: str, **kwargs):
        """Yield the continuation of ``prompt`` piece by piece; see ``zoo.generation.stream``."""
        from zoo.generation.stream import stream

        if self.line_corpus:
            kwargs.setdefault("add_bos", True)
        if self.stop_token_ids:
            kwargs.setdefault("stop_token_ids", self.stop_token_ids)
        return stream(self.model, self.tokenizer, prompt, **kwargs)

    def evaluate(self, data: str | None = None, split: str = "validation", batch_size: int | None = None,
                 verbose: int | None = None) -> dict:
        """The task's ``zoo eval`` metrics over a whole split (a language model: loss,
        perplexity and bits per character); see ``zoo.evaluate`` (``verbose``: progress on
        stderr, ``zoo.progress``)."""
        from zoo.tasks.base import get_task

        with progress.verbosity(verbose):
            return get_task(self.task).evaluate(self, data=data, split=split,
                                                batch_size=batch_size)


def load(run_dir: str, checkpoint: bool = False) -> LoadedRun:
    """Load a run directory: ``model.keras`` (``safe_mode=True``) and its tokenizer.

    With ``checkpoint=True``, or when training has not finished yet, the latest checkpoint is
    loaded into a freshly built model instead.
    """
    from zoo.backends import tensorflow_installed
    from zoo.models import build_model
    from zoo.pretrained_vectors import freeze_as_recorded

    if not os.path.isdir(run_dir):
        raise ZooError(f"run directory {run_dir!r} does not exist")
    config = read_json(os.path.join(run_dir, CONFIG_FILE))
    tokenizer, extra_tokenizers = None, {}
    if tensorflow_installed():  # the tokenizers are TensorFlow modules; the model is not
        from zoo.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(os.path.join(run_dir, TOKENIZER_DIR))
        extra_tokenizers = {
            name: load_tokenizer(os.path.join(run_dir, f"{name}_{TOKENIZER_DIR}"))
            for name in config.get("extra_tokenizers", ())
        }
    model_path = os.path.join(run_dir, MODEL_FILE)
    if os.path.exists(model_path) and not checkpoint:
        try:
            model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
        except Exception as err:  # a damaged file: say which one
            raise ZooError(f"cannot load {model_path}: {err}") from err
        freeze_as_recorded(model, config)
    else:
        checkpoint_dir = os.path.join(run_dir, CHECKPOINT_DIR)
        saved = portable_checkpoints(checkpoint_dir)
        tf_checkpoint = os.path.isfile(os.path.join(checkpoint_dir, "checkpoint"))
        if not saved and not tf_checkpoint:
            raise ZooError(f"{run_dir} has neither {MODEL_FILE} nor a checkpoint: train it first")
        model = build_model(
            config["model"], config["vocab_size"], config["preset"], **config["model_config"]
        )
        freeze_as_recorded(model, config)  # before the restore: it follows the trainable list
        if saved:  # written on JAX: a Keras weights file (its optimizer variables are skipped)
            model.load_weights(saved[-1][1])
        else:
            import tensorflow as tf

            latest = tf.train.latest_checkpoint(checkpoint_dir)
            restore_training_checkpoint(model, latest)
    return LoadedRun(path=run_dir, model=model, tokenizer=tokenizer, config=config,
                     extra_tokenizers=extra_tokenizers)


def restore_training_checkpoint(model, path: str) -> None:
    """Restore ``model``'s weights from a training checkpoint (``zoo.fitting``'s
    ``tf.train.Checkpoint(model=model, optimizer=optimizer)``).

    TensorFlow's object graph of a Keras 3 model reaches only some of its variables; the others
    are saved through the optimizer's list of trainable variables (in
    ``model.trainable_variables`` order), so they are restored through a stand-in with that
    list. Raises ``ZooError`` when a model variable finds no value in the checkpoint.
    """
    import tensorflow as tf

    if not model.built:
        raise ZooError("restore_training_checkpoint needs a built model")
    optimizer = tf.Module()
    optimizer._trainable_variables = list(model.trainable_variables)
    status = tf.train.Checkpoint(model=model, optimizer=optimizer).restore(path)
    try:
        status.assert_existing_objects_matched()
    except AssertionError as err:
        raise ZooError(f"checkpoint {path} does not match the run's model: {err}") from err
    status.expect_partial()  # the optimizer's slots and step are not needed here


def load_finished(run_or_dir: LoadedRun | str | os.PathLike) -> LoadedRun:
    """``run_or_dir`` as a ``LoadedRun``: a ``LoadedRun`` as it is, else the finished run
    directory it names, loaded.

    Raises ``ZooError`` for anything else, a directory that does not exist, or one without
    ``config.json``, ``tokenizer/tokenizer.json`` or ``model.keras`` (training not finished).
    """
    if isinstance(run_or_dir, LoadedRun):
        return run_or_dir
    if not isinstance(run_or_dir, (str, os.PathLike)):
        raise ZooError(f"expected a run directory or a LoadedRun, got {type(run_or_dir).__name__}")
    path = os.fspath(run_or_dir)
    if not os.path.isdir(path):
        raise ZooError(f"run directory {path!r} does not exist")
    for entry in _FINISHED_RUN_FILES:
        if not os.path.isfile(os.path.join(path, entry)):
            raise ZooError(
                f"{path} is not a finished run: {entry} is missing (train it to the end first)"
            )
    return load(path)


def evaluate(run_or_dir, data: str | None = None, split: str = "validation",
             batch_size: int | None = None, verbose: int | None = None, **task_options) -> dict:
    """``zoo.evaluate(run_dir_or_loaded_run, data=None, split="validation")`` -> the metrics
    dict of the run's task (``zoo.tasks.get_task(task).evaluate``); ``task_options`` go to it
    (translation: ``strategy``, ``num_beams``, ``max_examples``). ``verbose`` > 0 shows the
    progress on stderr (None: the ambient level, ``zoo.progress``; ``zoo eval`` shows it)."""
    from zoo.tasks.base import get_task

    with progress.verbosity(verbose):
        if isinstance(run_or_dir, LoadedRun):
            run = run_or_dir
        else:
            with progress.stage(f"loading {run_or_dir}"):
                run = load(run_or_dir)
        return get_task(run.task).evaluate(run, data=data, split=split, batch_size=batch_size,
                                           **task_options)
