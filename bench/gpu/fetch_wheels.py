"""Download the wheels that ``bench/gpu/run.py`` needs on the GPU machine into ``<repo>/.whl``.

The GPU machine (Python 3.12, x86-64, no network) already has JAX with CUDA, PyTorch,
transformers, numpy, h5py, absl-py, rich, ml-dtypes, regex, sentencepiece and tokenizers, but
not Keras, keras-hub or two of Keras's own dependencies. This script fetches exactly those, one
version each, for CPython 3.12 manylinux x86-64, with ``--no-deps``, then checks every wheel's
``Requires-Dist`` against what is fetched, what the machine has, and what is deliberately left
out (with the reason), and prints the sizes and the total::

    python3 bench/gpu/fetch_wheels.py            # -> .whl/*.whl, ~10 MiB
    python3 bench/gpu/fetch_wheels.py --check    # only check the wheels already in .whl/

``.whl/`` is added to ``.git/info/exclude`` (it travels to the device machine as a carried path,
at most 64 MiB together with the rest of the working tree).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WHEEL_DIR = REPO / ".whl"
LIMIT_MIB = 64.0

# name -> version: keras as in the repo's venv, keras-hub as in setup.cfg's ``bench`` extra.
WHEELS = {
    "keras": "3.15.1",
    "keras-hub": "0.32.0",
    "namex": "0.1.0",  # keras's public-API namespace helper
    "optree": "0.20.0",  # keras's tree utilities (compiled: cp312 manylinux)
}

# Already installed on the GPU machine (its image's package list, 2026-11).
ON_DEVICE = {
    "absl-py", "h5py", "jax", "jaxlib", "ml-dtypes", "numpy", "packaging", "regex", "rich",
    "sentencepiece", "tokenizers", "typing-extensions", "safetensors", "huggingface-hub",
    "torch", "transformers", "pyyaml", "requests", "tqdm",
}

# Declared but not needed by what run.py uses, and deliberately not fetched.
LEFT_OUT = {
    "tensorflow-text": "keras-hub imports it optionally (try/except); only its string "
                       "tokenizers/preprocessors use it, and run.py builds GPT2CausalLM "
                       "without a preprocessor. It would pull in TensorFlow.",
    "kagglehub": "keras-hub imports it optionally (try/except); only needed to download "
                 "presets, and run.py builds models from their sizes",
    "kagglesdk": "only used through kagglehub",
}

PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]


def normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(path: Path) -> str:
    """The distribution name of a wheel file (``keras_hub-0.32.0-py3-none-any.whl`` -> keras-hub)."""
    return normalise(path.name.split("-")[0])


def download(name: str, version: str) -> None:
    """``pip download`` one wheel for CPython 3.12 manylinux x86-64, without its dependencies."""
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
               *platforms, "-d", str(WHEEL_DIR), f"{name}=={version}"]
    subprocess.run(command, check=True)


def remove_other_versions() -> None:
    """Delete wheels in ``.whl`` of our packages at another version (two versions break pip)."""
    for path in WHEEL_DIR.glob("*.whl"):
        name = wheel_name(path)
        if name in WHEELS and path.name.split("-")[1] != WHEELS[name]:
            print(f"removing {path.name} (not the pinned {WHEELS[name]})")
            path.unlink()


def requirements(path: Path) -> list[str]:
    """The unconditional ``Requires-Dist`` names of a wheel (``extra ==`` markers skipped)."""
    with zipfile.ZipFile(path) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    names = []
    for line in lines:
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            names.append(normalise(re.split(r"[ ;<>=!~\[(]", line.split(":", 1)[1].strip())[0]))
    return list(dict.fromkeys(names))  # one line per name (markers may repeat one)


def check(paths: list[Path]) -> bool:
    """Print each wheel's needs and where each is met; False if one is met nowhere."""
    fetched = {wheel_name(p) for p in paths}
    complete = True
    for path in paths:
        for need in requirements(path):
            if need in fetched:
                where = "fetched"
            elif need in ON_DEVICE:
                where = "on the GPU machine"
            elif need in LEFT_OUT:
                where = "LEFT OUT: " + LEFT_OUT[need]
            else:
                where, complete = "MISSING", False
            print(f"  {wheel_name(path):10s} needs {need:18s} {where}")
    return complete


def exclude_wheel_dir() -> None:
    """Make git ignore ``/.whl/`` through ``.git/info/exclude`` (created if missing)."""
    exclude = REPO / ".git" / "info" / "exclude"
    if not (REPO / ".git").is_dir():
        return
    exclude.parent.mkdir(exist_ok=True)
    text = exclude.read_text() if exclude.exists() else ""
    if "/.whl/" not in text.split():
        exclude.write_text(text + ("" if text.endswith("\n") or not text else "\n") + "/.whl/\n")


def report(paths: list[Path]) -> float:
    """Print one line per wheel and the total; returns the total in MiB."""
    total = 0
    for path in sorted(paths):
        size = path.stat().st_size
        total += size
        print(f"  {path.name:70s} {size / 2**20:7.2f} MiB")
    print(f"  {'total':70s} {total / 2**20:7.2f} MiB (limit {LIMIT_MIB:.0f} MiB with the tree)")
    return total / 2**20


def main(argv: list[str] | None = None) -> int:
    """Fetch (unless ``--check``), check the dependencies, print the sizes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="check .whl/ without downloading")
    args = parser.parse_args(argv)
    WHEEL_DIR.mkdir(exist_ok=True)
    exclude_wheel_dir()
    if not args.check:
        for name, version in WHEELS.items():
            download(name, version)
        remove_other_versions()
    paths = [p for p in WHEEL_DIR.glob("*.whl") if wheel_name(p) in WHEELS]
    others = sorted(p.name for p in WHEEL_DIR.glob("*.whl") if wheel_name(p) not in WHEELS)
    if others:
        print(f"note: .whl/ also holds {', '.join(others)} (installed too by .whl/*.whl)")
    missing = sorted(set(WHEELS) - {wheel_name(p) for p in paths})
    if missing:
        print(f"missing wheels: {', '.join(missing)}")
        return 1
    print("dependencies:")
    complete = check(paths)
    print("wheels:")
    total = report(paths)
    return 0 if complete and total < LIMIT_MIB / 2 else 1


if __name__ == "__main__":
    sys.exit(main())
