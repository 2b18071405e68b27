"""TF Serving's config messages, built at import time, and its way of reading them from text files.

The ``tensorflow-serving-api`` package ships ``ModelServerConfig`` but not the messages of
``--monitoring_config_file``, ``--batching_parameters_file`` or ``--ssl_config_file``.  They are
declared here as ``FileDescriptorProto``s with TF Serving's package (``tensorflow.serving``),
message names, field names and numbers, added to a private ``DescriptorPool`` beside
``google/protobuf/wrappers.proto``, and turned into real message classes by
``message_factory`` -- no code generation step.  Text files are then read with
``google.protobuf.text_format``, the same parser family TF Serving uses, so an unknown field, a bad
value or a syntax error is refused, as ``tensorflow_model_server`` refuses it::

    Invalid protobuf file: '/etc/monitoring.config': 2:3 : Message type
    "tensorflow.serving.PrometheusConfig" has no field named "enabel".

Messages (TF Serving's sources):

* ``MonitoringConfig { PrometheusConfig prometheus_config = 1; }`` and
  ``PrometheusConfig { bool enable = 1; string path = 2; }`` (config/monitoring_config.proto);
* ``SSLConfig { string server_key = 1; string server_cert = 2; string custom_ca = 3;
  bool client_verify = 4; }`` (config/ssl_config.proto; the strings are PEM text, not paths);
* ``BatchingParameters`` (servables/tensorflow/session_bundle_config.proto):
  ``max_batch_size = 1``, ``batch_timeout_micros = 2``, ``max_enqueued_batches = 3``,
  ``num_batch_threads = 4`` (``Int64Value``), ``thread_pool_name = 5`` (``StringValue``),
  ``repeated int64 allowed_batch_sizes = 6``, ``bool pad_variable_length_inputs = 7``, then the
  TF Serving 2.x additions ``enable_large_batch_splitting = 8`` (``BoolValue``) and
  ``max_execution_batch_size = 9`` (``Int64Value``).  Fields 1-7 were checked against the
  proto file; the names and numbers of 8 and 9 could not be checked against the sources at hand.
  TF Serving's later priority-queue fields are not declared, so a file using them is refused.
"""

from __future__ import annotations

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from google.protobuf.message import Message

from .config import ConfigError

__all__ = [
    "BatchingParameters",
    "MonitoringConfig",
    "PrometheusConfig",
    "SSLConfig",
    "parse_text",
    "read_text_file",
]

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "tensorflow.serving"


def _field(name: str, number: int, kind: int, type_name: str = "", repeated: bool = False) -> _F:
    field = _F(name=name, number=number, type=kind,
               label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name
    return field


def _file(name: str, messages: dict[str, list[_F]], deps: tuple[str, ...] = ()) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name=name, package=_PACKAGE, syntax="proto3",
                                               dependency=list(deps))
    for message_name, fields in messages.items():
        proto.message_type.add(name=message_name, field=fields)
    return proto


_INT64 = ".google.protobuf.Int64Value"
_FILES = (
    _file("tensorflow_serving/config/monitoring_config.proto", {
        "PrometheusConfig": [_field("enable", 1, _F.TYPE_BOOL), _field("path", 2, _F.TYPE_STRING)],
        "MonitoringConfig": [
            _field("prometheus_config", 1, _F.TYPE_MESSAGE, f".{_PACKAGE}.PrometheusConfig"),
        ],
    }),
    _file("tensorflow_serving/config/ssl_config.proto", {
        "SSLConfig": [
            _field("server_key", 1, _F.TYPE_STRING),
            _field("server_cert", 2, _F.TYPE_STRING),
            _field("custom_ca", 3, _F.TYPE_STRING),
            _field("client_verify", 4, _F.TYPE_BOOL),
        ],
    }),
    _file("tensorflow_serving/servables/tensorflow/session_bundle_config.proto", {
        "BatchingParameters": [
            _field("max_batch_size", 1, _F.TYPE_MESSAGE, _INT64),
            _field("batch_timeout_micros", 2, _F.TYPE_MESSAGE, _INT64),
            _field("max_enqueued_batches", 3, _F.TYPE_MESSAGE, _INT64),
            _field("num_batch_threads", 4, _F.TYPE_MESSAGE, _INT64),
            _field("thread_pool_name", 5, _F.TYPE_MESSAGE, ".google.protobuf.StringValue"),
            _field("allowed_batch_sizes", 6, _F.TYPE_INT64, repeated=True),
            _field("pad_variable_length_inputs", 7, _F.TYPE_BOOL),
            _field("enable_large_batch_splitting", 8, _F.TYPE_MESSAGE, ".google.protobuf.BoolValue"),
            _field("max_execution_batch_size", 9, _F.TYPE_MESSAGE, _INT64),
        ],
    }, deps=("google/protobuf/wrappers.proto",)),
)


def _build_pool() -> descriptor_pool.DescriptorPool:
    """A pool of its own, so these names never clash with generated modules that define them."""
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    for proto in _FILES:
        pool.Add(proto)
    return pool


_POOL = _build_pool()


def _message_class(name: str) -> type[Message]:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


MonitoringConfig = _message_class("MonitoringConfig")
PrometheusConfig = _message_class("PrometheusConfig")
SSLConfig = _message_class("SSLConfig")
BatchingParameters = _message_class("BatchingParameters")


def parse_text(text: str, message: Message) -> Message:
    """Parse text format into ``message`` (returned); ConfigError names the line and the field."""
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(str(exc)) from exc
    return message


def read_text_file(path: str, message: Message) -> Message:
    """Read a text-format file as TF Serving's ``ParseProtoTextFile`` does.

    Raises ConfigError ``Invalid protobuf file: '<path>': <parser detail>`` when the text does
    not parse, and ``cannot read ...`` when the file cannot be read.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path!r}: {exc}") from exc
    try:
        return parse_text(text, message)
    except ConfigError as exc:
        raise ConfigError(f"Invalid protobuf file: '{path}': {exc}") from exc
