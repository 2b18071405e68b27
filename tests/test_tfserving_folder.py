"""The configs shipped for the real TF Serving in serving/tfserving/ parse with the readers
`zoo serve` uses (TF Serving's own text-format protos), so both servers accept the same files."""

from __future__ import annotations

import os
import re

from serving.batching import parse_batching_parameters
from serving.config import parse_model_server_config
from serving.metrics import parse_monitoring_config

FOLDER = os.path.join(os.path.dirname(__file__), "..", "serving", "tfserving")


def _read(name: str) -> str:
    with open(os.path.join(FOLDER, name), encoding="utf-8") as f:
        return f.read()


def test_models_config_parses_with_policies():
    models = {m.name: m for m in parse_model_server_config(_read("models.config"))}
    assert set(models) == {"shakespeare", "shakespeare_lstm"}
    assert models["shakespeare"].base_path == "/models/shakespeare"
    assert models["shakespeare"].version_policy.select([1, 2, 3]) == {3}
    assert sorted(models["shakespeare_lstm"].version_policy.select([1, 2, 3])) == [2, 3]


def test_batching_and_monitoring_configs_parse():
    batching = parse_batching_parameters(_read("batching_parameters.txt"))
    assert batching.max_batch_size == 16 and batching.batch_timeout_micros == 5000
    monitoring = parse_monitoring_config(_read("monitoring.config"))
    assert monitoring.enable and monitoring.path == "/monitoring/prometheus/metrics"


def test_compose_file_names_every_shipped_config():
    compose = _read("docker-compose.yml")
    assert "tensorflow/serving:2.21.0" in compose
    named = set(re.findall(r"=/config/([\w.]+)", compose))
    assert named == {"models.config", "batching_parameters.txt", "monitoring.config"}
    for name in named:
        assert os.path.exists(os.path.join(FOLDER, name))
