"""Conformance of ``serving`` with TensorFlow Serving's REST API and model lifecycle.

Every test names the TF Serving behaviour it mirrors: the item number of
serving/BEHAVIOUR.md and the TF Serving source or test it comes from (HRT =
model_servers/http_rest_api_handler_test.cc, JTT = util/json_tensor_test.cc, JT =
util/json_tensor.cc, HRU = model_servers/http_rest_api_util.cc, HS = model_servers/http_server.cc).

A real server runs on 127.0.0.1 (a free port picked by the OS) and is spoken to over HTTP.
"""

from __future__ import annotations

import dataclasses
import gzip
import http.client
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import serving_models  # noqa: E402

from serving.config import (  # noqa: E402
    ANY_PORT,
    ConfigError,
    ModelConfig,
    ServerConfig,
    VersionPolicy,
    parse_args,
    parse_model_server_config,
)
from serving.server import ModelServer, ServerStartupError, main  # noqa: E402
from serving.tensors import ROW, predict_response_json  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------
# HTTP client


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def error(self) -> str:
        return self.json()["error"]


def request(base_url: str, method: str, path: str, body=None, headers=None, timeout: float = 60) -> Reply:
    """One HTTP request with the path sent verbatim (no client-side normalisation)."""
    parts = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode("utf-8")
        elif isinstance(body, str):
            body = body.encode("utf-8")
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met within the time limit")


def version_states(url: str, name: str) -> dict[int, dict]:
    reply = request(url, "GET", f"/v1/models/{name}")
    if reply.status != 200:
        return {}
    return {int(v["version"]): v for v in reply.json()["model_version_status"]}


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, str]:
    return serving_models.build_store(str(tmp_path_factory.mktemp("store")))


def _install(store: dict[str, str], key: str, dest: str) -> str:
    shutil.copytree(store[key], dest)
    return dest


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    """One server for the request/response cases: a model_config_file with five models."""
    root = str(tmp_path_factory.mktemp("models"))
    _install(store, "hpt2", os.path.join(root, "half_plus_two", "1"))
    _install(store, "hpt3", os.path.join(root, "half_plus_two", "2"))
    _install(store, "two_input", os.path.join(root, "two_input", "1"))
    _install(store, "strings", os.path.join(root, "strings", "1"))
    _install(store, "classreg", os.path.join(root, "classreg", "1"))
    _install(store, "hpt2", os.path.join(root, "warm", "1"))
    serving_models.write_warmup(os.path.join(root, "warm", "1"), records=3)
    config_text = f"""
model_config_list {{
  config {{
    name: "half_plus_two"
    base_path: "{root}/half_plus_two"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
    version_labels {{ key: "future" value: 7 }}
  }}
  config {{ name: "two_input" base_path: "{root}/two_input" model_platform: "tensorflow" }}
  config {{ name: "strings" base_path: "{root}/strings" model_platform: "tensorflow" }}
  config {{ name: "classreg" base_path: "{root}/classreg" model_platform: "tensorflow" }}
  config {{ name: "warm" base_path: "{root}/warm" model_platform: "tensorflow" }}
}}
"""
    config_path = os.path.join(root, "models.config")
    with open(config_path, "w") as f:
        f.write(config_text)
    cfg = parse_args(
        [
            "--model_config_file", config_path,
            "--rest_api_port=-1",
            "--port", "-1",
            "--file_system_poll_wait_seconds", "0.5",
            "--max_num_load_retries", "0",
        ]
    )
    srv = ModelServer(cfg).start(timeout=180)
    yield srv
    srv.stop()


@pytest.fixture
def url(server) -> str:
    return server.rest_url


def predict(url: str, body, path: str = "/v1/models/half_plus_two/versions/1:predict") -> Reply:
    return request(url, "POST", path, body)


# ---------------------------------------------------------------------------------------------
# routing (items 1-6)


def test_unknown_v1_path_is_malformed(url):
    """HRT UnsupportedApiCalls, doc item 1: GET /v1/foo -> 400 "Malformed request: GET /v1/foo"."""
    reply = request(url, "GET", "/v1/foo")
    assert reply.status == 400
    assert reply.error == "Malformed request: GET /v1/foo"


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/v1/models"),
        ("POST", "/v1/models/foo/metadata"),
        ("GET", "/v1/models/foo:predict"),
        ("POST", "/v1/models/foo/version/50:regress"),
        ("POST", "/v1/models/foo/versions/HELLO:regress"),
        ("POST", "/v1/models/foo/label/x:regress"),
        ("POST", "/v1/models/foo/versions/50/labels/x:regress"),
        ("PUT", "/v1/models/foo"),
    ],
)
def test_malformed_requests(url, method, path):
    """HRT UnsupportedApiCalls, doc item 2: unsupported method/path pairs -> 400 "Malformed request"."""
    reply = request(url, method, path, body=b"{}")
    assert reply.status == 400
    assert reply.error == f"Malformed request: {method} {path}"


def test_missing_model_name(url):
    """HRT UnsupportedApiCalls, doc item 3: GET /v1/models -> 400 "Missing model name in request."."""
    reply = request(url, "GET", "/v1/models")
    assert (reply.status, reply.error) == (400, "Missing model name in request.")


