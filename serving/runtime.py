"""What the server sets up before serving: the TensorFlow runtime, TLS and ``--version``.

:func:`runtime_options` reads the flags that shape the TensorFlow runtime (thread counts from
``--tensorflow_intra_op_parallelism`` / ``--tensorflow_inter_op_parallelism``, else
``--tensorflow_session_parallelism``, over those of ``--tensorflow_session_config_file``; the GPU
memory fraction) and :func:`configure_tensorflow` applies them before any model loads;
:func:`ssl_server_credentials` turns ``--ssl_config_file`` into gRPC credentials;
:func:`version_text` is what ``--version`` prints.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess

from . import tfserving_protos as protos
from .config import ConfigError, ServerConfig

__all__ = ["RuntimeOptions", "configure_tensorflow", "runtime_options", "ssl_server_credentials",
           "version_text"]

log = logging.getLogger("serving")


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
    """What the flags ask of the TensorFlow runtime; 0 / None leave TensorFlow's own choice."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    gpu_memory_fraction: float = 0.0
    gpu_allow_growth: bool | None = None


def runtime_options(cfg: ServerConfig) -> RuntimeOptions:
    """Thread counts and GPU options from ``--tensorflow_session_config_file`` and the flags.

    As TF Serving's server.cc: ``--tensorflow_intra_op_parallelism`` /
    ``--tensorflow_inter_op_parallelism``, when either is set, give both counts (0: automatic)
    and ``--tensorflow_session_parallelism`` is not used; otherwise that one sets both.  Each of
    them overrides the config file's value only when set (> 0); likewise
    ``--per_process_gpu_memory_fraction``.
    """
    intra = inter = 0
    fraction, growth = 0.0, None
    if cfg.tensorflow_session_config_file:
        from tensorflow.core.protobuf import config_pb2

        proto = protos.read_text_file(cfg.tensorflow_session_config_file, config_pb2.ConfigProto())
        intra, inter = proto.intra_op_parallelism_threads, proto.inter_op_parallelism_threads
        fraction = proto.gpu_options.per_process_gpu_memory_fraction
        growth = True if proto.gpu_options.allow_growth else None  # proto3: false is "not set"
    if cfg.tensorflow_intra_op_parallelism > 0 or cfg.tensorflow_inter_op_parallelism > 0:
        intra, inter = cfg.tensorflow_intra_op_parallelism, cfg.tensorflow_inter_op_parallelism
    elif cfg.tensorflow_session_parallelism > 0:
        intra = inter = cfg.tensorflow_session_parallelism
    if cfg.per_process_gpu_memory_fraction > 0:
        fraction = cfg.per_process_gpu_memory_fraction
    return RuntimeOptions(max(0, intra), max(0, inter), fraction, growth)


def configure_tensorflow(options: RuntimeOptions) -> None:
    """Apply ``options`` through ``tf.config`` (before TensorFlow runs its first op).

    In a process where TensorFlow already ran ops (the Python API after other TensorFlow work),
    thread counts can no longer change: a warning says so unless they already match.
    """
    if options == RuntimeOptions():
        return
    import tensorflow as tf

    threading_api = tf.config.threading
    for wanted, setter, getter, what in (
        (options.intra_op_threads, threading_api.set_intra_op_parallelism_threads,
         threading_api.get_intra_op_parallelism_threads, "intra_op"),
        (options.inter_op_threads, threading_api.set_inter_op_parallelism_threads,
         threading_api.get_inter_op_parallelism_threads, "inter_op"),
    ):
        if wanted <= 0:
            continue
        try:
            setter(wanted)
        except RuntimeError:
            if getter() != wanted:
                log.warning("TensorFlow already ran in this process: %s parallelism stays %d, not %d",
                            what, getter(), wanted)
    log.info("TensorFlow threads: intra_op=%d inter_op=%d (0: automatic)",
             threading_api.get_intra_op_parallelism_threads(), threading_api.get_inter_op_parallelism_threads())
    if options.gpu_memory_fraction > 0 or options.gpu_allow_growth is not None:
        _configure_gpus(tf, options)


def _gpu_memory_mib() -> list[int]:
    """Total memory of each physical GPU (nvidia-smi), in the order CUDA numbers them."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        totals = [int(float(v)) for v in out.split()]
    except (OSError, ValueError, subprocess.SubprocessError):
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible and all(v.strip().isdigit() for v in visible.split(",")):
        totals = [totals[int(v)] for v in visible.split(",") if int(v) < len(totals)]
    return totals


def _configure_gpus(tf, options: RuntimeOptions) -> None:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        log.info("no GPU visible: the GPU memory options have no effect")
        return
    totals = _gpu_memory_mib() if options.gpu_memory_fraction > 0 else []
    for index, gpu in enumerate(gpus):
        try:
            if options.gpu_memory_fraction > 0:
                if index >= len(totals):
                    log.warning("cannot tell the memory of %s (no nvidia-smi): "
                                "--per_process_gpu_memory_fraction not applied to it", gpu.name)
                    continue
                limit = int(totals[index] * options.gpu_memory_fraction)
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)])
                log.info("%s: memory limit %d MiB of %d", gpu.name, limit, totals[index])
            elif options.gpu_allow_growth is not None:
                tf.config.experimental.set_memory_growth(gpu, options.gpu_allow_growth)
        except RuntimeError as exc:  # the GPUs were initialised already
            log.warning("GPU memory options not applied to %s: %s", gpu.name, exc)


def ssl_server_credentials(path: str):
    """``--ssl_config_file``: a text-format SSLConfig (PEM text) as gRPC server credentials.

    As TF Serving: ``server_key`` / ``server_cert`` are the server's pair, ``custom_ca`` the
    roots that client certificates are checked against, ``client_verify`` requires one.
    """
    import grpc

    config = protos.read_text_file(path, protos.SSLConfig())
    if not config.server_key or not config.server_cert:
        raise ConfigError(f"{path}: SSLConfig needs server_key and server_cert (PEM text)")
    if config.client_verify and not config.custom_ca:
        raise ConfigError(f"{path}: client_verify needs custom_ca to verify client certificates with")
    return grpc.ssl_server_credentials(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() or None,
        require_client_auth=config.client_verify,
    )


def version_text() -> str:
    """``--version``: this server's version and the TensorFlow it runs (read without importing it)."""
    from importlib import metadata

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (f"TensorFlow ModelServer: zoo serve {version('keras-lm-zoo')} "
            f"(tensorflow_model_server 2.21 flags, tensorflow-serving-api {version('tensorflow-serving-api')})\n"
            f"TensorFlow Library: {version('tensorflow')}")
