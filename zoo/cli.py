"""The ``zoo`` command: models, train, eval, generate, translate, fill-mask, classify, index, search,
export, serve.

Problems with what the user asked for are printed as one line on stderr with exit status 2.

Start-up is light: this module and what it imports at module level use the standard library only,
so ``zoo --help``, ``zoo --version``, ``zoo models`` and every ``zoo COMMAND --help`` run without
importing Keras or TensorFlow; each command imports what it needs when it runs. ``main`` first sets
up the log level (``zoo.quiet``: ``--verbose`` or ``ZOO_LOG_LEVEL``), which keeps TensorFlow's C++
log lines and other libraries' warnings off the terminal by default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from zoo import quiet
from zoo.errors import ZooError
from zoo.model_catalog import MODELS, model_names

DISTRIBUTION = "keras-lm-zoo"


def _cmd_models(args) -> int:
    if not args.verbose:  # names and descriptions: the light catalogue, no Keras
        for name in model_names():
            print(f"{name:16s} {MODELS[name].description}")
        return 0
    from zoo.models import build_model, get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        print(f"{name:16s} {spec.description}")
        if args.verbose:
            for preset in spec.presets:
                model = build_model(name, vocab_size=args.vocab_size, preset=preset)
                sizes = ", ".join(f"{k}={v}" for k, v in spec.presets[preset].items())
                flops = _training_flops(model)
                flops = f"{_human(flops):>7s} train FLOPs/token" if flops else ""
                print(f"  {preset:6s} {_human(model.count_params()):>7s} parameters  {flops}  {sizes}")
    return 0


def _training_flops(model) -> int | None:
    """6N + 12LHQT at the model's context (None for models whose FLOPs it cannot tell)."""
    from zoo.models.flops import training_flops_per_token

    try:
        return training_flops_per_token(model)
    except (KeyError, TypeError, ValueError, NotImplementedError):
        return None


