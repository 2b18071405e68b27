"""Server configuration: tensorflow_model_server's flags and its text-format ModelServerConfig.

``parse_args(argv)`` accepts every flag of tensorflow_model_server 2.21 (:data:`FLAGS`, with TF
Serving's defaults), in the ``--flag=value`` and ``--flag value`` spellings (booleans also bare,
``--flag``), plus a few of the zoo's own, and returns a :class:`ServerConfig`; an unknown flag is
an error naming it.  Each flag is one of:

* ``honoured``: it does here what it does in TF Serving;
* ``ignored``: accepted so that scripts written for tensorflow_model_server run unchanged, but it
  cannot apply to this server (TPU, TFLite, ALTS, ...); :func:`ignored_flags` names those set to
  a value other than their default, for the one warning line the server logs at startup;
* ``zoo``: an extension of this server (``--host``, request limits).

Ports follow TF Serving: ``--rest_api_port=0`` turns REST off and ``--port=0`` turns gRPC off
(both off is an error, unless ``--grpc_socket_path`` serves gRPC); :data:`ANY_PORT` (-1) binds
any free port, the zoo's addition for tests and notebooks.  A model config file is parsed with
the protos of the ``tensorflow-serving-api`` package, so any file TF Serving accepts parses the
same way here.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re

__all__ = [
    "ANY_PORT",
    "FLAGS",
    "ConfigError",
    "Flag",
    "ModelConfig",
    "ServerConfig",
    "VersionPolicy",
    "build_arg_parser",
    "check_flags",
    "config_from_flags",
    "ignored_flags",
    "load_model_config_file",
    "parse_args",
    "parse_flags",
    "parse_grpc_channel_arguments",
    "parse_model_server_config",
    "resolve_models",
    "validate_model_name",
]

DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
# A zoo extension for tests and notebooks: bind any free port (the bound one is reported).
ANY_PORT = -1
# TF Serving's port::NumSchedulableCPUs(), the default of --num_tflite_pools.
_CPUS = os.cpu_count() or 1


class ConfigError(ValueError):
    """A flag or model config that the server cannot run with."""


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's ``ServableVersionPolicy``: which version directories are served.

    kind is ``latest`` (the ``num_versions`` highest), ``all`` or ``specific`` (``versions``).
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: frozenset[int] = frozenset()

    def select(self, found: list[int]) -> set[int]:
        """The aspired versions among the version numbers found on disk."""
        if self.kind == "all":
            return set(found)
        if self.kind == "specific":
            return set(found) & set(self.versions)
        return set(sorted(found, reverse=True)[: max(1, self.num_versions)])


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One entry of ``model_config_list``."""

    name: str
    base_path: str
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: dict[str, int] = dataclasses.field(default_factory=dict)
    platform: str = "tensorflow"


