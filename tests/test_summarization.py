"""summarizer: ROUGE best-reference scoring against rouge-score by hand, lead-1 on real SciTLDR
rows, summary data files, the bert_mlm encoder start, and a tiny run trained once on real
SciTLDR rows -> eval JSON -> export -> ``summarize`` served over REST and gRPC, bad inputs as
clean errors."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from rouge_score import rouge_scorer

import export
import zoo
from zoo.data import summaries as zsum
from zoo.data.catalog import get_dataset
from zoo.errors import ZooError
from zoo.summary_metrics import best_reference_scores, rouge_best_reference
from zoo.tasks import summarization

FAST = dict(verbose=0, max_steps=4, batch_size=4, checkpoint_every=4, eval_batches=2,
            vocab_size=300, learning_rate=3e-3)
TEXTS = ["We propose a new method for training neural networks. It is fast and simple.",
         "Graph neural networks learn on graphs."]


# ------------------------------------------------------------------------------------------------
# ROUGE and lead-1


def _by_hand(hypothesis: str, references: list[str]) -> dict:
    """rouge-score directly: every reference scored, the best ROUGE-1 F1 one kept."""
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(reference, hypothesis) for reference in references]
    best = max(range(len(scores)), key=lambda i: (scores[i]["rouge1"].fmeasure, -i))
    return {name: scores[best][name].fmeasure for name in ("rouge1", "rouge2", "rougeL")}


def test_rouge_best_reference_equals_rouge_score_by_hand():
    # one reference, figures by hand: 2 of 3 unigrams, 1 of 2 bigrams, LCS 2 of 3
    one = rouge_best_reference(["the cat sat"], [["the cat ran"]])
    assert one == pytest.approx({"rouge1": 2 / 3, "rouge2": 1 / 2, "rougeL": 2 / 3})
    hypotheses = ["the model learns to summarize papers quickly",
                  "a cat sat on the mat",
                  "graphs are learned by networks"]
    references = [["we learn to summarize scientific papers", "models summarizing papers"],
                  ["the mat had a cat on it", "a dog sat on a mat", "cat sat on mat"],
                  "neural networks that learn graphs"]
    got = rouge_best_reference(hypotheses, references)
    rows = [_by_hand(h, [r] if isinstance(r, str) else r)
            for h, r in zip(hypotheses, references, strict=True)]
    for name in ("rouge1", "rouge2", "rougeL"):
        assert got[name] == pytest.approx(np.mean([row[name] for row in rows]), abs=1e-12)
    # the reference is chosen by ROUGE-1, not each measure's best separately (score_multi)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    pick = best_reference_scores(scorer, "a b c d", ["d c b a", "a b y z"])
    assert pick["reference"] == 0 and pick["rouge2"] == 0.0
    assert scorer.score_multi(["d c b a", "a b y z"], "a b c d")["rouge2"].fmeasure > 0
    assert rouge_best_reference([""], [["something"]])["rouge1"] == 0.0
    with pytest.raises(ZooError, match="2 hypotheses but 1"):
        rouge_best_reference(["a", "b"], [["a"]])
    with pytest.raises(ZooError, match="no reference"):
        rouge_best_reference(["a"], [[]])


def test_lead1_on_real_scitldr_rows(data_dir):
    corpus = zsum.load_summaries("dataset:scitldr")
    documents = corpus.documents("test")[:4]
    with open(os.path.join(data_dir, "scitldr", "test.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(next(f)) for _ in range(4)]
    for document, row in zip(documents, rows, strict=True):
        assert document.sentences[0] == " ".join(row["source"][0].split())
        assert zsum.lead(document) == document.sentences[0]
        assert len(document.references) == len(row["target"]) >= 2  # test: 2 to 4 TLDRs
    leads = [zsum.lead(d) for d in documents]
    references = [list(d.references) for d in documents]
    got = rouge_best_reference(leads, references)
    rows_by_hand = [_by_hand(h, r) for h, r in zip(leads, references, strict=True)]
    for name in ("rouge1", "rouge2", "rougeL"):
        assert got[name] == pytest.approx(np.mean([r[name] for r in rows_by_hand]), abs=1e-12)
    assert 0.05 < got["rouge1"] < 0.6
    assert [len(corpus.documents(s)) for s in ("train", "validation")] == [1992, 619]
    spec = get_dataset("scitldr")
    assert all(f.url.startswith("https://raw.githubusercontent.com/allenai/scitldr/")
               for f in spec.files)


def test_summary_files_jsonl_and_tsv(tmp_path):
    jsonl = tmp_path / "docs.jsonl"
    rows = [{"source": f"Sentence one of {i}. Sentence two!", "target": [f"sum {i}", "other"]}
            for i in range(9)] + [{"source": ["A.", "B."], "target": "t"}]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    corpus = zsum.load_summaries(str(jsonl))
    train, valid = corpus.documents("train"), corpus.documents("validation")
    assert len(train) == 9 and len(valid) == 1
    assert train[0].sentences == ("Sentence one of 0.", "Sentence two!")
    assert train[0].references == ("sum 0", "other") and valid[0].text == "A. B."
    assert len(corpus.pairs("train")[0]) == 18  # a document once per reference
    tsv = tmp_path / "docs.tsv"
    tsv.write_text("source\tsummary\nfirst doc. more\tone\nsecond doc\ttwo\n", encoding="utf-8")
    assert zsum.load_summaries(str(tsv)).documents("train")[0].sentences == ("first doc.", "more")
    tsv.write_text("a\tb\tc\n", encoding="utf-8")
    with pytest.raises(ZooError, match=r"docs.tsv:1: expected two tab-separated columns"):
        zsum.load_summaries(str(tsv))
    jsonl.write_text('{"text": "no source"}\n', encoding="utf-8")
    with pytest.raises(ZooError, match=r"docs.jsonl:1: expected a JSON object"):
        zsum.load_summaries(str(jsonl))
    with pytest.raises(ZooError, match="no 'test' split"):
        corpus.documents("test")
    with pytest.raises(ZooError, match="not a summarisation dataset"):
        zsum.load_summaries("dataset:multi30k")


def test_bert_encoder_initialises_the_summarizer(tmp_path):
    bert = zoo.build_model("bert_mlm", 50, "tiny", max_length=40)
    path = tmp_path / "bert"
    path.mkdir()
    bert.save(str(path / "model.keras"))
    (path / "config.json").write_text(json.dumps({
        "model": "bert_mlm", "tokenizer": "wordpiece", "vocab_size": 50,
        "model_config": dict(bert.encoder_config)}), encoding="utf-8")
    overrides = {"init_encoder": str(path)}
    config, tokenizer = summarization._init_from_bert(overrides, None)
    assert tokenizer == "wordpiece" and overrides["position"] == "learned"
    assert overrides["num_encoder_layers"] == bert.encoder_config["num_layers"]
    with pytest.raises(ZooError, match="wordpiece tokenizer, not char"):
        summarization._init_from_bert({"init_encoder": str(path)}, "char")
    sizes = {k: v for k, v in overrides.items() if k != "init_encoder"}
    model = zoo.build_model("summarizer", 50, "tiny", max_source_length=32, **sizes)
    summarization.copy_bert_encoder(model, bert)
    for ours, theirs in zip(model.encoder_blocks, bert.encoder.blocks, strict=True):
        for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    tokens = bert.encoder.embedding.token_embedding.embeddings.numpy()
    np.testing.assert_allclose(model.target_embedding.token_embedding.embeddings.numpy(),
                               tokens / math.sqrt(model.d_model), rtol=1e-6)
    np.testing.assert_array_equal(model.source_embedding.position_embedding.weights[0].numpy(),
                                  bert.encoder.embedding.position_embedding.weights[0].numpy()[:32])
    with pytest.raises(ZooError, match="not a run directory"):
        summarization._init_from_bert({"init_encoder": str(tmp_path)}, None)


# ------------------------------------------------------------------------------------------------
# a run trained once on real SciTLDR rows, its export, a server


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("summaries")
    with open(os.path.join(data_dir, "scitldr", "train.jsonl"), encoding="utf-8") as f:
        lines = [next(f) for _ in range(40)]
    data = root / "scitldr40.jsonl"
    data.write_text("".join(lines), encoding="utf-8")
    return zoo.train("summarizer", str(data), str(root / "run"), **FAST)


def test_summarize_and_eval_json(trained, capsys, monkeypatch):
    assert trained.config["task"] == "summarization" and trained.task == "summarization"
    assert trained.model.source_vocab_size == trained.model.vocab_size == trained.config[
        "vocab_size"]
    out = trained.summarize(TEXTS)
    assert isinstance(out, list) and len(out) == 2 and all(isinstance(t, str) for t in out)
    assert trained.summarize(TEXTS[0]) == out[0]
    long_text = "word " * 2000  # far over max_source_length tokens: cut, still summarised
    assert isinstance(trained.summarize(long_text), str)
    with pytest.raises(ZooError, match="text 1 is empty"):
        trained.summarize(["fine", "  "])
    with pytest.raises(ZooError, match="over the limit"):
        trained.summarize("x" * (summarization.MAX_TEXT_BYTES + 1))
    with pytest.raises(ZooError, match="translate needs a seq2seq run"):
        zoo.run.LoadedRun.translate(trained, "x")

    result = summarization.evaluate(trained, max_examples=3)
    documents = zsum.load_summaries(trained.config["data"]).documents("validation")[:3]
    references = [list(d.references) for d in documents]
    expected = rouge_best_reference(trained.summarize([d.text for d in documents]), references)
    assert {k: result[k] for k in expected} == expected
    assert result["lead1"] == rouge_best_reference([zsum.lead(d) for d in documents], references)
    assert result["perplexity"] == pytest.approx(np.exp(result["loss"]))
    assert result["examples"] == 3 and result["split"] == "validation"

    from zoo.cli import main

    monkeypatch.setattr("zoo.run.load", lambda path: trained)  # the compiled decoders are reused
    assert main(["eval", trained.path, "--max-examples", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"loss", "perplexity", "rouge1", "rouge2", "rougeL", "lead1", "examples",
            "references"} <= set(printed)
    assert set(printed["lead1"]) == {"rouge1", "rouge2", "rougeL"}
    assert main(["summarize", trained.path, "--text", TEXTS[0]]) == 0
    assert capsys.readouterr().out == out[0] + "\n"
    assert main(["summarize", trained.path, "--text", " "]) == 2
    assert "is empty" in capsys.readouterr().err


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("sum_export") / "sum")
    return export.saved_model(trained, base)  # max_new_tokens: the target context


def test_served_summarize_over_rest_and_grpc(trained, exported):
    from serving.client import GrpcClient, RestClient, ServingClientError
    from serving.config import ANY_PORT, ModelConfig, ServerConfig
    from serving.server import ModelServer

    info = json.load(open(os.path.join(exported, "assets.extra", "zoo_export.json")))
    assert info["task"] == "summarization"
    assert set(info["signatures"]) == {"serving_default", "summarize", "summarize_beam"}
    server = ModelServer(ServerConfig(models=[ModelConfig("tldr", os.path.dirname(exported))],
                                      port=ANY_PORT, rest_api_port=ANY_PORT)).start(timeout=120)
    try:
        expected = trained.summarize(TEXTS)
        rest = RestClient(f"http://127.0.0.1:{server.rest_port}")
        body = rest.request("POST", "/v1/models/tldr:predict",
                            {"signature_name": "summarize", "instances": TEXTS})
        assert [row["summary"] for row in body["predictions"]] == expected
        body = rest.request("POST", "/v1/models/tldr:predict", {"inputs": {"text": TEXTS}})
        assert body["outputs"]["summary"] == expected  # serving_default
        for bad, why in (([TEXTS[0], " "], "empty"),
                         (["y" * (summarization.MAX_TEXT_BYTES + 1)], "bytes")):  # graph or server
            with pytest.raises(ServingClientError) as err:
                rest.request("POST", "/v1/models/tldr:predict",
                             {"signature_name": "summarize", "instances": bad})
            assert err.value.http_status == 400 and why in err.value.message
        with GrpcClient(f"127.0.0.1:{server.grpc_port}") as client:
            out = client.predict("tldr", {"text": TEXTS}, signature_name="summarize")
            assert [t.decode("utf-8") for t in out["summary"]] == expected
            beam = client.predict("tldr", {"text": TEXTS}, signature_name="summarize_beam")
            assert [t.decode("utf-8") for t in beam["summary"]] == trained.summarize(
                TEXTS, strategy="beam", num_beams=4)
            with pytest.raises(ServingClientError) as err:
                client.predict("tldr", {"text": [""]}, signature_name="summarize")
            assert err.value.code == "INVALID_ARGUMENT" and "empty" in err.value.message
    finally:
        server.stop()