def _human(count: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


def _cmd_train(args) -> int:
    from zoo.config import parse_settings
    from zoo.training import train

    model_overrides, train_overrides = parse_settings(args.set or [])
    settings = {
        k: v
        for k, v in dict(
            vocab_size=args.vocab_size,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            epochs=args.epochs,
            max_steps=args.max_steps,
            learning_rate=args.learning_rate,
            distribute=args.distribute,
            backend=args.backend,
        ).items()
        if v is not None
    }
    settings.update(train_overrides)
    run = train(
        args.model,
        args.data,
        args.out,
        preset=args.preset,
        tokenizer=args.tokenizer,
        model_overrides=model_overrides,
        verbose=0 if args.quiet else 1,
        **settings,
    )
    from zoo.files import METRICS_FILE, read_json

    metrics = read_json(os.path.join(run.path, METRICS_FILE))
    print(json.dumps({"run": run.path, "steps": metrics["steps"], **metrics["validation"]}, indent=2))
    return 0


def _cmd_prepare(args) -> int:
    from zoo.data.prepared import prepare

    manifest = prepare(args.data, args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                       shard_tokens=args.shard_tokens, verbose=0 if args.quiet else 1)
    splits = {name: {"tokens": entry["tokens"], "shards": len(entry["shards"])}
              for name, entry in manifest["splits"].items()}
    print(json.dumps({"out": os.path.abspath(args.out), "tokenizer": manifest["tokenizer"]["kind"],
                      "vocab_size": manifest["tokenizer"]["vocab_size"], "splits": splits,
                      "seconds": manifest["seconds"]}, indent=2))
    return 0


def _cmd_eval(args) -> int:
    from zoo.run import evaluate

    options = {k: v for k, v in dict(strategy=args.strategy, num_beams=args.num_beams,
                                     max_examples=args.max_examples).items() if v is not None}
    print(json.dumps(evaluate(args.run, data=args.data, split=args.split,
                              batch_size=args.batch_size, verbose=0 if args.quiet else 1,
                              **options), indent=2))
    return 0


def _cmd_generate(args) -> int:
    from zoo.run import load

    run = load(args.run)
    if args.stream:
        if args.echo:
            print(args.prompt, end="", flush=True)
        for piece in run.stream(
            args.prompt,
            max_new_tokens=args.max_new_tokens,
            strategy=args.strategy,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            stop=args.stop,
        ):
            print(piece, end="", flush=True)
        print()
        return 0
    text = run.generate(
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        strategy=args.strategy,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num_beams=args.num_beams,
        seed=args.seed,
        stop=args.stop,
    )
    print(args.prompt + text if args.echo else text)
    return 0


def _read_texts(args) -> list[str]:
    texts = list(args.text or [])
    if args.file:
        try:
            with open(args.file, encoding="utf-8") as f:
                texts += [line.rstrip("\n") for line in f if line.strip()]
        except OSError as err:
            raise ZooError(f"cannot read --file {args.file}: {err.strerror}") from None
    if not texts:
        raise ZooError("give the input with --text TEXT (repeatable) or --file FILE (a text a line)")
    return texts


def _cmd_translate(args) -> int:
    from zoo.run import load

    run = load(args.run)
    outputs = run.translate(_read_texts(args), strategy=args.strategy, num_beams=args.num_beams,
                            max_new_tokens=args.max_new_tokens)
    for text in outputs:
        print(text)
    return 0


def _cmd_summarize(args) -> int:
    from zoo.run import load

    run = load(args.run)
    for text in run.summarize(_read_texts(args), strategy=args.strategy, num_beams=args.num_beams,
                              max_new_tokens=args.max_new_tokens):
        print(text)
    return 0


def _cmd_fill_mask(args) -> int:
    from zoo.run import load

    run = load(args.run)
    print(json.dumps(run.fill_mask(_read_texts(args), top_k=args.top_k), indent=2,
                     ensure_ascii=False))
    return 0


def _cmd_classify(args) -> int:
    from zoo.run import load

    run = load(args.run)
    print(json.dumps(run.classify(_read_texts(args)), indent=2, ensure_ascii=False))
    return 0


def _cmd_index(args) -> int:
    from zoo.index import build_index

    index = build_index(args.run, args.data, args.out, batch_size=args.batch_size)
    report = {"index": index.path, "documents": len(index), **{
        k: index.meta[k] for k in ("dimension", "kind", "embed_seconds")}}
    if args.export:
        from export.search_index import export_search_model

        report["export"] = export_search_model(index, args.export, top_k=args.top_k)
    print(json.dumps(report, indent=2))
    return 0


def _cmd_search(args) -> int:
    from zoo.index import load_index

    index = load_index(args.index, run=args.run)
    results = index.search(args.query, top_k=args.top_k)
    print(json.dumps(results[0] if len(args.query) == 1 else results, indent=2,
                     ensure_ascii=False))
    return 0


def _cmd_answer(args) -> int:
    from zoo.run import load

    run = load(args.run)
    print(json.dumps(run.answer(args.question, args.context), indent=2, ensure_ascii=False))
    return 0


def _add_text_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("run")
    p.add_argument("--text", action="append", help="an input text (repeatable)")
    p.add_argument("--file", help="a file of input texts, one a line")


def _cmd_serve(args) -> int:
    from serving.server import main as serve_main

    return serve_main(args.serve_args)


def package_version() -> str:
    """The installed version of the zoo (``importlib.metadata``), else ``zoo.__version__``."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        from zoo import __version__

        return __version__


class _VersionAction(argparse.Action):
    """``--version``: print ``zoo VERSION`` and exit (the version looked up only when asked)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 default: object = argparse.SUPPRESS, help: str = "print the version and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(f"zoo {package_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The ``zoo`` argument parser (builds without importing Keras or TensorFlow)."""
    parser = argparse.ArgumentParser(
        prog="zoo", description="Keras/TensorFlow language-model zoo",
        epilog=f"Log level: {quiet.ENV_VAR}={'|'.join(quiet.LEVELS)} (default quiet: the zoo's "
        "own messages only, no TensorFlow C++ log lines or library warnings); --verbose = info.",
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--verbose", dest="log_verbose", action="store_true",
                        help=f"also show the libraries' log lines and warnings (TensorFlow's C++ "
                        f"logs included); the same as {quiet.ENV_VAR}=info")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the named models")
    p.add_argument("--verbose", "-v", action="store_true", help="presets and parameter counts")
    p.add_argument("--vocab-size", type=int, default=65,
                   help="vocabulary for the parameter counts (65: tinyshakespeare characters)")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("train", help="train a named model on a corpus")
    p.add_argument("model")
    p.add_argument("--data", required=True,
                   help="language models: dataset:NAME, a .txt file or a directory of .txt; "
                   "transformer_seq2seq: dataset:multi30k, SOURCE_FILE:TARGET_FILE or a two-column "
                   "TSV; text_classifier: dataset:sst2 or a labelled TSV/CSV; bert_qa: dataset:squad or a SQuAD "
                   "JSON file; word2vec, glove: like the language models (lines = sentences)")
    p.add_argument("--out", required=True, help="run directory (rerun to resume)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--tokenizer", choices=["char", "word", "wordpiece", "sentencepiece"],
                   help="default: char for language models, the model's own otherwise")
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="model.<field>=V or train.<field>=V (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--backend", default=None, metavar="NAME",
                   help="Keras backend to train on: tensorflow (default) or jax; also read from "
                        "KERAS_BACKEND")
    p.add_argument("--distribute", choices=["none", "mirrored", "multiworker", "tpu"],
                   help="none (default), mirrored (local GPUs), multiworker (TF_CONFIG cluster), "
                        "tpu; --batch-size is the global batch")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("prepare", help="tokenize a corpus once into sharded TFRecord files")
    p.add_argument("--data", required=True, help="dataset:NAME, a .txt file or a directory of .txt")
    p.add_argument("--tokenizer", default="char", choices=["char", "word", "wordpiece", "sentencepiece"])
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--out", required=True, help="new directory; train on it with --data prepared:DIR")
    p.add_argument("--shard-tokens", type=int, default=1 << 22,
                   help="token ids per shard (default 4194304)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("eval", help="metrics over a whole split (JSON): loss and perplexity; "
                       "BLEU/ROUGE for translation, masked accuracy, classification accuracy/F1")
    p.add_argument("run")
    p.add_argument("--data", help="default: the data the run was trained on")
    p.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    p.add_argument("--batch-size", type=int)
    p.add_argument("--strategy", choices=["greedy", "beam"],
                   help="translation and summarizer runs: how the BLEU/ROUGE outputs are "
                   "decoded (default greedy)")
    p.add_argument("--num-beams", type=int, help="translation/summarizer runs, --strategy beam")
    p.add_argument("--max-examples", type=int,
                   help="translation/summarizer runs: score the first N only (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("generate", help="continue a prompt")
    p.add_argument("run")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--strategy", default="greedy", choices=["greedy", "sample", "beam"])
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--num-beams", type=int, default=4)
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", help="cut the output at this string")
    p.add_argument("--echo", action="store_true", help="print the prompt before the continuation")
    p.add_argument("--stream", action="store_true",
                   help="print the continuation token by token as it is produced")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("translate", help="translate text with a transformer_seq2seq run")
    _add_text_inputs(p)
    p.add_argument("--strategy", default="greedy", choices=["greedy", "beam"])
    p.add_argument("--num-beams", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="default: the model's target context")
    p.set_defaults(func=_cmd_translate)

    p = sub.add_parser("summarize", help="summarise documents with a summarizer run")
    _add_text_inputs(p)
    p.add_argument("--strategy", default="greedy", choices=["greedy", "beam"])
    p.add_argument("--num-beams", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="default: the model's target context")
    p.set_defaults(func=_cmd_summarize)

    p = sub.add_parser("fill-mask", help="candidates for each [MASK] with a bert_mlm run (JSON)")
    _add_text_inputs(p)
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(func=_cmd_fill_mask)

    p = sub.add_parser("classify", help="label texts with a text_classifier run (JSON)")
    _add_text_inputs(p)
    p.set_defaults(func=_cmd_classify)

    p = sub.add_parser("index", help="embed documents with an encoder run (bert_mlm, "
                       "text_classifier) into a FAISS index for zoo search (JSON)")
    p.add_argument("run")
    p.add_argument("--data", required=True, help="documents: a .jsonl file ({\"id\", \"text\"} "
                   "a line), a .txt file (one a line), a SQuAD .json file or dataset:squad")
    p.add_argument("--out", required=True, help="the index directory (replaced if it is one)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--export", metavar="BASE",
                   help="also export the index as a SavedModel with a search signature under BASE")
    p.add_argument("--top-k", type=int, default=10, help="results per query of the export")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("search", help="the documents of an index nearest to a query (JSON)")
    p.add_argument("index")
    p.add_argument("--query", action="append", required=True, help="a query (repeatable)")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--run", help="embed queries with this run (default: the index's own)")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("answer", help="answer a question from a context with a bert_qa run "
                       "(JSON: answer, score, start, end)")
    p.add_argument("run")
    p.add_argument("--question", required=True)
    p.add_argument("--context", required=True, help="the passage holding the answer")
    p.set_defaults(func=_cmd_answer)

    from export.cli import add_export_parser
    from zoo.importers import add_import_parser

    add_export_parser(sub)
    add_import_parser(sub)

    p = sub.add_parser(
        "serve", add_help=False,
        help="serve exported models over TF Serving's REST and gRPC APIs (tensorflow_model_server "
        "flags; see zoo serve --help)",
    )
    p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zoo`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((i for i, arg in enumerate(argv) if arg != "--verbose"), len(argv))
    if argv[command:command + 1] == ["serve"]:  # the server parses its own TF Serving-style flags
        args = argparse.Namespace(func=_cmd_serve, serve_args=argv[command + 1:],
                                  log_verbose=command > 0)
    else:
        args = build_parser().parse_args(argv)
    try:
        level = quiet.level_from(args.log_verbose)
    except ValueError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return 2
    quiet.configure(level)  # logging, warnings, and quiet native logs, before TensorFlow loads
    try:
        if args.func is _cmd_train:  # before anything imports Keras, which fixes its backend
            from zoo.backends import select

            args.backend = select(args.backend)
        from zoo.progress import verbosity

        with verbosity(0 if getattr(args, "quiet", False) else 1):  # progress on stderr
            return args.func(args)
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
