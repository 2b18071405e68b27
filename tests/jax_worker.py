"""Runs the zoo's Keras core on the JAX backend for ``tests/test_backends.py`` (a separate process:
Keras fixes its backend at import). ``python tests/jax_worker.py JOB IN_DIR OUT_DIR``.

Jobs:
* ``families``: every model family builds, runs forward and one ``fit`` step; the forward logits of
  the weights in ``IN_DIR/<name>.weights.h5`` on ``IN_DIR/<name>.inputs.npz``; for the causal
  families, cached decoding (prefill, then one token at a time) against the full forward pass,
  and the decoding loop's greedy, seeded-sampling and beam outputs (``decode_outputs``). Writes ``OUT_DIR/<name>.npz`` and ``OUT_DIR/report.json`` (including ``tensorflow_imported``).
"""

from __future__ import annotations

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from decode_cases import decode_outputs  # noqa: E402

import zoo.fitting  # noqa: E402,F401  (the core, imported as a user would)
import zoo.layers  # noqa: E402,F401
from zoo.metrics import TokenNLL, masked_lm_loss  # noqa: E402
from zoo.models import build_model, get_spec, list_models  # noqa: E402

TENSORFLOW_AFTER_IMPORT = "tensorflow" in sys.modules
VOCAB = 40


def _inputs(name: str, data: dict):
    if "source" in data:  # encoder-decoder models (translation, summarization)
        return data["source"], data["target"]
    return data["ids"]


def _fit_one_step(model, name: str, data: dict) -> float:
    x = _inputs(name, data)
    if get_spec(name).task == "classification":
        y = data["labels"]
        model.compile(optimizer="adam",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    elif get_spec(name).task == "word_vectors":
        y = data["labels"]
        model.compile(optimizer="adam", loss=model.loss_function())
    elif get_spec(name).task == "question_answering":
        from zoo.models.bert_qa import SpanLoss

        y = data["labels"]
        model.compile(optimizer="adam", loss=SpanLoss())
    else:
        y = data["labels"]
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=masked_lm_loss,
                      metrics=[TokenNLL()])
    history = model.fit(x, y, batch_size=len(y), epochs=1, verbose=0)
    return float(history.history["loss"][0])


def _cached_vs_full(model, ids: np.ndarray) -> float:
    """max |logits(prefill + single steps) - logits(full pass)| over every position."""
    full = np.asarray(model(ids, training=False))
    cache = model.init_cache(ids.shape[0], ids.shape[1])
    prefill = 3
    logits, cache = model.call_with_cache(ids[:, :prefill], cache, 0)
    pieces = [np.asarray(logits)]
    for t in range(prefill, ids.shape[1]):
        logits, cache = model.call_with_cache(ids[:, t : t + 1], cache, t)
        pieces.append(np.asarray(logits))
    return float(np.max(np.abs(np.concatenate(pieces, axis=1) - full)))


def families(in_dir: str, out_dir: str) -> None:
    report = {"tensorflow_imported": TENSORFLOW_AFTER_IMPORT, "backend": keras.backend.backend(),
              "models": {}}
    for name in list_models():
        data = dict(np.load(os.path.join(in_dir, f"{name}.inputs.npz")))
        model = build_model(name, vocab_size=VOCAB, preset="tiny")
        model.load_weights(os.path.join(in_dir, f"{name}.weights.h5"))
        logits = np.asarray(model(_inputs(name, data), training=False))
        entry = {"logits_shape": list(logits.shape)}
        if hasattr(model, "call_with_cache"):
            entry["cached_vs_full"] = _cached_vs_full(model, data["ids"])
        decoded = decode_outputs(model) if hasattr(model, "call_with_cache") else {}
        np.savez(os.path.join(out_dir, f"{name}.npz"), logits=logits, **decoded)
        before = [np.array(w) for w in model.trainable_weights]
        entry["fit_loss"] = _fit_one_step(model, name, data)
        entry["weights_changed"] = any(
            not np.array_equal(b, np.asarray(w)) for b, w in zip(before, model.trainable_weights, strict=True)
        )
        report["models"][name] = entry
    report["tensorflow_imported_at_end"] = "tensorflow" in sys.modules
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    job, in_dir, out_dir = sys.argv[1:4]
    {"families": families}[job](in_dir, out_dir)
