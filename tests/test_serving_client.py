"""``serving.client``: RestClient and GrpcClient against a real server with a real zoo LM export.

A tiny transformer run is trained, exported with ``export.saved_model`` and served by
``ModelServer`` (REST and gRPC on free loopback ports).  Both clients must give the Python API's
answers: greedy ``generate`` equals ``run.generate(..., strategy="greedy")``, ``score`` equals
``zoo.tasks.causal_lm.score_texts``; and they must agree with each other on everything else.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

import export
import zoo
from serving.client import GrpcClient, RestClient, ServingClientError
from serving.config import ANY_PORT, ModelConfig, ServerConfig
from serving.server import ModelServer
from zoo.tasks.causal_lm import score_texts

MAX_NEW = 16
PROMPTS = ["ROMEO:", "First Citizen:\nWe are", "a"]


@pytest.fixture(scope="module")
def served(shakespeare_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("client_lm")
    run = zoo.train("transformer_lm", shakespeare_file, str(root / "run"), verbose=0, max_steps=6,
                    batch_size=4, seq_len=32, checkpoint_every=3, eval_batches=2)
    base = str(root / "models" / "lm")
    export.saved_model(run, base, max_new_tokens=MAX_NEW)
    cfg = ServerConfig(models=[ModelConfig("lm", base)], port=ANY_PORT, rest_api_port=ANY_PORT,
                       file_system_poll_wait_seconds=0)
    server = ModelServer(cfg).start(timeout=180)
    grpc_client = GrpcClient(f"127.0.0.1:{server.grpc_port}")
    try:
        yield run, RestClient(server.rest_url), grpc_client
    finally:
        grpc_client.close()
        server.stop()


@pytest.fixture(params=["rest", "grpc"])
def client(request, served):
    return served[1] if request.param == "rest" else served[2]


def test_generate_equals_run_generate(served, client):
    """generate signature, greedy: the served continuation is run.generate's, one prompt or many."""
    run = served[0]
    expected = [run.generate(p, strategy="greedy", max_new_tokens=MAX_NEW) for p in PROMPTS]
    assert client.generate("lm", PROMPTS[0], max_new_tokens=MAX_NEW) == expected[0]
    assert client.generate("lm", PROMPTS) == expected  # None -> the export's bound (16)
    short = client.generate("lm", PROMPTS[0], max_new_tokens=4)
    assert short == run.generate(PROMPTS[0], strategy="greedy", max_new_tokens=4)


def test_sampling_is_seeded_and_the_same_over_both_protocols(served):
    """generate signature with temperature/top_k/top_p: the same seed gives the same text over REST
    and gRPC, and a different seed (almost surely) another one."""
    _, rest, grpc_client = served
    kwargs = dict(max_new_tokens=MAX_NEW, temperature=1.0, top_k=20, top_p=0.95)
    a = rest.generate("lm", PROMPTS, seed=7, **kwargs)
    assert grpc_client.generate("lm", PROMPTS, seed=7, **kwargs) == a
    assert rest.generate("lm", PROMPTS, seed=7, **kwargs) == a
    assert len(a) == len(PROMPTS) and all(isinstance(t, str) for t in a)


def test_score_equals_score_texts(served, client):
    """score signature: log-likelihood and token counts equal zoo.tasks.causal_lm.score_texts."""
    run = served[0]
    texts = ["To be, or not to be", "ROMEO:\nGood night.", "x"]
    got = client.score("lm", texts)
    reference = score_texts(run.model, run.tokenizer, texts, run.line_corpus)
    assert [g["num_tokens"] for g in got] == [n for _, n in reference]
    np.testing.assert_allclose([g["log_likelihood"] for g in got], [ll for ll, _ in reference], rtol=1e-4, atol=1e-4)
    for g in got:
        expected = np.exp(-g["log_likelihood"] / g["num_tokens"]) if g["num_tokens"] else 1.0  # "x": none scored
        assert g["perplexity"] == pytest.approx(expected, rel=1e-4)
    single = client.score("lm", texts[0])
    assert single["num_tokens"] == reference[0][1]


def test_predict_tokenize_roundtrip(client):
    """predict on the tokenize/detokenize signatures; list inputs take the signature's dtypes."""
    out = client.predict("lm", {"text": ["ROMEO:", "ab"]}, signature_name="tokenize")
    assert out["token_ids"].dtype == np.int32 and out["num_tokens"].tolist() == [6, 2]
    back = client.predict("lm", {"token_ids": out["token_ids"]}, signature_name="detokenize")
    assert back["text"].tolist() == [b"ROMEO:", b"ab"]


def test_metadata_and_status_agree(served):
    """GetModelMetadata / GetModelStatus: the gRPC client's dicts equal the REST JSON."""
    _, rest, grpc_client = served
    meta = rest.metadata("lm")
    assert grpc_client.metadata("lm") == meta
    assert meta["model_spec"]["version"] == "1"
    assert set(meta["metadata"]["signature_def"]["signature_def"]) >= {
        "serving_default", "generate", "score", "tokenize", "detokenize"}
    status = rest.status("lm")
    assert grpc_client.status("lm") == status
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    assert grpc_client.status("lm", version=1) == rest.status("lm", version=1)


def test_errors_carry_status_and_message(served):
    """Errors: HTTP status (REST) or gRPC code, with TF Serving's message."""
    _, rest, grpc_client = served
    with pytest.raises(ServingClientError) as info:
        rest.generate("nope", "x")
    assert info.value.http_status == 404 and info.value.grpc_code is None
    assert info.value.message == "Servable not found for request: Latest(nope)"
    with pytest.raises(ServingClientError) as info:
        grpc_client.generate("nope", "x")
    assert info.value.grpc_code == grpc.StatusCode.NOT_FOUND and info.value.code == "NOT_FOUND"
    assert info.value.message == "Servable not found for request: Latest(nope)"
    with pytest.raises(ServingClientError) as info:
        rest.predict("lm", {"text": ["a"]}, signature_name="foo")
    assert (info.value.http_status, info.value.message) == (
        400, 'Serving signature name: "foo" not found in signature def')
    with pytest.raises(ServingClientError) as info:
        grpc_client.predict("lm", {"text": ["a"]}, signature_name="foo")
    assert info.value.grpc_code == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(ServingClientError) as info:
        grpc_client.status("lm", version=9)
    assert info.value.message == "Could not find version 9 of model lm"


def test_empty_batch(client):
    """A zero-row batch is a valid request: no texts back."""
    assert client.generate("lm", []) == []