def test_version_that_overflows_int64(url):
    """HRT UnsupportedApiCalls, doc item 4: version 2^64-1 -> 400 "Failed to convert version"."""
    reply = request(url, "POST", "/v1/models/foo/versions/18446744073709551615:regress", body=b"{}")
    assert reply.status == 400
    assert reply.error == "Failed to convert version: 18446744073709551615 to numeric."


def test_unknown_model_latest_and_specific(url):
    """HRT PredictModelNameVersionErrors, doc item 5: 404 "Servable not found for request: ..."."""
    reply = request(url, "POST", "/v1/models/foo:predict", {"instances": [1]})
    assert (reply.status, reply.error) == (404, "Servable not found for request: Latest(foo)")
    reply = request(url, "POST", "/v1/models/foo/versions/50:predict", {"instances": [1]})
    assert (reply.status, reply.error) == (404, "Servable not found for request: Specific(foo, 50)")
    reply = request(url, "POST", "/v1/models/half_plus_two/versions/3:predict", {"instances": [1]})
    assert (reply.status, reply.error) == (404, "Servable not found for request: Specific(half_plus_two, 3)")


def test_unknown_label(url):
    """HRT PredictRequestErrors / SC GetModelVersionForLabel, doc item 6: 400 "Unrecognized ... label"."""
    reply = request(url, "POST", "/v1/models/half_plus_two/labels/nope:predict", {"inputs": [1.0]})
    assert (reply.status, reply.error) == (400, "Unrecognized servable version label: nope")


def test_routes_are_case_insensitive_and_url_decoded(url):
    """HRU kPredictionApiRegex (?i) + DecodeArg, doc "Routing": /V1/MODELS/%68alf... reaches half_plus_two."""
    reply = request(url, "POST", "/V1/Models/%68alf_plus_two/VERSIONS/1:predict", {"inputs": [1.0]})
    assert reply.status == 200, reply.body
    assert reply.json() == {"outputs": [2.5]}
    reply = request(url, "POST", "/v1/models/half_plus_two/labels/st%61ble:predict", {"inputs": [1.0]})
    assert reply.json() == {"outputs": [2.5]}


def test_bad_json_to_unknown_model_is_400(url):
    """JT FillPredictRequestFromJson check order, doc "Check order": JSON parse errors win over 404."""
    reply = request(url, "POST", "/v1/models/foo:predict", b"nonsense")
    assert reply.status == 400
    assert reply.error.startswith("JSON Parse error: Invalid value.")


def test_non_v1_paths_get_plain_404(url):
    """HS Dispatch, doc "Routing": paths outside (?i)/v1/.* get a non-JSON 404."""
    for path in ("/", "/v2/models/half_plus_two", "/models/half_plus_two"):
        reply = request(url, "GET", path)
        assert reply.status == 404
        assert "json" not in reply.headers.get("content-type", "")
        with pytest.raises(ValueError):
            json.loads(reply.body)


def test_path_traversal_in_model_name(url):
    """Security (our rule): a name is a dictionary key, never a path: ..%2F.. -> 404, '..' segments -> 400."""
    reply = request(url, "GET", "/v1/models/..%2F..%2F..%2Fetc%2Fpasswd")
    assert (reply.status, reply.error) == (404, "Could not find any versions of model ../../../etc/passwd")
    reply = request(url, "POST", "/v1/models/..%2Fhalf_plus_two:predict", {"inputs": [1.0]})
    assert (reply.status, reply.error) == (404, "Servable not found for request: Latest(../half_plus_two)")
    reply = request(url, "GET", "/v1/models/../../etc/passwd")
    assert reply.status == 400 and reply.error.startswith("Malformed request")
    reply = request(url, "GET", "/v1/models/%2Fetc%2Fpasswd/metadata")
    assert reply.status == 404


# ---------------------------------------------------------------------------------------------
# request JSON (items 7-20, 23, 24)


def test_empty_body(url):
    """HRT PredictRequestErrors, doc item 7: empty body -> 400 "JSON Parse error: The document is empty"."""
    reply = predict(url, b"")
    assert (reply.status, reply.error) == (400, "JSON Parse error: The document is empty")


def test_invalid_json(url):
    """HRT PredictRequestErrors, doc item 8: `instances = [1, 2]` -> 400 "JSON Parse error: Invalid value"."""
    reply = predict(url, b"instances = [1, 2]")
    assert reply.status == 400
    assert reply.error.startswith("JSON Parse error: Invalid value")


def test_top_level_array(url):
    """JT ParseJson, doc item 9: a top-level array -> 400 "... Is not object"."""
    reply = predict(url, b"[1, 2]")
    assert reply.status == 400
    assert reply.error.endswith("Is not object")


def test_signature_name_not_a_string(url):
    """HRT PredictRequestErrors, doc item 10: {"signature_name":100} -> 400."""
    reply = predict(url, {"signature_name": 100, "inputs": [1.0]})
    assert reply.status == 400
    assert reply.error.endswith("'signature_name' key must be a string value.")


def test_unknown_signature(url):
    """HRH GetInfoMap, doc item 11: unknown signature -> 400 'Serving signature name: "foo" not found'."""
    reply = predict(url, {"signature_name": "foo", "inputs": [1.0]})
    assert (reply.status, reply.error) == (400, 'Serving signature name: "foo" not found in signature def')


