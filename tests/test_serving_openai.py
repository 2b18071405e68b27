"""``POST /v1/completions`` (OpenAI's legacy completions API) with the official ``openai`` client.

One tiny transformer_lm export served on loopback: the endpoint's text must be the ``generate``
signature's (greedy and seeded sampling, one prompt or a list), streaming must concatenate to
it and end with ``[DONE]``, ``stop`` must cut the text, ``usage`` must count real tokens, and
bad requests must come back as OpenAI errors the client raises.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import sys
import time

import openai
import pytest
import requests

import export
import zoo
from serving.client import RestClient
from serving.config import ANY_PORT, ModelConfig, ServerConfig
from serving.server import ModelServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import serving_models  # noqa: E402

MAX_NEW = 12
PROMPTS = ["ROMEO:", "JULIET: O"]


@pytest.fixture(scope="module")
def served(shakespeare_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("openai")
    run = zoo.train("transformer_lm", shakespeare_file, str(root / "run"), verbose=0, max_steps=6,
                    batch_size=4, seq_len=32, checkpoint_every=3, eval_batches=2)
    export.saved_model(run, str(root / "lm"), max_new_tokens=MAX_NEW, streaming=True)
    serving_models.save_strings(str(root / "strings" / "1"))
    cfg = ServerConfig(models=[ModelConfig("lm", str(root / "lm")), ModelConfig("strings", str(root / "strings"))],
                       port=ANY_PORT, rest_api_port=ANY_PORT, file_system_poll_wait_seconds=0)
    server = ModelServer(cfg).start(timeout=180)
    records = []
    server.app.observers.append(records.append)
    client = openai.OpenAI(base_url=server.rest_url + "/v1", api_key="unused", max_retries=0, timeout=60)
    try:
        yield server, client, RestClient(server.rest_url), records
    finally:
        client.close()
        server.stop()


def _token_counts(rest: RestClient, texts: list[str]) -> list[int]:
    out = rest.predict("lm", {"text": texts}, signature_name="tokenize")
    return [int(n) for n in out["num_tokens"]]


def test_greedy_completion_is_the_generate_signature(served):
    server, client, rest, records = served
    want = rest.generate("lm", PROMPTS[0], max_new_tokens=MAX_NEW)
    reply = client.completions.create(model="lm", prompt=PROMPTS[0], max_tokens=MAX_NEW, temperature=0)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-") and reply.model == "lm"
    assert len(reply.choices) == 1
    choice = reply.choices[0]
    assert (choice.text, choice.index, choice.logprobs) == (want, 0, None)
    tokens = reply.usage.completion_tokens
    assert 0 < tokens <= MAX_NEW
    assert choice.finish_reason == ("length" if tokens == MAX_NEW else "stop")
    assert reply.usage.prompt_tokens == _token_counts(rest, PROMPTS[:1])[0]
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + tokens
    # a version in the model name, and the default max_tokens (16, capped at the export's 12)
    again = client.completions.create(model="lm:1", prompt=PROMPTS[0], temperature=0)
    assert again.choices[0].text == want and again.model == "lm:1"
    shorter = client.completions.create(model="lm", prompt=PROMPTS[0], max_tokens=3, temperature=0)
    assert shorter.usage.completion_tokens == 3 and shorter.choices[0].finish_reason == "length"
    assert shorter.choices[0].text == rest.generate("lm", PROMPTS[0], max_new_tokens=3)
    assert [(r.api, r.model_name, r.http_status) for r in records if r.api == "completions"][-3:] == [
        ("completions", "lm", 200)] * 3


def test_a_list_of_prompts_gives_one_choice_each(served):
    _, client, rest, _ = served
    want = rest.generate("lm", PROMPTS, max_new_tokens=MAX_NEW)
    reply = client.completions.create(model="lm", prompt=PROMPTS, max_tokens=MAX_NEW, temperature=0)
    assert [(c.index, c.text) for c in reply.choices] == list(enumerate(want))
    assert reply.usage.prompt_tokens == sum(_token_counts(rest, PROMPTS))


def test_stream_pieces_concatenate_to_the_completion(served):
    server, client, rest, _ = served
    whole = client.completions.create(model="lm", prompt=PROMPTS[0], max_tokens=MAX_NEW, temperature=0)
    chunks = list(client.completions.create(model="lm", prompt=PROMPTS[0], max_tokens=MAX_NEW, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    with_choices = [c for c in chunks if c.choices]
    assert len(with_choices) >= 2  # pieces as they are decoded, not one block
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].object == "text_completion"
    assert "".join(c.choices[0].text for c in with_choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in with_choices[:-1]] == [None] * (len(with_choices) - 1)
    assert with_choices[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()
    # on the wire: text/event-stream, "data: {json}" events, "data: [DONE]" last
    body = {"model": "lm", "prompt": PROMPTS, "max_tokens": 4, "temperature": 0, "stream": True}
    with requests.post(server.rest_url + "/v1/completions", json=body, stream=True, timeout=60) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = [line for line in reply.iter_lines(decode_unicode=True) if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    docs = [json.loads(e[6:]) for e in events[:-1]]
    texts = ["".join(d["choices"][0]["text"] for d in docs if d["choices"][0]["index"] == i) for i in (0, 1)]
    assert texts == rest.generate("lm", PROMPTS, max_new_tokens=4)


def test_stop_cuts_the_text(served):
    _, client, rest, _ = served
    full = rest.generate("lm", PROMPTS[0], max_new_tokens=MAX_NEW)
    stop = full[2:4]  # a sequence the greedy continuation does contain
    want = full[:full.find(stop)]
    reply = client.completions.create(model="lm", prompt=PROMPTS[0], max_tokens=MAX_NEW, temperature=0,
                                      stop=[stop, "\x00never"])
    choice = reply.choices[0]
    assert (choice.text, choice.finish_reason) == (want, "stop")
    assert reply.usage.completion_tokens < MAX_NEW  # decoding stopped at the stop sequence
    chunks = list(client.completions.create(model="lm", prompt=PROMPTS[0], max_tokens=MAX_NEW, temperature=0,
                                            stop=stop, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == want
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_seeded_sampling_is_reproducible(served):
    _, client, rest, _ = served
    kwargs = dict(model="lm", prompt=PROMPTS[0], max_tokens=MAX_NEW, temperature=0.9, top_p=0.95, seed=7)
    first = client.completions.create(**kwargs).choices[0].text
    assert client.completions.create(**kwargs).choices[0].text == first
    assert first == rest.generate("lm", PROMPTS[0], max_new_tokens=MAX_NEW, temperature=0.9, top_p=0.95, seed=7)
    streamed = client.completions.create(**kwargs, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == first


@pytest.mark.parametrize("kwargs, param", [
    (dict(n=2), "n"),
    (dict(logprobs=2), "logprobs"),
    (dict(echo=True), "echo"),
    (dict(best_of=3), "best_of"),
    (dict(suffix="x"), "suffix"),
    (dict(extra_body={"mirostat": 1}), "mirostat"),
    (dict(top_p=0.0), "top_p"),
    (dict(seed=2**63), "seed"),
    (dict(extra_body={"top_k": -1}), "top_k"),
    (dict(temperature=-1), "temperature"),
    (dict(max_tokens=MAX_NEW + 1), "max_tokens"),
    (dict(stop=["a", "b", "c", "d", "e"]), "stop"),
    (dict(model="strings"), "model"),
])
def test_unsupported_or_bad_fields_are_400(served, kwargs, param):
    _, client, _, _ = served
    kwargs = {"model": "lm", "prompt": PROMPTS[0], **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(**kwargs)
    assert info.value.status_code == 400
    assert info.value.body["param"] == param and info.value.body["type"] == "invalid_request_error"
    assert param in info.value.body["message"] or param == "model"


def test_errors_in_openai_shape(served):
    server, client, _, _ = served
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="nope", prompt="x")
    assert (info.value.body["param"], info.value.body["code"]) == ("model", "model_not_found")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="lm:99", prompt="x")
    # NaN is not JSON the client would send: a raw body
    reply = requests.post(server.rest_url + "/v1/completions", timeout=60,
                          data='{"model": "lm", "prompt": "x", "temperature": NaN}')
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "temperature" and set(error) == {"message", "type", "param", "code"}
    reply = requests.post(server.rest_url + "/v1/completions", data=b"{not json", timeout=60)
    assert reply.status_code == 400 and reply.json()["error"]["type"] == "invalid_request_error"
    # the TF Serving routes are untouched: GET /v1/models is still TF Serving's 400
    reply = requests.get(server.rest_url + "/v1/models", timeout=60)
    assert (reply.status_code, reply.json()) == (400, {"error": "Missing model name in request."})
    # and the server still answers
    reply = client.completions.create(model="lm", prompt="x", max_tokens=1, temperature=0)
    assert reply.usage.completion_tokens <= 1


@contextlib.contextmanager
def _slow_model(server, delay: float):
    """Every signature call of the served "lm" takes ``delay`` seconds more; yields the calls made."""
    servable = server.manager.get_servable("lm")
    calls = []
    run = servable.run

    def slow_run(key, feeds):
        calls.append(key)
        time.sleep(delay)
        return run(key, feeds)

    servable.run = slow_run
    try:
        yield calls
    finally:
        del servable.run


def _wait_for_record(records, status: int) -> None:
    for _ in range(300):
        if any(r.api == "completions" and r.http_status == status for r in records):
            return
        time.sleep(0.1)
    raise AssertionError(f"no completions request recorded with status {status}")


def test_a_client_that_leaves_stops_the_decoding(served):
    server, _, _, records = served
    body = json.dumps({"model": "lm", "prompt": PROMPTS[0], "max_tokens": MAX_NEW, "temperature": 0,
                       "stream": True})
    with _slow_model(server, 0.2) as calls:
        conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
        conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        while not reply.readline().startswith(b"data: "):
            pass
        conn.close()  # gone after the first piece
        _wait_for_record(records, 499)
    assert calls.count("stream_step") < MAX_NEW - 1


def test_rest_api_timeout_applies(served):
    server, client, _, _ = served
    with _slow_model(server, 0.3):
        server.app.timeout_s, saved = 0.05, server.app.timeout_s
        try:
            with pytest.raises(openai.InternalServerError) as info:
                client.completions.create(model="lm", prompt=PROMPTS[0], max_tokens=2, temperature=0)
            assert info.value.status_code == 504 and "--rest_api_timeout_in_ms" in info.value.body["message"]
            with pytest.raises(openai.APIError):  # a 504, or an error event once the stream started
                list(client.completions.create(model="lm", prompt=PROMPTS[0], max_tokens=2, stream=True))
        finally:
            server.app.timeout_s = saved
