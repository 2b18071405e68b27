"""``text_classifier``: labelled-data reader, fine-tuning from a bert_mlm run, metrics against a
numpy recomputation, export (classify / predict) and TF Serving's Classify over REST and gRPC."""

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

import export
import zoo
from zoo.data import labelled
from zoo.errors import ZooError
from zoo.models import build_model
from zoo.tasks import classification

FAST = dict(verbose=0, max_steps=6, batch_size=8, seq_len=32, checkpoint_every=3, eval_batches=2)
TEXTS = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés"]


@pytest.fixture(scope="module")
def corpus(data_dir, tmp_path_factory):
    """The first 600 SST-2 training rows as a TSV (CRLF, header) and their sentences as text."""
    root = tmp_path_factory.mktemp("cls_data")
    with open(os.path.join(data_dir, "sst2", "train.tsv"), encoding="utf-8") as f:
        rows = f.read().split("\n")[:601]
    (root / "train.tsv").write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8"))
    sentences = [r.split("\t")[1] for r in rows[1:]]
    (root / "sentences.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("cls_runs")
    bert = zoo.train("bert_mlm", str(corpus / "sentences.txt"), str(root / "bert"),
                     vocab_size=300, **FAST)
    tuned = zoo.train("text_classifier", str(corpus / "train.tsv"), str(root / "tuned"),
                      model_overrides={"pretrained": bert.path}, **FAST)
    lstm = zoo.train("text_classifier", str(corpus / "train.tsv"), str(root / "lstm"),
                     vocab_size=300, model_overrides={"encoder": "lstm"}, **FAST)
    path = export.saved_model(tuned, str(root / "models" / "sst"))
    return {"bert": bert, "tuned": tuned, "lstm": lstm, "export": path, "root": root}


@pytest.fixture(scope="module")
def server(runs):
    from serving.config import ANY_PORT, ModelConfig, ServerConfig
    from serving.server import ModelServer

    config = ServerConfig(models=[ModelConfig("sst", os.path.dirname(runs["export"]))], port=ANY_PORT,
                          rest_api_port=ANY_PORT, max_num_load_retries=0)
    srv = ModelServer(config).start(timeout=120)
    yield srv
    srv.stop()


# ------------------------------------------------------------------------------------------------
# the labelled-data reader


def test_reader_detects_headers_columns_and_string_labels(tmp_path):
    tsv = tmp_path / "a.tsv"
    tsv.write_bytes(b'sentence\tlabel\r\nit is "fine" , really\tpos\r\n\r\nawful\tneg\r\n')
    assert labelled.read_labelled_file(str(tsv)) == (['it is "fine" , really', "awful"],
                                                      ["pos", "neg"])
    csv_file = tmp_path / "b.csv"
    csv_file.write_text('Category,id,Text\nspam,1,"buy now, cheap"\nham,2,"see you, ""Bob"""\n',
                        encoding="utf-8")
    assert labelled.read_labelled_file(str(csv_file)) == (["buy now, cheap", 'see you, "Bob"'],
                                                          ["spam", "ham"])
    bare = tmp_path / "c.tsv"
    bare.write_text("1\tgood\n0\tbad\n10\tso so\n", encoding="utf-8")
    texts, labels = labelled.read_labelled_file(str(bare))
    assert texts == ["good", "bad", "so so"] and labels == ["1", "0", "10"]
    assert labelled.class_names(labels) == ["0", "1", "10"]  # numeric order
    assert labelled.class_names(["pos", "neg", "pos"]) == ["neg", "pos"]
    assert labelled.label_ids(["pos", "neg"], ["neg", "pos"]).tolist() == [1, 0]
    with pytest.raises(ZooError, match="unknown"):
        labelled.label_ids(["unknown"], ["neg", "pos"])


def test_reader_names_the_bad_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("label\tsentence\npos\tgood\nno text column here\nneg\tbad\n", encoding="utf-8")
    with pytest.raises(ZooError, match=r"bad\.tsv:3: expected 2 columns"):
        labelled.read_labelled_file(str(bad))
    empty_label = tmp_path / "e.csv"
    empty_label.write_text("label,text\npos,good\n,bad\n", encoding="utf-8")
    with pytest.raises(ZooError, match=r"e\.csv:3: empty label"):
        labelled.read_labelled_file(str(empty_label))
    with pytest.raises(ZooError, match="no labelled rows"):
        (tmp_path / "h.tsv").write_text("label\ttext\n", encoding="utf-8")
        labelled.read_labelled_file(str(tmp_path / "h.tsv"))


def test_file_splits_and_sst2_names(corpus):
    train, _ = labelled.load_labelled(str(corpus / "train.tsv"), "train")
    valid, _ = labelled.load_labelled(str(corpus / "train.tsv"), "validation")
    everything, _ = labelled.load_labelled(str(corpus / "train.tsv"), "all")
    assert len(train) == 540 and len(valid) == 60 and sorted(train + valid) == sorted(everything)
    texts, labels = labelled.load_labelled("dataset:sst2", "validation")
    assert len(texts) == 872 and set(labels) == {"negative", "positive"}


def test_batches_are_a_function_of_seed_and_step():
    x = np.arange(50 * 4, dtype=np.int32).reshape(50, 4)
    y = np.arange(50) % 2
    full = list(classification.training_dataset(x, y, 5, seed=1, num_steps=5))
    resumed = list(classification.training_dataset(x, y, 5, seed=1, start_step=3, num_steps=2))
    for (a, b), (c, d) in zip(full[3:], resumed, strict=True):
        assert (a.numpy() == c.numpy()).all() and (b.numpy() == d.numpy()).all()


# ------------------------------------------------------------------------------------------------
# models and training


def test_pretrained_encoder_is_copied_and_tokenizer_reused(runs):
    bert, tuned = runs["bert"], runs["tuned"]
    config = dict(tuned.config["model_config"])
    fresh = build_model("text_classifier", tuned.config["vocab_size"], tuned.config["preset"],
                        **config)
    classification.copy_pretrained_encoder(fresh, bert.path)  # what training starts from
    for a, b in zip(fresh.encoder.weights, bert.model.encoder.weights, strict=True):
        assert a.path.split("/", 1)[1] == b.path.split("/", 1)[1]
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert tuned.config["vocab_size"] == bert.config["vocab_size"]
    assert tuned.tokenizer.vocabulary == bert.tokenizer.vocabulary
    assert config["d_model"] == bert.config["model_config"]["d_model"]
    assert config["class_names"] == ["0", "1"]


def test_keras_files_reload_in_safe_mode(runs):
    for name in ("tuned", "lstm"):
        run = runs[name]
        reloaded = keras.saving.load_model(os.path.join(run.path, "model.keras"), safe_mode=True)
        ids = classification.encode(run.tokenizer, TEXTS, 32)
        np.testing.assert_array_equal(reloaded(ids).numpy(), run.model(ids).numpy())


def _f1(labels, predictions, c):
    tp = np.sum((predictions == c) & (labels == c))
    fp = np.sum((predictions == c) & (labels != c))
    fn = np.sum((predictions != c) & (labels == c))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def test_eval_equals_numpy_recomputation(runs, corpus):
    for name in ("tuned", "lstm"):
        run = runs[name]
        data = str(corpus / "train.tsv")
        report = run.evaluate(data=data, split="validation")
        texts, labels = labelled.load_labelled(data, "validation")
        results = run.classify(texts)
        probs = np.array([[r["scores"]["0"], r["scores"]["1"]] for r in results])
        y = np.array([int(label) for label in labels])
        predictions = probs.argmax(1)
        assert [r["label"] for r in results] == [str(p) for p in predictions]
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-9)
        assert report["examples"] == len(texts) == 60
        assert report["accuracy"] == pytest.approx(np.mean(predictions == y), abs=1e-12)
        f1 = [_f1(y, predictions, c) for c in (0, 1)]
        assert report["macro_f1"] == pytest.approx(np.mean(f1), abs=1e-12)
        assert report["f1"] == pytest.approx(f1[1], abs=1e-12)
        assert report["f1_per_class"] == pytest.approx({"0": f1[0], "1": f1[1]}, abs=1e-12)
        nll = -np.log(probs[np.arange(len(y)), y])
        assert report["loss"] == pytest.approx(nll.mean(), rel=1e-6)