def test_both_instances_and_inputs(url):
    """JTT SingleUnnamedTensorErrors, doc item 12: both keys -> 400."""
    reply = predict(url, {"instances": [1.0], "inputs": [1.0]})
    assert reply.status == 400
    assert "expecting only one of 'inputs' or 'instances' keys to exist" in reply.error


def test_neither_instances_nor_inputs(url):
    """JT FillPredictRequestFromJson, doc item 13: neither key -> 400 "Missing 'inputs' or 'instances' key"."""
    reply = predict(url, {"signature_name": ""})
    assert (reply.status, reply.error) == (400, "Missing 'inputs' or 'instances' key")


def test_instances_not_a_list_or_empty(url):
    """JT FillPredictRequestFromJson, doc item 14: "instances":5 and "instances":[] -> 400."""
    reply = predict(url, {"instances": 5})
    assert reply.status == 400 and reply.error.endswith("to be an list/array")
    reply = predict(url, {"instances": []})
    assert reply.status == 400 and reply.error.endswith("No values in 'instances' array")


def test_dtype_rules(url):
    """HRT PredictRequestErrors + JTT MixedInputForFloatTensor, doc item 15: type checks per dtype."""
    reply = predict(url, {"instances": ["x", "y"]})
    assert reply.status == 400
    assert reply.error.startswith("Failed to process element: 0 of 'instances' list. Error: ")
    assert "not of expected type: float" in reply.error
    two = "/v1/models/two_input:predict"
    reply = predict(url, {"inputs": {"a": [[1.0, 2.0]], "b": [1.0]}}, two)  # int64 rejects 1.0
    assert reply.status == 400
    assert reply.error == "JSON Value: 1.0 Type: Number is not of expected type: int64"
    reply = predict(url, {"inputs": {"a": [[1, 2]], "b": [3]}}, two)  # float accepts ints
    assert reply.status == 200, reply.body
    assert reply.json()["outputs"]["sum"] == [6.0]
    typed = "/v1/models/strings:predict"
    reply = predict(url, {"signature_name": "typed", "inputs": {"i32": [1], "f64": [0.5], "flag": [1]}}, typed)
    assert reply.status == 400 and "is not of expected type: bool" in reply.error
    reply = predict(url, {"signature_name": "typed", "inputs": {"i32": [1], "f64": [0.5], "flag": [True]}}, typed)
    assert reply.json()["outputs"] == {"i32": [1], "f64": [0.5], "flag": [False]}
    reply = predict(url, {"signature_name": "typed", "inputs": {"i32": [2**31], "f64": [0.5], "flag": [True]}}, typed)
    assert reply.status == 400 and "is not of expected type: int32" in reply.error
    reply = predict(url, {"inputs": [16777217]})  # 2^24 + 1 does not fit a float exactly
    assert reply.status == 400
    assert reply.error == "Cannot convert JSON value: 16777217 to float without loss of precision."


def test_ragged_instances(url):
    """JTT SingleUnnamedTensorErrors, doc item 16: ragged rows -> "Expecting tensor size" / "Expecting shape"."""
    reply = predict(url, {"signature_name": "matrix", "instances": [[1, 2], [3, 4], [5, 6, 7]]})
    assert reply.status == 400
    assert "Expecting tensor size: 2 but got: 3" in reply.error
    reply = predict(url, {"instances": [1, [1]]})
    assert reply.status == 400
    assert "Expecting shape [] but got: [1]" in reply.error
    reply = predict(url, {"signature_name": "matrix", "inputs": [[1, 2], [3]]})
    assert reply.status == 400
    assert reply.error == "Encountered list at unexpected size: 1 at level: 1 expected size: 2"


def test_multi_input_signature_given_a_plain_list(url):
    """JT FillTensorMapFromInstancesList/InputsMap, doc item 17: plain list for two inputs -> 400."""
    two = "/v1/models/two_input:predict"
    reply = predict(url, {"instances": [1.0, 2.0]}, two)
    assert reply.status == 400
    assert reply.error.startswith("instances is a plain list, but expecting list of objects")
    reply = predict(url, {"inputs": [1.0, 2.0]}, two)
    assert reply.status == 400
    assert reply.error.startswith("inputs is a plain value/list, but expecting an object")


def test_row_format_object_errors(url):
    """JTT MultipleNamedTensorErrors, doc item 18: mixed objects/lists, missing key, extra key."""
    two = "/v1/models/two_input:predict"
    reply = predict(url, {"instances": [{"a": [1, 2], "b": 1}, [1, 2]]}, two)
    assert (reply.status, reply.error) == (400, "Expecting object but got list at item 1 of input list")
    reply = predict(url, {"instances": [{"a": [1, 2]}]}, two)
    assert reply.status == 400
    assert reply.error.startswith("Failed to process element: 0 of 'instances' list. JSON object: ")
    assert reply.error.endswith("keys must be equal to: a,b")
    reply = predict(url, {"instances": [{"a": [1, 2], "b": 1, "k": 1}]}, two)
    assert reply.status == 400
    assert reply.error.startswith("Failed to process element: 0 key: k of 'instances' list.")
    assert reply.error.endswith("does not have named input: k")


def test_columnar_named_inputs(url):
    """JT FillTensorMapFromInputsMap, doc item 19: a missing name -> 400; extra keys are ignored."""
    two = "/v1/models/two_input:predict"
    reply = predict(url, {"inputs": {"a": [[1, 2]]}}, two)
    assert (reply.status, reply.error) == (400, "Missing named input: b in 'inputs' object.")
    reply = predict(url, {"inputs": {"a": [[1, 2]], "b": [1], "zzz": 5}}, two)
    assert reply.status == 200, reply.body


