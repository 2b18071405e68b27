"""Generation past the context: ``zoo.generation.window``'s rounds, the same in ``run.generate``,
``run.stream``, the SavedModel's ``serving_default`` / ``generate`` / streaming signatures (and
LiteRT: tests/test_export_tflite.py exports with 3x the context), checked against a plain NumPy
walk of the rounds over the model's full forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import export
import zoo
from zoo.generation.api import row_seed
from zoo.generation.loop import SUPPRESSED_TOKEN_IDS
from zoo.generation.window import round_budget, round_context

CONTEXT = 32
NEW = 3 * CONTEXT
PROMPTS = ["ROMEO:", "First Citizen:\nBefore we proceed any further, hear me speak. All: Speak."]


@pytest.fixture(scope="module")
def exported(shakespeare_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("window")
    run = zoo.train("transformer_lm", shakespeare_file, str(root / "run"), verbose=0, max_steps=6,
                    batch_size=4, seq_len=CONTEXT, checkpoint_every=3, eval_batches=2)
    path = export.saved_model(run, str(root / "lm"), max_new_tokens=NEW, streaming=True)
    return run, tf.saved_model.load(path)


def reference(run, prompt: str, new: int) -> str:
    """The rounds by hand: every token from the model's full forward pass over its window."""
    sequence = run.tokenizer.tokenize_to_numpy(prompt).tolist()
    out, round_index = [], 0
    while len(out) < new:
        context = round_context(sequence, round_index, CONTEXT)
        for _ in range(round_budget(len(context), new - len(out), CONTEXT)):
            logits = run.model(np.array([context], np.int32))[0, -1].numpy().astype(np.float32)
            logits[list(SUPPRESSED_TOKEN_IDS)] = -np.inf
            token = int(np.argmax(logits))
            context.append(token)
            sequence.append(token)
            out.append(token)
        round_index += 1
    return run.tokenizer.decode(np.array(out))


def test_rounds():
    assert round_context(list(range(10)), 0, CONTEXT) == list(range(10))
    assert round_context(list(range(40)), 0, CONTEXT) == list(range(24, 40))
    assert round_context(list(range(32)), 1, CONTEXT) == list(range(16, 32))
    assert round_budget(6, 96, CONTEXT) == 26 and round_budget(16, 5, CONTEXT) == 5


def test_python_api_slides_like_the_reference(exported):
    run, _ = exported
    got = run.generate(PROMPTS, max_new_tokens=NEW)
    assert got[1] == reference(run, PROMPTS[1], NEW)  # round 0 keeps its last 16 characters
    # the stream gives the same text, greedy and sampled
    assert "".join(run.stream(PROMPTS[0], max_new_tokens=NEW)) == got[0]
    sampled = dict(strategy="sample", temperature=0.9, top_k=20, seed=5)
    assert "".join(run.stream(PROMPTS[1], max_new_tokens=NEW, **sampled)) == run.generate(
        PROMPTS[1], max_new_tokens=NEW, **sampled)


def test_saved_model_slides_like_run_generate(exported):
    run, loaded = exported
    expected = run.generate(PROMPTS, max_new_tokens=NEW)
    out = loaded.signatures["serving_default"](prompt=tf.constant(PROMPTS))
    assert [t.decode() for t in out["text"].numpy()] == expected
    # generate: per-row budgets (a prefix), sampling rows reproduce run.generate's with row_seed
    sampled = run.generate(PROMPTS, max_new_tokens=NEW, strategy="sample", temperature=0.8, seed=9)
    for temperature, budgets, want in (
        (0.0, [NEW, 40], [expected[0], run.generate(PROMPTS[1], max_new_tokens=40)]),
        (0.8, [NEW, NEW], sampled),
    ):
        out = loaded.signatures["generate"](
            prompt=tf.constant(PROMPTS), max_new_tokens=tf.constant(budgets, tf.int32),
            temperature=tf.constant([temperature] * 2), top_k=tf.constant([0, 0]),
            top_p=tf.constant([1.0, 1.0]),
            seed=tf.constant([row_seed(9, 0), row_seed(9, 1)], tf.int64))
        assert [t.decode() for t in out["text"].numpy()] == want
        assert out["num_tokens"].numpy().tolist() == budgets


def test_streaming_signatures_slide(exported):
    run, loaded = exported
    start, step = loaded.signatures["stream_start"], loaded.signatures["stream_step"]
    settings = dict(temperature=tf.constant([0.0]), top_k=tf.constant([0]),
                    top_p=tf.constant([1.0]), seed=tf.constant([0], tf.int64))
    for prompt, want in zip(PROMPTS, run.generate(PROMPTS, max_new_tokens=NEW), strict=True):
        out = start(prompt=tf.constant([prompt]), **settings)
        assert int(out["budget"][0]) == NEW
        tokens = [int(out["token_id"][0])]
        while len(tokens) < NEW:
            cache = {k: v for k, v in out.items() if k.startswith("cache_")}
            out = step(token_id=out["token_id"], position=out["position"], **settings, **cache)
            tokens.append(int(out["token_id"][0]))
        assert run.tokenizer.decode(np.array(tokens)) == want
