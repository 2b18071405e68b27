"""Export a trained zoo run as a TensorFlow SavedModel for TF Serving.

    import export
    path = export.saved_model("runs/shakespeare", "serving/models/shakespeare")   # -> .../1

``BASE/<version>/`` is the layout TF Serving watches (``--model_base_path=BASE``). The export is
written into a temporary directory inside ``BASE`` whose name (``.tmp-export-XXXX``) TF Serving
ignores, and renamed to the version number only once it is complete, so a poller never sees a
half-written version. Versions count up from 1 (the next integer after the largest numeric
version present) unless one is given.

The signatures come from the run's task (``zoo.tasks``: ``get_task(name).serving_module``):
the causal LM's are described in ``zoo/tasks/causal_serving.py`` (``serving_default``,
``generate``, ``score``, ``tokenize``, ``detokenize`` and, by default, ``stream_start`` /
``stream_step``); masked LM, translation and classification in their task modules. Everything
runs in-graph with stock TensorFlow kernels plus the tensorflow-text ops of the run's tokenizer
(``import tensorflow_text`` before loading); no function is compiled with XLA (stock TF Serving
runs with XLA off).

Files: ``saved_model.pb``, ``variables/``, ``assets/`` (the tokenizer's files, for reference:
the tokenizer's tables are built from constants inside the graph),
``assets.extra/tf_serving_warmup_requests`` (``PredictionLog`` records TF Serving replays at
load time, from the task's ``warmup_records``) and ``assets.extra/zoo_export.json`` (the task,
the run's config and the export settings).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import secrets
import shutil
import sys
import types

import tensorflow as tf

from zoo import progress
from zoo.errors import ZooError
from zoo.export_contract import (
    EXPORT_FORMAT,
    EXPORT_INFO_FILE,
    EXTRA_ASSETS_DIR,
    STREAM_SIGNATURES,
    WARMUP_FILE,
)
from zoo.run import LoadedRun, load_finished
from zoo.tasks import get_task, task_of

__all__ = [
    "EXPORT_INFO_FILE",
    "STREAM_SIGNATURES",
    "WARMUP_FILE",
    "next_version",
    "saved_model",
]

TEMP_PREFIX = ".tmp-export-"


# ------------------------------------------------------------------------------------------------
# versions and argument checks


def _numeric_versions(base: str) -> list[int]:
    if not os.path.isdir(base):
        return []
    return [int(name) for name in os.listdir(base) if name.isdigit() and name.isascii()]


def next_version(base: str) -> int:
    """One more than the largest numeric version directory in ``base`` (1 when there is none)."""
    versions = _numeric_versions(base)
    return max(versions) + 1 if versions else 1


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_settings(max_new_tokens, temperature, top_k, top_p, version) -> None:
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise ZooError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if (not isinstance(temperature, numbers.Real) or isinstance(temperature, bool)
            or not math.isfinite(temperature) or temperature < 0):
        raise ZooError(f"temperature must be a number >= 0, got {temperature!r}")
    if not _is_int(top_k) or top_k < 0:
        raise ZooError(f"top_k must be an integer >= 0 (0 = off), got {top_k!r}")
    if (not isinstance(top_p, numbers.Real) or isinstance(top_p, bool)
            or not 0 < top_p <= 1):
        raise ZooError(f"top_p must be in (0, 1], got {top_p!r}")
    if version is not None and (not _is_int(version) or version < 0):
        raise ZooError(f"version must be an integer >= 0, got {version!r}")


# ------------------------------------------------------------------------------------------------
# the export


def saved_model(run_or_model, base: str, version: int | None = None, *, max_new_tokens: int = 256,
                temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                streaming: bool = True, verbose: int | None = None) -> str:
    """Export a run (directory or ``LoadedRun``) as SavedModel ``BASE/<version>/``; returns its path.

    Args:
      run_or_model: a finished run directory (``config.json``, ``tokenizer/``, ``model.keras``)
        or a ``zoo.LoadedRun``.
      base: the model's base directory (TF Serving's ``--model_base_path``); created if needed.
      version: the version number; default: the next one after the largest present.
      max_new_tokens: the static bound of the decoding loop (``M``) and ``serving_default``'s
        budget (default 256), independent of the context: a transformer continues past its
        ``max_length`` in sliding-window rounds (``zoo.generation.window``).
      temperature, top_k, top_p: ``serving_default``'s decoding (greedy when
        ``temperature == 0``).
      streaming: also export ``stream_start`` / ``stream_step`` (token-by-token decoding with
        the cache as explicit state; what ``zoo serve``'s ``:generate_stream`` route uses).
      verbose: 1 prints each stage (signatures, saving, warm-up records) and its time on
        stderr; None: the ambient level (``zoo.progress``; ``zoo export`` prints them).

    Raises ``ZooError`` for a missing or unfinished run, bad settings, or an existing version.
    Nothing is left in ``base`` when the export fails.
    """
    _check_settings(max_new_tokens, temperature, top_k, top_p, version)
    with progress.verbosity(verbose):
        return _export(run_or_model, base, version, max_new_tokens=max_new_tokens,
                       temperature=temperature, top_k=top_k, top_p=top_p, streaming=streaming)


def _export(run_or_model, base: str, version: int | None, *, max_new_tokens: int,
            temperature: float, top_k: int, top_p: float, streaming: bool) -> str:
    if isinstance(run_or_model, LoadedRun):
        run = run_or_model
    else:
        with progress.stage(f"loading {run_or_model}"):
            run = load_finished(run_or_model)
    base = os.path.abspath(os.fspath(base))
    if os.path.exists(base) and not os.path.isdir(base):
        raise ZooError(f"{base} exists and is not a directory")
    if version is not None and os.path.exists(os.path.join(base, str(version))):
        raise ZooError(f"version {version} already exists in {base}")

    created_base = not os.path.exists(base)
    os.makedirs(base, exist_ok=True)
    tmp = _make_temp_dir(base)
    try:
        settings = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p)
        if streaming:
            settings["streaming"] = True
        with progress.stage(f"exporting a SavedModel under {base}") as exporting:
            _write(run, tmp, **settings)
            final = _publish(tmp, base, version)
            exporting.detail = final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_base:
            try:
                os.rmdir(base)
            except OSError:
                pass
        raise
    return final


def _make_temp_dir(base: str) -> str:
    """A new hidden directory in ``base``, with the umask's usual permissions (``mkdtemp``'s
    0700 would hide the version from a server running as another user)."""
    for _ in range(100):
        path = os.path.join(base, TEMP_PREFIX + secrets.token_hex(4))
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise ZooError(f"cannot create a temporary directory in {base}")


def _publish(tmp: str, base: str, version: int | None) -> str:
    """Rename the finished export to its version (retrying the next number when another
    exporter took an automatic one first)."""
    for _ in range(100):
        number = next_version(base) if version is None else version
        final = os.path.join(base, str(number))
        if os.path.exists(final):
            if version is not None:
                raise ZooError(f"version {version} already exists in {base}")
            continue
        try:
            os.rename(tmp, final)
        except OSError as err:
            if version is not None or not os.path.exists(final):
                raise ZooError(f"cannot move the export to {final}: {err}") from err
            continue
        return final
    raise ZooError(f"could not find a free version number in {base}")


def _write(run, directory: str, **settings) -> None:
    """Save the task's signatures, warm-up records and export info into ``directory``."""
    name = task_of(run.config)
    task = get_task(name)
    with progress.stage(f"building the {name} signatures") as building:
        module, signatures, export_settings = task.serving_module(run, **settings)
        building.detail = ", ".join(signatures)
    with progress.stage("saving (tracing every signature)"):
        tf.saved_model.save(module, directory, signatures=signatures)
    if export_settings.get("method_names"):  # e.g. a classify signature for TF Serving's Classify
        from export._signature_method import set_method_names

        set_method_names(directory, export_settings["method_names"])
    extra = os.path.join(directory, EXTRA_ASSETS_DIR)
    os.makedirs(extra, exist_ok=True)
    with progress.stage("writing the warm-up requests") as warming:
        records = task.warmup_records(run, **settings)
        if records:
            write_warmup_file(os.path.join(extra, WARMUP_FILE), records)
        warming.detail = f"{len(records)} records"
    info = {
        "format": EXPORT_FORMAT,
        "task": name,
        "signatures": list(signatures),
        "export": export_settings,
        "tokenizer": {"kind": run.tokenizer.kind, "vocab_size": run.tokenizer.vocab_size},
        "run": run.config,
        "run_path": os.path.abspath(run.path) if run.path else None,
        "versions": _versions(),
    }
    with open(os.path.join(extra, EXPORT_INFO_FILE), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, default=str)


def write_warmup_file(path: str, records: list[bytes]) -> None:
    """Write ``tf_serving_warmup_requests``: a TFRecord file of ``PredictionLog`` protos."""
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)


def _versions() -> dict:
    versions = {"tensorflow": tf.__version__}
    try:
        import tensorflow_text

        versions["tensorflow_text"] = tensorflow_text.__version__
    except ImportError:  # pragma: no cover - the zoo depends on it
        pass
    return versions


# ``export.saved_model`` is this module (Python binds a package attribute to its submodule on
# import); making the module callable lets ``export.saved_model(run, base)`` work whichever way
# it was imported.
class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return saved_model(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
