"""The model server process: manager + REST front end, in-process or as ``python -m serving``.

In-process (tests, notebooks)::

    from serving.config import ServerConfig, ModelConfig
    server = ModelServer(ServerConfig(models=[ModelConfig("m", "/models/m")], rest_api_port=0)).start()
    server.rest_url        # "http://127.0.0.1:54321"
    server.manager         # the ServableManager (also what a gRPC front end will use)
    server.stop()

Command line: ``python -m serving --model_name m --model_base_path /models/m --rest_api_port 0``
prints ``REST API at http://127.0.0.1:PORT`` once every model is available and stops cleanly
on SIGTERM/SIGINT.  ``main(argv)`` is the entry point ``zoo serve`` calls.
"""

from __future__ import annotations

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
    load_model_config_file,
    parse_args,
    resolve_models,
)
from .manager import ServableManager
from .metrics import ServingExtras
from .predict import RequestLimits
from .rest import RestApp

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
        self.limits = RequestLimits(max_prompt_bytes=config.max_prompt_bytes,
                                    max_new_tokens_limit=config.max_new_tokens_limit)

    # ------------------------------------------------------------------ lifecycle

    def start(self, wait_for_models: bool = True, timeout: float | None = None) -> ModelServer:
        """Load the models (waiting until each is available, unless told not to), then serve REST.

        Raises ServerStartupError when a model's versions all failed to load (or ``timeout``
        seconds passed first).
        """
        cfg = resolve_models(self.config)
        self.manager = ServableManager(
            cfg.models,
            poll_wait_seconds=cfg.file_system_poll_wait_seconds,
            max_num_load_retries=cfg.max_num_load_retries,
            load_retry_interval_s=cfg.load_retry_interval_micros / 1e6,
            enable_warmup=cfg.enable_model_warmup,
            allow_version_labels_for_unavailable_models=cfg.allow_version_labels_for_unavailable_models,
            load_threads=cfg.load_threads,
            loader=self.extras.loader(),
        )
        self.extras.attach_manager(self.manager)
        self.manager.start()
        if cfg.model_config_file and cfg.model_config_file_poll_wait_seconds > 0:
            self._config_thread = threading.Thread(target=self._watch_config, name="serving-config", daemon=True)
            self._config_thread.start()
        if wait_for_models:
            self._wait_for_models(timeout)
        self._start_grpc()
        self._start_rest()
        return self

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
        """gRPC on --port (0: a free port). A port that cannot be bound is logged; REST still starts."""
        from .grpc_server import GrpcServer

        def apply(models) -> None:
            self.config.models = list(models)
            self.manager.reload_config(models)

        cfg = self.config
        port = 0 if cfg.port == ANY_PORT else cfg.port
        server = GrpcServer(self.manager, host=cfg.host, port=port, max_threads=cfg.grpc_max_threads,
                            reload_config=apply, limits=self.limits)
        try:
            self.grpc_server = server.start()
            self.grpc_port = server.port
        except OSError as exc:
            log.error("gRPC API not started: %s", exc)

    @property
    def rest_url(self) -> str:
        if self.rest_port is None:
            raise RuntimeError("the server is not started")
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
    try:
        config = parse_args(argv)
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
        except OSError as exc:
            print(f"error: cannot listen on {config.host}:{config.rest_api_port}: {exc}", file=sys.stderr)
            return 1
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