@dataclasses.dataclass
class ServerConfig:
    """Everything the server needs; field names and defaults are tensorflow_model_server's flags.

    Two defaults differ on purpose: ``rest_api_port`` is 8501 (as in TF Serving's Docker image;
    the binary's own default, 0, leaves REST off) and ``file_system_poll_wait_seconds`` takes
    fractions.  A thread count of 0 means TF Serving's automatic choice.
    """

    models: list[ModelConfig] = dataclasses.field(default_factory=list)
    # gRPC and REST front ends
    port: int = 8500  # 0: no gRPC; ANY_PORT: any free port
    grpc_socket_path: str = ""
    rest_api_port: int = 8501  # 0: no REST; ANY_PORT: any free port
    rest_api_num_threads: int = 0  # 0: 4 x the CPU count
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    grpc_channel_arguments: str = ""  # "key=value,key=value"
    grpc_max_threads: int = 0  # 0: 4 x the CPU count
    ssl_config_file: str = ""
    enable_grpc_healthcheck_service: bool = False
    use_alts_credentials: bool = False
    enable_serialization_as_tensor_content: bool = False
    # models and their lifecycle
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: float = 1.0
    flush_filesystem_caches: bool = True
    num_load_threads: int = 0
    num_unload_threads: int = 0
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60 * 1000 * 1000
    allow_version_labels_for_unavailable_models: bool = False
    saved_model_tags: str = "serve"
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0  # used when > 0
    enable_signature_method_name_check: bool = False
    remove_unused_fields_from_bundle_metagraph: bool = True
    platform_config_file: str = ""
    # batching and monitoring
    enable_batching: bool = False
    batching_parameters_file: str = ""
    enable_per_model_batching_parameters: bool = False
    monitoring_config_file: str = ""
    enable_profiler: bool = True
    # the TensorFlow runtime
    tensorflow_session_parallelism: int = 0
    tensorflow_session_config_file: str = ""
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    per_process_gpu_memory_fraction: float = 0.0
    xla_cpu_compilation_enabled: bool = False
    xla_gpu_compilation_enabled: bool = False
    mixed_precision: str = ""
    thread_pool_factory_config_file: str = ""
    # TPU and TFLite
    skip_initialize_tpu: bool = False
    prefer_tflite_model: bool = False
    num_tflite_pools: int = _CPUS
    num_tflite_interpreters_per_pool: int = 1
    # the zoo's own
    host: str = "127.0.0.1"
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    # Limits on zoo LM requests (serving.predict.RequestLimits); <= 0 means: none / the export's bound.
    max_prompt_bytes: int = 16384
    max_new_tokens_limit: int = 0
    # Bounded work per request (zoo LM exports): rows in one request, and rows x max_new_tokens.
    max_batch_rows: int = 256
    max_tokens_per_request: int = 65536

    @property
    def rest_threads(self) -> int:
        """Worker threads for REST calls; TF Serving's default is 4 x the CPU count."""
        if self.rest_api_num_threads > 0:
            return self.rest_api_num_threads
        return max(4, 4 * (os.cpu_count() or 1))

    @property
    def load_threads(self) -> int:
        """Parallel loads: ``--num_load_threads``, at least one (TF Serving's 0 loads serially)."""
        return self.num_load_threads if self.num_load_threads > 0 else 1

    @property
    def tags(self) -> tuple[str, ...]:
        """``--saved_model_tags`` as TF Serving splits it: the MetaGraph to load has these tags."""
        return tuple(tag.strip() for tag in self.saved_model_tags.split(",") if tag.strip())

    @property
    def rest_enabled(self) -> bool:
        """False when ``--rest_api_port=0`` turns REST off."""
        return self.rest_api_port != 0

    @property
    def grpc_enabled(self) -> bool:
        """False when ``--port=0`` and no ``--grpc_socket_path`` leave gRPC off."""
        return self.port != 0 or bool(self.grpc_socket_path)


_BAD_NAME_CHARS = re.compile(r"[/\\\x00]")


def validate_model_name(name: str) -> str:
    """Reject names that could be mistaken for a path: empty, '.', '..', or with separators.

    Request paths never touch the file system (a model name is only a dictionary key), but a
    configured name is also shown in logs and file names by other tools, so keep it plain.
    """
    if not name:
        raise ConfigError("model name must not be empty")
    if name in (".", "..") or _BAD_NAME_CHARS.search(name) or os.path.isabs(name):
        raise ConfigError(f"invalid model name {name!r}: it must not contain '/', '\\', NUL or be '.'/'..'")
    return name


def _validate_base_path(name: str, base_path: str) -> str:
    if not base_path:
        raise ConfigError(f"model {name!r}: base_path must not be empty")
    if "\x00" in base_path:
        raise ConfigError(f"model {name!r}: base_path contains NUL")
    if "://" in base_path:
        raise ConfigError(f"model {name!r}: only local base paths are supported, got {base_path!r}")
    return os.path.abspath(base_path)


def parse_model_server_config(text: str) -> list[ModelConfig]:
    """Parse a text-format ``tensorflow.serving.ModelServerConfig`` into ModelConfigs."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    message = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(f"cannot parse model config: {exc}") from exc
    kind = message.WhichOneof("config")
    if kind == "custom_model_config":
        raise ConfigError("custom_model_config is not supported; use model_config_list")
    models: list[ModelConfig] = []
    seen: set[str] = set()
    for entry in message.model_config_list.config:
        name = validate_model_name(entry.name)
        if name in seen:
            raise ConfigError(f"Illegal to list model {name} multiple times in config list")
        seen.add(name)
        platform = entry.model_platform or "tensorflow"
        if platform != "tensorflow":
            raise ConfigError(f"model {name!r}: model_platform {platform!r} is not supported")
        models.append(
            ModelConfig(
                name=name,
                base_path=_validate_base_path(name, entry.base_path),
                version_policy=_policy_from_proto(name, entry),
                version_labels=_labels_from_proto(name, entry),
                platform=platform,
            )
        )
    return models


def _policy_from_proto(name: str, entry) -> VersionPolicy:
    if not entry.HasField("model_version_policy"):
        return VersionPolicy()
    policy = entry.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy(kind="all")
    if choice == "specific":
        versions = frozenset(int(v) for v in policy.specific.versions)
        if not versions:
            raise ConfigError(f"model {name!r}: specific version policy lists no versions")
        return VersionPolicy(kind="specific", versions=versions)
    if choice == "latest":
        n = int(policy.latest.num_versions) or 1
        if n < 1:
            raise ConfigError(f"model {name!r}: latest.num_versions must be >= 1")
        return VersionPolicy(kind="latest", num_versions=n)
    return VersionPolicy()


def _labels_from_proto(name: str, entry) -> dict[str, int]:
    labels: dict[str, int] = {}
    for label, version in entry.version_labels.items():
        if not label:
            raise ConfigError(f"model {name!r}: empty version label")
        labels[label] = int(version)
    return labels


def load_model_config_file(path: str) -> list[ModelConfig]:
    """Read and parse a ``--model_config_file``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read model config file {path!r}: {exc}") from exc
    return parse_model_server_config(text)


