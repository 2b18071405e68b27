"""Conformance of ``serving``'s gRPC front end with TensorFlow Serving's gRPC API.

Spoken to with the STOCK ``tensorflow_serving.apis`` stubs over
``grpc.insecure_channel("127.0.0.1:PORT")`` (the port picked by the OS).  Every test names the TF
Serving behaviour it mirrors: G1-G9 of serving/BEHAVIOUR.md and the TF Serving source or
test (PIT = model_servers/predict_impl_test.cc, PU/PUT = servables/tensorflow/predict_util{,_test}.cc,
SC = model_servers/server_core.cc, GMM = model_servers/get_model_metadata_impl.cc,
GMS = model_servers/get_model_status_impl.cc, MSI = model_servers/model_service_impl.cc,
GSU = model_servers/grpc_status_util.cc).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.request

import grpc
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import serving_models  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.framework import tensor_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.config import ANY_PORT, ModelConfig, ServerConfig, parse_args  # noqa: E402
from serving.server import ModelServer  # noqa: E402
from zoo.export_contract import MAX_MESSAGE_LENGTH  # noqa: E402

INVALID = grpc.StatusCode.INVALID_ARGUMENT


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, str]:
    root = str(tmp_path_factory.mktemp("store"))
    return {
        "hpt2": serving_models.save_half_plus_two(os.path.join(root, "hpt2"), offset=2.0),
        "hpt3": serving_models.save_half_plus_two(os.path.join(root, "hpt3"), offset=3.0),
        "two_input": serving_models.save_two_input(os.path.join(root, "two_input")),
        "strings": serving_models.save_strings(os.path.join(root, "strings")),
        "classreg": serving_models.save_classreg(os.path.join(root, "classreg")),
    }


def _install(store, key: str, dest: str) -> str:
    shutil.copytree(store[key], dest)
    return dest


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("models"))
    _install(store, "hpt2", os.path.join(root, "half_plus_two", "1"))
    _install(store, "hpt3", os.path.join(root, "half_plus_two", "2"))
    for key in ("two_input", "strings", "classreg"):
        _install(store, key, os.path.join(root, key, "1"))
    config_path = os.path.join(root, "models.config")
    with open(config_path, "w") as f:
        f.write(f"""
