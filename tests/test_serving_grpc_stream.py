"""gRPC ``zoo.serving.GenerationService/GenerateStream`` and the clients' ``generate_stream``.

A tiny transformer LM is trained, exported with its streaming signatures and served; the streamed
pieces must arrive one by one and join into the greedy ``generate`` text, and errors must carry
TF Serving's status codes.
"""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

import export
import zoo
from serving.client import GrpcClient, RestClient, ServingClientError
from serving.config import ANY_PORT, ModelConfig, ServerConfig
from serving.server import ModelServer
from tests.serving_models import save_half_plus_two
from zoo.export_contract import GENERATE_STREAM_METHOD

MAX_NEW = 16


@pytest.fixture(scope="module")
def served(shakespeare_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("grpc_stream")
    run = zoo.train("transformer_lm", shakespeare_file, str(root / "run"), verbose=0, max_steps=6,
                    batch_size=4, seq_len=32, checkpoint_every=3, eval_batches=2)
    export.saved_model(run, str(root / "lm"), max_new_tokens=MAX_NEW, streaming=True)
    save_half_plus_two(str(root / "hp2" / "1"))
    cfg = ServerConfig(models=[ModelConfig("lm", str(root / "lm")), ModelConfig("hp2", str(root / "hp2"))],
                       port=ANY_PORT, rest_api_port=ANY_PORT, file_system_poll_wait_seconds=0)
    server = ModelServer(cfg).start(timeout=180)
    client = GrpcClient(f"127.0.0.1:{server.grpc_port}")
    try:
        yield server, client, RestClient(server.rest_url)
    finally:
        client.close()
        server.stop()


def raw_stream(client: GrpcClient, inputs: dict, model: str = "lm", timeout: float = 60):
    """Call GenerateStream with hand-made inputs; returns the list of PredictResponses."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(value if isinstance(value, type(request.inputs[alias]))
                                       else tf.make_tensor_proto(value))
    method = client.channel.unary_stream(GENERATE_STREAM_METHOD,
                                         request_serializer=predict_pb2.PredictRequest.SerializeToString,
                                         response_deserializer=predict_pb2.PredictResponse.FromString)
    return list(method(request, timeout=timeout))


@pytest.mark.parametrize("prompt", ["ROMEO:", "First Citizen:\nWe are"])
def test_stream_joins_into_greedy_generate(served, prompt):
    server, grpc_client, rest = served
    expected = grpc_client.generate("lm", prompt, max_new_tokens=MAX_NEW)
    pieces = list(grpc_client.generate_stream("lm", prompt))
    assert len(pieces) >= MAX_NEW  # one per token (plus, maybe, held-back text)
    assert "".join(pieces) == expected
    assert list(rest.generate_stream("lm", prompt)) == pieces
    # the raw responses: token ids are generate's, model_spec names the version
    responses = raw_stream(grpc_client, {"prompt": np.array([prompt.encode()], dtype=object)})
    ids = [r.outputs["token_id"].int_val[0] for r in responses if "token_id" in r.outputs]
    out = grpc_client.predict("lm", {"prompt": [prompt], "max_new_tokens": [MAX_NEW], "temperature": [0.0],
                                     "top_k": [0], "top_p": [1.0], "seed": [0]}, signature_name="generate")
    assert ids == out["token_ids"][0][: out["num_tokens"][0]].tolist()
    assert {(r.model_spec.name, r.model_spec.version.value) for r in responses} == {("lm", 1)}
    assert all(r.outputs["text"].dtype == tf.string.as_datatype_enum for r in responses)


def test_sampled_stream_and_short_budget(served):
    _, grpc_client, rest = served
    kwargs = dict(max_new_tokens=7, temperature=0.9, top_k=20, top_p=0.95, seed=5)
    pieces = list(grpc_client.generate_stream("lm", "ROMEO:", **kwargs))
    assert "".join(pieces) == grpc_client.generate("lm", "ROMEO:", **kwargs)
    assert list(rest.generate_stream("lm", "ROMEO:", **kwargs)) == pieces
    assert list(grpc_client.generate_stream("lm", "ROMEO:", max_new_tokens=0)) == []
    assert list(grpc_client.generate_stream("lm", "", max_new_tokens=3)) == []  # empty prompt: nothing


def test_pieces_arrive_one_by_one(served, monkeypatch):
    """Each step is slowed to 0.15 s: the first piece must reach the client long before the last."""
    server, grpc_client, _ = served
    servicer = server.grpc_server.generation
    real = servicer.servable_for

    class Slow:
        def __init__(self, servable):
            self._servable = servable

        def __getattr__(self, name):
            return getattr(self._servable, name)

        def run(self, key, feeds):
            if key == "stream_step":
                time.sleep(0.15)
            return self._servable.run(key, feeds)

    monkeypatch.setattr(servicer, "servable_for", lambda spec: Slow(real(spec)))
    times = []
    for _ in grpc_client.generate_stream("lm", "ROMEO:", max_new_tokens=8):
        times.append(time.monotonic())
    assert len(times) >= 8
    assert times[7] - times[0] > 0.8  # 7 slow steps between the first token and the eighth


def test_errors_have_tf_serving_codes(served):
    server, grpc_client, rest = served
    with pytest.raises(ServingClientError) as info:
        list(grpc_client.generate_stream("nope", "x"))
    assert info.value.grpc_code == grpc.StatusCode.NOT_FOUND
    assert info.value.message == "Servable not found for request: Latest(nope)"
    with pytest.raises(ServingClientError) as info:
        list(grpc_client.generate_stream("lm", "x", version=7))
    assert info.value.grpc_code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ServingClientError) as info:
        list(grpc_client.generate_stream("hp2", "x"))
    assert info.value.grpc_code == grpc.StatusCode.FAILED_PRECONDITION and "streaming=True" in info.value.message
    with pytest.raises(ServingClientError) as info:
        list(rest.generate_stream("nope", "x"))
    assert info.value.http_status == 404

    bad_inputs = [
        {},  # no prompt
        {"prompt": np.array([b"a", b"b"], dtype=object)},  # two prompts
        {"prompt": np.array([1], np.int32)},  # not a string
        {"prompt": np.array([b"a"], dtype=object), "beam": np.array([2], np.int32)},  # unknown input
        {"prompt": np.array([b"a"], dtype=object), "max_new_tokens": np.array([2.5], np.float32)},
        {"prompt": np.array([b"a"], dtype=object), "temperature": np.array([np.inf], np.float32)},
        {"prompt": np.array([b"a"], dtype=object), "top_k": np.array([2**40], np.int64)},
    ]
    for inputs in bad_inputs:
        with pytest.raises(grpc.RpcError) as info:
            raw_stream(grpc_client, inputs)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, inputs
    request = predict_pb2.PredictRequest()  # no model_spec
    method = grpc_client.channel.unary_stream(GENERATE_STREAM_METHOD,
                                              request_serializer=predict_pb2.PredictRequest.SerializeToString,
                                              response_deserializer=predict_pb2.PredictResponse.FromString)
    with pytest.raises(grpc.RpcError) as info:
        list(method(request, timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and info.value.details() == "Missing ModelSpec"
    # the server is still up and the stock services still answer
    assert "".join(grpc_client.generate_stream("lm", "ROMEO:", max_new_tokens=3)) == grpc_client.generate(
        "lm", "ROMEO:", max_new_tokens=3)
    assert grpc_client.status("lm")["model_version_status"][0]["state"] == "AVAILABLE"


def test_observers_see_generate_stream(served):
    server, grpc_client, _ = served
    records = []
    server.grpc_server.observers.append(records.append)
    try:
        list(grpc_client.generate_stream("lm", "ROMEO:", max_new_tokens=2))
        with pytest.raises(ServingClientError):
            list(grpc_client.generate_stream("nope", "x"))
    finally:
        server.grpc_server.observers.remove(records.append)
    got = [(r.api, r.model_name, r.code.name) for r in records if r.api == "GenerateStream"]
    assert got == [("GenerateStream", "lm", "OK"), ("GenerateStream", "nope", "NOT_FOUND")]
