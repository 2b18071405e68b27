"""Bounded work per request in the model server.

* ``--max_batch_rows`` and ``--max_tokens_per_request`` on a zoo LM export: a 400 /
  INVALID_ARGUMENT naming the value and the flag, on REST predict, gRPC Predict and both
  streaming routes, before the model runs at all;
* sampling settings out of range (NaN, inf, negative ``temperature``; ``top_p`` outside
  ``(0, 1]``; negative ``top_k``) refused the same way, naming the field;
* a request past its deadline stops: the REST timeout and the gRPC deadline or client cancel
  cancel the running signature (TensorFlow's cancellation stops its ``while_loop``), so the
  only worker thread is free for the next request at once;
* the streams are counted in the metrics on both entry points.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import export
import zoo
from serving.batching import BatchingParameters, BatchScheduler
from serving.cancellation import Cancellation, scope
from serving.client import GrpcClient, RestClient, ServingClientError
from serving.config import ANY_PORT, ModelConfig, ServerConfig
from serving.errors import Code, ServingError
from serving.predict import check_sampling_inputs
from serving.servable import load_servable
from serving.server import ModelServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import serving_models  # noqa: E402
from test_serving_metrics import call, parse_prometheus, value  # noqa: E402

MAX_NEW = 8  # the export's bound
MAX_ROWS = 3
MAX_TOKENS = 6
SPIN_STEPS = 10_000_000  # about a minute of while_loop on one CPU core: it must be cancelled


@pytest.fixture(scope="module")
def lm_root(shakespeare_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("bounds")
    run = zoo.train("transformer_lm", shakespeare_file, str(root / "run"), verbose=0, max_steps=6,
                    batch_size=4, seq_len=32, checkpoint_every=3, eval_batches=2)
    export.saved_model(run, str(root / "lm"), max_new_tokens=MAX_NEW, streaming=True)
    (root / "monitoring.txt").write_text("prometheus_config { enable: true }\n")
    return root


@pytest.fixture(scope="module")
def served(lm_root):
    cfg = ServerConfig(models=[ModelConfig("lm", str(lm_root / "lm"))], port=ANY_PORT, rest_api_port=ANY_PORT,
                       file_system_poll_wait_seconds=0, max_batch_rows=MAX_ROWS, max_tokens_per_request=MAX_TOKENS,
                       monitoring_config_file=str(lm_root / "monitoring.txt"))
    server = ModelServer(cfg).start(timeout=180)
    rest, grpc_client = RestClient(server.rest_url), GrpcClient(f"127.0.0.1:{server.grpc_port}")
    try:
        yield server, {"rest": rest, "grpc": grpc_client}
    finally:
        grpc_client.close()
        server.stop()


@pytest.fixture
def model_calls(served):
    """Counts the LM servable's signature calls (the model work) while a test runs."""
    servable = served[0].manager.get_servable("lm")
    calls: list[str] = []
    original = servable.run

    def counted(key, feeds):
        calls.append(key)
        return original(key, feeds)

    servable.run = counted
    try:
        yield calls
    finally:
        del servable.run