# ------------------------------------------------------------------------------------------------
# export and serving


def test_export_runs_with_only_tensorflow_and_tensorflow_text(runs, tmp_path):
    path = runs["export"]
    script = textwrap.dedent(
        """
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (WordPiece ops)
        m = tf.saved_model.load(sys.argv[1])
        texts = json.loads(sys.argv[2])
        def example(text):
            feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()]))
            return tf.train.Example(features=tf.train.Features(
                feature={"text": feature})).SerializeToString()
        cls = m.signatures["classify"](inputs=tf.constant([example(t) for t in texts]))
        pred = m.signatures["predict"](text=tf.constant(texts))
        default = m.signatures["serving_default"](text=tf.constant(texts))
        print(json.dumps({
            "classes": [[c.decode() for c in row] for row in cls["classes"].numpy()],
            "scores": cls["scores"].numpy().tolist(),
            "label": [t.decode() for t in pred["label"].numpy()],
            "predict_scores": pred["scores"].numpy().tolist(),
            "default_label": [t.decode() for t in default["label"].numpy()],
            "modules": [n for n in ("zoo", "export", "serving") if n in sys.modules]}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script, path, json.dumps(TEXTS)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = runs["tuned"].classify(TEXTS)
    assert out["modules"] == []
    assert out["classes"] == [["0", "1"]] * 2
    assert out["label"] == out["default_label"] == [r["label"] for r in expected]
    want = [[r["scores"]["0"], r["scores"]["1"]] for r in expected]
    np.testing.assert_allclose(out["scores"], want, rtol=1e-5)
    np.testing.assert_allclose(out["predict_scores"], want, rtol=1e-5)
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    methods = {k: v.method_name for k, v in proto.meta_graphs[0].signature_def.items()}
    assert methods["classify"] == "tensorflow/serving/classify"
    assert methods["predict"] == methods["serving_default"] == "tensorflow/serving/predict"


def _post(port: int, path: str, body: dict):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=json.dumps(body))
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def test_served_classify_and_predict_over_rest_and_grpc(runs, server):
    expected = runs["tuned"].classify(TEXTS)
    want = [[("0", r["scores"]["0"]), ("1", r["scores"]["1"])] for r in expected]
    status, body = _post(server.rest_port, "/v1/models/sst:classify",
                         {"signature_name": "classify", "examples": [{"text": t} for t in TEXTS]})
    assert status == 200, body
    for row, row_want in zip(body["results"], want, strict=True):
        assert [c for c, _ in row] == ["0", "1"]
        np.testing.assert_allclose([s for _, s in row], [s for _, s in row_want], rtol=1e-5)
    status, body = _post(server.rest_port, "/v1/models/sst:predict",
                         {"signature_name": "predict", "inputs": {"text": TEXTS}})
    assert status == 200, body
    assert body["outputs"]["label"] == [r["label"] for r in expected]

    import grpc
    from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc

    assert server.grpc_server is not None
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "sst"
    request.model_spec.signature_name = "classify"
    for text in TEXTS:
        request.input.example_list.examples.add().ParseFromString(
            classification.example_proto(text))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Classify(request, timeout=60)
    got = [[(c.label.decode() if isinstance(c.label, bytes) else c.label, c.score)
            for c in row.classes] for row in response.result.classifications]
    for row, row_want in zip(got, want, strict=True):
        assert [c for c, _ in row] == ["0", "1"]
        np.testing.assert_allclose([s for _, s in row], [s for _, s in row_want], rtol=1e-5)
    from serving.client import GrpcClient

    with GrpcClient(f"127.0.0.1:{server.grpc_port}") as client:
        out = client.predict("sst", {"text": TEXTS}, signature_name="predict")
    assert [t.decode() for t in out["label"]] == [r["label"] for r in expected]
    np.testing.assert_allclose(out["scores"], [[s for _, s in r] for r in want], rtol=1e-5)