# ------------------------------------------------------------------------------------------------
# the command line

HONOURED, IGNORED, ZOO = "honoured", "ignored", "zoo"


@dataclasses.dataclass(frozen=True)
class Flag:
    """One command-line flag: its name (a ServerConfig field unless noted), support and help."""

    name: str
    support: str  # HONOURED, IGNORED or ZOO
    help: str

    @property
    def default(self):
        """TF Serving's default (the ServerConfig field's); ``--version`` defaults to False."""
        if self.name == "version":
            return False
        return _FIELD_DEFAULTS[self.name]


_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ServerConfig)
                   if f.default is not dataclasses.MISSING}

# tensorflow_model_server 2.21's flags in its order (main.cc), then the zoo's.
FLAGS: tuple[Flag, ...] = (
    Flag("port", HONOURED, "gRPC port (PredictionService, ModelService); 0 turns gRPC off, -1 binds any free port"),
    Flag("grpc_socket_path", HONOURED, "also serve gRPC on this UNIX socket"),
    Flag("rest_api_port", HONOURED, "REST port; 0 turns REST off, -1 binds any free port "
                                    "(default 8501, as TF Serving's Docker image; the binary's is 0)"),
    Flag("rest_api_num_threads", HONOURED, "threads for REST calls (0: 4 x the CPU count)"),
    Flag("rest_api_timeout_in_ms", HONOURED, "REST call timeout; a slower call gets 504"),
    Flag("rest_api_enable_cors_support", HONOURED, "add CORS headers to REST responses"),
    Flag("enable_batching", HONOURED, "merge concurrent requests into batches"),
    Flag("allow_version_labels_for_unavailable_models", HONOURED,
         "let a version label name a version that is not loaded yet"),
    Flag("batching_parameters_file", HONOURED, "text-format BatchingParameters (needs --enable_batching)"),
    Flag("enable_per_model_batching_parameters", HONOURED,
         "read batching_params.pbtxt from each version directory (with --enable_batching)"),
    Flag("model_config_file", HONOURED, "text-format ModelServerConfig listing the models"),
    Flag("model_config_file_poll_wait_seconds", HONOURED, "re-read --model_config_file every N seconds (0: once)"),
    Flag("model_name", HONOURED, "name of the model served from --model_base_path"),
    Flag("model_base_path", HONOURED, "directory holding the model's numbered version directories"),
    Flag("num_load_threads", HONOURED, "threads loading versions (0: one)"),
    Flag("num_unload_threads", HONOURED, "threads dropping unloaded versions' last reference (0: the manager's thread)"),
    Flag("max_num_load_retries", HONOURED, "retries after a failed load"),
    Flag("load_retry_interval_micros", HONOURED, "wait between load retries"),
    Flag("file_system_poll_wait_seconds", HONOURED,
         "seconds between polls of each base path (0: poll once, <0: never)"),
    Flag("flush_filesystem_caches", IGNORED, "no file-system cache to flush here"),
    Flag("tensorflow_session_parallelism", HONOURED,
         "intra- and inter-op threads (0: automatic); unused when either flag below is set "
                                                      "(all three set is an error)"),
    Flag("tensorflow_session_config_file", HONOURED,
         "text-format ConfigProto: its thread counts and GPU options (flags override them)"),
    Flag("tensorflow_intra_op_parallelism", HONOURED, "threads within one op (0: automatic)"),
    Flag("tensorflow_inter_op_parallelism", HONOURED, "ops run at once (0: automatic)"),
    Flag("use_alts_credentials", IGNORED, "Google ALTS is not available here"),
    Flag("ssl_config_file", HONOURED, "text-format SSLConfig: serve gRPC over TLS"),
    Flag("platform_config_file", IGNORED, "only the TensorFlow platform exists here"),
    Flag("per_process_gpu_memory_fraction", HONOURED,
         "memory limit on each visible GPU as a fraction of its memory (0: TensorFlow decides)"),
    Flag("saved_model_tags", HONOURED, "comma-separated tags of the MetaGraph to load (its tag set must equal them)"),
    Flag("grpc_channel_arguments", HONOURED,
         "comma-separated key=value gRPC server arguments (integers passed as integers)"),
    Flag("grpc_max_threads", HONOURED, "threads for gRPC calls (0: 4 x the CPU count)"),
    Flag("enable_model_warmup", HONOURED, "replay assets.extra/tf_serving_warmup_requests before serving"),
    Flag("num_request_iterations_for_warmup", HONOURED, "replay each warm-up record N times (when > 0)"),
    Flag("version", HONOURED, "print the versions and exit"),
    Flag("monitoring_config_file", HONOURED, "text-format MonitoringConfig (Prometheus metrics page)"),
    Flag("remove_unused_fields_from_bundle_metagraph", IGNORED, "the MetaGraph is kept whole here"),
    Flag("prefer_tflite_model", IGNORED, "SavedModels only; no TFLite runtime"),
    Flag("num_tflite_pools", IGNORED, "no TFLite runtime"),
    Flag("num_tflite_interpreters_per_pool", IGNORED, "no TFLite runtime"),
    Flag("enable_signature_method_name_check", IGNORED,
         "method names of classify/regress signatures are always checked here"),
    Flag("xla_cpu_compilation_enabled", IGNORED, "XLA JIT is left to the SavedModel"),
    Flag("xla_gpu_compilation_enabled", IGNORED, "XLA JIT is left to the SavedModel"),
    Flag("enable_profiler", IGNORED, "no profiler service here"),
    Flag("thread_pool_factory_config_file", IGNORED, "no custom thread pools"),
    Flag("mixed_precision", IGNORED, "precision is the export's"),
    Flag("skip_initialize_tpu", IGNORED, "no TPU support"),
    Flag("enable_grpc_healthcheck_service", HONOURED, "serve grpc.health.v1.Health"),
    Flag("enable_serialization_as_tensor_content", IGNORED,
         "Predict outputs are always written as typed value fields"),
    Flag("host", ZOO, "address to bind (default 127.0.0.1)"),
    Flag("max_request_bytes", ZOO, "largest request body accepted (after gzip decoding); larger ones get 400"),
    Flag("max_prompt_bytes", ZOO, "longest string input (prompt, text) of a zoo LM export, in UTF-8 bytes; "
                                  "longer ones get 400 / INVALID_ARGUMENT (0: no limit)"),
    Flag("max_new_tokens_limit", ZOO, "largest max_new_tokens a request may ask a zoo LM export for; larger "
                                      "ones get 400 / INVALID_ARGUMENT (0: the export's own max_new_tokens)"),
    Flag("max_batch_rows", ZOO, "most rows one request to a zoo LM export may carry (0: no limit)"),
    Flag("max_tokens_per_request", ZOO, "rows x max_new_tokens budget of one request to a zoo LM export "
                                        "(0: none)"),
)


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "t", "yes", "y"):
        return True
    if value in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def build_arg_parser(prog: str = "zoo serve") -> argparse.ArgumentParser:
    """The parser of :data:`FLAGS`: typed from the defaults; no abbreviations (TF Serving has none)."""
    p = argparse.ArgumentParser(
        prog=prog,
        usage="%(prog)s [--flag=value ...]  (tensorflow_model_server's flags; listed below)",
        description="Serve SavedModels with TensorFlow Serving's REST and gRPC APIs "
                    "(drop-in for tensorflow_model_server 2.21: it takes the same flags).",
        allow_abbrev=False,
    )
    for flag in FLAGS:
        default = flag.default
        shown = f"{flag.help} (default: {default!r})"
        if isinstance(default, bool):
            p.add_argument(f"--{flag.name}", type=_bool, nargs="?", const=True, default=default,
                           metavar="true|false", help=shown)
        else:
            p.add_argument(f"--{flag.name}", type=type(default), default=default, help=shown)
    return p


