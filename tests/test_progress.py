"""Progress on stderr for every long step (``zoo.progress``), and TensorBoard by global step.

One tiny character-level LSTM is trained once (its progress captured) and used by the eval and
export tests; each test takes seconds.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import re

import pytest

from zoo import progress

FAST = dict(max_steps=6, batch_size=4, seq_len=16, checkpoint_every=3, eval_batches=2,
            model_overrides={"units": 16})


@pytest.fixture(scope="module")
def trained(shakespeare_file, tmp_path_factory):
    """``(run, what training wrote on stderr, on stdout)``."""
    import zoo

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        run = zoo.train("lstm_lm", shakespeare_file, str(tmp_path_factory.mktemp("p") / "run"),
                        verbose=1, **FAST)
    return run, err.getvalue(), out.getvalue()


# --------------------------------------------------------------------------------------------
# the helpers


def test_stage_and_bar_write_to_stderr_only_when_asked(capsys):
    with progress.stage("exporting SavedModel", verbose=1) as running:
        running.detail = "3 signatures"
    for _ in progress.track(range(4), "scoring", verbose=1):
        pass
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0] == "exporting SavedModel ..."
    assert re.fullmatch(r"exporting SavedModel: done in \d+\.\d s \(3 signatures\)", lines[1])
    assert lines[2] == "scoring" and "4/4" in captured.err

    # level 0 (the library default) is silent; the ambient level applies where None is passed
    with progress.stage("silent"):
        list(progress.track(range(3), "silent too"))
    progress.echo("not shown")
    assert capsys.readouterr() == ("", "")
    with progress.verbosity(1):
        with progress.stage("ambient"):
            pass
        with progress.verbosity(0):
            progress.echo("inner quiet")
    assert capsys.readouterr().err.splitlines()[0] == "ambient ..."
    assert progress.level() == 0


def test_step_line_and_durations():
    assert progress.step_line(1200, 2000, 1.23456, 12345.4, eta_seconds=80) == (
        "step 1200/2000  loss 1.2346  12,345 tok/s  ETA 1m20s")
    assert progress.step_line(3, 9, steps_per_second=2.5) == "step 3/9  2.50 steps/s"
    assert [progress.format_duration(s) for s in (4.4, 80, 3725)] == ["4s", "1m20s", "1h02m"]


def test_tokenizer_training_shows_its_stage(capsys):
    from zoo.tokenizers import train_tokenizer

    train_tokenizer("word", ["the cat sat on the mat"], verbose=1)
    err = capsys.readouterr().err
    assert "training the word tokenizer ..." in err
    assert re.search(r"training the word tokenizer: done in \d+\.\d s \(\d+ ids\)", err)
    train_tokenizer("word", ["the cat sat on the mat"])  # library default: silent
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------------------------
# training


def test_training_prints_global_steps_and_checkpoints(trained):
    run, err, out = trained
    assert "Epoch" not in err + out  # Keras' per-segment bars are gone
    assert out == ""  # progress is on stderr
    assert "training the char tokenizer" in err
    assert "training steps 1-6 of 6, a checkpoint every 3 steps" in err
    steps = [int(m) for m in re.findall(r"^step (\d+)/6 ", err, re.M)]
    assert steps[0] == 1 and steps[-1] == 6 and steps == sorted(steps)
    assert re.search(r"^step 3/6  loss \d+\.\d{4}  [\d,]+ tok/s  ETA \d+s$", err, re.M)
    checkpoints = re.findall(r"^checkpoint at step (\d+): val_loss \d+\.\d+ ", err, re.M)
    assert checkpoints == ["3", "6"]
    assert "evaluating: " in err  # the final evaluation of the validation split
    # what the run writes is as before: one history entry per checkpoint
    with open(os.path.join(run.path, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    assert metrics["steps"] == 6 and len(metrics["history"]["val_loss"]) == 2


def test_tensorboard_is_keyed_by_the_global_step(trained):
    import tensorflow as tf

    run = trained[0]
    seen: dict[tuple[str, str], list[int]] = {}
    for split in ("train", "validation"):
        (events,) = glob.glob(os.path.join(run.path, "logs", split, "events.out.tfevents.*"))
        for event in tf.compat.v1.train.summary_iterator(events):
            for value in event.summary.value:
                seen.setdefault((split, value.tag), []).append(event.step)
    assert seen[("train", "loss")] == [3, 6]  # checkpoint_every=3, max_steps=6
    assert seen[("validation", "loss")] == [3, 6]
    assert seen[("train", "learning_rate")] == [3, 6]
    assert seen[("validation", "perplexity")] == [3, 6]


# --------------------------------------------------------------------------------------------
# zoo eval, zoo prepare, export


def test_zoo_eval_shows_progress_on_stderr_and_json_on_stdout(trained, capsys):
    from zoo.cli import main

    run = trained[0]
    assert main(["eval", run.path]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["tokens"] > 1000  # stdout is the JSON alone
    assert f"loading {run.path}" in captured.err
    assert re.search(r"evaluating: \d+ batches of 4 windows of 16 tokens", captured.err)
    total = re.search(r"evaluating: (\d+) batches", captured.err).group(1)
    assert f"{total}/{total}" in captured.err
    assert main(["eval", run.path, "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    run.evaluate()  # a library call is silent unless asked
    assert capsys.readouterr().err == ""


def test_zoo_prepare_shows_each_stage(shakespeare_file, tmp_path, capsys):
    from zoo.cli import main

    out = str(tmp_path / "prepared")
    assert main(["prepare", "--data", shakespeare_file, "--out", out, "--shard-tokens",
                 "4000"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["splits"]["train"]["shards"] == 5
    err = captured.err
    assert f"reading {shakespeare_file}: done in" in err
    assert "training the char tokenizer: done in" in err
    assert "tokenizing the train split (18,000 characters) into shards" in err
    assert "tokenizing the validation split (2,000 characters) into shards" in err
    assert "18000/18000" in err


def test_saved_model_export_shows_each_stage(trained, tmp_path, capsys):
    import export

    base = str(tmp_path / "base")
    path = export.saved_model(trained[0], base, max_new_tokens=8, streaming=False, verbose=1)
    err = capsys.readouterr().err
    for stage in ("building the causal_lm signatures", "saving (tracing every signature)",
                  "writing the warm-up requests", f"exporting a SavedModel under {base}"):
        assert f"{stage} ..." in err, stage
        assert re.search(re.escape(stage) + r": done in \d+\.\d s", err), stage
    assert f"({path})" in err


def test_tflite_export_shows_each_conversion(trained, tmp_path, capsys):
    from zoo.cli import main

    target = str(tmp_path / "lm.tflite")
    assert main(["export", trained[0].path, "--tflite", target, "--max-new-tokens", "8",
                 "--eval-windows", "4"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["path"] == target
    err = captured.err
    for stage in ("freezing the signatures", "converting to LiteRT (quantize=none)",
                  "scoring 4 validation texts with LiteRT"):
        assert re.search(re.escape(stage) + r": done in \d+\.\d s", err), stage
