"""``zoo --help``, ``--version``, ``models`` and every ``COMMAND --help`` start without TensorFlow.

Each case runs the CLI's ``main`` in a fresh interpreter (``python -c``), catches its
``SystemExit`` and reports which heavy modules got imported: neither TensorFlow nor Keras (which
imports TensorFlow under its default backend) may be among them. The plain ``zoo models`` listing
comes from the light catalogue ``zoo.model_catalog``; the last tests check that the catalogue and
the registry that the model modules fill agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.cli import build_parser, package_version
from zoo.model_catalog import MODELS, model_names

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "jax", "torch")

PROBE = """
import json, sys
from zoo.cli import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as exit:
    code = exit.code
heavy = sorted(name for name in json.loads(sys.argv[2]) if name in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def subcommands() -> list[str]:
    """The sub-command names of ``zoo`` (``serve`` parses its own flags, it is listed too)."""
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return sorted(actions[0].choices)


def run_main(argv: list[str]) -> tuple[dict, subprocess.CompletedProcess]:
    """Run ``main(argv)`` in a fresh interpreter; its report and the finished process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("ZOO_LOG_LEVEL", None)
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)], capture_output=True,
                            text=True, env=env, cwd=str(ROOT), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stderr.strip().splitlines()[-1]), result


def test_the_sub_commands_are_found():
    names = subcommands()
    assert {"models", "train", "eval", "generate", "export", "import", "serve"} <= set(names)


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], ["models"], ["--verbose", "models"]]
    + [[name, "--help"] for name in subcommands()]
    + [["--verbose", "serve", "--help"]],
    ids=lambda argv: " ".join(argv),
)
def test_starts_without_tensorflow(argv):
    report, result = run_main(argv)
    assert report["code"] in (0, None), result.stderr[-2000:]
    assert report["heavy"] == [], f"zoo {' '.join(argv)} imported {report['heavy']}"
    if argv == ["--version"]:
        assert result.stdout.strip() == f"zoo {package_version()}"
    elif argv[-1] == "--help":
        assert result.stdout.startswith("usage: zoo")
    else:
        assert [line.split()[0] for line in result.stdout.splitlines()] == model_names()


def test_version_is_the_installed_one_or_the_package_constant():
    import zoo

    assert package_version() in {zoo.__version__, _installed_version()}


def _installed_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("keras-lm-zoo")
    except metadata.PackageNotFoundError:
        return None


def test_catalog_and_registry_agree():
    """Every registered model is catalogued with the same description, task and preset names,
    and the catalogue lists nothing that does not register."""
    from zoo.models import get_spec, list_models

    assert list_models() == model_names()
    for name in list_models():
        spec = get_spec(name)
        entry = MODELS[name]
        assert (entry.name, entry.description, entry.task, entry.presets) == (
            spec.name, spec.description, spec.task, tuple(spec.presets)), name


def test_registering_a_model_the_catalog_does_not_know_fails():
    from zoo.models import get_spec
    from zoo.models.registry import _REGISTRY, register

    spec = get_spec("lstm_lm")
    before = dict(_REGISTRY)
    for changed in (
        dataclasses.replace(spec, name="lstm_lm_v2"),
        dataclasses.replace(spec, description="an LSTM"),
        dataclasses.replace(spec, task="seq2seq"),
        dataclasses.replace(spec, presets={**spec.presets, "huge": {}}),
    ):
        with pytest.raises(RuntimeError, match="model_catalog"):
            register(changed)
    assert _REGISTRY == before
