"""``zoo import FORMAT CHECKPOINT_DIR --out RUN``: checkpoints from elsewhere as zoo runs.

    zoo import gpt2 path/to/gpt2 --out runs/gpt2     # Hugging Face layout (see zoo.gpt2_import)
    zoo generate runs/gpt2 --prompt "Once upon a time" --max-new-tokens 50

An import writes an ordinary run directory (``config.json``, ``tokenizer/``, ``model.keras``,
``metrics.json``), so ``zoo generate``, ``zoo eval --data``, ``zoo export`` and ``zoo serve``
use it as they use a trained run. The directory is written under a temporary name beside
``RUN`` and renamed when complete: a failed import leaves nothing behind. Problems with the
checkpoint raise ``ZooError`` (the CLI prints one line and exits with status 2).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import secrets
import shutil
import time
from typing import TYPE_CHECKING

from zoo import progress
from zoo.errors import ZooError
from zoo.files import CONFIG_FILE, METRICS_FILE, MODEL_FILE, TOKENIZER_DIR

if TYPE_CHECKING:  # zoo.run imports TensorFlow: not at CLI start-up
    from zoo.run import LoadedRun

# format -> "module:function(checkpoint_dir, out) -> LoadedRun"
IMPORTERS = {"gpt2": "zoo.gpt2_import:import_gpt2"}


def import_checkpoint(fmt: str, checkpoint_dir: str, out: str,
                      verbose: int | None = None) -> LoadedRun:
    """Import the checkpoint in ``checkpoint_dir`` (format ``fmt``, e.g. ``"gpt2"``) as run
    ``out``; returns the loaded run (``zoo.LoadedRun``). ``verbose`` > 0 shows each stage on
    stderr (None: the ambient level, ``zoo.progress``)."""
    if fmt not in IMPORTERS:
        raise ZooError(f"unknown checkpoint format {fmt!r}; choose one of: {', '.join(IMPORTERS)}")
    module, function = IMPORTERS[fmt].split(":")
    with progress.verbosity(verbose):
        return getattr(importlib.import_module(module), function)(checkpoint_dir, out)


def check_new_run_dir(out: str) -> str:
    """``out`` as an absolute path; ``ZooError`` unless it is new (or an empty directory)."""
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ZooError(f"{out} already exists: import into a new --out directory")
    return out


def write_run(out: str, model, tokenizer, config: dict, metrics: dict) -> LoadedRun:
    """Write a finished run directory atomically and load it back (``zoo.load``)."""
    from zoo.run import load

    out = check_new_run_dir(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".tmp-import-{secrets.token_hex(4)}")
    os.mkdir(tmp)
    try:
        with progress.stage(f"writing the run directory {out}"):
            tokenizer.save(os.path.join(tmp, TOKENIZER_DIR))
            model.save(os.path.join(tmp, MODEL_FILE))
            for name, data in ((CONFIG_FILE, config), (METRICS_FILE, metrics)):
                with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=2)
            if os.path.isdir(out):
                os.rmdir(out)  # empty (checked above)
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with progress.stage("loading it back (safe_mode=True)"):
        return load(out)


# ------------------------------------------------------------------------------------------------
# command line


def _cmd_import(args) -> int:
    start = time.perf_counter()
    run = import_checkpoint(args.format, args.checkpoint, args.out)
    print(json.dumps({
        "run": run.path,
        "model": run.config["model"],
        "parameters": int(run.model.count_params()),
        "vocab_size": run.tokenizer.vocab_size,
        "seconds": round(time.perf_counter() - start, 1),
    }, indent=2))
    return 0


def add_import_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``import`` sub-command to ``subparsers`` (from ``add_subparsers``)."""
    p = subparsers.add_parser(
        "import",
        help="import a checkpoint from another library as a zoo run",
        description="Write a zoo run directory from a checkpoint folder (gpt2: Hugging Face "
        "layout with config.json, model.safetensors, vocab.json and merges.txt).",
    )
    p.add_argument("format", choices=sorted(IMPORTERS), help="checkpoint format")
    p.add_argument("checkpoint", help="the checkpoint folder")
    p.add_argument("--out", required=True, help="new run directory")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_import)
    return p
