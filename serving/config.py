"""Server configuration: tensorflow_model_server's flags and its text-format ModelServerConfig.

``parse_args(argv)`` accepts the flags a TF Serving deployment already passes
(``--port``, ``--rest_api_port``, ``--model_name``, ``--model_base_path``,
``--model_config_file``, ``--file_system_poll_wait_seconds``, ...), in both ``--flag=value`` and
``--flag value`` spellings, and returns a :class:`ServerConfig`.  A model config file is parsed
with the protos of the ``tensorflow-serving-api`` package, so any file TF Serving accepts parses
the same way here.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re

__all__ = [
    "ANY_PORT",
    "ConfigError",
    "ModelConfig",
    "ServerConfig",
    "VersionPolicy",
    "build_arg_parser",
    "load_model_config_file",
    "parse_args",
    "parse_model_server_config",
    "validate_model_name",
]

DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
# A zoo extension for tests and notebooks: bind any free port (the bound one is reported).
ANY_PORT = -1


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
    """Everything the server needs; field names follow tensorflow_model_server's flags."""

    models: list[ModelConfig] = dataclasses.field(default_factory=list)
    port: int = 8500
    rest_api_port: int = 8501
    host: str = "127.0.0.1"
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: float = 1.0
    rest_api_timeout_in_ms: int = 30000
    rest_api_num_threads: int = 0
    rest_api_enable_cors_support: bool = False
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60 * 1000 * 1000
    num_load_threads: int = 0
    enable_model_warmup: bool = True
    allow_version_labels_for_unavailable_models: bool = False
    # Accepted and stored; implemented by later front ends (batching, monitoring).
    enable_batching: bool = False
    batching_parameters_file: str = ""
    enable_per_model_batching_parameters: bool = False
    monitoring_config_file: str = ""
    grpc_max_threads: int = 0
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
        return self.num_load_threads if self.num_load_threads > 0 else 1


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
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read model config file {path!r}: {exc}") from exc
    return parse_model_server_config(text)


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "t", "yes", "y"):
        return True
    if value in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def build_arg_parser(prog: str = "zoo serve") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Serve SavedModels with TensorFlow Serving's REST API (drop-in for tensorflow_model_server).",
    )
    d = ServerConfig()
    p.add_argument("--port", type=int, default=d.port, help="gRPC port (PredictionService and ModelService); 0 picks a free port")
    p.add_argument("--rest_api_port", type=int, default=d.rest_api_port, help="REST port; 0 picks a free port")
    p.add_argument("--host", default=d.host, help="address to bind (default 127.0.0.1)")
    p.add_argument("--model_name", default=None, help="name of the model when --model_base_path is used")
    p.add_argument("--model_base_path", default="", help="directory holding numbered version directories")
    p.add_argument("--model_config_file", default="", help="text-format ModelServerConfig")
    p.add_argument("--model_config_file_poll_wait_seconds", type=int, default=0,
                   help="re-read --model_config_file every N seconds (0: read once)")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=d.file_system_poll_wait_seconds,
                   help="seconds between polls of each base path (0: poll once, <0: never)")
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=d.rest_api_timeout_in_ms)
    p.add_argument("--rest_api_num_threads", type=int, default=0)
    p.add_argument("--rest_api_enable_cors_support", type=_bool, nargs="?", const=True, default=False)
    p.add_argument("--max_request_bytes", type=int, default=d.max_request_bytes,
                   help="largest request body accepted (after gzip decoding); larger ones get 400")
    p.add_argument("--max_num_load_retries", type=int, default=d.max_num_load_retries)
    p.add_argument("--load_retry_interval_micros", type=int, default=d.load_retry_interval_micros)
    p.add_argument("--num_load_threads", type=int, default=0)
    p.add_argument("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True)
    p.add_argument("--allow_version_labels_for_unavailable_models", type=_bool, nargs="?", const=True,
                   default=False)
    p.add_argument("--enable_batching", type=_bool, nargs="?", const=True, default=False)
    p.add_argument("--batching_parameters_file", default="")
    p.add_argument("--enable_per_model_batching_parameters", type=_bool, nargs="?", const=True, default=False)
    p.add_argument("--monitoring_config_file", default="")
    p.add_argument("--grpc_max_threads", type=int, default=0)
    p.add_argument("--max_prompt_bytes", type=int, default=d.max_prompt_bytes,
                   help="longest string input (prompt, text) of a zoo LM export, in UTF-8 bytes; longer "
                        "ones get 400 / INVALID_ARGUMENT (0: no limit)")
    p.add_argument("--max_new_tokens_limit", type=int, default=d.max_new_tokens_limit,
                   help="largest max_new_tokens a request may ask a zoo LM export for; larger ones get 400 / "
                        "INVALID_ARGUMENT (0, the default: the export's own max_new_tokens)")
    return p


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    """Parse flags into a ServerConfig (raises ConfigError for an unusable combination)."""
    ns = build_arg_parser().parse_args(argv)
    cfg = ServerConfig(
        port=ns.port,
        rest_api_port=ns.rest_api_port,
        host=ns.host,
        model_name=ns.model_name or "default",
        model_base_path=ns.model_base_path,
        model_config_file=ns.model_config_file,
        model_config_file_poll_wait_seconds=ns.model_config_file_poll_wait_seconds,
        file_system_poll_wait_seconds=ns.file_system_poll_wait_seconds,
        rest_api_timeout_in_ms=ns.rest_api_timeout_in_ms,
        rest_api_num_threads=ns.rest_api_num_threads,
        rest_api_enable_cors_support=ns.rest_api_enable_cors_support,
        max_request_bytes=ns.max_request_bytes,
        max_num_load_retries=ns.max_num_load_retries,
        load_retry_interval_micros=ns.load_retry_interval_micros,
        num_load_threads=ns.num_load_threads,
        enable_model_warmup=ns.enable_model_warmup,
        allow_version_labels_for_unavailable_models=ns.allow_version_labels_for_unavailable_models,
        enable_batching=ns.enable_batching,
        batching_parameters_file=ns.batching_parameters_file,
        enable_per_model_batching_parameters=ns.enable_per_model_batching_parameters,
        monitoring_config_file=ns.monitoring_config_file,
        grpc_max_threads=ns.grpc_max_threads,
        max_prompt_bytes=ns.max_prompt_bytes,
        max_new_tokens_limit=ns.max_new_tokens_limit,
    )
    resolve_models(cfg)
    return cfg


def resolve_models(cfg: ServerConfig) -> ServerConfig:
    """Fill ``cfg.models`` from either --model_config_file or --model_name/--model_base_path."""
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
    if cfg.max_request_bytes <= 0:
        raise ConfigError("--max_request_bytes must be positive")
    if cfg.rest_api_port < ANY_PORT or cfg.rest_api_port > 65535:
        raise ConfigError("--rest_api_port must be in 0..65535 (or -1: any free port)")
    if cfg.rest_api_port and cfg.rest_api_port == cfg.port:
        raise ConfigError("Server options: http_port cannot be same as grpc_port. Please use a different "
                          "port for HTTP/REST API. Skipped exporting HTTP/REST API.")
    return cfg
