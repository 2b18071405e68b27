"""gRPC requests in the Prometheus metrics: counted in ``:tensorflow:serving:request_count`` with
the RPC's status code, and (successes only) timed in ``:tensorflow:serving:request_latency`` with
``entrypoint="GRPC"`` and the gRPC method name as ``API``, as TF Serving's
prediction_service_impl.cc records Predict, Classify and Regress.  MultiInference and
GetModelMetadata (not recorded by TF Serving) are counted by the same rule; ModelService calls
are not inference requests and are not counted.  (GenerateStream and the REST stream:
tests/test_serving_bounds.py, which has an LM export.)
"""

from __future__ import annotations

import os
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.config import ANY_PORT, ModelConfig, ServerConfig
from serving.server import ModelServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import serving_models  # noqa: E402
from test_serving_metrics import call, parse_prometheus, value  # noqa: E402

LATENCY = ":tensorflow:serving:request_latency_count"
COUNT = ":tensorflow:serving:request_count"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpc_metrics")
    serving_models.save_half_plus_two(str(root / "hpt" / "1"))
    serving_models.save_classreg(str(root / "classreg" / "1"))
    monitoring = root / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }\n")
    config = ServerConfig(
        models=[ModelConfig("hpt", str(root / "hpt")), ModelConfig("classreg", str(root / "classreg"))],
        port=ANY_PORT, rest_api_port=ANY_PORT, file_system_poll_wait_seconds=0,
        monitoring_config_file=str(monitoring),
    )
    server = ModelServer(config).start(timeout=120)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    try:
        yield server, prediction_service_pb2_grpc.PredictionServiceStub(channel), channel
    finally:
        channel.close()
        server.stop()


def _samples(server):
    status, _, body = call(server.rest_port, "GET", "/monitoring/prometheus/metrics")
    assert status == 200
    return parse_prometheus(body.decode("utf-8"))[1]


def _predict(model: str, **inputs) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for alias, arr in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(arr))
    return request


def _examples(request, *xs: float) -> None:
    for x in xs:
        example = request.input.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(x)


def _fails(method, request, code) -> None:
    with pytest.raises(grpc.RpcError) as info:
        method(request, timeout=60)
    assert info.value.code() == code


def test_every_grpc_inference_call_is_counted_and_timed(served):
    server, stub, channel = served
    for _ in range(2):
        stub.Predict(_predict("hpt", x=np.array([1.0], np.float32)), timeout=60)
    _fails(stub.Predict, _predict("hpt", x=np.array(["a"])), grpc.StatusCode.INVALID_ARGUMENT)
    _fails(stub.Predict, _predict("nope", x=np.array([1.0], np.float32)), grpc.StatusCode.NOT_FOUND)

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = "classreg", "classify_x_to_y"
    _examples(classify, 80.0)
    stub.Classify(classify, timeout=60)
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = "classreg", "regress_x_to_y"
    _examples(regress, 80.0, 2.0)
    stub.Regress(regress, timeout=60)
    multi = inference_pb2.MultiInferenceRequest()
    task = multi.tasks.add()
    task.model_spec.name, task.model_spec.signature_name = "classreg", "regress_x_to_y"
    task.method_name = "tensorflow/serving/regress"
    multi.input.CopyFrom(input_pb2.Input(example_list=regress.input.example_list))
    stub.MultiInference(multi, timeout=60)
    metadata = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata.model_spec.name = "hpt"
    metadata.metadata_field.append("signature_def")
    stub.GetModelMetadata(metadata, timeout=60)
    metadata.ClearField("metadata_field")
    _fails(stub.GetModelMetadata, metadata, grpc.StatusCode.INVALID_ARGUMENT)
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "hpt"
    model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, timeout=60)

    samples = _samples(server)
    assert value(samples, COUNT, model_name="hpt", status="OK") == 3  # 2 Predict + 1 GetModelMetadata
    assert value(samples, COUNT, model_name="hpt", status="INVALID_ARGUMENT") == 2
    assert value(samples, COUNT, model_name="nope", status="NOT_FOUND") == 1
    assert value(samples, COUNT, model_name="classreg", status="OK") == 3
    assert value(samples, LATENCY, model_name="hpt", API="Predict", entrypoint="GRPC") == 2  # successes only
    for api in ("Classify", "Regress", "MultiInference"):
        assert value(samples, LATENCY, model_name="classreg", API=api, entrypoint="GRPC") == 1
    assert value(samples, LATENCY, model_name="hpt", API="GetModelMetadata", entrypoint="GRPC") == 1
    assert value(samples, ":tensorflow:serving:request_latency_sum", model_name="hpt", API="Predict",
                 entrypoint="GRPC") > 0
    assert not [lab for n, lab, _ in samples if n == LATENCY and lab.get("API") == "GetModelStatus"]
    # REST keeps its own entrypoint label beside gRPC's
    assert call(server.rest_port, "POST", "/v1/models/hpt:predict", {"instances": [1.0]})[0] == 200
    samples = _samples(server)
    assert value(samples, LATENCY, model_name="hpt", API="predict", entrypoint="REST") == 1
    assert value(samples, COUNT, model_name="hpt", status="OK") == 4
