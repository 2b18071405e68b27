"""``zoo serve`` takes tensorflow_model_server 2.21's flags and reads its config files as it does.

Parsing: every TF Serving flag is accepted in each spelling, the README's flag table lists every
flag with its support, unknown flags exit 2 naming the flag, flags that cannot apply here give
one warning line.  Behaviour, on a half_plus_two SavedModel: ``--rest_api_port=0`` leaves gRPC
only, ``--port=0`` REST only; ``--saved_model_tags``; thread counts reach ``tf.config`` in a
``python -m serving`` process; TLS (``--ssl_config_file``), the health service, a UNIX socket,
warm-up iterations, per-model batching parameters; config files with a misspelt field refuse to
start, naming the field.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from serving.batching import BatchingParameters, load_batching_parameters, parse_batching_parameters
from serving.config import (
    ANY_PORT,
    FLAGS,
    ConfigError,
    ModelConfig,
    ServerConfig,
    ignored_flags,
    parse_args,
    parse_flags,
    parse_grpc_channel_arguments,
)
from serving.errors import Code, ServingError
from serving.metrics import load_monitoring_config, parse_monitoring_config
from serving.runtime import RuntimeOptions, runtime_options
from serving.servable import load_servable
from serving.server import ModelServer, ServerStartupError, main

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import serving_models  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# tensorflow_model_server 2.21's flags (main.cc), the list this server must accept.
TF_SERVING_FLAGS = (
    "port grpc_socket_path rest_api_port rest_api_num_threads rest_api_timeout_in_ms "
    "rest_api_enable_cors_support enable_batching allow_version_labels_for_unavailable_models "
    "batching_parameters_file enable_per_model_batching_parameters model_config_file "
    "model_config_file_poll_wait_seconds model_name model_base_path num_load_threads "
    "num_unload_threads max_num_load_retries load_retry_interval_micros file_system_poll_wait_seconds "
    "flush_filesystem_caches tensorflow_session_parallelism tensorflow_session_config_file "
    "tensorflow_intra_op_parallelism tensorflow_inter_op_parallelism use_alts_credentials "
    "ssl_config_file platform_config_file per_process_gpu_memory_fraction saved_model_tags "
    "grpc_channel_arguments grpc_max_threads enable_model_warmup num_request_iterations_for_warmup "
    "version monitoring_config_file remove_unused_fields_from_bundle_metagraph prefer_tflite_model "
    "num_tflite_pools num_tflite_interpreters_per_pool enable_signature_method_name_check "
    "xla_cpu_compilation_enabled xla_gpu_compilation_enabled enable_profiler "
    "thread_pool_factory_config_file mixed_precision skip_initialize_tpu "
    "enable_grpc_healthcheck_service enable_serialization_as_tensor_content"
).split()
ZOO_FLAGS = ("host", "max_request_bytes", "max_prompt_bytes", "max_new_tokens_limit", "max_batch_rows",
             "max_tokens_per_request")
BY_NAME = {flag.name: flag for flag in FLAGS}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    """half_plus_two at <base>/1 with two warm-up records."""
    root = tmp_path_factory.mktemp("flags")
    version_dir = serving_models.save_half_plus_two(str(root / "m" / "1"))
    serving_models.write_warmup(version_dir, 2, model_name="m")
    return str(root / "m")


def _config(base: str, **flags) -> ServerConfig:
    return ServerConfig(models=[ModelConfig("m", base)], file_system_poll_wait_seconds=0,
                        max_num_load_retries=0, **flags)


def _predict(channel, x, signature: str = "serving_default"):
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="m", signature_name=signature))
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(x, np.float32)))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(request, timeout=60)


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _quoted(text: str) -> str:
    """A text-format string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# ---------------------------------------------------------------------------------------------
# parsing


def _sample_value(flag) -> str:
    default = flag.default
    if isinstance(default, bool):
        return str(not default).lower()
    if isinstance(default, (int, float)):
        return str(default + 3)
    return "x"


