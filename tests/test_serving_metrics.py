"""Prometheus metrics: TF Serving's names (util/prometheus_exporter.cc, servables/tensorflow/util.cc),
the MonitoringConfig switch and path, and the exposition text parsed back."""

from __future__ import annotations

import http.client as httpc
import json
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import serving_models  # noqa: E402

from serving.config import ANY_PORT, ModelConfig, ServerConfig, VersionPolicy  # noqa: E402
from serving.metrics import (  # noqa: E402
    DEFAULT_METRICS_PATH,
    MetricRegistry,
    parse_monitoring_config,
    prometheus_name,
)
from serving.server import ModelServer  # noqa: E402

_SAMPLE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """(TYPE per metric, samples) from exposition text; fails on any malformed line."""
    types: dict[str, str] = {}
    samples = []
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"malformed sample line: {line!r}"
        labels = dict(_LABEL.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, float(m.group(3))))
    return types, samples


def value(samples, name: str, **labels) -> float:
    found = [v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def call(port: int, method: str, path: str, body=None) -> tuple[int, dict, bytes]:
    conn = httpc.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body))
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def test_names_follow_tf_servings_rule():
    assert prometheus_name("/tensorflow/serving/request_count") == ":tensorflow:serving:request_count"
    assert prometheus_name("/a-b.c/d_e9") == ":a:b:c:d_e9"


def test_monitoring_config_text_format():
    cfg = parse_monitoring_config('prometheus_config {\n  enable: true\n  path: "/my/metrics"\n}\n')
    assert cfg.enable and cfg.path == "/my/metrics"
    cfg = parse_monitoring_config("prometheus_config { enable: true }")
    assert cfg.enable and cfg.path == DEFAULT_METRICS_PATH
    assert not parse_monitoring_config("").enable
    assert not parse_monitoring_config("prometheus_config { enable: false }").enable
    with pytest.raises(ValueError):
        parse_monitoring_config('prometheus_config { enable: true path: "no-slash" }')
    with pytest.raises(ValueError):
        parse_monitoring_config("something_else: 1")


def test_histogram_exposition_is_cumulative():
    registry = MetricRegistry()
    h = registry.histogram("/x/latency", "help", ("model_name",), (1.0, 10.0))
    for v in (0.5, 5.0, 50.0, 7.0):
        h.observe(v, model_name='a"b')
    types, samples = parse_prometheus(registry.render())
    assert types == {":x:latency": "histogram"}
    assert [v for n, lab, v in samples if n == ":x:latency_bucket"] == [1, 3, 4]
    assert value(samples, ":x:latency_bucket", le="+Inf") == 4
    assert value(samples, ":x:latency_sum") == 62.5 and value(samples, ":x:latency_count") == 4
    assert 'model_name="a\\"b"' in registry.render()


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    serving_models.save_half_plus_two(str(root / "hpt" / "1"))
    os.makedirs(root / "broken" / "1")
    (root / "broken" / "1" / "saved_model.pb").write_bytes(b"garbage")
    serving_models.save_half_plus_two(str(root / "broken" / "2"))
    monitoring = root / "monitoring.txt"
    monitoring.write_text('prometheus_config {\n  enable: true\n  path: "/metrics/prom"\n}\n')
    config = ServerConfig(
        models=[ModelConfig("hpt", str(root / "hpt")),
                ModelConfig("broken", str(root / "broken"),
                            version_policy=VersionPolicy(kind="all"))],
        port=ANY_PORT, rest_api_port=ANY_PORT, file_system_poll_wait_seconds=0, max_num_load_retries=0,
        monitoring_config_file=str(monitoring),
    )
    server = ModelServer(config).start(timeout=120)
    yield server, root
    server.stop()


def test_metrics_page_counts_requests_latency_and_loads(monitored):
    server, root = monitored
    port = server.rest_port
    for _ in range(3):
        assert call(port, "POST", "/v1/models/hpt:predict", {"instances": [1.0]})[0] == 200
    assert call(port, "POST", "/v1/models/hpt:predict", {"instances": ["x"]})[0] == 400
    assert call(port, "POST", "/v1/models/nope:predict", {"instances": [1.0]})[0] == 404
    assert call(port, "GET", "/v1/models/hpt")[0] == 200  # status calls are not inference requests

    status, headers, body = call(port, "GET", "/metrics/prom")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    types, samples = parse_prometheus(body.decode("utf-8"))
    assert types[":tensorflow:serving:request_count"] == "counter"
    assert types[":tensorflow:serving:request_latency"] == "histogram"
    assert value(samples, ":tensorflow:serving:request_count", model_name="hpt", status="OK") == 3
    assert value(samples, ":tensorflow:serving:request_count", model_name="hpt", status="INVALID_ARGUMENT") == 1
    assert value(samples, ":tensorflow:serving:request_count", model_name="nope", status="NOT_FOUND") == 1
    latency = dict(model_name="hpt", API="predict", entrypoint="REST")
    assert value(samples, ":tensorflow:serving:request_latency_count", **latency) == 3  # successes only
    assert value(samples, ":tensorflow:serving:request_latency_sum", **latency) > 0
    assert value(samples, ":tensorflow:serving:request_latency_bucket", le="+Inf", **latency) == 3

    loads = ":tensorflow:cc:saved_model:load_attempt_count"
    assert value(samples, loads, model_path=os.path.join(str(root / "hpt"), "1"), status="success") == 1
    assert value(samples, loads, model_path=os.path.join(str(root / "broken"), "1"), status="fail") == 1
    state = ":zoo:serving:model_version_state"
    assert value(samples, state, model_name="hpt", version="1", state="AVAILABLE") == 1
    assert value(samples, state, model_name="hpt", version="1", state="LOADING") == 0
    assert value(samples, state, model_name="broken", version="1", state="END") == 1
    assert value(samples, ":zoo:serving:model_version_error", model_name="broken", version="1",
                 error_code="DATA_LOSS") == 1


def test_only_the_configured_path_serves_metrics(monitored):
    server, _ = monitored
    status, headers, _ = call(server.rest_port, "GET", DEFAULT_METRICS_PATH)
    assert status == 404 and headers["content-type"] == "text/html"
    assert call(server.rest_port, "POST", "/metrics/prom", {})[0] == 405


def test_no_monitoring_config_means_no_metrics_page(tmp_path):
    serving_models.save_half_plus_two(str(tmp_path / "hpt" / "1"))
    config = ServerConfig(models=[ModelConfig("hpt", str(tmp_path / "hpt"))], port=ANY_PORT, rest_api_port=ANY_PORT,
                          file_system_poll_wait_seconds=0, enable_model_warmup=False)
    with ModelServer(config) as server:
        assert call(server.rest_port, "GET", DEFAULT_METRICS_PATH)[0] == 404
