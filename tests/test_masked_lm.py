"""``bert_mlm``: dynamic masking, the bidirectional encoder, metrics, fill-mask/embed, export and
serving (REST and gRPC on one loopback server for the file)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import export
import zoo
from zoo.data import masking
from zoo.tasks import masked_lm
from zoo.tokenizers import train_tokenizer
from zoo.tokenizers.base import NUM_SPECIAL, PAD_ID

FAST = dict(verbose=0, max_steps=6, batch_size=8, seq_len=32, checkpoint_every=3, eval_batches=2,
            vocab_size=200)
TEXTS = ["First Citizen: [MASK] me speak.", "[MASK] [MASK] the people", "no mask here"]


@pytest.fixture(scope="module")
def mlm(shakespeare_file, tmp_path_factory):
    """A tiny bert_mlm run (WordPiece), trained a few steps, and its export."""
    root = tmp_path_factory.mktemp("mlm")
    run = zoo.train("bert_mlm", shakespeare_file, str(root / "run"), **FAST)
    path = export.saved_model(run, str(root / "models" / "mlm"))
    return run, path


@pytest.fixture(scope="module")
def server(mlm):
    from serving.config import ANY_PORT, ModelConfig, ServerConfig
    from serving.server import ModelServer

    config = ServerConfig(models=[ModelConfig("mlm", os.path.dirname(mlm[1]))], port=ANY_PORT,
                          rest_api_port=ANY_PORT, max_num_load_retries=0)
    srv = ModelServer(config).start(timeout=120)
    yield srv
    srv.stop()


# ------------------------------------------------------------------------------------------------
# masking


def test_masking_statistics_and_determinism():
    rng = np.random.default_rng(0)
    mask_id = 1000
    ids = rng.integers(NUM_SPECIAL, mask_id, size=(64, 512)).astype(np.int32)
    ids[:, 0], ids[:, 100] = masking.CLS_ID, masking.SEP_ID
    ids[:, 400:] = PAD_ID  # padding
    ids[::7, 50] = 1  # <unk>
    seed = tf.constant([5, 17], tf.int64)
    inputs, labels = (t.numpy() for t in masking.mask_tokens(ids, seed, mask_id))
    eligible = ids >= NUM_SPECIAL
    selected = labels != 0
    assert not selected[~eligible].any()  # specials and padding are never selected
    assert (labels[selected] == ids[selected]).all()  # labels only at selected positions
    assert (inputs[~selected] == ids[~selected]).all()
    rate = selected.sum() / eligible.sum()
    assert abs(rate - 0.15) < 0.01
    n = selected.sum()
    masked = (inputs == mask_id) & selected
    kept = (inputs == ids) & selected
    randomised = selected & ~masked & ~kept
    assert abs(masked.sum() / n - 0.8) < 0.02
    assert abs(randomised.sum() / n - 0.1) < 0.015
    assert abs(kept.sum() / n - 0.1) < 0.015
    assert ((inputs[randomised] >= NUM_SPECIAL) & (inputs[randomised] < mask_id)).all()
    again = masking.mask_tokens(ids, seed, mask_id)
    assert (again[0].numpy() == inputs).all() and (again[1].numpy() == labels).all()
    other = masking.mask_tokens(ids, tf.constant([5, 18], tf.int64), mask_id)
    assert (other[1].numpy() != labels).any()


def test_training_batches_are_a_function_of_seed_and_step():
    rows = np.arange(40 * 16, dtype=np.int32).reshape(40, 16) % 90 + NUM_SPECIAL
    full = list(masking.training_dataset(rows, 4, seed=3, mask_id=100, num_steps=6))
    resumed = list(masking.training_dataset(rows, 4, seed=3, mask_id=100, start_step=4,
                                            num_steps=2))
    for (a, b), (c, d) in zip(full[4:], resumed, strict=True):
        assert (a.numpy() == c.numpy()).all() and (b.numpy() == d.numpy()).all()
    evaluation = [b.numpy() for _, b in masking.evaluation_dataset(rows, 16, mask_id=100)]
    assert [e.shape for e in evaluation] == [(16, 16)] * 3
    assert (evaluation[-1][8:] == 0).all()  # fill rows carry no labels


def test_mask_token_round_trip_in_graph():
    base = train_tokenizer("wordpiece", ["the cat sat on the mat", "a dog ran"] * 10,
                           vocab_size=80)
    tok = masking.MaskedTextTokenizer(base)
    assert tok.mask_id == base.vocab_size and tok.vocab_size == base.vocab_size + 1

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def round_trip(texts):
        ids = tok.tokenize(texts)
        return ids.to_tensor(), tok.detokenize(ids)

    ids, back = round_trip(tf.constant(["the cat [MASK] on the mat", "[MASK][MASK] dog", ""]))
    cat = base.tokenize_to_numpy("the cat").tolist()
    assert ids.numpy()[0, :3].tolist() == cat + [tok.mask_id]
    assert ids.numpy()[1, :2].tolist() == [tok.mask_id] * 2
    assert [t.decode() for t in back.numpy()] == ["the cat [MASK] on the mat",
                                                 "[MASK] [MASK] dog", ""]
    packed = masking.pack_sentences(tok.tokenize(tf.constant(["the cat", "a dog", "the"])), 8)
    assert packed[0].tolist()[:4] == [masking.CLS_ID, *cat, masking.SEP_ID]


# ------------------------------------------------------------------------------------------------
# the model


def test_encoder_is_bidirectional_and_ignores_padding():
    model = zoo.build_model("bert_mlm", 50, "tiny", dropout=0.0)
    ids = np.array([[2, 10, 11, 12, 13, 3, 0, 0]], np.int32)
    base = model.encode(ids).numpy()
    later = ids.copy()
    later[0, 4] = 30  # a later token changes the first positions' outputs
    assert np.abs(model.encode(later).numpy()[0, :3] - base[0, :3]).max() > 1e-4
    shorter = model.encode(ids[:, :6]).numpy()  # padding is never attended to
    np.testing.assert_allclose(shorter[0], base[0, :6], atol=1e-5)


def test_keras_file_reloads_in_safe_mode(mlm):
    run, _ = mlm
    reloaded = keras.saving.load_model(os.path.join(run.path, "model.keras"), safe_mode=True)
    ids = masked_lm.encode_texts(masked_lm.masked_tokenizer(run), tf.constant(TEXTS), 32)
    np.testing.assert_array_equal(reloaded(ids).numpy(), run.model(ids).numpy())


def _log_softmax(logits):
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_eval_equals_numpy_recomputation(mlm):
    run, _ = mlm
    report = run.evaluate()
    assert set(report) == {"loss", "perplexity", "masked_accuracy", "masked_tokens"}
    nll, hits, count = 0.0, 0, 0
    for inputs, labels in masked_lm.evaluation_batches(run):
        logp = _log_softmax(run.model(inputs).numpy())
        labels = labels.numpy()
        where = labels != 0
        nll -= np.take_along_axis(logp, labels[..., None], -1)[..., 0][where].sum()
        hits += (logp.argmax(-1) == labels)[where].sum()
        count += where.sum()
    assert report["masked_tokens"] == count > 0
    np.testing.assert_allclose(report["loss"], nll / count, rtol=1e-6)
    np.testing.assert_allclose(report["perplexity"], np.exp(nll / count), rtol=1e-6)
    assert report["masked_accuracy"] == pytest.approx(hits / count, abs=1e-12)
    assert run.evaluate() == report  # fixed-seed masks: reproducible


def test_fill_mask_and_embed(mlm):
    run, _ = mlm
    tok = masked_lm.masked_tokenizer(run)
    results = run.fill_mask(TEXTS, top_k=4)
    assert [len(r["masks"]) for r in results] == [1, 2, 0]
    ids = masked_lm.encode_texts(tok, tf.constant(TEXTS), 32).numpy()
    probs = np.exp(_log_softmax(run.model(ids).numpy()))
    strings = tok.token_strings()
    for b, result in enumerate(results):
        for m, position in enumerate(np.flatnonzero(ids[b] == tok.mask_id)):
            candidates = result["masks"][m]
            expected = [i for i in np.argsort(-probs[b, position], kind="stable")
                        if i >= NUM_SPECIAL and i != tok.mask_id][:4]
            assert [c["id"] for c in candidates] == expected
            assert [c["token"] for c in candidates] == [strings[i] for i in expected]
            np.testing.assert_allclose([c["score"] for c in candidates],
                                       probs[b, position, expected], rtol=1e-5)
    assert results[2]["filled"] == "no mask here"
    assert "[MASK]" not in results[0]["filled"]
    vectors = run.embed(TEXTS)
    hidden = run.model.encode(ids).numpy()
    real = (ids != 0)[..., None]
    np.testing.assert_allclose(vectors, (hidden * real).sum(1) / real.sum(1), rtol=1e-5,
                               atol=1e-6)


# ------------------------------------------------------------------------------------------------
# export and serving


def test_export_runs_with_only_tensorflow_and_tensorflow_text(mlm, tmp_path):
    run, path = mlm
    script = textwrap.dedent(
        """
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (WordPiece ops)
        m = tf.saved_model.load(sys.argv[1])
        texts = tf.constant(json.loads(sys.argv[2]))
        fill = m.signatures["fill_mask"](text=texts)
        default = m.signatures["serving_default"](text=texts)
        emb = m.signatures["embed"](text=texts)["embedding"]
        print(json.dumps({
            "tokens": [[[t.decode() for t in s] for s in row] for row in fill["tokens"].numpy()],
            "scores": fill["scores"].numpy().tolist(),
            "positions": fill["positions"].numpy().tolist(),
            "num_masks": fill["num_masks"].numpy().tolist(),
            "filled": [t.decode() for t in fill["filled"].numpy()],
            "same_default": bool((default["scores"].numpy() == fill["scores"].numpy()).all()),
            "embedding": emb.numpy().tolist(),
            "modules": [n for n in ("zoo", "export", "serving") if n in sys.modules]}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script, path, json.dumps(TEXTS)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["modules"] == [] and out["same_default"]
    expected = run.fill_mask(TEXTS, top_k=5)
    assert out["num_masks"] == [1, 2, 0]
    assert out["filled"] == [r["filled"] for r in expected]
    for b, result in enumerate(expected):
        for m, candidates in enumerate(result["masks"]):
            assert out["tokens"][b][m] == [c["token"] for c in candidates]
            np.testing.assert_allclose(out["scores"][b][m], [c["score"] for c in candidates],
                                       rtol=1e-5)
        for m in range(len(result["masks"]), masked_lm.MAX_MASKS):
            assert out["positions"][b][m] == -1 and out["tokens"][b][m] == [""] * 5
    np.testing.assert_allclose(out["embedding"], run.embed(TEXTS), rtol=1e-5, atol=1e-6)
    with open(os.path.join(path, "assets.extra", "zoo_export.json")) as f:
        assert json.load(f)["task"] == "masked_lm"


def _post(port: int, path: str, body: dict):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=json.dumps(body))
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def test_served_fill_mask_over_rest_and_grpc(mlm, server):
    run, _ = mlm
    expected = run.fill_mask(TEXTS[:2], top_k=5)
    status, body = _post(server.rest_port, "/v1/models/mlm:predict",
                         {"signature_name": "fill_mask", "inputs": {"text": TEXTS[:2]}})
    assert status == 200, body
    rest = body["outputs"]
    assert rest["num_masks"] == [1, 2]
    assert rest["tokens"][1][1] == [c["token"] for c in expected[1]["masks"][1]]
    assert rest["filled"] == [r["filled"] for r in expected]
    status, body = _post(server.rest_port, "/v1/models/mlm:predict",
                         {"signature_name": "embed", "instances": [{"text": TEXTS[2]}]})
    assert status == 200, body
    np.testing.assert_allclose(body["predictions"][0], run.embed(TEXTS[2:])[0],
                               rtol=1e-5, atol=1e-6)
    assert server.grpc_server is not None
    from serving.client import GrpcClient

    with GrpcClient(f"127.0.0.1:{server.grpc_port}") as client:
        out = client.predict("mlm", {"text": TEXTS[:2]}, signature_name="fill_mask")
    assert out["num_masks"].tolist() == [1, 2]
    assert [t.decode() for t in out["tokens"][0, 0]] == [c["token"] for c in expected[0]["masks"][0]]
    np.testing.assert_allclose(out["scores"][0, 0], [c["score"] for c in expected[0]["masks"][0]],
                               rtol=1e-5)
