"""Extractive QA on SQuAD v1.1's held-out articles: a trained ``bert_qa`` beside a trivial baseline.

    ZOO_DATA_DIR=../shared/data python bench/question_answering.py --out runs/qa-bench

Split (``zoo.data.squad``): SQuAD v1.1 dev by article, the first 36 articles train, 37-40
validation (checkpoints), the last 8 (1,589 questions) test; no test article is seen in
training. The model: ``bert_qa`` preset ``small`` (4 layers, 4 heads, width 128, windows of 192
tokens, stride 64) trained from scratch (a cased WordPiece of ``--vocab-size`` learned on the
training articles) for ``--steps`` steps of batch 32 (the report gives the wall-clock and the
CPU seconds of the training call: on a shared machine the CPU time is the budget to compare); ``--pretrain-steps N`` first trains a
``bert_mlm`` of the same sizes on the training articles' paragraphs (masked LM) and fine-tunes
from it (reported separately). The baseline answers with the context sentence that shares the
most distinct normalised question words (``zoo.qa_metrics.normalize_answer``; ties: the first).
Both are scored by the same ``zoo.qa_metrics.squad_scores``: exact match and F1 in percent.
Prints one JSON object (the figures, the steps and the wall-clock seconds of each stage).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import zoo  # noqa: E402
from zoo.data import squad  # noqa: E402
from zoo.qa_metrics import normalize_answer, squad_scores  # noqa: E402

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STOP = frozenset("what which who whom whose when where why how is are was were do does did of in "
                  "on to for by with from and or as at that this it its be been".split())


def overlap_baseline(question: str, context: str) -> str:
    """The context sentence sharing the most distinct question words (stop words aside)."""
    wanted = set(normalize_answer(question).split()) - _STOP
    sentences = [s for s in _SENTENCE_END.split(context) if s.strip()] or [context]
    scores = [len(wanted & set(normalize_answer(s).split())) for s in sentences]
    return sentences[scores.index(max(scores))]


def _cpu_seconds() -> float:
    """User + system CPU time of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    """Train (or resume), evaluate on the test articles, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="dataset:squad")
    parser.add_argument("--out", default="runs/qa-bench")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--pretrain-steps", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    args = parser.parse_args()

    test = squad.load_examples(args.data, squad.TEST)
    train_articles = set(squad.split_articles(len(squad.read_articles(
        squad.source_path(args.data))))[squad.TRAIN_ALL])
    if any(e.article in train_articles for e in test):
        raise SystemExit("a test question comes from a training article")
    report = {"test_questions": len(test), "test_articles": len({e.article for e in test})}
    started = time.time()
    report["baseline"] = squad_scores([overlap_baseline(e.question, e.context) for e in test],
                                      [e.answers for e in test])
    report["baseline"]["seconds"] = round(time.time() - started, 1)

    common = dict(preset=args.preset, batch_size=args.batch_size, verbose=2,
                  learning_rate=args.learning_rate, eval_batches=10,
                  checkpoint_every=max(1, min(200, args.steps // 5)))
    overrides = {}
    if args.pretrain_steps:
        texts = os.path.join(args.out, "train_contexts.txt")
        os.makedirs(args.out, exist_ok=True)
        with open(texts, "w", encoding="utf-8") as f:
            f.write("\n".join(squad.contexts_of(args.data, squad.TRAIN)) + "\n")
        started, cpu = time.time(), _cpu_seconds()
        mlm = zoo.train("bert_mlm", texts, os.path.join(args.out, "mlm"), vocab_size=args.vocab_size,
                        max_steps=args.pretrain_steps, seq_len=192, **common)
        report["pretraining"] = {"steps": args.pretrain_steps,
                                 "seconds": round(time.time() - started, 1),
                                 "cpu_seconds": round(_cpu_seconds() - cpu, 1)}
        overrides = {"pretrained": mlm.path}
    started, cpu = time.time(), _cpu_seconds()
    run = zoo.train("bert_qa", args.data, os.path.join(args.out, "qa"), max_steps=args.steps,
                    vocab_size=None if overrides else args.vocab_size,
                    model_overrides=overrides, **common)
    train_seconds, train_cpu = time.time() - started, _cpu_seconds() - cpu
    started = time.time()
    scores = run.evaluate(split="test", verbose=0)
    with open(os.path.join(run.path, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    report["model"] = {**scores, "steps": metrics["steps"], "parameters": metrics["parameters"],
                       "train_call_seconds": round(train_seconds, 1),
                       "train_call_cpu_seconds": round(train_cpu, 1),
                       "fit_seconds": metrics["train_seconds"],
                       "eval_seconds": round(time.time() - started, 1),
                       "validation": metrics["validation"]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
