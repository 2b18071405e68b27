"""Semantic search: SQuAD as retrieval, recall/MRR by hand, the FAISS index against a NumPy
brute-force search, ``zoo index`` / ``zoo search`` / ``zoo.search``, the ``search`` SavedModel
signature served over REST and gRPC, and bad input as clean errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import zoo
from zoo import retrieval
from zoo.cli import main as zoo_main
from zoo.embedding import embed_texts
from zoo.errors import ZooError
from zoo.index import load_index

FAST = dict(verbose=0, max_steps=6, batch_size=8, seq_len=64, checkpoint_every=3, eval_batches=2)
NUM_DOCS = 40


@pytest.fixture(scope="module")
def squad(data_dir):
    return retrieval.squad_retrieval_set("dataset:squad", split="test")


@pytest.fixture(scope="module")
def built(squad, tmp_path_factory):
    """A tiny bert_mlm trained on the test paragraphs, the first 40 of them indexed, exported."""
    from export.search_index import export_search_model

    root = tmp_path_factory.mktemp("search")
    (root / "paragraphs.txt").write_text("\n".join(t for _, t in squad.documents[:150]) + "\n",
                                         encoding="utf-8")
    with open(root / "docs.jsonl", "w", encoding="utf-8") as f:
        for doc_id, text in squad.documents[:NUM_DOCS]:
            f.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    run = zoo.train("bert_mlm", str(root / "paragraphs.txt"), str(root / "bert"), vocab_size=300,
                    **FAST)
    index = run.build_index(str(root / "docs.jsonl"), str(root / "index"))
    exported = export_search_model(index, str(root / "models" / "search"), top_k=5)
    return {"run": run, "index": index, "root": root, "export": exported}


@pytest.fixture(scope="module")
def server(built):
    from serving.config import ANY_PORT, ModelConfig, ServerConfig
    from serving.server import ModelServer

    config = ServerConfig(models=[ModelConfig("search", os.path.dirname(built["export"]))],
                          port=ANY_PORT, rest_api_port=ANY_PORT, max_num_load_retries=0)
    srv = ModelServer(config).start(timeout=120)
    yield srv
    srv.stop()


# ------------------------------------------------------------------------------------------------
# data and metrics


def test_squad_retrieval_split_is_by_article(squad, data_dir):
    with open(os.path.join(data_dir, "squad", "dev-v1.1.json"), encoding="utf-8") as f:
        articles = json.load(f)["data"]
    test = articles[-8:]
    assert len(squad.documents) == sum(len(a["paragraphs"]) for a in test)
    assert len(squad.queries) == sum(len(p["qas"]) for a in test for p in a["paragraphs"])
    first = test[0]["paragraphs"][0]
    assert squad.documents[0] == ("40-0", first["context"])
    assert squad.queries[0] == first["qas"][0]["question"] and squad.relevant[0] == 0
    assert squad.documents[squad.relevant[-1]][1] == test[-1]["paragraphs"][-1]["context"]
    train = retrieval.squad_retrieval_set("dataset:squad", split="train")
    assert not {t for _, t in train.documents} & {t for _, t in squad.documents}
    assert len(train.queries) + len(squad.queries) == 10570


def test_recall_and_mrr_by_hand():
    rankings = [[2, 0, 1], [1, 2, 0], [0, 1, 2], [2, 1, 0]]
    relevant = [0, 1, 2, 3]  # ranks 2, 1, 3 and missing
    metrics = retrieval.retrieval_metrics(rankings, relevant, ks=(1, 2, 3))
    assert metrics["recall@1"] == 1 / 4 and metrics["recall@2"] == 2 / 4
    assert metrics["recall@3"] == 3 / 4 and metrics["queries"] == 4
    assert metrics["mrr"] == pytest.approx((1 / 2 + 1 + 1 / 3 + 0) / 4)
    with pytest.raises(ZooError, match="no queries"):
        retrieval.retrieval_metrics([], [])


# ------------------------------------------------------------------------------------------------
# the index


def test_own_text_finds_itself_first(built, squad):
    index = built["index"]
    for row in (0, 7, NUM_DOCS - 1):
        doc_id, text = squad.documents[row]
        hits = index.search(text, top_k=3)
        assert [h["rank"] for h in hits] == [1, 2, 3]
        assert hits[0]["id"] == doc_id and hits[0]["text"] == text
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert zoo.search(index.path, squad.documents[7][1], top_k=1)[0]["id"] == "40-7"
    many = index.search([squad.documents[1][1], squad.documents[2][1]], top_k=NUM_DOCS + 5)
    assert [r[0]["id"] for r in many] == ["40-1", "40-2"] and len(many[0]) == NUM_DOCS


def test_faiss_equals_numpy_brute_force(built, squad):
    index, run = built["index"], built["run"]
    vectors = embed_texts(run, [t for _, t in squad.documents[:NUM_DOCS]])
    np.testing.assert_allclose(index.vectors, vectors, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    pooled = run.embed(squad.documents[3][1])[0]  # the masked LM's own embed, normalised
    np.testing.assert_allclose(vectors[3], pooled / np.linalg.norm(pooled), atol=1e-5)
    queries = embed_texts(run, squad.queries[:25])
    scores, rows = index.search_vectors(queries, 10)
    brute = queries @ vectors.T
    for q in range(len(queries)):
        np.testing.assert_allclose(scores[q], brute[q, rows[q]], atol=1e-5)  # the scores
        np.testing.assert_allclose(scores[q], np.sort(brute[q])[::-1][:10], atol=1e-5)  # the best


def test_cli_index_and_search(built, squad, capsys):
    root = built["root"]
    out = str(root / "cli_index")
    (root / "five.txt").write_text("\n".join(t for _, t in squad.documents[:5]) + "\n",
                                   encoding="utf-8")
    assert zoo_main(["index", built["run"].path, "--data", str(root / "five.txt"),
                     "--out", out]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["documents"] == 5 and report["dimension"] == 32
    assert zoo_main(["search", built["index"].path, "--query", squad.documents[5][1],
                     "--top-k", "2"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["id"] == "40-5"


def test_bad_input_is_a_clean_error(built, tmp_path, capsys):
    path = built["index"].path
    with pytest.raises(ZooError, match="not a search index"):
        zoo.search(str(tmp_path / "nowhere"), "query")
    for query in ("", "   ", []):
        with pytest.raises(ZooError, match="empty query|no query"):
            zoo.search(path, query)
    for top_k in (0, -3, 1.5, True):
        with pytest.raises(ZooError, match="top_k must be an integer >= 1"):
            zoo.search(path, "a query", top_k=top_k)
    with pytest.raises(ZooError, match="no text encoder|not a finished run|does not exist"):
        load_index(path, run=str(tmp_path / "no_run"))
    (tmp_path / "empty.jsonl").write_text('{"id": 1, "text": "  "}\n', encoding="utf-8")
    with pytest.raises(ZooError, match="empty document"):
        zoo.build_index(built["run"], str(tmp_path / "empty.jsonl"), str(tmp_path / "i"))
    assert zoo_main(["search", str(tmp_path / "nowhere"), "--query", "x"]) == 2
    assert zoo_main(["search", path, "--query", "x", "--top-k", "0"]) == 2
    assert zoo_main(["search", path, "--query", ""]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("zoo: error: ") for line in err)


# ------------------------------------------------------------------------------------------------
# the SavedModel and the server


def test_export_graph_is_stock_tensorflow(built):
    """No Python ops and nothing compiled with XLA: TF Serving (and tensorflow + tensorflow_text
    alone) can run the export."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(built["export"], "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    graph = proto.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
        assert not function.attr.get("_XlaMustCompile", tf.compat.v1.AttrValue()).b
    assert {"MatMul", "TopKV2", "Assert"} <= ops
    assert not {op for op in ops if "PyFunc" in op or op.startswith(("Xla", "_Xla"))}
    assert set(proto.meta_graphs[0].signature_def) >= {"search", "serving_default", "embed"}
    info = json.load(open(os.path.join(built["export"], "assets.extra", "zoo_export.json")))
    assert info["task"] == "search" and info["export"]["top_k"] == 5
    assert info["export"]["documents"] == NUM_DOCS


