"""Token streaming in Python and in the terminal (`zoo generate --stream`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import zoo
from zoo.errors import ZooError

FAST = dict(max_steps=6, batch_size=4, seq_len=32, checkpoint_every=3, eval_batches=2)


@pytest.fixture(scope="module")
def runs(shakespeare_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    return {name: zoo.train(name, shakespeare_file, str(root / name), verbose=0, **FAST)
            for name in ("transformer_lm", "gru_lm")}


@pytest.mark.parametrize("name", ["transformer_lm", "gru_lm"])
def test_pieces_join_into_the_generated_text(runs, name):
    run = runs[name]
    pieces = list(run.stream("ROMEO:", max_new_tokens=20))
    assert len(pieces) > 1  # produced one by one, not as one block
    assert "".join(pieces) == run.generate("ROMEO:", max_new_tokens=20)
    sampled = "".join(run.stream("First", max_new_tokens=15, strategy="sample", top_k=8, seed=5))
    assert sampled == run.generate("First", max_new_tokens=15, strategy="sample", top_k=8, seed=5)


def test_stream_is_lazy(runs):
    """The first piece is available before the rest is computed: a generator, not a list."""
    run = runs["gru_lm"]
    pieces = run.stream("ROMEO:", max_new_tokens=30)
    first = next(pieces)
    assert isinstance(first, str) and first
    assert first + "".join(pieces) == run.generate("ROMEO:", max_new_tokens=30)


def test_stop_string_and_refusals(runs):
    run = runs["transformer_lm"]
    full = run.generate("ROMEO:", max_new_tokens=20)
    if len(full) > 3:
        stop = full[2:4]
        cut = full[: full.index(stop)]
        assert "".join(run.stream("ROMEO:", max_new_tokens=20, stop=stop)) == cut
    with pytest.raises(ZooError, match="beam"):
        list(run.stream("ROMEO:", strategy="beam"))
    # past the context (32) the stream slides its window as generate does
    assert "".join(run.stream("ROMEO:", max_new_tokens=70)) == run.generate("ROMEO:",
                                                                              max_new_tokens=70)


def test_cli_stream_prints_the_same_text(runs):
    run = runs["transformer_lm"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-m", "zoo", "generate", run.path, "--prompt", "ROMEO:",
         "--max-new-tokens", "12", "--stream"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == run.generate("ROMEO:", max_new_tokens=12) + "\n"
