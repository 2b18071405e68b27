"""Zoo tasks, each a registered ``Task`` class in its own module (see ``zoo.tasks.base``).

    causal_lm        next-token prediction: the language models       zoo.tasks.causal_lm
    masked_lm        BERT-style masked tokens (bert_mlm)              zoo.tasks.masked_lm
    seq2seq          translation (transformer_seq2seq)                zoo.tasks.seq2seq
    classification   text classification (text_classifier)           zoo.tasks.classification

    >>> from zoo.tasks import get_task
    >>> get_task("seq2seq").evaluate(zoo.load("runs/translate"))

Light on purpose: this package imports the registry only; ``get_task`` imports a task's module
(and with it Keras, maybe TensorFlow) when the task is first asked for.
"""

from __future__ import annotations

from zoo.tasks.base import TASK_MODULES, Run, Task, get_task, register_task, task_of

__all__ = ["TASK_MODULES", "Run", "Task", "get_task", "register_task", "task_of"]
