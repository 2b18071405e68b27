"""The model server process: manager + REST and gRPC front ends, in-process or as ``python -m serving``.

In-process (tests, notebooks)::

    from serving.config import ANY_PORT, ServerConfig, ModelConfig
    config = ServerConfig(models=[ModelConfig("m", "/models/m")], port=ANY_PORT, rest_api_port=ANY_PORT)
    server = ModelServer(config).start()
    server.rest_url        # "http://127.0.0.1:54321"
    server.grpc_server.target  # "127.0.0.1:54322"
    server.manager         # the ServableManager both front ends ask for servables
    server.stop()

Command line: ``python -m serving --model_name m --model_base_path /models/m --rest_api_port=-1``
prints ``REST API at http://127.0.0.1:PORT`` (when REST runs) and ``gRPC API at HOST:PORT`` (when
gRPC runs) once every model is available, and stops cleanly on SIGTERM/SIGINT; ``--version``
prints the versions and exits 0.  ``main(argv)`` is the entry point ``zoo serve`` calls.

Before any model loads, :func:`serving.runtime.configure_tensorflow` applies the flags that shape the TensorFlow
runtime: thread counts (``--tensorflow_intra_op_parallelism`` / ``--tensorflow_inter_op_parallelism``,
else ``--tensorflow_session_parallelism`` for both, over those of
``--tensorflow_session_config_file``) and the GPU memory limit. Flags that cannot apply here are
named in one warning line (:func:`serving.config.ignored_flags`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import time

from .config import (
    ANY_PORT,
    ConfigError,
    ServerConfig,
    config_from_flags,
    ignored_flags,
    load_model_config_file,
    parse_flags,
    parse_grpc_channel_arguments,
    resolve_models,
)
from .manager import ServableManager
from .metrics import ServingExtras
from .predict import RequestLimits
from .rest import RestApp
from .runtime import configure_tensorflow, runtime_options, ssl_server_credentials, version_text

__all__ = ["ModelServer", "ServerStartupError", "main"]

log = logging.getLogger("serving")


class ServerStartupError(RuntimeError):
    """Models failed to load at startup (TF Serving exits in that case too)."""


class ModelServer:
    """Runs a :class:`ServableManager` and the REST API (uvicorn in a background thread)."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.manager: ServableManager | None = None
        self.app: RestApp | None = None
        self._uvicorn = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._abort = threading.Event()
        self._config_thread: threading.Thread | None = None
        self._config_text: str | None = None
        self.rest_port: int | None = None
        self.extras = ServingExtras(config)  # batching, metrics, streaming
        self.grpc_server = None  # serving.grpc_server.GrpcServer once started
        self.grpc_port: int | None = None
        self._schedulers: dict[str, object] = {}  # --enable_per_model_batching_parameters
        self._schedulers_lock = threading.Lock()
        # Files TF Serving reads at startup: a bad one is a ConfigError before any model loads.
        self.runtime = runtime_options(config)
        self._credentials = ssl_server_credentials(config.ssl_config_file) if config.ssl_config_file else None
        self.limits = RequestLimits(max_prompt_bytes=config.max_prompt_bytes,
                                    max_new_tokens_limit=config.max_new_tokens_limit,
                                    max_batch_rows=config.max_batch_rows,
                                    max_tokens_per_request=config.max_tokens_per_request)

    # ------------------------------------------------------------------ lifecycle

    def start(self, wait_for_models: bool = True, timeout: float | None = None) -> ModelServer:
        """Load the models (waiting until each is available, unless told not to), then serve REST.

        Raises ServerStartupError when a model's versions all failed to load (or ``timeout``
        seconds passed first).
        """
        cfg = resolve_models(self.config)
        ignored = ignored_flags(cfg)
        if ignored:
            log.warning("accepted but not applied by zoo serve (no effect here): %s", ", ".join(ignored))
        configure_tensorflow(self.runtime)
        self.manager = ServableManager(
            cfg.models,
            poll_wait_seconds=cfg.file_system_poll_wait_seconds,
            max_num_load_retries=cfg.max_num_load_retries,
            load_retry_interval_s=cfg.load_retry_interval_micros / 1e6,
            enable_warmup=cfg.enable_model_warmup,
            allow_version_labels_for_unavailable_models=cfg.allow_version_labels_for_unavailable_models,
            load_threads=cfg.load_threads,
            unload_threads=cfg.num_unload_threads,
            warmup_iterations=cfg.num_request_iterations_for_warmup,
            loader=self._loader(),
        )
        self.extras.attach_manager(self.manager)
        self.manager.start()
        if cfg.model_config_file and cfg.model_config_file_poll_wait_seconds > 0:
            self._config_thread = threading.Thread(target=self._watch_config, name="serving-config", daemon=True)
            self._config_thread.start()
        if wait_for_models:
            self._wait_for_models(timeout)
        if cfg.grpc_enabled:
            self._start_grpc()
        if cfg.rest_enabled:
            self._start_rest()
        elif self.grpc_server is None:
            self.stop()
            raise OSError("gRPC did not start and --rest_api_port=0 leaves REST off: nothing serves")
        return self

    def _loader(self):
        """Loads a version with ``--saved_model_tags``, batched when ``--enable_batching`` says so.

        With ``--enable_per_model_batching_parameters``, a version directory holding
        ``batching_params.pbtxt`` gets a scheduler of its own with those parameters (the thread
        count stays the global one, as in TF Serving); the others share the global scheduler.
        """
        from .batching import (
            BatchingServable,
            BatchScheduler,
            batching_loader,
            version_batching_parameters,
        )
        from .servable import load_servable

        cfg = self.config
        tags = cfg.tags

        def load(name: str, version: int, path: str, base_path: str):
            return load_servable(name, version, path, base_path, tags=tags)

        if self.extras.loader() is None:  # creates the shared scheduler when batching is on
            return load
        shared = batching_loader(self.extras.scheduler, load)
        if not cfg.enable_per_model_batching_parameters:
            return shared

        def load_per_model(name: str, version: int, path: str, base_path: str):
            servable = load(name, version, path, base_path)  # checks the tree stays in base_path
            params = version_batching_parameters(path)
            if params is None:
                return BatchingServable(servable, self.extras.scheduler)
            params = dataclasses.replace(params, num_batch_threads=self.extras.batching_parameters.num_batch_threads)
            with self._schedulers_lock:
                scheduler = self._schedulers.pop(path, None)
                if scheduler is not None:
                    scheduler.close()
                scheduler = self._schedulers[path] = BatchScheduler(params)
            scheduler.observers.append(self.extras.metrics.on_batch)
            return BatchingServable(servable, scheduler)

        return load_per_model

    def _wait_for_models(self, timeout: float | None) -> None:
        manager = self.manager
        if manager is None:
            raise RuntimeError("the manager is not started")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            unsettled, failed = manager.readiness()
            if failed:
                self.stop()
                detail = "; ".join(f"{k}: {v}" for k, v in sorted(failed.items()))
                raise ServerStartupError(f"{len(failed)} servable(s) did not become available: {detail}")
            if not unsettled:
                return
            if self._abort.is_set() or (deadline is not None and time.monotonic() >= deadline):
                self.stop()
                raise ServerStartupError(
                    f"{len(unsettled)} servable(s) did not become available: {', '.join(sorted(unsettled))}"
                )
            manager.wait_for_change(0.5)

    def _start_rest(self) -> None:
        import uvicorn

        cfg = self.config
        if self.manager is None:
            raise RuntimeError("the manager is not started")
        self.app = RestApp(
            self.manager,
            timeout_ms=cfg.rest_api_timeout_in_ms,
            max_request_bytes=cfg.max_request_bytes,
            num_threads=cfg.rest_threads,
            enable_cors=cfg.rest_api_enable_cors_support,
            limits=self.limits,
        )
        self.extras.attach_app(self.app, self.manager)
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((cfg.host, 0 if cfg.rest_api_port == ANY_PORT else cfg.rest_api_port))
        except OSError:
            sock.close()
            self.stop()
            raise
        sock.listen(128)
        sock.setblocking(False)
        self._socket = sock
        self.rest_port = sock.getsockname()[1]
        uv_config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=30,
        )
        self._uvicorn = uvicorn.Server(uv_config)
        self._thread = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [sock]}, name="serving-rest", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServerStartupError("the REST server did not start")
            time.sleep(0.02)
        log.info("REST API at %s", self.rest_url)

    def _start_grpc(self) -> None:
        """gRPC on --port (ANY_PORT: a free one; 0: none) and --grpc_socket_path.

        TLS with --ssl_config_file, grpc.health.v1 with --enable_grpc_healthcheck_service and
        --grpc_channel_arguments as server options.  An address that cannot be bound is logged
        and REST still starts (TF Serving exits instead).
        """
        from .grpc_server import GrpcServer

        def apply(models) -> None:
            self.config.models = list(models)
            self.manager.reload_config(models)

        cfg = self.config
        port = {ANY_PORT: 0, 0: None}.get(cfg.port, cfg.port)  # GrpcServer: 0 = free port, None = none
        server = GrpcServer(self.manager, host=cfg.host, port=port, max_threads=cfg.grpc_max_threads,
                            reload_config=apply, limits=self.limits,
                            options=parse_grpc_channel_arguments(cfg.grpc_channel_arguments),
                            socket_path=cfg.grpc_socket_path, credentials=self._credentials,
                            health_check=cfg.enable_grpc_healthcheck_service)
        self.extras.attach_grpc(server)
        try:
            self.grpc_server = server.start()
            self.grpc_port = server.port
        except OSError as exc:
            log.error("gRPC API not started: %s", exc)

    @property
    def rest_url(self) -> str:
        if self.rest_port is None:
            raise RuntimeError("REST is not serving (the server is not started, or --rest_api_port=0)")
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.rest_port}"

    def stop(self) -> None:
        """Stop serving REST, then unload every model. Safe to call twice."""
        self._abort.set()
        if self.grpc_server is not None:
            self.grpc_server.stop()
            self.grpc_server = None
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
            if self._thread.is_alive() and self._uvicorn is not None:
                self._uvicorn.force_exit = True
                self._thread.join(timeout=5)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self.app is not None:
            self.app.close()
        self.extras.close()
        with self._schedulers_lock:
            schedulers, self._schedulers = list(self._schedulers.values()), {}
        for scheduler in schedulers:
            scheduler.close()
        if self.manager is not None:
            self.manager.stop()
        if self._config_thread is not None:
            self._config_thread.join(timeout=5)
            self._config_thread = None

    def __enter__(self) -> ModelServer:
        return self.start() if self.rest_port is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ config reload

    def _watch_config(self) -> None:
        path = self.config.model_config_file
        wait = self.config.model_config_file_poll_wait_seconds
        while not self._abort.wait(wait):
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except OSError as exc:
                log.error("cannot read model config file %s: %s", path, exc)
                continue
            if text == self._config_text:
                continue
            try:
                models = load_model_config_file(path)
            except ConfigError as exc:
                log.error("keeping the previous model config: %s", exc)
                self._config_text = text
                continue
            if self._config_text is not None or models != self.config.models:
                log.info("applying new model config from %s", path)
                self.config.models = models
                if self.manager is not None:
                    self.manager.reload_config(models)
            self._config_text = text


def main(argv: list[str] | None = None) -> int:
    """``python -m serving`` / ``zoo serve``: run until SIGTERM or SIGINT. Returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    flags = parse_flags(argv)  # an unknown flag or a bad value exits 2 here, naming it
    if flags.version:
        print(version_text(), flush=True)
        return 0
    try:
        config = config_from_flags(flags)
        server = ModelServer(config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        log.info("received signal %d, shutting down", signum)
        stop.set()
        server._abort.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        try:
            server.start()
        except ServerStartupError as exc:
            if stop.is_set():
                return 0
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"error: cannot listen on {config.host}: {exc}", file=sys.stderr)
            return 1
        if server.rest_port is not None:
            print(f"REST API at {server.rest_url}", flush=True)
        if server.grpc_server is not None:
            print(f"gRPC API at {server.grpc_server.target}", flush=True)
        while not stop.wait(0.5):
            pass
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
