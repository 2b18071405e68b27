"""``zoo export RUN --saved-model BASE``: the command-line hook (wired into ``zoo.cli``).

    zoo export runs/tfm --saved-model models/tfm [--version N] [--max-new-tokens N]
        [--temperature F] [--top-k K] [--top-p P]
    zoo export runs/w2v --vectors vectors.txt [--vectors-format word2vec|glove]

Prints the path of the version directory it wrote (the progress of each stage goes to stderr;
``--quiet`` drops it). Problems raise ``ZooError`` (the zoo's
``main`` prints them on one line and exits with status 2).
"""

from __future__ import annotations

import argparse
import json
import os


def _cmd_export(args) -> int:
    from zoo.errors import ZooError

    if args.vectors:
        from export.word_vectors import export_vectors
        from zoo.run import load

        print(json.dumps(export_vectors(load(args.run), args.vectors, args.vectors_format),
                         indent=2))
        if not args.saved_model and not args.tflite:
            return 0
    if not args.saved_model and not args.tflite:
        raise ZooError("say where to export: --saved-model BASE, --tflite FILE and/or "
                       "--vectors FILE")
    if args.saved_model:
        from export.saved_model import saved_model

        path = saved_model(
            args.run,
            args.saved_model,
            args.version,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            streaming=not args.no_streaming,
        )
        print(path)
    if args.tflite:
        print(json.dumps(_export_tflite(args), indent=2))
    return 0


def _export_tflite(args) -> dict:
    """Write the LiteRT model; report its size and the perplexity change against float."""
    import tempfile

    from export.tflite import corpus_windows, export_tflite
    from zoo import progress
    from zoo.run import load

    with progress.stage(f"loading {args.run}"):
        run = load(args.run)
    with progress.stage(f"reading {args.eval_windows} validation windows"):
        texts = corpus_windows(run, "validation", args.eval_windows)
    result = export_tflite(run, args.tflite, quantize=args.quantize,
                           max_new_tokens=args.max_new_tokens, validation_texts=texts)
    report = {k: result[k] for k in ("path", "bytes", "quantize", "perplexity")}
    report["validation_windows"] = len(texts)
    if args.quantize != "none":
        progress.echo("the float model, to compare its perplexity:")
        with tempfile.TemporaryDirectory() as tmp:
            reference = export_tflite(run, os.path.join(tmp, "float.tflite"),
                                      max_new_tokens=args.max_new_tokens, validation_texts=texts)
        report["float_bytes"] = reference["bytes"]
        report["float_perplexity"] = reference["perplexity"]
        report["perplexity_change_percent"] = 100.0 * (
            result["perplexity"] / reference["perplexity"] - 1.0
        )
    return report


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``export`` sub-command to ``subparsers`` (from ``add_subparsers``)."""
    p = subparsers.add_parser(
        "export",
        help="export a run: TF Serving SavedModel and/or LiteRT flatbuffer",
        description="Write BASE/<version>/ (a TF Serving SavedModel with the signatures "
        "serving_default, generate, score, tokenize and detokenize).",
    )
    p.add_argument("run", help="a finished run directory")
    p.add_argument("--saved-model", metavar="BASE",
                   help="TF Serving model base directory; the export goes to BASE/<version>/")
    p.add_argument("--version", type=int,
                   help="version number (default: one more than the largest in BASE)")
    p.add_argument("--max-new-tokens", type=int, default=256,
                   help="most new tokens per prompt (the decoding loop's bound, serving_default's "
                   "and LiteRT generate's budget); independent of the model's context, past "
                   "which a transformer slides its window (default 256)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="serving_default's temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, default=0, help="serving_default's top-k (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="serving_default's top-p (1 = off)")
    p.add_argument("--no-streaming", action="store_true",
                   help="leave out the stream_start / stream_step signatures (token streaming)")
    p.add_argument("--tflite", metavar="FILE", help="also/instead write a LiteRT flatbuffer")
    p.add_argument("--quantize", default="none", choices=["none", "float16", "dynamic", "int8"],
                   help="LiteRT weights: float32, float16, dynamic-range int8, or full int8 "
                   "(calibrated on training windows)")
    p.add_argument("--eval-windows", type=int, default=200,
                   help="validation windows scored to report the LiteRT model's perplexity")
    p.add_argument("--vectors", metavar="FILE",
                   help="a word_vectors run (word2vec, glove): write its vectors as text")
    p.add_argument("--vectors-format", default="word2vec", choices=["word2vec", "glove"],
                   help="--vectors' format: word2vec (a 'COUNT DIM' header) or glove (none)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_export)
    return p