model_config_list {{
  config {{
    name: "half_plus_two" base_path: "{root}/half_plus_two" model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
    version_labels {{ key: "future" value: 7 }}
  }}
  config {{ name: "two_input" base_path: "{root}/two_input" model_platform: "tensorflow" }}
  config {{ name: "strings" base_path: "{root}/strings" model_platform: "tensorflow" }}
  config {{ name: "classreg" base_path: "{root}/classreg" model_platform: "tensorflow" }}
}}
""")
    cfg = parse_args(["--model_config_file", config_path, "--port", "-1", "--rest_api_port", "-1",
                      "--file_system_poll_wait_seconds", "0.5", "--max_num_load_retries", "0"])
    srv = ModelServer(cfg).start(timeout=180)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def channel(server):
    ch = grpc.insecure_channel(
        f"127.0.0.1:{server.grpc_port}",
        options=[("grpc.max_send_message_length", MAX_MESSAGE_LENGTH),
                 ("grpc.max_receive_message_length", MAX_MESSAGE_LENGTH)],
    )
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(name="half_plus_two", signature="", version=None, label=None, **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if signature:
        request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(value if isinstance(value, tensor_pb2.TensorProto)
                                       else tf.make_tensor_proto(value))
    return request


def rpc_error(method, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        method(request, timeout=60)
    return info.value


def assert_error(method, request, code, message=None, startswith=None, contains=None):
    err = rpc_error(method, request)
    assert err.code() == code, (err.code(), err.details())
    if message is not None:
        assert err.details() == message
    if startswith is not None:
        assert err.details().startswith(startswith), err.details()
    if contains is not None:
        assert contains in err.details(), err.details()
    return err.details()


def outputs(response) -> dict[str, np.ndarray]:
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def rest_post(server, path: str, body: dict) -> dict:
    req = urllib.request.Request(server.rest_url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as reply:  # noqa: S310 - local test server
        return json.loads(reply.read())


def example(x: float):
    return tf.train.Example(features=tf.train.Features(feature={"x": tf.train.Feature(
        float_list=tf.train.FloatList(value=[x]))}))


# ---------------------------------------------------------------------------------------------
# Predict


def test_server_binds_free_loopback_port(server):
    """server.cc BuildAndStart: gRPC serves on --port beside REST; here --port -1 (ANY_PORT) picks a free port."""
    assert server.grpc_port and server.grpc_port != server.rest_port
    assert server.grpc_server.target == f"127.0.0.1:{server.grpc_port}"


def test_predict_half_plus_two(stub):
    """PIT PredictReturnsCorrectOutput: x -> x/2 + offset; the response's model_spec names the model,
    the version that answered and the signature (util.cc MakeModelSpec, '' -> serving_default);
    outputs are written as typed value fields (predict_util.cc Tensor::AsProtoField)."""
    x = np.array([1.0, 2.0, 5.0], np.float32)
    response = stub.Predict(predict_request(x=x), timeout=60)  # latest = version 2, offset 3
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    assert list(response.outputs["y"].float_val) == [3.5, 4.0, 5.5]
    assert not response.outputs["y"].tensor_content
    assert [d.size for d in response.outputs["y"].tensor_shape.dim] == [3]
    np.testing.assert_allclose(outputs(stub.Predict(predict_request(version=1, x=x)))["y"], x / 2 + 2)
    by_label = stub.Predict(predict_request(label="stable", x=x), timeout=60)
    assert by_label.model_spec.version.value == 1
    np.testing.assert_allclose(outputs(by_label)["y"], x / 2 + 2)
    matrix = stub.Predict(predict_request(signature="matrix", x=np.ones([2, 2], np.float32)), timeout=60)
    assert matrix.model_spec.signature_name == "matrix"
    np.testing.assert_allclose(outputs(matrix)["y"], np.full([2, 2], 3.5))


def test_predict_strings(stub):
    """PUT (string tensors): DT_STRING inputs/outputs travel as string_val bytes, unicode intact."""
    texts = ["abc", "Café", "", "日本"]
    response = stub.Predict(predict_request("strings", text=np.array([t.encode() for t in texts], object)))
    out = outputs(response)
    assert out["upper"].tolist() == [t.encode().upper() for t in texts]  # ASCII upper-casing, bytes kept
    assert out["lengths"].tolist() == [len(t.encode()) for t in texts]
    assert out["lengths"].dtype == np.int32
    typed = stub.Predict(predict_request("strings", signature="typed",
                                         i32=np.array([1, -2], np.int32), f64=np.array([0.5, 1e300]),
                                         flag=np.array([True, False])))
    out = outputs(typed)
    assert out["i32"].tolist() == [1, -2] and out["f64"].tolist() == [0.5, 1e300]
    assert out["flag"].tolist() == [False, True]


def test_predict_multi_input(stub):
    """PUT / PIT multi-input signatures: every input by alias; every output returned."""
    response = stub.Predict(predict_request("two_input", a=np.array([[1, 2], [3, 4]], np.float32),
                                            b=np.array([10, 20], np.int64)))
    out = outputs(response)
    assert sorted(out) == ["label", "name_bytes", "sum"]
    assert out["sum"].tolist() == [13.0, 27.0]
    assert out["label"].tolist() == [b"n10", b"n20"]


def test_output_filter(stub):
    """PUT (output_filter): only the named outputs are computed and returned."""
    request = predict_request("two_input", a=np.array([[1, 2]], np.float32), b=np.array([1], np.int64))
    request.output_filter.append("label")
    response = stub.Predict(request, timeout=60)
    assert list(response.outputs) == ["label"]
    assert tf.make_ndarray(response.outputs["label"]).tolist() == [b"n1"]


def test_typed_fields_and_broadcast_fill_accepted(stub):
    """Tensor::FromProto: inputs may use typed fields instead of tensor_content; fewer values than
    the shape asks for are filled with the last one."""
    proto = tensor_pb2.TensorProto(dtype=tf.float32.as_datatype_enum)
    proto.tensor_shape.dim.add().size = 3
    proto.float_val.append(4.0)
    out = outputs(stub.Predict(predict_request(version=1, x=proto), timeout=60))
    assert out["y"].tolist() == [4.0, 4.0, 4.0]


def test_large_message(stub):
    """server.cc SetMaxMessageSize(INT32_MAX): a 6 MB request (over gRPC's 4 MB default) is served."""
    x = np.arange(1_500_000, dtype=np.float32)
    out = outputs(stub.Predict(predict_request(version=1, x=x), timeout=60))
    np.testing.assert_allclose(out["y"][-3:], x[-3:] / 2 + 2)


def test_rest_and_grpc_give_the_same_numbers(server, stub):
    """Same model, same request over REST and gRPC -> identical outputs (TF Serving runs both
    front ends on one ServerCore)."""
    a = [[0.1, 0.2], [1e-8, -3.5]]
    b = [7, -9]
    rest = rest_post(server, "/v1/models/two_input:predict", {"inputs": {"a": a, "b": b}})["outputs"]
    grpc_out = outputs(stub.Predict(predict_request("two_input", a=np.array(a, np.float32),
                                                    b=np.array(b, np.int64))))
    assert np.array(rest["sum"], np.float32).tolist() == grpc_out["sum"].tolist()
    assert [s.encode() for s in rest["label"]] == grpc_out["label"].tolist()
    x = [1.0, 2.5, -7.25, 1e6]
    rest = rest_post(server, "/v1/models/half_plus_two/versions/1:predict", {"instances": x})
    grpc_y = outputs(stub.Predict(predict_request(version=1, x=np.array(x, np.float32))))["y"]
    assert np.array(rest["predictions"], np.float32).tolist() == grpc_y.tolist()


# ---------------------------------------------------------------------------------------------
# GetModelMetadata / GetModelStatus


def test_get_model_metadata(stub):
    """GMM SavedModelGetSignatureDef: metadata["signature_def"] is an Any holding a SignatureDefMap
    with every signature; model_spec has the name and the version that answered."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "half_plus_two"
    response = stub.GetModelMetadata(request, timeout=60)
    assert response.model_spec.name == "half_plus_two" and response.model_spec.version.value == 2
    any_msg = response.metadata["signature_def"]
    assert any_msg.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    sigs = get_model_metadata_pb2.SignatureDefMap()
    assert any_msg.Unpack(sigs)
    assert {"serving_default", "matrix", "count", "mismatch", "spin"} <= set(sigs.signature_def)
    sig = sigs.signature_def["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    assert sig.inputs["x"].dtype == tf.float32.as_datatype_enum


def test_get_model_status(model_stub):
    """GMS GetModelStatusWithModelSpec: every version (or the one asked for) with state AVAILABLE
    and an OK status; unknown model/version -> NOT_FOUND with TF Serving's texts."""
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "half_plus_two"
    response = model_stub.GetModelStatus(request, timeout=60)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == [
        (2, available, 0), (1, available, 0)]
    request.model_spec.version.value = 1
    assert [s.version for s in model_stub.GetModelStatus(request).model_version_status] == [1]
    request.model_spec.version.value = 7
    assert_error(model_stub.GetModelStatus, request, grpc.StatusCode.NOT_FOUND,
                 "Could not find version 7 of model half_plus_two")
    missing = get_model_status_pb2.GetModelStatusRequest()
    missing.model_spec.name = "foo"
    assert_error(model_stub.GetModelStatus, missing, grpc.StatusCode.NOT_FOUND,
                 "Could not find any versions of model foo")


# ---------------------------------------------------------------------------------------------
# G1-G9 and the other error cases


def test_g1_missing_model_spec(stub, model_stub):
    """G1 (PIT MissingOrEmptyModelSpec; GMM; GMS; classification_service.cc): no model_spec ->
    INVALID_ARGUMENT "Missing ModelSpec" on every method that takes one."""
    assert_error(stub.Predict, predict_pb2.PredictRequest(), INVALID, "Missing ModelSpec")
    assert_error(stub.GetModelMetadata,
                 get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]),
                 INVALID, "Missing ModelSpec")
    assert_error(model_stub.GetModelStatus, get_model_status_pb2.GetModelStatusRequest(), INVALID,
                 "Missing ModelSpec")
    assert_error(stub.Classify, classification_pb2.ClassificationRequest(), INVALID, "Missing ModelSpec")
    assert_error(stub.Regress, regression_pb2.RegressionRequest(), INVALID, "Missing ModelSpec")


