"""The ``zoo`` command line: happy path and one clear message + exit 2 for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def zoo_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def cli_run(shakespeare_file, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cli") / "run")
    result = zoo_cli("train", "lstm_lm", "--data", shakespeare_file, "--out", out,
                     "--max-steps", "4", "--batch-size", "4", "--seq-len", "16", "--quiet",
                     "--set", "model.units=32", "--set", "checkpoint_every=2")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["steps"] == 4 and summary["perplexity"] > 1
    return out


def test_models_lists_the_zoo():
    result = zoo_cli("models", "--verbose")
    assert result.returncode == 0
    for name in ("rnn_lm", "lstm_lm", "gru_lm", "mlp_lm", "transformer_lm"):
        assert name in result.stdout
    assert "tiny" in result.stdout


def test_eval_prints_json_with_perplexity(cli_run):
    result = zoo_cli("eval", cli_run, "--split", "validation")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads(result.stdout)
    assert metrics["perplexity"] == pytest.approx(2.718281828 ** metrics["loss"], rel=1e-6)
    assert metrics["split"] == "validation" and metrics["tokens"] > 1000


def test_generate_greedy_is_deterministic_and_sampling_seeded(cli_run):
    a = zoo_cli("generate", cli_run, "--prompt", "First", "--max-new-tokens", "12")
    b = zoo_cli("generate", cli_run, "--prompt", "First", "--max-new-tokens", "12")
    assert a.returncode == 0, a.stderr[-2000:]
    assert a.stdout == b.stdout and len(a.stdout.rstrip("\n")) > 0
    s = zoo_cli("generate", cli_run, "--prompt", "First", "--strategy", "sample", "--top-k", "5",
                "--seed", "3", "--max-new-tokens", "12")
    assert s.returncode == 0, s.stderr[-2000:]


BAD_INPUT = [
    (["train", "no_such_model", "--data", "{data}", "--out", "{tmp}/x"], "unknown model"),
    (["train", "lstm_lm", "--preset", "huge", "--data", "{data}", "--out", "{tmp}/x"],
     "unknown preset"),
    (["train", "lstm_lm", "--data", "{tmp}/missing.txt", "--out", "{tmp}/x"], "missing.txt"),
    (["train", "lstm_lm", "--data", "{tmp}/empty.txt", "--out", "{tmp}/x"], "empty"),
    (["train", "lstm_lm", "--data", "{data}", "--out", "{tmp}/x", "--set", "nonsense=1"],
     "unknown setting"),
    (["train", "lstm_lm", "--data", "{data}", "--out", "{tmp}/x", "--set", "model.wings=2"],
     "unknown setting"),
    (["train", "lstm_lm", "--data", "{data}", "--out", "{tmp}/x", "--set", "model.units=abc"],
     "must be int"),
    (["train", "lstm_lm", "--data", "dataset:nope", "--out", "{tmp}/x"], "nope"),
    (["eval", "{tmp}", "--split", "validation"], "config.json"),
    (["eval", "{tmp}/not_a_run"], "does not exist"),
]
# Runs every command line of BAD_INPUT through zoo.cli.main in one interpreter (TensorFlow is
# imported once, not once a case): its exit status and what it wrote to stderr, a traceback if
# anything escaped main.
_MAIN_DRIVER = """
import contextlib, io, json, sys, traceback
from zoo.cli import main
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(args)
        except SystemExit as exit:
            status = exit.code
        except BaseException:
            status = None
            traceback.print_exc()
    results.append([status, err.getvalue()])
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def bad_input_results(shakespeare_file, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_input")
    (tmp / "empty.txt").write_text("")
    commands = [[a.format(data=shakespeare_file, tmp=tmp).replace(f"{tmp}/x", f"{tmp}/x{i}")
                 for a in args] for i, (args, _) in enumerate(BAD_INPUT)]
    result = subprocess.run([sys.executable, "-c", _MAIN_DRIVER, json.dumps(commands)],
                            capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(BAD_INPUT)),
                         ids=[message for _, message in BAD_INPUT])
def test_bad_input_gives_one_message_and_exit_2(case, bad_input_results):
    status, stderr = bad_input_results[case]
    assert status == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    assert BAD_INPUT[case][1] in stderr


def test_bad_input_exits_2_from_the_shell(shakespeare_file, tmp_path):
    """The same, as a separate ``python -m zoo`` process (its real exit status)."""
    result = zoo_cli("train", "lstm_lm", "--data", shakespeare_file, "--out", str(tmp_path / "x"),
                     "--set", "model.units=abc")
    assert result.returncode == 2, (result.stdout, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    assert "must be int" in result.stderr


def test_prompt_with_unknown_characters_is_refused(cli_run):
    result = zoo_cli("generate", cli_run, "--prompt", "First 漢字")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "漢" in result.stderr