def parse_flags(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; an unknown flag or a bad value exits with status 2, naming it."""
    return build_arg_parser().parse_args(argv)


def config_from_flags(ns: argparse.Namespace) -> ServerConfig:
    """The ServerConfig of parsed flags, models resolved (ConfigError for an unusable combination)."""
    values = {f.name: getattr(ns, f.name) for f in FLAGS if f.name != "version"}
    values["model_name"] = values["model_name"] or "default"
    return resolve_models(ServerConfig(**values))


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    """Parse flags into a ServerConfig (raises ConfigError for an unusable combination)."""
    return config_from_flags(parse_flags(argv))


def ignored_flags(cfg: ServerConfig) -> list[str]:
    """``--name=value`` of every flag that cannot apply here and is not at its default."""
    out = []
    for flag in FLAGS:
        if flag.support == IGNORED and getattr(cfg, flag.name) != flag.default:
            value = getattr(cfg, flag.name)
            out.append(f"--{flag.name}={str(value).lower() if isinstance(value, bool) else value}")
    return out


_INT32 = re.compile(r"[+-]?[0-9]+")


def parse_grpc_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """``--grpc_channel_arguments``: ``k=v,k=v``; a value that is an int32 is passed as an int.

    As TF Serving's ``parseGrpcChannelArgs``: split on ``,`` then on ``=``; an entry without
    ``=`` is an error here (TF Serving crashes on it).
    """
    out: list[tuple[str, int | str]] = []
    for entry in text.split(","):
        if not entry.strip():
            continue
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--grpc_channel_arguments: expected key=value, got {entry!r}")
        value = value.strip()
        if _INT32.fullmatch(value) and -(2**31) <= int(value) < 2**31:
            out.append((key.strip(), int(value)))
        else:
            out.append((key.strip(), value))
    return out


def check_flags(cfg: ServerConfig) -> ServerConfig:
    """Refuse combinations TF Serving refuses (and the zoo's own impossible ones)."""
    if cfg.max_request_bytes <= 0:
        raise ConfigError("--max_request_bytes must be positive")
    for name in ("port", "rest_api_port"):
        value = getattr(cfg, name)
        if value < ANY_PORT or value > 65535:
            raise ConfigError(f"--{name} must be in 0..65535 (0: off; or -1: any free port), got {value}")
    if not cfg.rest_enabled and not cfg.grpc_enabled:
        raise ConfigError("--port=0 and --rest_api_port=0 turn off both gRPC and REST: nothing would "
                          "serve (give one of them a port, or --grpc_socket_path)")
    if cfg.rest_api_port > 0 and cfg.rest_api_port == cfg.port:
        raise ConfigError("Server options: http_port cannot be same as grpc_port. Please use a different "
                          "port for HTTP/REST API. Skipped exporting HTTP/REST API.")
    if cfg.batching_parameters_file and not cfg.enable_batching:
        raise ConfigError("server_options.batching_parameters_file is set without setting "
                          "server_options.enable_batching to true.")
    parallelism = (cfg.tensorflow_intra_op_parallelism, cfg.tensorflow_inter_op_parallelism,
                   cfg.tensorflow_session_parallelism)
    if all(n > 0 for n in parallelism):
        raise ConfigError("Either configure server_options.tensorflow_session_parallelism or "
                          "(server_options.tensorflow_intra_op_parallelism, "
                          "server_options.tensorflow_inter_op_parallelism) separately. "
                          "You cannot configure all.")
    if not 0.0 <= cfg.per_process_gpu_memory_fraction <= 1.0:
        raise ConfigError("--per_process_gpu_memory_fraction must be between 0.0 and 1.0")
    if not cfg.tags:
        raise ConfigError("--saved_model_tags must name at least one tag")
    parse_grpc_channel_arguments(cfg.grpc_channel_arguments)
    return cfg


def resolve_models(cfg: ServerConfig) -> ServerConfig:
    """Check the flags, then fill ``cfg.models`` from --model_config_file or --model_base_path."""
    check_flags(cfg)
    if cfg.models:
        return cfg
    if cfg.model_config_file and cfg.model_base_path:
        raise ConfigError("--model_config_file and --model_base_path cannot both be set")
    if cfg.model_config_file:
        cfg.models = load_model_config_file(cfg.model_config_file)
    elif cfg.model_base_path:
        name = validate_model_name(cfg.model_name or "default")
        cfg.models = [ModelConfig(name=name, base_path=_validate_base_path(name, cfg.model_base_path))]
    else:
        raise ConfigError("either --model_base_path or --model_config_file must be set")
    return cfg