def test_g2_empty_model_name(stub):
    """G2 (SC GetServableRequestFromModelSpec): empty name -> "ModelSpec has no name specified."."""
    request = predict_request(name="", x=np.array([1.0], np.float32))
    assert_error(stub.Predict, request, INVALID, "ModelSpec has no name specified.")
    meta = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    meta.model_spec.SetInParent()
    assert_error(stub.GetModelMetadata, meta, INVALID, "ModelSpec has no name specified.")


def test_g3_servable_not_found(stub):
    """G3 (PIT; aspired_versions_manager_test ServableHandleNotFound*): NOT_FOUND
    "Servable not found for request: Latest(foo)" / "Specific(half_plus_two, 3)"."""
    x = np.array([1.0], np.float32)
    assert_error(stub.Predict, predict_request(name="foo", x=x), grpc.StatusCode.NOT_FOUND,
                 "Servable not found for request: Latest(foo)")
    assert_error(stub.Predict, predict_request(version=3, x=x), grpc.StatusCode.NOT_FOUND,
                 "Servable not found for request: Specific(half_plus_two, 3)")
    meta = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    meta.model_spec.name = "foo"
    assert_error(stub.GetModelMetadata, meta, grpc.StatusCode.NOT_FOUND,
                 "Servable not found for request: Latest(foo)")


