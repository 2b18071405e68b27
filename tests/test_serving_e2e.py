"""End to end: train -> export v1 -> serve -> generate over REST and gRPC -> export v2 under load
(traffic moves with zero failed requests) -> a corrupt v3 fails while v2 keeps serving."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time

import export
import zoo
from serving.config import ANY_PORT, ModelConfig, ServerConfig
from serving.server import ModelServer

FAST = dict(verbose=0, max_steps=6, batch_size=4, seq_len=32, checkpoint_every=3, eval_batches=2)
PROMPT = "ROMEO:"


def call(port: int, method: str, path: str, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body))
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def generate_body(prompt: str) -> dict:
    # TF Serving JSON, columnar: the generate signature's six inputs
    return {"signature_name": "generate", "inputs": {
        "prompt": [prompt], "max_new_tokens": [16], "temperature": [0.0], "top_k": [0], "top_p": [1.0],
        "seed": [0]}}


def states(port: int) -> dict[int, dict]:
    status, body = call(port, "GET", "/v1/models/lm")
    return {int(v["version"]): v for v in body.get("model_version_status", [])} if status == 200 else {}


def wait_for(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_train_export_serve_reload_and_survive_a_corrupt_version(shakespeare_file, tmp_path):
    run1 = zoo.train("transformer_lm", shakespeare_file, str(tmp_path / "run1"), **FAST)
    base = str(tmp_path / "lm")
    export.saved_model(run1, base, max_new_tokens=16, streaming=True)  # version 1
    config = ServerConfig(models=[ModelConfig("lm", base)], port=ANY_PORT, rest_api_port=ANY_PORT,
                          file_system_poll_wait_seconds=0.2, max_num_load_retries=0)
    server = ModelServer(config).start(timeout=120)
    try:
        port = server.rest_port
        status, body = call(port, "POST", "/v1/models/lm:predict", generate_body(PROMPT))
        assert status == 200, body
        v1_text = body["outputs"]["text"][0]
        assert body["outputs"]["num_tokens"] == [16] and len(body["outputs"]["token_ids"][0]) == 16

        if server.grpc_server is not None:  # the gRPC front end answers the same
            from serving.client import GrpcClient

            with GrpcClient(f"127.0.0.1:{server.grpc_port}") as client:
                out = client.predict("lm", generate_body(PROMPT)["inputs"], signature_name="generate")
            assert out["text"][0].decode("utf-8") == v1_text

        # a second run (another seed), exported as version 2 under a bounded load
        run2 = zoo.train("transformer_lm", shakespeare_file, str(tmp_path / "run2"), seed=1, **FAST)
        stop = threading.Event()
        results: list[tuple[float, str]] = []
        failures: list = []
        lock = threading.Lock()

        def load():
            deadline = time.monotonic() + 20
            while not stop.is_set() and time.monotonic() < deadline and len(results) < 2000:
                sent = time.monotonic()
                s, b = call(port, "POST", "/v1/models/lm:predict", generate_body(PROMPT))
                with lock:
                    if s == 200:
                        results.append((sent, b["outputs"]["text"][0]))
                    else:
                        failures.append((s, b))

        threads = [threading.Thread(target=load) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            export.saved_model(run2, base, max_new_tokens=16, streaming=True)  # version 2
            wait_for(lambda: states(port).get(2, {}).get("state") == "AVAILABLE"
                     and states(port).get(1, {}).get("state") == "END", timeout=60)
            status, body = call(port, "POST", "/v1/models/lm/versions/2:predict", generate_body(PROMPT))
            assert status == 200
            v2_text = body["outputs"]["text"][0]
            switched = time.monotonic()
            # some traffic sent after the switch (bounded by the load threads' own deadline)
            wait_for(lambda: sum(1 for t, _ in results if t > switched) >= 2
                     or not any(t.is_alive() for t in threads), timeout=30)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert failures == []
        assert len(results) > 0
        status, body = call(port, "POST", "/v1/models/lm:predict", generate_body(PROMPT))
        assert status == 200 and body["outputs"]["text"][0] == v2_text  # latest is version 2
        after = [text for sent, text in results if sent > switched]
        if not after:  # the load threads reached their 20 s bound first
            after = [call(port, "POST", "/v1/models/lm:predict", generate_body(PROMPT))[1]["outputs"]["text"][0]]
        assert after and all(text == v2_text for text in after)  # traffic moved to version 2

        # a corrupt version 3: version 2 keeps serving, status reports 3's failure
        os.makedirs(os.path.join(base, "3"))
        with open(os.path.join(base, "3", "saved_model.pb"), "wb") as f:
            f.write(b"\x00garbage, not a SavedModel\xff" * 10)
        wait_for(lambda: states(port).get(3, {}).get("state") == "END", timeout=30)
        v3 = states(port)[3]
        assert v3["status"]["error_code"] == "DATA_LOSS"
        assert "saved_model.pb" in v3["status"]["error_message"]
        assert states(port)[2]["state"] == "AVAILABLE"
        status, body = call(port, "POST", "/v1/models/lm:predict", generate_body(PROMPT))
        assert status == 200 and body["outputs"]["text"][0] == v2_text
    finally:
        server.stop()