def test_base64_strings(url):
    """JTT SingleUnnamedTensorBase64Scalars, doc item 20: {"b64": "aGVsbG8="} is "hello"; bad b64 -> 400."""
    path = "/v1/models/strings:predict"
    reply = predict(url, {"instances": [{"b64": "aGVsbG8="}, "wörld"]}, path)
    assert reply.status == 200, reply.body
    assert reply.json() == {"predictions": [{"lengths": 5, "upper": "HELLO"}, {"lengths": 6, "upper": "WöRLD"}]}
    reply = predict(url, {"inputs": {"b64": "aGk"}}, path)  # a scalar, padding optional
    assert reply.json() == {"outputs": {"lengths": 2, "upper": "HI"}}
    reply = predict(url, {"instances": [{"b64": "!!!"}]}, path)
    assert reply.status == 400 and "Unable to base64 decode" in reply.error


def test_deeply_nested_json(url):
    """JTT DeeplyNested* + CVE-2025-0649, doc item 23: 500k levels under an unused key are accepted;
    50k levels in instances or signature_name are a 400 (TF Serving itself crashes on the former)."""
    deep = "[" * 500_000 + "]" * 500_000
    reply = predict(url, '{"unused": ' + deep + ', "inputs": [1.0]}')
    assert reply.status == 200, reply.body[:200]
    assert reply.json() == {"outputs": [2.5]}
    deep = "[" * 50_000 + "1.0" + "]" * 50_000
    reply = predict(url, '{"instances": ' + deep + "}")
    assert reply.status == 400
    reply = predict(url, '{"signature_name": ' + deep + ', "inputs": [1.0]}')
    assert reply.status == 400
    assert reply.error.endswith("'signature_name' key must be a string value.")
    assert request(url, "GET", "/v1/models/half_plus_two").status == 200  # still serving


def test_bytes_after_the_root_object_are_ignored(url):
    """JT ParseJson (kParseStopWhenDoneFlag, inferred), doc item 24: trailing bytes are ignored."""
    reply = predict(url, b'{"inputs": [1.0]} trailing garbage ]]')
    assert reply.status == 200, reply.body
    assert reply.json() == {"outputs": [2.5]}


# ---------------------------------------------------------------------------------------------
# responses (items 21, 22, rules everywhere)


def test_predict_row_and_columnar(url):
    """HRT Predict, doc item 21: half_plus_two rows -> predictions, columns -> outputs."""
    reply = predict(url, {"signature_name": "matrix", "instances": [[1.0, 2.0], [3.0, 4.0]]})
    assert reply.status == 200
    assert reply.json() == {"predictions": [[2.5, 3.0], [3.5, 4.0]]}
    reply = predict(url, {"inputs": [3.0, 4.0]})
    assert reply.json() == {"outputs": [3.5, 4.0]}
    reply = predict(url, {"instances": [{"x": 1.0}, {"x": 3.0}]})  # named single input
    assert reply.json() == {"predictions": [2.5, 3.5]}


def test_multiple_outputs(url):
    """JTT FromJsonMultipleNamedTensors + FromJsonSingleBytesTensor, doc items 21-22: one object per
    row (row format) or one object keyed by output (columnar); *_bytes strings written as b64."""
    two = "/v1/models/two_input:predict"
    reply = predict(url, {"instances": [{"a": [1.0, 2.0], "b": 7}, {"a": [0.5, 0.5], "b": 1}]}, two)
    assert reply.status == 200, reply.body
    assert reply.json() == {
        "predictions": [
            {"label": "n7", "name_bytes": {"b64": "Nw=="}, "sum": 10.0},
            {"label": "n1", "name_bytes": {"b64": "MQ=="}, "sum": 2.0},
        ]
    }
    reply = predict(url, {"inputs": {"a": [[1.0, 2.0]], "b": [7]}}, two)
    assert reply.json() == {"outputs": {"label": ["n7"], "name_bytes": [{"b64": "Nw=="}], "sum": [10.0]}}


def test_non_finite_and_whole_floats(url):
    """JTT ...NonFinite, doc item 22: NaN/Infinity accepted and written as bare tokens; 3.0 keeps ".0"."""
    reply = predict(url, b'{"inputs": [NaN, Infinity, -Infinity, 2.0, 0.2]}')
    assert reply.status == 200
    assert b"[NaN, Infinity, -Infinity, 3.0, 2.1]" in reply.body


def test_scalar_and_inconsistent_outputs_need_columnar(url):
    """JTT FromJsonSingleTensorErrors/MultipleNamedTensorsErrors, doc item 22: a scalar output or
    outputs with different batch sizes fail in row format (400) and work in columnar format."""
    path = "/v1/models/warm:predict"
    reply = predict(url, {"signature_name": "count", "instances": [1.0]}, path)
    assert (reply.status, reply.error) == (400, "Tensor name: count has no shape information ")
    reply = predict(url, {"signature_name": "mismatch", "instances": [1.0, 2.0]})
    assert reply.status == 400
    assert reply.error == "Tensor name: first has inconsistent batch size: 1 expecting: 2"
    reply = predict(url, {"signature_name": "mismatch", "inputs": [1.0, 2.0]})
    assert reply.json() == {"outputs": {"all": [1.0, 2.0], "first": [1.0]}}


