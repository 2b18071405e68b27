"""No TensorFlow / absl C++ log noise on stderr from ``zoo`` commands, unless asked for.

The real command line runs in subprocesses (``python -m zoo ...``: models, train, generate,
export) and its stderr must hold none of the native log lines TensorFlow 2.21 prints on a machine
without a GPU; with ``ZOO_LOG_LEVEL=debug`` or ``--verbose`` they are allowed (and on this machine
they do appear). Errors still get through: a ``zoo: error:`` line, and -- with a stand-in
``tensorflow`` package whose import writes native-style lines to descriptor 2 and then fails or
aborts -- a Python traceback and a fatal line. Normal progress output may go to stderr; only the
noise is forbidden.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zoo import quiet

ROOT = Path(__file__).resolve().parents[1]

NOISE = re.compile(
    r"cuInit|cuda_platform|cudart_stub|oneDNN|absl::InitializeLog|port\.cc|cpu_feature_guard"
    r"|^[IWE]\d{4} \d\d:\d\d:", re.MULTILINE,
)


def env(**extra: str) -> dict[str, str]:
    """The test environment without the caller's log settings, plus ``extra``."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("ZOO_LOG_LEVEL", "TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    base["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return {**base, **extra}


def zoo(*args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    """``python -m zoo ARGS`` in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True,
                          cwd=str(cwd), env=env(**extra), timeout=600)


def assert_quiet(result: subprocess.CompletedProcess) -> None:
    """Success, and no native log line on stderr."""
    assert result.returncode == 0, result.stderr[-3000:]
    found = NOISE.findall(result.stderr)
    assert not found, f"log noise on stderr: {found}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with a small corpus, ``corpus.txt``."""
    path = tmp_path_factory.mktemp("quiet")
    words = "the quick brown fox jumps over a lazy dog while seven cats sleep in the sun".split()
    lines = [" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(300)]
    (path / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(workdir) -> subprocess.CompletedProcess:
    """``zoo train transformer_lm`` for 4 steps into ``RUN``."""
    return zoo("train", "transformer_lm", "--data", "corpus.txt", "--out", "RUN",
               "--max-steps", "4", "--batch-size", "4", "--seq-len", "16",
               "--set", "checkpoint_every=2", cwd=workdir)


def test_models_is_quiet(workdir) -> None:
    result = zoo("models", cwd=workdir)
    assert_quiet(result)
    assert "transformer_lm" in result.stdout and result.stderr == ""


def test_train_is_quiet(trained) -> None:
    assert_quiet(trained)
    assert json.loads(trained.stdout[trained.stdout.index("{"):])["steps"] == 4


def test_generate_is_quiet(trained, workdir) -> None:
    assert_quiet(zoo("generate", "RUN", "--prompt", "the ", "--max-new-tokens", "6",
                     cwd=workdir))


def test_export_saved_model_is_quiet(trained, workdir) -> None:
    result = zoo("export", "RUN", "--saved-model", "BASE", "--max-new-tokens", "8", cwd=workdir)
    assert_quiet(result)
    assert Path(result.stdout.strip().splitlines()[-1]).is_dir()


def test_a_user_error_still_prints_its_one_line(trained, workdir) -> None:
    result = zoo("generate", "RUN", "--prompt", "\u20ac", cwd=workdir)
    assert result.returncode == 2
    assert result.stderr.startswith("zoo: error: ") and result.stderr.count("\n") == 1
    assert "tokenizer does not know" in result.stderr


@pytest.mark.parametrize("how", ["ZOO_LOG_LEVEL=debug", "--verbose"])
def test_the_noise_is_there_when_asked_for(trained, workdir, how) -> None:
    args = ["generate", "RUN", "--prompt", "the ", "--max-new-tokens", "2"]
    if how == "--verbose":
        result = zoo("--verbose", *args, cwd=workdir)
    else:
        result = zoo(*args, cwd=workdir, ZOO_LOG_LEVEL="debug")
    assert result.returncode == 0, result.stderr[-3000:]
    # allowed, not required in general; TensorFlow 2.21 on this GPU-less machine prints them
    assert NOISE.search(result.stderr), result.stderr[-3000:]


def test_a_bad_log_level_is_a_one_line_error(workdir) -> None:
    result = zoo("models", cwd=workdir, ZOO_LOG_LEVEL="loud")
    assert result.returncode == 2
    assert result.stderr.startswith("zoo: error: ZOO_LOG_LEVEL must be one of")


# --------------------------------------------------------------------------------------------------
# The mechanism, with a stand-in ``tensorflow`` package (fast: no real TensorFlow)
# --------------------------------------------------------------------------------------------------

FAKE_TF = '''
import logging, os, warnings
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
os.write(2, b"I0000 00:00:1796600839.839335   12967 port.cc:153] oneDNN custom operations are on.\\n")
os.write(2, b"E0000 00:00:1796600844.565227   12967 cuda_platform.cc:52] failed call to cuInit\\n")
os.write(2, b"W1207 10:11:12.131415   12967 thing.cc:9] a native warning\\n")
os.write(2, b"a line of the library's own\\n")
warnings.warn("a dependency's UserWarning")
logging.getLogger("tensorflow").warning("the tf logger warns")
logging.getLogger("absl").warning("absl warns")
logging.getLogger("zoo.fake").warning("the zoo warns")
logging.getLogger("absl").error("absl errs")
ACTION = os.environ.get("FAKE_TF_ACTION", "")
if ACTION == "raise":
    raise RuntimeError("the import failed")
if ACTION == "abort":
    os.write(2, b"F0000 00:00:1796600844.565227   12967 guard.cc:1] fatal: no AVX\\n")
    os.abort()
'''

RUNNER = """
import sys
from zoo import quiet
quiet.configure(sys.argv[1])
import tensorflow
print("imported")
"""


@pytest.fixture
def fake_tf(tmp_path) -> Path:
    """A folder holding the stand-in ``tensorflow`` package."""
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(textwrap.dedent(FAKE_TF))
    return tmp_path


def run_fake(fake_tf: Path, level: str, action: str = "") -> subprocess.CompletedProcess:
    """Configure ``level``, then import the stand-in TensorFlow, in a fresh interpreter."""
    environ = env(FAKE_TF_ACTION=action)
    environ["PYTHONPATH"] = str(fake_tf) + os.pathsep + environ["PYTHONPATH"]
    return subprocess.run([sys.executable, "-c", RUNNER, level], capture_output=True, text=True,
                          env=environ, timeout=120)


def test_quiet_drops_the_noise_and_keeps_the_rest(fake_tf) -> None:
    result = run_fake(fake_tf, "quiet")
    assert result.returncode == 0 and result.stdout == "imported\n", result.stderr
    assert result.stderr.splitlines() == [
        "a line of the library's own", "zoo.fake: the zoo warns", "absl: absl errs"]


def test_warning_level_lets_warnings_through(fake_tf) -> None:
    result = run_fake(fake_tf, "warning")
    lines = result.stderr.splitlines()
    assert not [line for line in lines if line.startswith(("I0000", "WARNING: All log"))]
    for expected in ("cuInit", "a native warning", "UserWarning", "tensorflow: the tf logger warns",
                     "absl: absl warns", "zoo.fake: the zoo warns", "absl: absl errs"):
        assert expected in result.stderr, (expected, result.stderr)


@pytest.mark.parametrize("level", ["info", "debug"])
def test_info_and_debug_filter_nothing(fake_tf, level) -> None:
    result = run_fake(fake_tf, level)
    for expected in ("absl::InitializeLog", "oneDNN", "cuInit", "a native warning"):
        assert expected in result.stderr


def test_a_failing_import_still_shows_its_traceback(fake_tf) -> None:
    result = run_fake(fake_tf, "quiet", action="raise")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: the import failed" in result.stderr
    assert "a line of the library's own" in result.stderr and not NOISE.search(result.stderr)


def test_a_crash_during_the_import_still_shows_the_fatal_line(fake_tf) -> None:
    result = run_fake(fake_tf, "quiet", action="abort")
    assert result.returncode != 0
    assert "fatal: no AVX" in result.stderr and not NOISE.search(result.stderr)


def test_the_hook_leaves_no_trace_after_the_import(fake_tf) -> None:
    code = RUNNER + textwrap.dedent("""
        import importlib.machinery
        assert not [f for f in sys.meta_path if type(f).__name__ == "_QuietFirstImport"]
        assert isinstance(tensorflow.__loader__, importlib.machinery.SourceFileLoader)
        assert tensorflow.__spec__.loader is tensorflow.__loader__
    """)
    environ = env()
    environ["PYTHONPATH"] = str(fake_tf) + os.pathsep + environ["PYTHONPATH"]
    result = subprocess.run([sys.executable, "-c", code, "quiet"], capture_output=True,
                            text=True, env=environ, timeout=120)
    assert result.returncode == 0, result.stderr


def test_forward_filters_lines_and_passes_partial_ones_at_once() -> None:
    read_fd, write_fd = os.pipe()
    out_read, out_write = os.pipe()
    os.write(write_fd, b"I0000 00:00:1.5   1 port.cc:1] noise\nkept\n\rstep 1/4\rstep 2/4"
             b"\nE1207 10:11:12.5 7 x.cc:2] err\nF0000 00:00:1.5 1 y.cc:3] fatal\nINFO: Created\n"
             b"tail without end")
    os.close(write_fd)
    quiet.forward(read_fd, out_write, "F")
    os.close(out_write)
    assert os.read(out_read, 1 << 16) == (
        b"kept\n\rstep 1/4\rstep 2/4\nF0000 00:00:1.5 1 y.cc:3] fatal\ntail without end")
    os.close(read_fd)
    os.close(out_read)


@pytest.mark.parametrize("line, lowest, noise", [
    (b"I0000 00:00:1796600839.839335   12967 port.cc:153] oneDNN\n", "F", True),
    (b"E0000 00:00:1796600844.565227   12967 cuda_platform.cc:52] cuInit\n", "E", False),
    (b"W1207 10:11:12.131415   12967 thing.cc:9] w\n", "E", True),
    (b"W1207 10:11:12.131415   12967 thing.cc:9] w\n", "W", False),
    (b"F0000 00:00:1.5 1 y.cc:3] fatal\n", "F", False),
    (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
     "W", True),
    (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n", "F", True),
    (b"Epoch 1/3\n", "F", False),
    (b"ERROR: something real\n", "F", False),
    (b"Traceback (most recent call last):\n", "F", False),
])
def test_is_noise(line, lowest, noise) -> None:
    assert quiet.is_noise(line, lowest) is noise


def test_level_from() -> None:
    assert quiet.level_from(False, {}) == "quiet"
    assert quiet.level_from(True, {}) == "info"
    assert quiet.level_from(True, {"ZOO_LOG_LEVEL": "DEBUG"}) == "debug"
    assert quiet.level_from(False, {"ZOO_LOG_LEVEL": "warn"}) == "warning"
    with pytest.raises(ValueError, match="ZOO_LOG_LEVEL"):
        quiet.level_from(False, {"ZOO_LOG_LEVEL": "loud"})