def test_g4_unknown_signature_is_failed_precondition(stub):
    """G4 (PU RunPredict): unknown signature -> FAILED_PRECONDITION 'Serving signature key "foo" not
    found.' (REST says 400 INVALID_ARGUMENT instead)."""
    assert_error(stub.Predict, predict_request(signature="foo", x=np.array([1.0], np.float32)),
                 grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "foo" not found.')


def test_g5_input_names_mismatch(stub):
    """G5 (PUT InputTensorsDontMatchModelSpecInputs): missing/extra inputs -> INVALID_ARGUMENT
    "input size does not match signature: ... Sent extra: {...}. Missing but required: {...}."."""
    x = np.array([1.0], np.float32)
    details = assert_error(stub.Predict, predict_request(x=x, extra=x), INVALID,
                           startswith="input size does not match signature")
    assert details.endswith("Sent extra: {extra}. Missing but required: {}.")
    details = assert_error(stub.Predict, predict_request("two_input", a=np.ones([1, 2], np.float32)),
                           INVALID, startswith="input size does not match signature")
    assert details.endswith("Sent extra: {}. Missing but required: {b}.")


def test_g6_wrong_dtype(stub):
    """G6 (PUT): a string tensor for a float input -> "Expects arg[0] to be float but string is provided"."""
    request = predict_request(x=tf.make_tensor_proto(np.array([b"a"], object), dtype=tf.string))
    assert_error(stub.Predict, request, INVALID, "Expects arg[0] to be float but string is provided")
    request = predict_request(x=np.array([1.0], np.float64))
    assert_error(stub.Predict, request, INVALID, "Expects arg[0] to be float but double is provided")


def test_g7_output_filter_errors(stub):
    """G7 (PUT): unknown output alias / duplicate alias in output_filter -> INVALID_ARGUMENT."""
    request = predict_request(x=np.array([1.0], np.float32))
    request.output_filter.append("z")
    assert_error(stub.Predict, request, INVALID,
                 "output tensor alias not found in signature: z Outputs expected to be in the set {y}.")
    request = predict_request(x=np.array([1.0], np.float32))
    request.output_filter.extend(["y", "y"])
    assert_error(stub.Predict, request, INVALID, "duplicate output tensor alias: y")


def test_g8_metadata_field_required(stub):
    """G8 (GMM GetModelMetadataWithModelSpec): no metadata_field -> INVALID_ARGUMENT; an unknown
    field -> "Metadata field X is not supported"."""
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "half_plus_two"
    assert_error(stub.GetModelMetadata, request, INVALID,
                 "GetModelMetadataRequest must specify at least one metadata_field")
    request.metadata_field.append("graph_def")
    assert_error(stub.GetModelMetadata, request, INVALID, "Metadata field graph_def is not supported")


def test_g9_labels(stub):
    """G9 (server_core_test AssignLabelToUnavailableVersion; SC GetModelVersionForLabel): a label on a
    version that is not loaded -> FAILED_PRECONDITION "...not currently available for inference";
    an unknown label -> INVALID_ARGUMENT "Unrecognized servable version label: nope"."""
    x = np.array([1.0], np.float32)
    assert_error(stub.Predict, predict_request(label="future", x=x), grpc.StatusCode.FAILED_PRECONDITION,
                 "Request to assign label to version 7 of model half_plus_two, which is not currently "
                 "available for inference")
    assert_error(stub.Predict, predict_request(label="nope", x=x), INVALID,
                 "Unrecognized servable version label: nope")


def test_long_messages_are_truncated(stub):
    """GSU ToGRPCStatus: messages over 1024 characters keep the first 1024 and end in "...TRUNCATED"."""
    x = np.array([1.0], np.float32)
    many = {f"extra_input_with_a_long_name_{i:03d}": x for i in range(60)}
    details = assert_error(stub.Predict, predict_request(x=x, **many), INVALID,
                           startswith="input size does not match signature")
    assert details.endswith("...TRUNCATED")
    assert len(details) == 1024 + len("...TRUNCATED")


def test_tensor_parsing_errors(stub):
    """PU PreProcessPrediction: a TensorProto that does not parse -> INVALID_ARGUMENT
    "tensor parsing error: x"; our limit: a tiny proto may not ask for a huge filled tensor."""
    bad = tf.make_tensor_proto(np.array([1.0, 2.0], np.float32))
    bad.tensor_content = bad.tensor_content[:5]
    assert_error(stub.Predict, predict_request(x=bad), INVALID, "tensor parsing error: x")
    huge = tensor_pb2.TensorProto(dtype=tf.float32.as_datatype_enum)
    huge.tensor_shape.dim.add().size = 10**12
    huge.float_val.append(1.0)
    assert_error(stub.Predict, predict_request(x=huge), INVALID, startswith="tensor parsing error: x")


# ---------------------------------------------------------------------------------------------
# Classify / Regress / MultiInference


def test_classify_and_regress(stub):
    """classifier.cc / regressor.cc (HRT Regress/Classify on saved_model_half_plus_two): x=80 ->
    42 from regress_x_to_y; classify_x_to_y gives one class with label "" and score 42."""
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "classreg"
    request.model_spec.signature_name = "regress_x_to_y"
    request.input.example_list.examples.extend([example(80.0), example(2.0)])
    response = stub.Regress(request, timeout=60)
    assert [r.value for r in response.result.regressions] == [42.0, 3.0]
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "regress_x_to_y"
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "classreg"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.append(example(80.0))
    response = stub.Classify(request, timeout=60)
    assert [[(c.label, c.score) for c in cl.classes] for cl in response.result.classifications] == [[("", 42.0)]]


def test_classify_on_a_predict_signature_is_refused(stub):
    """classifier.cc GetClassificationSignatureDef: a signature of another method ->
    INVALID_ARGUMENT "Expected classification signature method_name to be ..."."""
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    request.input.example_list.examples.append(example(1.0))
    assert_error(stub.Classify, request, INVALID,
                 "Expected classification signature method_name to be tensorflow/serving/classify. "
                 "Was: tensorflow/serving/predict")


def test_multi_inference(stub):
    """multi_inference.cc: classify and regress tasks on one input, one result per task; a duplicate
    signature -> INVALID_ARGUMENT "Duplicate evaluation of signature: ..."."""
    request = inference_pb2.MultiInferenceRequest()
    for sig, method in (("regress_x_to_y", "tensorflow/serving/regress"),
                        ("classify_x_to_y", "tensorflow/serving/classify")):
        task = request.tasks.add()
        task.model_spec.name = "classreg"
        task.model_spec.signature_name = sig
        task.method_name = method
    request.input.CopyFrom(input_pb2.Input(example_list=input_pb2.ExampleList(examples=[example(80.0)])))
    response = stub.MultiInference(request, timeout=60)
    assert [r.model_spec.signature_name for r in response.results] == ["regress_x_to_y", "classify_x_to_y"]
    assert response.results[0].regression_result.regressions[0].value == 42.0
    assert response.results[1].classification_result.classifications[0].classes[0].score == 42.0
    request.tasks[1].model_spec.signature_name = "regress_x_to_y"
    request.tasks[1].method_name = "tensorflow/serving/regress"
    assert_error(stub.MultiInference, request, INVALID, "Duplicate evaluation of signature: regress_x_to_y")


# ---------------------------------------------------------------------------------------------
# HandleReloadConfigRequest


def test_reload_config(store, tmp_path):
    """MSI HandleReloadConfigRequest + SC ReloadConfig (tensorflow_model_server_test
    testModelConfigReload): the new list is applied, added models are AVAILABLE when the call
    returns, dropped models unload; a non-list config -> "ServerConfig is not of type
    ModelConfigList."; a model that fails to load -> an error naming it."""
    a = _install(store, "hpt2", str(tmp_path / "a" / "1"))
    _install(store, "hpt3", str(tmp_path / "b" / "1"))
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "saved_model.pb").write_bytes(b"not a proto")
    cfg = ServerConfig(models=[ModelConfig("a", os.path.dirname(a))], port=ANY_PORT, rest_api_port=ANY_PORT,
                       file_system_poll_wait_seconds=0.2, max_num_load_retries=0)
    srv = ModelServer(cfg).start(timeout=120)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as ch:
            models = model_service_pb2_grpc.ModelServiceStub(ch)
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            x = np.array([2.0], np.float32)

            def reload(*entries):
                request = model_management_pb2.ReloadConfigRequest()
                for name in entries:
                    entry = request.config.model_config_list.config.add()
                    entry.name = name
                    entry.base_path = str(tmp_path / name)
                    entry.model_platform = "tensorflow"
                return models.HandleReloadConfigRequest(request, timeout=120)

            response = reload("a", "b")
            assert response.status.error_code == 0
            assert outputs(stub.Predict(predict_request("b", x=x), timeout=60))["y"].tolist() == [4.0]
            reload("b")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    stub.Predict(predict_request("a", x=x), timeout=60)
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.NOT_FOUND
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("model a was not unloaded")
            assert cfg.models == [ModelConfig("b", str(tmp_path / "b"))]
            assert_error(models.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest(),
                         INVALID, "ServerConfig is not of type ModelConfigList.")
            with pytest.raises(grpc.RpcError) as info:
                reload("b", "broken")
            err = info.value
            assert err.code() == grpc.StatusCode.UNKNOWN
            assert err.details().startswith("1 servable(s) did not become available: {broken:")
            assert outputs(stub.Predict(predict_request("b", x=x), timeout=60))["y"].tolist() == [4.0]
    finally:
        srv.stop()