def test_zero_batch(url):
    """JT MakeJsonFromTensors, doc item 22: a zero-batch output is [] in either format."""
    reply = predict(url, {"inputs": []})
    assert (reply.status, reply.json()) == (200, {"outputs": []})
    text = predict_response_json({"y": np.zeros([0], np.float32)}, ROW)
    assert json.loads(text) == {"predictions": []}


def test_error_body_and_content_type(url):
    """JT MakeJsonFromStatus + HRU AddHeaders, doc "Rules": pretty {"error": ...} and application/json."""
    reply = predict(url, b"")
    assert reply.headers["content-type"] == "application/json"
    assert reply.body.startswith(b'{\n    "error": ')
    reply = predict(url, {"inputs": [1.0]})
    assert reply.headers["content-type"] == "application/json"


def test_request_size_limit_and_gzip(server, url):
    """Security section (our limit) + gzip_zlib.h: bodies over --max_request_bytes -> 400 (also after
    gzip decoding); a gzip body within the limit is served."""
    body = json.dumps({"inputs": [1.0] * 50}).encode()
    reply = predict(url, gzip.compress(body), "/v1/models/half_plus_two/versions/1:predict")
    assert reply.status == 400  # no Content-Encoding header: gzip bytes are not JSON
    reply = request(url, "POST", "/v1/models/half_plus_two/versions/1:predict", gzip.compress(body),
                    headers={"Content-Encoding": "gzip"})
    assert reply.status == 200 and reply.json() == {"outputs": [2.5] * 50}
    old = server.app.max_request_bytes
    server.app.max_request_bytes = 100
    try:
        reply = predict(url, body)
        assert reply.status == 400 and "--max_request_bytes" in reply.error
        bomb = gzip.compress(b'{"inputs": [1.0]' + b" " * 10_000 + b"}")
        reply = request(url, "POST", "/v1/models/half_plus_two:predict", bomb, headers={"Content-Encoding": "gzip"})
        assert reply.status == 400 and "--max_request_bytes" in reply.error
    finally:
        server.app.max_request_bytes = old


def test_timeout_is_504(server, url):
    """HS ToHTTPStatusCode DEADLINE_EXCEEDED, doc item 30: past --rest_api_timeout_in_ms -> 504."""
    old = server.app.timeout_s
    server.app.timeout_s = 0.02
    try:
        reply = predict(url, {"signature_name": "spin", "inputs": 200_000}, "/v1/models/half_plus_two:predict")
    finally:
        server.app.timeout_s = old
    assert reply.status == 504
    assert "--rest_api_timeout_in_ms" in reply.error


def test_options_and_cors(url):
    """HS + HRU AddCORSHeaders, doc item 29: OPTIONS with an http(s) Origin -> 200 empty, else 400 empty."""
    reply = request(url, "OPTIONS", "/v1/models/half_plus_two:predict", headers={"Origin": "http://localhost:3000"})
    assert (reply.status, reply.body) == (200, b"")
    reply = request(url, "OPTIONS", "/v1/models/half_plus_two:predict")
    assert (reply.status, reply.body) == (400, b"")
    reply = request(url, "OPTIONS", "/v1/models/half_plus_two", headers={"Origin": "file://x"})
    assert (reply.status, reply.body) == (400, b"")
    assert "access-control-allow-origin" not in reply.headers


def test_cors_headers_when_enabled(server, url):
    """HRU AddCORSHeaders, doc item 29: --rest_api_enable_cors_support adds Access-Control-* headers."""
    server.app.enable_cors = True
    try:
        reply = request(url, "OPTIONS", "/v1/models/half_plus_two:predict", headers={"Origin": "https://a.example"})
        assert reply.status == 200
        assert reply.headers["access-control-allow-origin"] == "*"
        assert reply.headers["access-control-allow-methods"] == "POST, GET"
        reply = predict(url, {"inputs": [1.0]})
        assert reply.headers["access-control-allow-headers"] == "Content-Type"
    finally:
        server.app.enable_cors = False


# ---------------------------------------------------------------------------------------------
# status, metadata, labels (items 25, 26, G9)


def test_model_status(url):
    """HRT GetStatus + get_model_status_impl.cc, doc item 25: status JSON, unknown model/version 404."""
    reply = request(url, "GET", "/v1/models/half_plus_two")
    assert reply.status == 200
    assert reply.json() == {
        "model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        ]
    }
    reply = request(url, "GET", "/v1/models/half_plus_two/versions/1")
    assert [v["version"] for v in reply.json()["model_version_status"]] == ["1"]
    reply = request(url, "GET", "/v1/models/nope")
    assert (reply.status, reply.error) == (404, "Could not find any versions of model nope")
    reply = request(url, "GET", "/v1/models/half_plus_two/versions/7")
    assert (reply.status, reply.error) == (404, "Could not find version 7 of model half_plus_two")
    # Quirk (read from code): /labels/L lists every version, even for an unknown label.
    for label in ("stable", "nope"):
        reply = request(url, "GET", f"/v1/models/half_plus_two/labels/{label}")
        assert len(reply.json()["model_version_status"]) == 2


