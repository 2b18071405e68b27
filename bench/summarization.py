"""SciTLDR-A test ROUGE of a summarizer trained within a CPU budget, beside lead-1 and the
literature (the README's "Summarization" table and bench/RESULTS.md).

A run stopped at its time budget (killed) is scored from its latest checkpoint with
``--checkpoint``.

    ZOO_DATA_DIR=../shared/data python bench/summarization.py --out runs/tldr [--steps 800]

Trains ``summarizer`` (preset ``small`` by default) on SciTLDR-A train (resumable: rerun the same
command to continue), then scores the test split (618 papers, 1,967 TLDRs) with the zoo's
evaluator: ROUGE-1/2/L F1 against the reference with the best ROUGE-1, Porter stemmer
(``zoo.summary_metrics``), for the model's greedy (and, with ``--beam N``, beam) summaries and for
lead-1 (the abstract's first sentence). Prints a Markdown table and writes ``OUT/bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

# Cachola et al. (2020), SciTLDR-A test, ROUGE-1 / 2 / L F1 (data README): fine-tuned BART-large
LITERATURE = {"BART-large (Cachola et al. 2020; ~400M parameters, pretrained)": (43.3, 20.8, 35.0),
              "CATTS, BART-large + title scaffold (Cachola et al. 2020)": (43.8, 20.9, 35.5)}


def _checkpoint_metrics(out: str, run) -> dict:
    """Steps and wall time of a stopped run: its latest checkpoint's step, and the seconds from
    the run's ``config.json`` to that checkpoint's files (tokenizer training included)."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(os.path.join(out, "checkpoints"))
    if latest is None:
        raise SystemExit(f"{out} has no checkpoint yet")
    # the training checkpoint reaches the model's variables through the optimizer's list of
    # them (zoo.fitting saves Checkpoint(model=, optimizer=)): restore through an optimizer too
    from zoo.config import TrainConfig
    from zoo.fitting import make_optimizer

    train = TrainConfig(**{k: v for k, v in run.config["train"].items() if k != "model_overrides"})
    optimizer = make_optimizer(train, train.max_steps or 1)
    optimizer.build(run.model.trainable_variables)
    tf.train.Checkpoint(model=run.model, optimizer=optimizer).restore(
        latest).assert_existing_objects_matched()
    seconds = os.path.getmtime(latest + ".index") - os.path.getmtime(
        os.path.join(out, "config.json"))
    return {"steps": int(latest.rsplit("-", 1)[1]), "train_seconds": round(seconds, 1),
            "parameters": int(run.model.count_params()), "stopped_at_budget": True}


def main() -> None:
    """Train (or resume), evaluate on test, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--checkpoint", action="store_true",
                        help="no training: score the latest checkpoint of a run stopped at its "
                        "time budget (wall time: config.json to that checkpoint)")
    parser.add_argument("--beam", type=int, default=0, help="also score beam search, N beams")
    parser.add_argument("--max-examples", type=int, default=None, help="score the first N only")
    args = parser.parse_args()

    import zoo
    from zoo.tasks import summarization

    start = time.perf_counter()
    if args.checkpoint:  # a run stopped at its time budget: its latest checkpoint
        run = zoo.load(args.out, checkpoint=True)
        metrics = _checkpoint_metrics(args.out, run)
    else:
        run = zoo.train("summarizer", "dataset:scitldr", args.out, preset=args.preset,
                        max_steps=args.steps, batch_size=args.batch_size,
                        vocab_size=args.vocab_size, learning_rate=args.learning_rate,
                        checkpoint_every=args.checkpoint_every, eval_batches=5, verbose=2)
        with open(os.path.join(args.out, "metrics.json"), encoding="utf-8") as f:
            metrics = json.load(f)
    rows, report = [], {"train_seconds": metrics["train_seconds"], "steps": metrics["steps"],
                        "parameters": metrics["parameters"], "preset": run.config["preset"],
                        "batch_size": run.config["train"]["batch_size"],
                        "vocab_size": run.config["vocab_size"],
                        "stopped_at_budget": bool(metrics.get("stopped_at_budget")),
                        "cpu_count": os.cpu_count()}
    strategies = [("greedy", 1)] + ([("beam", args.beam)] if args.beam else [])
    for strategy, beams in strategies:
        began = time.perf_counter()
        result = summarization.evaluate(run, split="test", strategy=strategy, num_beams=beams,
                                        max_examples=args.max_examples)
        result["decode_seconds"] = round(time.perf_counter() - began, 1)
        report[strategy] = result
        label = "greedy" if strategy == "greedy" else f"beam {beams}"
        rows.append((f"zoo summarizer ({report['preset']}, {metrics['parameters'] / 1e6:.1f}M, "
                     f"{metrics['steps']} steps, {label})",
                     *(100 * result[k] for k in ("rouge1", "rouge2", "rougeL"))))
    lead = report["greedy"]["lead1"]
    rows.insert(0, ("lead-1 (first sentence of the abstract; same evaluator)",
                    *(100 * lead[k] for k in ("rouge1", "rouge2", "rougeL"))))
    rows += [(name, *scores) for name, scores in LITERATURE.items()]
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    with open(os.path.join(args.out, "bench.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(f"SciTLDR-A test, {report['greedy']['examples']} papers, "
          f"{report['greedy']['references']} TLDRs; training {metrics['train_seconds'] / 60:.1f} "
          f"min on {os.cpu_count()} CPU cores; test loss {report['greedy']['loss']:.3f}")
    print("| system | ROUGE-1 | ROUGE-2 | ROUGE-L |\n|---|---|---|---|")
    for name, r1, r2, rl in rows:
        print(f"| {name} | {r1:.1f} | {r2:.1f} | {rl:.1f} |")


if __name__ == "__main__":
    main()