def _refused(call_, protocol: str) -> str:
    with pytest.raises(ServingClientError) as info:
        result = call_()
        if not isinstance(result, (str, list, dict)):
            list(result)  # a stream: errors come on iteration
    if protocol == "rest":
        assert info.value.http_status == 400, info.value
    else:
        assert info.value.grpc_code == grpc.StatusCode.INVALID_ARGUMENT, info.value
    return info.value.message


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_rows_and_tokens_are_bounded_before_any_model_work(served, model_calls, protocol):
    client = served[1][protocol]
    rows = f"the request has {MAX_ROWS + 1} rows; the limit is {MAX_ROWS} (--max_batch_rows)"
    assert _refused(lambda: client.generate("lm", ["a"] * (MAX_ROWS + 1), max_new_tokens=1), protocol) == rows
    assert _refused(lambda: client.score("lm", ["a"] * (MAX_ROWS + 1)), protocol) == rows
    # rows x max_new_tokens; the export's bound when the request leaves it to the export
    tokens = "the request asks for {} x {} = {} tokens (rows x max_new_tokens); the limit is 6 (--max_tokens_per_request)"
    assert _refused(lambda: client.generate("lm", ["a"] * 3, max_new_tokens=3), protocol) == tokens.format(3, 3, 9)
    assert _refused(lambda: client.generate("lm", "a"), protocol) == tokens.format(1, MAX_NEW, MAX_NEW)
    assert _refused(lambda: client.generate_stream("lm", "a"), protocol) == tokens.format(1, MAX_NEW, MAX_NEW)
    assert _refused(lambda: client.generate_stream("lm", "a", max_new_tokens=7), protocol) == tokens.format(1, 7, 7)
    assert model_calls == []  # nothing above reached a signature
    # at the bounds, requests are served
    two = client.generate("lm", ["ROMEO:", "JULIET:"], max_new_tokens=MAX_TOKENS // 2)
    assert len(two) == 2 and all(isinstance(t, str) for t in two)
    six = client.generate("lm", "ROMEO:", max_new_tokens=MAX_TOKENS)
    assert "".join(client.generate_stream("lm", "ROMEO:", max_new_tokens=MAX_TOKENS)) == six
    assert "generate" in model_calls and "stream_step" in model_calls


BAD_SAMPLING = [
    ("temperature", float("nan")),
    ("temperature", float("inf")),
    ("temperature", -0.5),
    ("top_p", 0.0),
    ("top_p", 1.5),
    ("top_p", float("nan")),
    ("top_k", -1),
]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_sampling_settings_out_of_range_are_refused(served, model_calls, protocol):
    client = served[1][protocol]
    for field, bad in BAD_SAMPLING:
        settings = {field: bad}
        message = _refused(lambda s=settings: client.generate("lm", "ROMEO:", max_new_tokens=2, **s), protocol)
        assert field in message, (field, bad, message)
        message = _refused(lambda s=settings: client.generate_stream("lm", "ROMEO:", max_new_tokens=2, **s),
                           protocol)
        assert field in message, (field, bad, message)
    assert model_calls == []
    # a negative seed is a valid int64 seed (the export hashes its bit pattern): same seed, same text
    sampled = client.generate("lm", "ROMEO:", max_new_tokens=4, temperature=1.0, seed=-7)
    assert client.generate("lm", "ROMEO:", max_new_tokens=4, temperature=1.0, seed=-7) == sampled
    assert "".join(client.generate_stream("lm", "ROMEO:", max_new_tokens=4, temperature=1.0, seed=-7)) == sampled


def test_check_sampling_inputs_takes_scalars_and_arrays():
    """The public check every route (and the OpenAI endpoint) calls: one message per field."""
    check_sampling_inputs({"temperature": 0.0, "top_p": 1.0, "top_k": 0, "seed": -(2**63)})
    check_sampling_inputs({"temperature": np.array([0.5, 2.0], np.float32), "top_k": np.array([0, 40], np.int32),
                           "top_p": tf.constant([0.9, 1.0]), "seed": np.array([2**63 - 1], np.int64)})
    check_sampling_inputs({"prompt": ["x"], "temperature": None, "top_k": "not a number: the dtype check's job"})
    check_sampling_inputs({"seed": 2**63 - 1})
    check_sampling_inputs({"seed": [-(2**63), 2**63 - 1]})
    cases = [
        ("temperature", float("nan"), "temperature must be a finite number >= 0 (0 = greedy), got nan"),
        ("temperature", np.array([1.0, -1.0]), "temperature must be a finite number >= 0 (0 = greedy), got -1"),
        ("top_p", np.array([0.5, 0.0], np.float32), "top_p must be in (0, 1] (1 = off), got 0"),
        ("top_k", -3, "top_k must be an integer >= 0 (0 = off), got -3"),
        ("top_k", 2.5, "top_k must be an integer >= 0 (0 = off), got 2.5"),
        ("seed", 2**63, "seed must be an integer within int64, got 9223372036854775808"),
        ("seed", [1, 2**64], "seed must be an integer within int64, got 18446744073709551616"),
        ("seed", np.array([1.5]), "seed must be an integer within int64, got 1.5"),
    ]
    for field, bad, message in cases:
        with pytest.raises(ServingError) as info:
            check_sampling_inputs({field: bad})
        assert (info.value.code, info.value.message) == (Code.INVALID_ARGUMENT, message)


def test_both_streams_are_in_the_metrics(served):
    server, clients = served

    def samples():
        status, _, body = call(server.rest_port, "GET", "/monitoring/prometheus/metrics")
        assert status == 200
        return parse_prometheus(body.decode("utf-8"))[1]

    def latency(api: str, entrypoint: str) -> float:
        found = [v for n, lab, v in samples() if n == ":tensorflow:serving:request_latency_count"
                 and lab == {"model_name": "lm", "API": api, "entrypoint": entrypoint}]
        return found[0] if found else 0.0

    def count(status: str) -> float:
        found = [v for n, lab, v in samples() if n == ":tensorflow:serving:request_count"
                 and lab == {"model_name": "lm", "status": status}]
        return found[0] if found else 0.0

    before = (latency("GenerateStream", "GRPC"), latency("generate_stream", "REST"), count("OK"),
              count("INVALID_ARGUMENT"))
    for client in clients.values():
        assert "".join(client.generate_stream("lm", "ROMEO:", max_new_tokens=2))
        with pytest.raises(ServingClientError):
            list(client.generate_stream("lm", "ROMEO:", max_new_tokens=2, top_p=2.0))

    def increments() -> list[float]:
        after = (latency("GenerateStream", "GRPC"), latency("generate_stream", "REST"),
                 count("OK"), count("INVALID_ARGUMENT"))
        return [b - a for a, b in zip(before, after, strict=True)]

    # a stream is counted once its handler returns, which may be just after the client has read
    # the last event: the counters are eventually consistent, as a scrape sees them
    deadline = time.monotonic() + 10
    while increments() != [1, 1, 2, 2] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert increments() == [1, 1, 2, 2]
    assert value(samples(), ":tensorflow:serving:request_latency_sum", model_name="lm", API="GenerateStream",
                 entrypoint="GRPC") > 0


# ---------------------------------------------------------------------------------------------
# cancellation: one worker thread per front end, so the next request is only served when the
# cancelled call really gave its thread back (a spin that ran on would hold it for a minute)


@pytest.fixture(scope="module")
def spin_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("spin")
    serving_models.save_half_plus_two(str(root / "hpt" / "1"))
    cfg = ServerConfig(models=[ModelConfig("hpt", str(root / "hpt"))], port=ANY_PORT, rest_api_port=ANY_PORT,
                       file_system_poll_wait_seconds=0, rest_api_timeout_in_ms=300, rest_api_num_threads=1,
                       grpc_max_threads=1, enable_model_warmup=False)
    server = ModelServer(cfg).start(timeout=120)
    records = []
    server.grpc_server.observers.append(records.append)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    try:
        yield server, prediction_service_pb2_grpc.PredictionServiceStub(channel), records, root
    finally:
        channel.close()
        server.stop()


def _spin_request(steps: int = SPIN_STEPS) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "hpt", "spin"
    request.inputs["n"].CopyFrom(tf.make_tensor_proto(steps, dtype=tf.int32))
    return request


def _half_plus_two(stub) -> list[float]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hpt"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([4.0], np.float32)))
    return list(stub.Predict(request, timeout=30).outputs["y"].float_val)


def test_rest_timeout_stops_the_running_signature(spin_server):
    server = spin_server[0]
    for _ in range(2):
        status, _, body = call(server.rest_port, "POST", "/v1/models/hpt:predict",
                               {"signature_name": "spin", "inputs": {"n": SPIN_STEPS}})
        assert status == 504, body
        assert b"--rest_api_timeout_in_ms" in body
        # the single REST worker thread is free again: served at once, not after the spin
        status, _, body = call(server.rest_port, "POST", "/v1/models/hpt:predict", {"instances": [4.0]})
        assert (status, body.replace(b" ", b"").replace(b"\n", b"")) == (200, b'{"predictions":[4.0]}')


def test_grpc_deadline_and_cancel_stop_the_running_signature(spin_server):
    server, stub, records, _ = spin_server
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(_spin_request(), timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert _half_plus_two(stub) == [4.0]  # the single gRPC worker thread is free again

    servable = server.manager.get_servable("hpt")
    started = threading.Event()
    original = servable.run

    def run(key, feeds):
        started.set()
        return original(key, feeds)

    servable.run = run
    try:
        future = stub.Predict.future(_spin_request(), timeout=60)
        assert started.wait(30)
        future.cancel()
        assert _half_plus_two(stub) == [4.0]
    finally:
        del servable.run
    codes = [r.code for r in records if r.api == "Predict"]
    assert Code.DEADLINE_EXCEEDED in codes and Code.CANCELLED in codes


def test_a_cancelled_request_leaves_the_batch_thread(spin_server):
    """With --enable_batching, a request waiting on its batch returns at its cancel, and a batch
    nobody waits for any more is cancelled, so the one batch thread runs the next batch."""
    root = spin_server[3]
    servable = load_servable("hpt", 1, str(root / "hpt" / "1"), str(root / "hpt"))
    scheduler = BatchScheduler(BatchingParameters(num_batch_threads=1))
    started = threading.Event()

    def spin(feeds):
        started.set()
        return servable.run("spin", {"n": tf.constant(SPIN_STEPS)})

    token = Cancellation()
    outcome: dict = {}

    def request() -> None:
        with scope(token):
            try:
                scheduler.submit(("spin",), spin, ("hpt", "spin"), {"x": np.zeros([1], np.float32)}, 1)
            except ServingError as exc:
                outcome["error"] = exc

    try:
        waiter = threading.Thread(target=request)
        waiter.start()
        assert started.wait(30)
        token.cancel(ServingError(Code.DEADLINE_EXCEEDED, "too late"))
        waiter.join(30)
        assert outcome["error"].code == Code.DEADLINE_EXCEEDED
        # the one batch thread is free: the next batch runs now, not after the spin
        follower = threading.Thread(target=lambda: outcome.update(quick=scheduler.submit(
            ("quick",), lambda feeds: {"y": feeds["x"] + 1}, ("hpt", "quick"), {"x": np.zeros([2], np.float32)}, 2)))
        follower.start()
        follower.join(30)
        assert outcome["quick"]["y"].tolist() == [1.0, 1.0]
    finally:
        scheduler.close()