def test_model_metadata(url):
    """HRU ToJsonString + testdata/..._metadata.json, doc item 26: signature_def JSON, int64 as strings."""
    reply = request(url, "GET", "/v1/models/half_plus_two/versions/1/metadata")
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert doc["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "1"}
    sigs = doc["metadata"]["signature_def"]["signature_def"]
    default = sigs["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    x = default["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT"
    assert x["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}
    assert default["outputs"]["y"]["dtype"] == "DT_FLOAT"
    assert {"matrix", "count", "spin", "mismatch"} <= set(sigs)
    reply = request(url, "GET", "/v1/models/half_plus_two/labels/canary/metadata")
    assert reply.json()["model_spec"]["version"] == "2"
    reply = request(url, "GET", "/v1/models/half_plus_two/metadata")
    assert reply.json()["model_spec"]["version"] == "2"
    reply = request(url, "GET", "/v1/models/nope/metadata")
    assert (reply.status, reply.error) == (404, "Servable not found for request: Latest(nope)")


def test_version_labels_and_specific_policy(url):
    """SC GetModelVersionForLabel + server_core_test AssignLabelToUnavailableVersion, doc item 6 and G9:
    labels pick versions of a specific{1,2} policy; a label on an unavailable version -> 400."""
    stable = predict(url, {"inputs": [1.0]}, "/v1/models/half_plus_two/labels/stable:predict")
    canary = predict(url, {"inputs": [1.0]}, "/v1/models/half_plus_two/labels/canary:predict")
    latest = predict(url, {"inputs": [1.0]}, "/v1/models/half_plus_two:predict")
    assert stable.json() == {"outputs": [2.5]}  # version 1: x/2 + 2
    assert canary.json() == {"outputs": [3.5]}  # version 2: x/2 + 3
    assert latest.json() == canary.json()
    reply = predict(url, {"inputs": [1.0]}, "/v1/models/half_plus_two/labels/future:predict")
    assert reply.status == 400
    assert reply.error.endswith("which is not currently available for inference")


def test_warmup_requests_are_replayed(url):
    """saved_model_warmup_util.cc RunSavedModelWarmup: the 3 PredictionLog records ran before AVAILABLE."""
    reply = predict(url, {"signature_name": "count", "inputs": [0.0]}, "/v1/models/warm:predict")
    assert reply.status == 200, reply.body
    assert reply.json() == {"outputs": 3}


def test_shared_predict_function_errors(server):
    """PU RunPredict / PUT InputTensorsDontMatchModelSpecInputs, doc G4-G7: the errors the shared
    predict() gives every front end (REST checks the signature first and says 400 instead)."""
    from serving import Code, ServingError
    from serving import predict as run_predict

    servable = server.manager.get_servable("half_plus_two", version=1)
    x = np.array([1.0, 3.0], np.float32)
    assert run_predict(servable, "", {"x": x})["y"].tolist() == [2.5, 3.5]
    cases = [
        (("foo", {"x": x}), Code.FAILED_PRECONDITION, 'Serving signature key "foo" not found.'),
        (("", {"z": x}), Code.INVALID_ARGUMENT,
         "input size does not match signature: 1!=1 len({z}) != len({x}). Sent extra: {z}. Missing but required: {x}."),
        (("", {"x": np.array([b"a"], object)}), Code.INVALID_ARGUMENT, "Expects arg[0] to be float but string is provided"),
        (("", {"x": x}, ["nope"]), Code.INVALID_ARGUMENT,
         "output tensor alias not found in signature: nope Outputs expected to be in the set {y}."),
        (("", {"x": x}, ["y", "y"]), Code.INVALID_ARGUMENT, "duplicate output tensor alias: y"),
    ]
    for args, code, message in cases:
        with pytest.raises(ServingError) as info:
            run_predict(servable, *args)
        assert (info.value.code, info.value.message) == (code, message)


# ---------------------------------------------------------------------------------------------
# classify / regress (items 27, 28)


def test_regress_and_classify(url):
    """HRT Regress/Classify, doc item 27: {"x":80.0} -> results [42]; classify -> [[["", 12]]]."""
    reply = request(url, "POST", "/v1/models/classreg:regress",
                    {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]})
    assert reply.status == 200, reply.body
    assert reply.json() == {"results": [42.0]}
    reply = request(url, "POST", "/v1/models/classreg:classify",
                    {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}], "context": {"y": 1}})
    assert reply.status == 200, reply.body
    assert reply.json() == {"results": [[["", 12.0]]]}


def test_classify_regress_errors(url):
    """JTT ClassifyRegressRequestTest.JsonErrors + regressor.cc, doc item 28."""
    path = "/v1/models/classreg:regress"
    reply = request(url, "POST", path, {"signature_name": "regress_x_to_y"})
    assert reply.status == 400
    assert "When method is classify, key 'examples' is expected and was not found" in reply.error
    reply = request(url, "POST", path, {"signature_name": "regress_x_to_y", "examples": []})
    assert reply.status == 400 and reply.error.endswith("'examples' value is an empty array")
    reply = request(url, "POST", path, {"signature_name": "regress_x_to_y", "examples": [{"x": None}]})
    assert reply.status == 400 and reply.error.endswith("unexpected JSON type: Null")
    reply = request(url, "POST", path, {"signature_name": "regress_x_to_y", "examples": [{"x": 2**64 - 1}]})
    assert reply.status == 400 and "Only int64_t is supported" in reply.error
    reply = request(url, "POST", path, {"examples": [{"x": 1.0}]})  # serving_default is a predict one
    assert reply.status == 400
    assert reply.error == (
        "Expected regression signature method_name to be tensorflow/serving/regress. "
        "Was: tensorflow/serving/predict"
    )
    reply = request(url, "POST", "/v1/models/classreg:classify", {"signature_name": "regress_x_to_y",
                                                                  "examples": [{"x": 1.0}]})
    assert reply.status == 400 and reply.error.startswith("Expected classification signature method_name")