def test_every_tensorflow_model_server_flag_parses():
    """main.cc's flag list: each flag is known, in both spellings, with TF Serving's defaults."""
    assert set(TF_SERVING_FLAGS) | set(ZOO_FLAGS) == set(BY_NAME)
    names = [f for f in TF_SERVING_FLAGS + list(ZOO_FLAGS) if f != "version"]
    equals = parse_flags([f"--{name}={_sample_value(BY_NAME[name])}" for name in names])
    spaced = parse_flags([arg for name in names for arg in (f"--{name}", _sample_value(BY_NAME[name]))])
    for name in names:
        default = BY_NAME[name].default
        assert getattr(equals, name) == getattr(spaced, name) != default, name
        assert type(getattr(equals, name)) is type(default), name
    defaults = parse_flags([])
    assert vars(defaults) == {flag.name: flag.default for flag in FLAGS}
    assert (defaults.port, defaults.rest_api_timeout_in_ms, defaults.max_num_load_retries) == (8500, 30000, 5)
    assert (defaults.load_retry_interval_micros, defaults.file_system_poll_wait_seconds) == (60_000_000, 1)
    assert (defaults.saved_model_tags, defaults.enable_model_warmup, defaults.enable_profiler) == ("serve", True, True)
    assert (defaults.max_batch_rows, defaults.max_tokens_per_request) == (256, 65536)
    # booleans: bare, =true/false, =1/0, and a separate value
    for argv, expected in ((["--enable_batching"], True), (["--enable_batching=false"], False),
                           (["--enable_batching=1"], True), (["--enable_batching", "true"], True),
                           (["--enable_model_warmup=0"], False)):
        ns = parse_flags(argv)
        assert (ns.enable_batching if "batching" in argv[0] else ns.enable_model_warmup) is expected
    cfg = parse_args(["--model_base_path=/tmp/m", "--max_batch_rows=8", "--max_tokens_per_request", "0"])
    assert (cfg.max_batch_rows, cfg.max_tokens_per_request) == (8, 0)