def test_served_search_over_rest_and_grpc(built, server, squad):
    import grpc

    from serving.client import GrpcClient, RestClient, ServingClientError

    texts = [squad.documents[2][1], squad.documents[9][1]]
    expected = built["index"].search(texts, top_k=5)
    rest = RestClient(f"http://127.0.0.1:{server.rest_port}")
    body = rest.request("POST", "/v1/models/search:predict",
                        {"signature_name": "search", "instances": texts})
    for row, hits in zip(body["predictions"], expected, strict=True):
        assert row["ids"][0] == hits[0]["id"] and len(row["ids"]) == 5
        np.testing.assert_allclose(row["scores"], [h["score"] for h in hits], atol=1e-4)
        assert [built["index"].ids[i] for i in row["indices"]] == row["ids"]
    body = rest.request("POST", "/v1/models/search:predict", {"inputs": {"query": texts[:1]}})
    assert body["outputs"]["ids"][0][0] == "40-2"  # serving_default is search
    with pytest.raises(ServingClientError) as caught:
        rest.request("POST", "/v1/models/search:predict",
                     {"signature_name": "search", "instances": ["a query", "  "]})
    assert caught.value.http_status == 400 and "empty query" in str(caught.value)

    with GrpcClient(f"127.0.0.1:{server.grpc_port}") as client:
        out = client.predict("search", {"query": texts}, signature_name="search")
        assert [r[0].decode() for r in out["ids"]] == ["40-2", "40-9"]
        np.testing.assert_allclose(out["scores"][1], [h["score"] for h in expected[1]], atol=1e-4)
        embedded = client.predict("search", {"text": texts[:1]}, signature_name="embed")
        np.testing.assert_allclose(embedded["embedding"][0], built["index"].vectors[2], atol=1e-5)
        with pytest.raises(ServingClientError) as caught:
            client.predict("search", {"query": [""]}, signature_name="search")
        assert caught.value.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