# ---------------------------------------------------------------------------------------------
# lifecycle (doc "Lifecycle")


def _lifecycle_server(base: str, **overrides) -> ModelServer:
    cfg = ServerConfig(port=ANY_PORT,
        models=[ModelConfig(name="m", base_path=base)],
        rest_api_port=ANY_PORT,
        file_system_poll_wait_seconds=0.1,
        max_num_load_retries=0,
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return ModelServer(cfg).start(timeout=120)


def test_new_version_loads_without_restart_and_old_unloads_after(store, tmp_path):
    """FileSystemStoragePathSource + AvailabilityPreservingPolicy (server.cc), doc "Lifecycle": a
    temp-named directory is ignored; version 2 becomes available while serving; latest{1} unloads
    version 1 only after 2 is AVAILABLE, so requests never fail during the switch."""
    base = str(tmp_path / "m")
    _install(store, "hpt2", os.path.join(base, "1"))
    srv = _lifecycle_server(base)
    events: list[tuple[int, str]] = []
    srv.manager.add_listener(lambda name, version, state, error: events.append((version, state.value)))
    try:
        url = srv.rest_url
        _install(store, "hpt3", os.path.join(base, "2.tmp"))  # a half-written copy, still temp-named
        time.sleep(0.6)
        assert set(version_states(url, "m")) == {1}
        failures: list[int] = []
        answers: set[float] = set()
        stop = threading.Event()

        def hammer() -> None:
            deadline = time.monotonic() + 60
            for _ in range(2000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                reply = predict(url, {"inputs": [1.0]}, "/v1/models/m:predict")
                if reply.status != 200:
                    failures.append(reply.status)
                else:
                    answers.add(reply.json()["outputs"][0])
                time.sleep(0.005)

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            os.rename(os.path.join(base, "2.tmp"), os.path.join(base, "2"))
            states = wait_for(lambda: (s := version_states(url, "m")) and s.get(1, {}).get("state") == "END" and s)
        finally:
            time.sleep(0.2)
            stop.set()
            thread.join(timeout=30)
        assert states[2]["state"] == "AVAILABLE"
        assert states[1]["status"] == {"error_code": "OK", "error_message": ""}
        assert failures == []
        assert 3.5 in answers
        assert predict(url, {"inputs": [1.0]}, "/v1/models/m:predict").json() == {"outputs": [3.5]}
        assert events.index((2, "AVAILABLE")) < events.index((1, "UNLOADING"))
    finally:
        srv.stop()


def test_corrupt_version_ends_in_error_and_previous_keeps_serving(store, tmp_path):
    """availability_preserving_policy_test DoesNotUnloadWhenOtherInError + RetryOnLoadErrorFinallyFails,
    doc "Lifecycle": a garbage saved_model.pb -> state END with the error; version 1 keeps answering."""
    base = str(tmp_path / "m")
    _install(store, "hpt2", os.path.join(base, "1"))
    srv = _lifecycle_server(base)
    try:
        url = srv.rest_url
        os.makedirs(os.path.join(base, "2"))
        with open(os.path.join(base, "2", "saved_model.pb"), "wb") as f:
            f.write(b"\x08\xff\xff garbage, not a SavedModel \x00\x01")
        states = wait_for(lambda: (s := version_states(url, "m")) and s.get(2, {}).get("state") == "END" and s)
        assert states[2]["status"]["error_code"] == "DATA_LOSS"
        assert "Can't parse" in states[2]["status"]["error_message"]
        assert states[1]["state"] == "AVAILABLE"
        assert predict(url, {"inputs": [1.0]}, "/v1/models/m:predict").json() == {"outputs": [2.5]}
        reply = predict(url, {"inputs": [1.0]}, "/v1/models/m/versions/2:predict")
        assert (reply.status, reply.error) == (404, "Servable not found for request: Specific(m, 2)")
    finally:
        srv.stop()


def test_symlinks_escaping_the_base_path_are_refused(store, tmp_path):
    """Security (our rule): a version directory or a file inside one that resolves outside the base
    path is never loaded (ignored, or END with PERMISSION_DENIED)."""
    base = str(tmp_path / "m")
    _install(store, "hpt2", os.path.join(base, "1"))
    outside = _install(store, "hpt3", str(tmp_path / "elsewhere"))
    os.symlink(outside, os.path.join(base, "5"))
    srv = _lifecycle_server(base, enable_model_warmup=True)
    try:
        url = srv.rest_url
        time.sleep(0.5)
        assert set(version_states(url, "m")) == {1}
        version = os.path.join(base, "6")
        _install(store, "hpt3", version + ".tmp")
        shutil.rmtree(os.path.join(version + ".tmp", "variables"))
        os.symlink(os.path.join(outside, "variables"), os.path.join(version + ".tmp", "variables"))
        os.rename(version + ".tmp", version)
        states = wait_for(lambda: (s := version_states(url, "m")) and s.get(6, {}).get("state") == "END" and s)
        assert states[6]["status"]["error_code"] == "PERMISSION_DENIED"
        assert predict(url, {"inputs": [1.0]}, "/v1/models/m:predict").json() == {"outputs": [2.5]}
    finally:
        srv.stop()


def test_model_config_reload_adds_and_unloads_models(store, tmp_path):
    """server.cc PollFilesystemAndReloadConfig + server_core_test ReloadConfigUnloadsModels, doc
    "Config file": a new config is applied while serving; dropped models unload; a broken file is
    ignored (the old config stays)."""
    _install(store, "hpt2", str(tmp_path / "a" / "1"))
    _install(store, "hpt3", str(tmp_path / "b" / "1"))
    config = tmp_path / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "a" base_path: "{tmp_path}/a" }} }}')
    cfg = ServerConfig(port=ANY_PORT, model_config_file=str(config), model_config_file_poll_wait_seconds=1,
                       rest_api_port=ANY_PORT, file_system_poll_wait_seconds=0.1)
    srv = ModelServer(cfg).start(timeout=120)
    try:
        url = srv.rest_url
        config.write_text("model_config_list { config { name: ")  # unparsable: keep serving "a"
        time.sleep(1.5)
        assert predict(url, {"inputs": [1.0]}, "/v1/models/a:predict").status == 200
        config.write_text(f'model_config_list {{ config {{ name: "b" base_path: "{tmp_path}/b" }} }}')
        wait_for(lambda: version_states(url, "b").get(1, {}).get("state") == "AVAILABLE")
        wait_for(lambda: version_states(url, "a").get(1, {}).get("state") == "END")
        assert predict(url, {"inputs": [1.0]}, "/v1/models/b:predict").json() == {"outputs": [3.5]}
        reply = predict(url, {"inputs": [1.0]}, "/v1/models/a:predict")
        assert (reply.status, reply.error) == (404, "Servable not found for request: Latest(a)")
    finally:
        srv.stop()


