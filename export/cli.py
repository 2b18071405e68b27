"""``zoo export RUN --saved-model BASE``: the command-line hook (wired into ``zoo.cli``).

    zoo export runs/tfm --saved-model models/tfm [--version N] [--max-new-tokens N]
        [--temperature F] [--top-k K] [--top-p P]

Prints the path of the version directory it wrote. Problems raise ``ZooError`` (the zoo's
``main`` prints them on one line and exits with status 2).
"""

from __future__ import annotations

import argparse


def _cmd_export(args) -> int:
    from export.saved_model import saved_model

    path = saved_model(
        args.run,
        args.saved_model,
        args.version,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
    )
    print(path)
    return 0


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``export`` sub-command to ``subparsers`` (from ``add_subparsers``)."""
    p = subparsers.add_parser(
        "export",
        help="export a run for serving (TF Serving SavedModel)",
        description="Write BASE/<version>/ (a TF Serving SavedModel with the signatures "
        "serving_default, generate, score, tokenize and detokenize).",
    )
    p.add_argument("run", help="a finished run directory")
    p.add_argument("--saved-model", required=True, metavar="BASE",
                   help="TF Serving model base directory; the export goes to BASE/<version>/")
    p.add_argument("--version", type=int,
                   help="version number (default: one more than the largest in BASE)")
    p.add_argument("--max-new-tokens", type=int, default=64,
                   help="upper bound of the decoding loop and serving_default's budget")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="serving_default's temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, default=0, help="serving_default's top-k (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="serving_default's top-p (1 = off)")
    p.set_defaults(func=_cmd_export)
    return p