# ---------------------------------------------------------------------------------------------
# tensors, ports, command line


@pytest.mark.parametrize(
    "value",
    [
        np.array([1.5, -2], np.float16),
        np.array([[1, 2], [3, 4]], np.int8),
        np.array([255], np.uint8),
        np.array([65535], np.uint16),
        np.array([-3], np.int16),
        np.array([2**31 - 1], np.int32),
        np.array([-(2**63)], np.int64),
        np.array([2**32 - 1], np.uint32),
        np.array([2**64 - 1], np.uint64),
        np.array([1 + 2j], np.complex64),
        np.array([1 - 2j], np.complex128),
        np.array([True, False]),
        np.array([[b"a", b"\xff\x00"]], object),
        np.zeros([0, 3], np.float32),
        np.array(3.5, np.float64),
    ],
    ids=lambda v: f"{v.dtype}{list(v.shape)}",
)
def test_tensor_proto_round_trip(value):
    """Tensor::AsProtoField / FromProto: every dtype a signature can return is written to its
    typed field (no tensor_content) and reads back with the same dtype, shape and values."""
    from serving.grpc_common import ndarray_to_tensor_proto, tensor_proto_to_ndarray

    proto = ndarray_to_tensor_proto(value)
    assert proto.tensor_content == b""
    back = tensor_proto_to_ndarray(proto, "x")
    assert back.dtype == value.dtype and back.shape == value.shape
    assert back.tolist() == value.tolist()
    assert tf.make_ndarray(proto).tolist() == value.tolist()


