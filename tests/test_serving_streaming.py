"""``:generate_stream``: Server-Sent Events from the LM export's stream_start / stream_step signatures.

The streamed tokens must be ``generate``'s (greedy and seeded sampling), events must leave the
server as tokens are produced, and the text deltas must concatenate to the full continuation.
"""

from __future__ import annotations

import http.client
import json
import time

import pytest

import export
import zoo
from serving.config import ANY_PORT, ModelConfig, ServerConfig
from serving.server import ModelServer
from serving.streaming import TextDeltas

FAST = dict(verbose=0, max_steps=6, batch_size=4, seq_len=32, checkpoint_every=3, eval_batches=2)
MAX_NEW = 16


def stream(port: int, path: str, body: dict, timeout: float = 60):
    """POST and read SSE events as they arrive: (status, headers, [(time, event, data)])."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        headers = {k.lower(): v for k, v in reply.getheaders()}
        if not headers.get("content-type", "").startswith("text/event-stream"):
            return reply.status, headers, json.loads(reply.read())
        events, event, data = [], "message", []
        while True:
            line = reply.readline()
            if not line:
                break
            line = line.decode("utf-8").rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                events.append((time.monotonic(), event, json.loads("\n".join(data))))
                event, data = "message", []
        return reply.status, headers, events
    finally:
        conn.close()


def predict(port: int, path: str, body: dict):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=json.dumps(body))
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def generate(port: int, prompt: str, temperature=0.0, seed=0, max_new_tokens=MAX_NEW):
    status, body = predict(port, "/v1/models/lm:predict", {
        "signature_name": "generate",
        "inputs": {"prompt": [prompt], "max_new_tokens": [max_new_tokens], "temperature": [temperature],
                   "top_k": [0], "top_p": [1.0], "seed": [seed]},
    })
    assert status == 200, body
    out = body["outputs"]
    return out["text"][0], out["token_ids"][0][: out["num_tokens"][0]]


@pytest.fixture(scope="module")
def lm_server(shakespeare_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    run = zoo.train("transformer_lm", shakespeare_file, str(root / "run"), **FAST)
    export.saved_model(run, str(root / "lm"), max_new_tokens=MAX_NEW, streaming=True)
    config = ServerConfig(models=[ModelConfig("lm", str(root / "lm"))], port=ANY_PORT, rest_api_port=ANY_PORT,
                          file_system_poll_wait_seconds=0)
    server = ModelServer(config).start(timeout=120)
    yield server
    server.stop()


def test_text_deltas_hold_back_incomplete_characters():
    d = TextDeltas()
    assert d.update("ab") == "ab"
    assert d.update("ab\ufffd") == ""  # a multi-byte character not complete yet
    assert d.update("abé") == "é"
    assert d.update("abé") == ""
    assert d.finish("abé!") == "!"


@pytest.mark.parametrize("prompt", ["ROMEO:", "To be, or not " * 5])
def test_greedy_stream_equals_generate(lm_server, prompt):
    port = lm_server.rest_port
    status, headers, events = stream(port, "/v1/models/lm:generate_stream", {"prompt": prompt})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    tokens = [e for e in events if e[1] == "message"]
    done = [e for e in events if e[1] == "done"]
    assert len(done) == 1 and events[-1][1] == "done"
    text, ids = generate(port, prompt)
    assert [e[2]["token_id"] for e in tokens if "token_id" in e[2]] == ids
    assert "".join(e[2]["text"] for e in tokens) == text == done[0][2]["text"]
    assert done[0][2]["num_tokens"] == len(ids) == MAX_NEW


def test_sampled_stream_equals_generate_with_the_same_seed(lm_server):
    port = lm_server.rest_port
    body = {"prompt": "First Citizen:", "temperature": 0.9, "seed": 7, "max_new_tokens": 9, "top_k": 0,
            "top_p": 1.0}
    _, _, events = stream(port, "/v1/models/lm/versions/1:generate_stream", body)
    text, ids = generate(port, "First Citizen:", temperature=0.9, seed=7, max_new_tokens=9)
    assert [e[2]["token_id"] for e in events if e[1] == "message" and "token_id" in e[2]] == ids
    assert events[-1][2]["text"] == text


def test_events_arrive_as_tokens_are_produced(lm_server, monkeypatch):
    """Each step is slowed to 0.15 s: the first event must reach the client long before the last."""
    route = lm_server.extras.streaming
    real_prepare = route.prepare

    class Slow:
        def __init__(self, servable):
            self._servable = servable

        def __getattr__(self, name):
            return getattr(self._servable, name)

        def run(self, key, feeds):
            if key == "stream_step":
                time.sleep(0.15)
            return self._servable.run(key, feeds)

    def prepare(match, body):
        name, servable, request = real_prepare(match, body)
        return name, Slow(servable), request

    monkeypatch.setattr(route, "prepare", prepare)
    started = time.monotonic()
    _, _, events = stream(lm_server.rest_port, "/v1/models/lm:generate_stream",
                          {"prompt": "ROMEO:", "max_new_tokens": 8})
    token_times = [t for t, event, data in events if event == "message" and "token_id" in data]
    assert len(token_times) == 8
    assert token_times[-1] - token_times[0] > 0.8  # 7 slow steps between the first and the last
    assert token_times[0] - started < token_times[-1] - started - 0.8


def test_stream_errors(lm_server, tmp_path):
    port = lm_server.rest_port
    status, _, body = stream(port, "/v1/models/nope:generate_stream", {"prompt": "x"})
    assert status == 404 and body == {"error": "Servable not found for request: Latest(nope)"}
    status, _, body = stream(port, "/v1/models/lm:generate_stream", {"max_new_tokens": 3})
    assert status == 400 and "prompt" in body["error"]
    status, _, body = stream(port, "/v1/models/lm:generate_stream", {"prompt": "x", "seed": "a"})
    assert status == 400
    # zero tokens, and an empty prompt of a stream model: just the done event
    for body in ({"prompt": "ROMEO:", "max_new_tokens": 0}, {"prompt": ""}):
        status, _, events = stream(port, "/v1/models/lm:generate_stream", body)
        assert status == 200 and [e[1] for e in events] == ["done"] and events[0][2]["num_tokens"] == 0
