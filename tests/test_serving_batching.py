"""``--enable_batching``: BatchingParameters, the shared batch scheduler and batched REST predicts.

TF Serving references: session_bundle_config.proto (BatchingParameters), shared_batch_scheduler.h
(queue full -> UNAVAILABLE), batching_session_test.cc (``BatchingWithLargeBatch``), and
serving/BEHAVIOUR.md "Batching".
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import serving_models  # noqa: E402

from serving.batching import (  # noqa: E402
    QUEUE_FULL_MESSAGE,
    BatchingParameters,
    BatchScheduler,
    parse_batching_parameters,
)
from serving.config import ANY_PORT, ModelConfig, ServerConfig  # noqa: E402
from serving.errors import Code, ServingError  # noqa: E402
from serving.server import ModelServer  # noqa: E402


def post(port: int, path: str, body: dict, timeout: float = 30) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# parameters


def test_parses_text_format_with_wrapper_values():
    params = parse_batching_parameters(
        """
        # a comment
        max_batch_size { value: 8 }
        batch_timeout_micros { value: 5000 }
        max_enqueued_batches { value: 3 }
        num_batch_threads { value: 2 }
        allowed_batch_sizes: 2
        allowed_batch_sizes: 4
        allowed_batch_sizes: 8
        pad_variable_length_inputs: true
        """
    )
    assert params == BatchingParameters(8, 5000, 3, 2, (2, 4, 8), True)
    assert parse_batching_parameters("") == BatchingParameters()  # TF Serving's defaults


@pytest.mark.parametrize(
    "text",
    [
        "max_batch_size { value: 0 }",
        "max_batch_size { value: 8 } allowed_batch_sizes: 4",  # last must equal max
        "max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 2 allowed_batch_sizes: 8",
        "max_batch_size { value: x }",
        "max_batch_size { value: 8 ",
    ],
)
def test_rejects_bad_parameters(text):
    with pytest.raises(ValueError):
        parse_batching_parameters(text)


# ---------------------------------------------------------------------------------------------
# scheduler (a fake model: counts calls, returns 2 * x and the batch size it saw)


class FakeModel:
    def __init__(self, delay: float = 0.0):
        self.calls: list[int] = []
        self.delay = delay

    def __call__(self, feeds):
        x = feeds["x"]
        self.calls.append(len(x))
        time.sleep(self.delay)
        return {"y": x * 2, "seen": np.full([len(x)], len(x))}


def submit_all(scheduler, model, arrays):
    results: list = [None] * len(arrays)
    errors: list = [None] * len(arrays)

    def one(i):
        try:
            results[i] = scheduler.submit(("q",), model, ("m", "s"), {"x": arrays[i]}, len(arrays[i]))
        except ServingError as exc:
            errors[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(arrays))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results, errors


def test_concurrent_tasks_merge_and_split_back():
    scheduler = BatchScheduler(BatchingParameters(max_batch_size=16, batch_timeout_micros=200_000,
                                                  num_batch_threads=1))
    try:
        model = FakeModel()
        arrays = [np.arange(i + 1, dtype=np.float32) + 10 * i for i in range(6)]
        results, errors = submit_all(scheduler, model, arrays)
        assert errors == [None] * 6
        for arr, res in zip(arrays, results, strict=True):
            np.testing.assert_array_equal(res["y"], arr * 2)
        assert len(model.calls) < 6 and sum(model.calls) == sum(len(a) for a in arrays)
        assert scheduler.model_calls == len(model.calls)
    finally:
        scheduler.close()


def test_padding_to_allowed_batch_sizes_is_cut_from_outputs():
    scheduler = BatchScheduler(BatchingParameters(max_batch_size=8, batch_timeout_micros=0,
                                                  num_batch_threads=1, allowed_batch_sizes=(4, 8)))
    try:
        model = FakeModel()
        out = scheduler.submit(("q",), model, ("m", "s"), {"x": np.array([1.0, 2.0, 3.0])}, 3)
        np.testing.assert_array_equal(out["y"], [2.0, 4.0, 6.0])
        assert out["seen"].tolist() == [4, 4, 4] and model.calls == [4]
    finally:
        scheduler.close()


def test_oversized_task_and_full_queue_errors():
    scheduler = BatchScheduler(BatchingParameters(max_batch_size=4, batch_timeout_micros=2_000_000,
                                                  max_enqueued_batches=1, num_batch_threads=1))
    try:
        with pytest.raises(ServingError) as info:
            scheduler.submit(("q",), FakeModel(), ("m", "s"), {"x": np.zeros(5)}, 5)
        assert info.value.code == Code.INVALID_ARGUMENT
        assert info.value.message == "Task size 5 is larger than maximum input batch size 4"

        model = FakeModel()
        first = threading.Thread(target=scheduler.submit,
                                 args=(("q",), model, ("m", "s"), {"x": np.zeros(3)}, 3))
        first.start()
        deadline = time.monotonic() + 10
        while not scheduler._queues and time.monotonic() < deadline:  # the open batch exists
            time.sleep(0.01)
        with pytest.raises(ServingError) as info:  # needs a second batch: the queue holds one
            scheduler.submit(("q",), model, ("m", "s"), {"x": np.zeros(2)}, 2)
        assert info.value.code == Code.UNAVAILABLE and info.value.http_status == 503
        assert info.value.message == QUEUE_FULL_MESSAGE
        first.join(timeout=10)
        assert model.calls == [3]
    finally:
        scheduler.close()


def test_an_output_without_the_batch_dimension_fails_every_task():
    scheduler = BatchScheduler(BatchingParameters(max_batch_size=8, num_batch_threads=1))
    try:
        with pytest.raises(ServingError) as info:
            scheduler.submit(("q",), lambda feeds: {"y": feeds["x"][:1]}, ("m", "s"),
                             {"x": np.zeros(3)}, 3)
        assert info.value.code == Code.FAILED_PRECONDITION
    finally:
        scheduler.close()


# ---------------------------------------------------------------------------------------------
# through the server


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    serving_models.save_half_plus_two(str(root / "hpt" / "1"))
    params = root / "batching.txt"
    params.write_text(
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 100000 }\n"
        "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 1 }\n"
    )
    config = ServerConfig(models=[ModelConfig("hpt", str(root / "hpt"))], port=ANY_PORT, rest_api_port=ANY_PORT,
                          file_system_poll_wait_seconds=0, enable_batching=True,
                          batching_parameters_file=str(params))
    server = ModelServer(config).start(timeout=120)
    yield server
    server.stop()


def count_calls(server) -> int:
    status, body = post(server.rest_port, "/v1/models/hpt:predict", {"signature_name": "count", "inputs": [0.0]})
    assert status == 200, body
    return int(body["outputs"])


def test_concurrent_rest_predicts_are_batched_with_identical_results(batching_server):
    server = batching_server
    n = 8
    before = count_calls(server)  # `count` has a scalar output: it runs unbatched
    replies: list = [None] * n

    def one(i):
        replies[i] = post(server.rest_port, "/v1/models/hpt:predict", {"instances": [float(i), float(i) + 0.5]})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for i, (status, body) in enumerate(replies):
        assert status == 200, body
        assert body == {"predictions": [i / 2 + 2.0, (i + 0.5) / 2 + 2.0]}  # what unbatched gives
    calls = count_calls(server) - before
    assert 1 <= calls < n


def test_queue_full_is_503_over_rest(tmp_path):
    serving_models.save_half_plus_two(str(tmp_path / "hpt" / "1"))
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 4 }\nbatch_timeout_micros { value: 2000000 }\n"
                      "max_enqueued_batches { value: 1 }\nnum_batch_threads { value: 1 }\n")
    config = ServerConfig(models=[ModelConfig("hpt", str(tmp_path / "hpt"))], port=ANY_PORT, rest_api_port=ANY_PORT,
                          file_system_poll_wait_seconds=0, enable_batching=True,
                          batching_parameters_file=str(params), enable_model_warmup=False)
    server = ModelServer(config).start(timeout=120)
    try:
        first: dict = {}
        t = threading.Thread(target=lambda: first.update(
            r=post(server.rest_port, "/v1/models/hpt:predict", {"instances": [1.0, 2.0, 3.0]})))
        t.start()
        deadline = time.monotonic() + 20
        while not server.extras.scheduler._queues and time.monotonic() < deadline:
            time.sleep(0.01)
        status, body = post(server.rest_port, "/v1/models/hpt:predict", {"instances": [1.0, 2.0]})
        assert status == 503
        assert body == {"error": QUEUE_FULL_MESSAGE}
        status, body = post(server.rest_port, "/v1/models/hpt:predict", {"instances": [1.0] * 5})
        assert status == 400 and body["error"] == "Task size 5 is larger than maximum input batch size 4"
        t.join(timeout=30)
        assert first["r"] == (200, {"predictions": [2.5, 3.0, 3.5]})
    finally:
        server.stop()