def test_busy_grpc_port_leaves_rest_serving(store, tmp_path):
    """Our choice (TF Serving exits instead): when --port cannot be bound the error is logged, gRPC
    stays off (grpc_port None) and REST still serves; ports are never shared (so_reuseport off)."""
    import socket

    base = _install(store, "hpt2", str(tmp_path / "m" / "1"))
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        cfg = ServerConfig(models=[ModelConfig("m", os.path.dirname(base))], port=holder.getsockname()[1],
                           rest_api_port=ANY_PORT, file_system_poll_wait_seconds=0)
        srv = ModelServer(cfg).start(timeout=120)
        try:
            assert srv.grpc_port is None and srv.grpc_server is None
            assert rest_post(srv, "/v1/models/m:predict", {"instances": [1.0]}) == {"predictions": [2.5]}
        finally:
            srv.stop()
    finally:
        holder.close()


def test_command_line_serves_grpc(store, tmp_path):
    """tensorflow_model_server --port: `python -m serving --port -1` prints the bound gRPC address
    and answers Predict there; SIGTERM stops it with exit code 0."""
    import queue
    import signal
    import subprocess
    import threading

    base = os.path.dirname(_install(store, "hpt2", str(tmp_path / "m" / "1")))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=repo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", "--model_name", "m", "--model_base_path", base,
         "--rest_api_port", "-1", "--port", "-1", "--file_system_poll_wait_seconds", "0"],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        target = None
        deadline = time.monotonic() + 120
        while target is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line.startswith("gRPC API at "):
                target = line.split("gRPC API at ", 1)[1].strip()
        assert target is not None and target.startswith("127.0.0.1:")
        with grpc.insecure_channel(target) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            response = stub.Predict(predict_request("m", x=np.array([1.0], np.float32)), timeout=60)
            assert list(response.outputs["y"].float_val) == [2.5]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