def test_startup_fails_when_no_version_loads(tmp_path):
    """server_core_test ErroringModel, doc "Lifecycle": "N servable(s) did not become available"."""
    base = tmp_path / "m" / "1"
    base.mkdir(parents=True)
    (base / "saved_model.pb").write_bytes(b"not a proto")
    cfg = ServerConfig(port=ANY_PORT, models=[ModelConfig(name="m", base_path=str(tmp_path / "m"))], rest_api_port=ANY_PORT,
                       file_system_poll_wait_seconds=0.1, max_num_load_retries=0)
    with pytest.raises(ServerStartupError, match="1 servable\\(s\\) did not become available"):
        ModelServer(cfg).start(timeout=60)


# ---------------------------------------------------------------------------------------------
# configuration and command line


def test_model_config_parsing_and_name_rules(tmp_path):
    """serving_config.md ModelServerConfig + our path rules: policies and labels parse; names that
    look like paths, duplicates and custom configs are refused."""
    models = parse_model_server_config(
        """model_config_list {
             config { name: "a" base_path: "/m/a" model_version_policy { latest { num_versions: 2 } } }
             config { name: "b" base_path: "/m/b" model_version_policy { all {} } version_labels { key: "x" value: 3 } }
           }"""
    )
    assert models[0].version_policy == VersionPolicy("latest", 2)
    assert models[0].version_policy.select([1, 5, 3]) == {5, 3}
    assert models[1].version_policy.select([1, 5, 3]) == {1, 3, 5}
    assert models[1].version_labels == {"x": 3}
    assert VersionPolicy("specific", versions=frozenset({1, 9})).select([1, 2]) == {1}
    for bad in ("..", "a/b", "../etc", "/abs", "a\\\\b"):
        with pytest.raises(ConfigError):
            parse_model_server_config(f'model_config_list {{ config {{ name: "{bad}" base_path: "/m" }} }}')
    with pytest.raises(ConfigError):
        parse_model_server_config('model_config_list { config { name: "a" base_path: "/m" } '
                                  'config { name: "a" base_path: "/n" } }')
    with pytest.raises(ConfigError):
        parse_model_server_config("model_config_list { config { name: ")
    assert main(["--rest_api_port", "-1"]) == 2  # neither a base path nor a config file
    assert main(["--model_base_path", str(tmp_path), "--model_name", "../x"]) == 2
    with pytest.raises(ConfigError, match="http_port cannot be same as grpc_port"):
        parse_args(["--model_base_path", str(tmp_path), "--port", "9000", "--rest_api_port", "9000"])


def test_command_line_server(store, tmp_path):
    """tensorflow_model_server flags + main.cc: `python -m serving ... --rest_api_port -1` prints the
    bound address, serves, and exits 0 on SIGTERM."""
    base = str(tmp_path / "m")
    _install(store, "hpt2", os.path.join(base, "1"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", "--model_name", "m", "--model_base_path", base,
         "--rest_api_port", "-1", "--port", "-1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + 150
        url = None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line.startswith("REST API at "):
                url = line.split("REST API at ", 1)[1].strip()
        assert url is not None and url.startswith("http://127.0.0.1:")
        reply = request(url, "POST", "/v1/models/m:predict", {"instances": [1.0, 2.0]})
        assert reply.json() == {"predictions": [2.5, 3.0]}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