@pytest.mark.parametrize("argv, named", [
    (["--no_such_flag=1"], "--no_such_flag"),
    (["--model_base"], "--model_base"),  # no abbreviations, as in TF Serving
    (["--port=eighty"], "--port"),
    (["--enable_batching=maybe"], "--enable_batching"),
])
def test_unknown_or_bad_flags_exit_2_naming_the_flag(argv, named, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--model_base_path=/tmp/m", *argv])
    assert exc.value.code == 2
    assert named in capsys.readouterr().err


def test_readme_table_lists_every_flag_with_its_support():
    """The serving section's table: one row per flag, saying honoured / warning / zoo extension."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        rows = {m.group(1): line for line in f for m in [re.match(r"\| `--(\w+)` \|", line)] if m}
    words = {"honoured": "honoured", "ignored": "accepted with a warning", "zoo": "zoo extension"}
    for flag in FLAGS:
        assert flag.name in rows, f"README has no row for --{flag.name}"
        assert words[flag.support] in rows[flag.name], rows[flag.name]
    assert set(rows) == set(BY_NAME)


def test_refused_combinations_and_channel_arguments(tmp_path):
    """TF Serving's own refusals (server.cc) and ours; gRPC arguments parse as TF Serving's do."""
    flags = ["--model_base_path", str(tmp_path)]
    for extra, message in (
        (["--port=0", "--rest_api_port=0"], "nothing would serve"),
        (["--batching_parameters_file=/b.txt"], "without setting server_options.enable_batching"),
        (["--tensorflow_session_parallelism=2", "--tensorflow_intra_op_parallelism=2",
          "--tensorflow_inter_op_parallelism=2"], "You cannot configure all"),
        (["--per_process_gpu_memory_fraction=1.5"], "between 0.0 and 1.0"),
        (["--grpc_channel_arguments=grpc.max_connection_age_ms"], "expected key=value"),
        (["--saved_model_tags=,"], "at least one tag"),
        (["--port=70000"], "0..65535"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_args(flags + extra)
    assert parse_args(flags + ["--port=0", "--rest_api_port=0", "--grpc_socket_path=/tmp/s"]).grpc_enabled
    assert parse_grpc_channel_arguments("grpc.max_connection_age_ms=2000, grpc.primary_user_agent=zoo,,") == [
        ("grpc.max_connection_age_ms", 2000), ("grpc.primary_user_agent", "zoo")]
    assert parse_grpc_channel_arguments("a=99999999999") == [("a", "99999999999")]  # not an int32


def test_version_prints_and_exits_0(capsys):
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("TensorFlow ModelServer: zoo serve ")
    assert f"TensorFlow Library: {tf.__version__}" in out


def test_thread_counts_from_flags_and_session_config(tmp_path):
    """server.cc: intra/inter flags win over --tensorflow_session_parallelism; flags that are set
    override the ConfigProto file's values."""
    proto = _write(tmp_path / "session.pbtxt", "intra_op_parallelism_threads: 5\ninter_op_parallelism_threads: 6\n"
                                                "gpu_options { per_process_gpu_memory_fraction: 0.5 }\n")
    cfg = ServerConfig(tensorflow_session_config_file=proto)
    assert runtime_options(cfg) == RuntimeOptions(5, 6, 0.5)
    cfg.tensorflow_session_parallelism = 4
    assert runtime_options(cfg) == RuntimeOptions(4, 4, 0.5)
    cfg.tensorflow_intra_op_parallelism = 2
    cfg.per_process_gpu_memory_fraction = 0.25
    assert runtime_options(cfg) == RuntimeOptions(2, 0, 0.25)  # the pair wins; 0 stays automatic
    bad = _write(tmp_path / "bad.pbtxt", "intra_op_threads: 5\n")
    with pytest.raises(ConfigError, match="Invalid protobuf file: .*intra_op_threads"):
        ModelServer(ServerConfig(tensorflow_session_config_file=bad))


# ---------------------------------------------------------------------------------------------
# config files, parsed as TF Serving parses them


@pytest.mark.parametrize("flag, text, field", [
    ("monitoring_config_file", "prometheus_config {\n  enabel: true\n}\n", "enabel"),
    ("batching_parameters_file", "max_batch_sise { value: 8 }\n", "max_batch_sise"),
    ("batching_parameters_file", "pad_variable_length_inputs: { value: true }\n", "pad_variable_length_inputs"),
    ("monitoring_config_file", "prometheus_config { enable: yes }\n", "enable"),
])
def test_config_file_typos_refuse_to_start(flag, text, field, tmp_path, capsys):
    path = _write(tmp_path / "config.txt", text)
    extra = {"enable_batching": True} if flag.startswith("batching") else {}
    with pytest.raises(ConfigError, match=rf"Invalid protobuf file: '{re.escape(path)}': \d+:\d+ .*{field}"):
        ModelServer(_config(str(tmp_path), port=ANY_PORT, rest_api_port=ANY_PORT, **{flag: path}, **extra))
    argv = ["--model_base_path", str(tmp_path), f"--{flag}={path}"] + (["--enable_batching"] if extra else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Invalid protobuf file" in err and field in err


def test_valid_config_files_parse_to_the_same_values(tmp_path):
    monitoring = _write(tmp_path / "m.config", '# comment\nprometheus_config: {\n enable: true\n path: "/m"\n}\n')
    assert (load_monitoring_config(monitoring).enable, load_monitoring_config(monitoring).path) == (True, "/m")
    assert not parse_monitoring_config("prometheus_config {}").enable
    batching = _write(tmp_path / "b.txt", "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 50 }\n"
                                          "num_batch_threads { value: 2 }\nallowed_batch_sizes: 4\n"
                                          "allowed_batch_sizes: 8\nthread_pool_name { value: 'p' }\n"
                                          "enable_large_batch_splitting { value: false }\n")
    assert load_batching_parameters(batching) == BatchingParameters(8, 50, 10, 2, (4, 8), False)
    assert parse_batching_parameters("pad_variable_length_inputs: true").pad_variable_length_inputs


def test_saved_model_tags_pick_the_meta_graph(base):
    servable = load_servable("m", 1, os.path.join(base, "1"), base, tags=("serve",))
    assert "serving_default" in servable.signatures
    with pytest.raises(ServingError) as exc:
        load_servable("m", 1, os.path.join(base, "1"), base, tags=("serve", "gpu"))
    assert exc.value.code == Code.NOT_FOUND
    assert "matching supplied tags: { gpu serve }" in exc.value.message
    assert "{ serve }" in exc.value.message.rsplit("tag-sets in", 1)[1]
    with pytest.raises(ServerStartupError, match=re.escape("matching supplied tags: { gpu }")):
        ModelServer(_config(base, port=ANY_PORT, rest_api_port=ANY_PORT, saved_model_tags="gpu")).start(timeout=60)


# ---------------------------------------------------------------------------------------------
# servers


def test_rest_port_0_serves_grpc_only(base, tmp_path):
    """--rest_api_port=0: no REST; gRPC on TCP and a UNIX socket, with the health service; each
    warm-up record replayed --num_request_iterations_for_warmup times."""
    socket_path = str(tmp_path / "grpc.sock")
    server = ModelServer(_config(base, port=ANY_PORT, rest_api_port=0, grpc_socket_path=socket_path,
                                 enable_grpc_healthcheck_service=True, num_request_iterations_for_warmup=3,
                                 grpc_channel_arguments="grpc.max_connection_age_ms=60000",
                                 num_unload_threads=1, saved_model_tags="serve")).start(timeout=120)
    try:
        assert server.rest_port is None and server.app is None
        with pytest.raises(RuntimeError):
            server.rest_url  # noqa: B018 - the property raises when REST is off
        with grpc.insecure_channel(server.grpc_server.target) as channel:
            assert list(_predict(channel, [0.0], "count").outputs["count"].int64_val) == [2 * 3]
            assert list(_predict(channel, [1.0, 2.0]).outputs["y"].float_val) == [2.5, 3.0]
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "tensorflow.serving.PredictionService"):
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            assert list(_predict(channel, [4.0]).outputs["y"].float_val) == [4.0]
    finally:
        server.stop()


def test_port_0_serves_rest_only_with_per_model_batching(base, tmp_path, caplog):
    """--port=0: no gRPC; REST serves. --enable_per_model_batching_parameters reads the version's
    batching_params.pbtxt (here max_batch_size 2, so 3 rows are refused as TF Serving refuses
    them). Flags that cannot apply give one warning line naming them all."""
    own = tmp_path / "m"
    shutil.copytree(base, own)
    (own / "1" / "batching_params.pbtxt").write_text("max_batch_size { value: 2 }\n")
    config = _config(str(own), port=0, rest_api_port=ANY_PORT, enable_batching=True,
                     enable_per_model_batching_parameters=True, enable_model_warmup=False,
                     use_alts_credentials=True, num_tflite_pools=7)
    assert ignored_flags(config) == ["--use_alts_credentials=true", "--num_tflite_pools=7"]
    with caplog.at_level("WARNING", logger="serving"), ModelServer(config) as server:
        assert server.grpc_server is None and server.grpc_port is None
        url = f"{server.rest_url}/v1/models/m:predict"
        assert requests.post(url, json={"instances": [1.0, 2.0]}, timeout=60).json() == {"predictions": [2.5, 3.0]}
        reply = requests.post(url, json={"instances": [1.0, 2.0, 3.0]}, timeout=60)
        assert reply.status_code == 400
        assert "Task size 3 is larger than maximum input batch size 2" in reply.json()["error"]
    warnings = [r.getMessage() for r in caplog.records if "not applied" in r.getMessage()]
    assert len(warnings) == 1
    assert "--use_alts_credentials=true" in warnings[0] and "--num_tflite_pools=7" in warnings[0]


def _self_signed(tmp_path) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return key.read_text(), cert.read_text()


def test_ssl_config_serves_grpc_over_tls(base, tmp_path):
    """--ssl_config_file: SSLConfig's PEM key and certificate; a TLS client answers, a plain one
    cannot; a config without a certificate refuses to start."""
    key, cert = _self_signed(tmp_path)
    ssl_config = _write(tmp_path / "ssl.config", f"server_key: {_quoted(key)}\nserver_cert: {_quoted(cert)}\n")
    incomplete = _write(tmp_path / "half.config", f"server_key: {_quoted(key)}\n")
    with pytest.raises(ConfigError, match="server_cert"):
        ModelServer(_config(base, port=ANY_PORT, rest_api_port=0, ssl_config_file=incomplete))
    server = ModelServer(_config(base, port=ANY_PORT, rest_api_port=0, ssl_config_file=ssl_config,
                                 enable_model_warmup=False)).start(timeout=120)
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.encode())
        with grpc.secure_channel(server.grpc_server.target, credentials) as channel:
            assert list(_predict(channel, [2.0]).outputs["y"].float_val) == [3.0]
        with grpc.insecure_channel(server.grpc_server.target) as channel, pytest.raises(grpc.RpcError):
            _predict(channel, [2.0])
    finally:
        server.stop()


def test_command_line_threads_reach_tf_config(base):
    """`python -m serving` with --tensorflow_intra/inter_op_parallelism: tf.config reports them
    before the model loads; --port=0 prints no gRPC address; SIGTERM exits 0."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", "--model_name=m", f"--model_base_path={base}", "--port=0",
         "--rest_api_port=-1", "--file_system_poll_wait_seconds=0", "--enable_model_warmup=false",
         "--tensorflow_intra_op_parallelism=3", "--tensorflow_inter_op_parallelism=2",
         "--enable_profiler=false"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue = queue.Queue()
    readers = [threading.Thread(target=lambda s=stream, t=tag: [lines.put((t, line)) for line in s], daemon=True)
               for stream, tag in ((proc.stdout, "out"), (proc.stderr, "err"))]
    for reader in readers:
        reader.start()
    seen: list[tuple[str, str]] = []
    try:
        url = None
        deadline = time.monotonic() + 150
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                continue
            if seen[-1][0] == "out" and seen[-1][1].startswith("REST API at "):
                url = seen[-1][1].split("REST API at ", 1)[1].strip()
        assert url is not None, seen
        assert requests.post(f"{url}/v1/models/m:predict", json={"instances": [1.0]}, timeout=60).json() == {
            "predictions": [2.5]}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for reader in readers:
        reader.join(timeout=10)
    while not lines.empty():
        seen.append(lines.get())
    err = "".join(line for tag, line in seen if tag == "err")
    assert "TensorFlow threads: intra_op=3 inter_op=2" in err
    assert len(re.findall(r"not applied by zoo serve.*--enable_profiler=false", err)) == 1
    assert not any(line.startswith("gRPC API at") for tag, line in seen if tag == "out")
