"""Model lifecycle: find version directories, load, warm up, serve, unload.

:class:`ServableManager` is the core every front end asks for a servable
(``get_servable(name, version=None, label=None)``) and for model status.  It follows TF Serving:

* every ``poll_wait_seconds`` each model's base path is listed; all-digit directory names are
  versions ("00017" is 17), anything else (``2.tmp``, ``tmp-3``) is ignored, and so is a
  directory whose real path leaves the base path (a symlink escaping it);
* the model's version policy (``latest{n}`` by default ``n=1``, ``all``, ``specific``) picks the
  aspired versions; they load in a background thread (``tf.saved_model.load``), replay
  ``assets.extra/tf_serving_warmup_requests`` and only then become AVAILABLE;
* versions that are no longer aspired are unloaded with TF Serving's
  AvailabilityPreservingPolicy: only once an aspired version is AVAILABLE (or when none is
  aspired at all), so there is never a gap; a version that fails to load is retried
  ``max_num_load_retries`` times, then stays in state END with its error while the previous
  version keeps serving;
* states are START, LOADING, AVAILABLE, UNLOADING, END with an error code and message
  (GetModelStatus).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from .config import ModelConfig
from .errors import Code, ServingError, from_exception, invalid_argument, not_found
from .observers import notify
from .predict import run_warmup
from .servable import Servable, is_within, load_servable

__all__ = ["ServableManager", "State", "VersionStatus"]

log = logging.getLogger("serving")

_VERSION_DIR = re.compile(r"[0-9]+")
_MAX_VERSION = 2**63 - 1


class State(str, enum.Enum):
    """ModelVersionStatus.State of TF Serving's get_model_status.proto."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    version: int
    state: State
    error_code: Code = Code.OK
    error_message: str = ""


@dataclasses.dataclass
class _Version:
    version: int
    path: str
    state: State = State.START
    error: ServingError | None = None
    servable: Servable | None = None
    aspired: bool = True
    in_manager: bool = True  # False once unloaded/cancelled: kept only for status
    attempts: int = 0
    retry_at: float = 0.0
    in_flight: bool = False


@dataclasses.dataclass
class _Model:
    config: ModelConfig
    versions: dict[int, _Version] = dataclasses.field(default_factory=dict)
    labels: dict[str, int] = dataclasses.field(default_factory=dict)  # effective label -> version
    polled: bool = False
    removed: bool = False
    warned_empty: bool = False


Loader = Callable[[str, int, str, str], Servable]


class ServableManager:
    """Thread-safe registry of model versions with TF Serving's lifecycle.

    Args:
        models: the configured models.
        poll_wait_seconds: seconds between file-system polls; 0 polls once, < 0 never.
        max_num_load_retries: retries after a failed load before the version ends in error.
        load_retry_interval_s: seconds between those retries.
        enable_warmup: replay ``assets.extra/tf_serving_warmup_requests`` before AVAILABLE.
        allow_version_labels_for_unavailable_models: a label may name a version not yet loaded.
        load_threads: parallel loads.
        unload_threads: threads that release unloaded versions (TF Serving's
            ``--num_unload_threads``); 0 releases them on the manager thread.
        warmup_iterations: replay each warm-up record this many times (TF Serving's
            ``--num_request_iterations_for_warmup``; used when > 0, else once).
        loader: ``(name, version, path, base_path) -> Servable`` (tests may inject one).
    """

    def __init__(
        self,
        models: Iterable[ModelConfig],
        *,
        poll_wait_seconds: float = 1.0,
        max_num_load_retries: int = 5,
        load_retry_interval_s: float = 60.0,
        enable_warmup: bool = True,
        allow_version_labels_for_unavailable_models: bool = False,
        load_threads: int = 1,
        unload_threads: int = 0,
        warmup_iterations: int = 0,
        loader: Loader | None = None,
    ):
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._models: dict[str, _Model] = {}
        for cfg in models:
            self._models[cfg.name] = _Model(config=cfg)
        self._poll_wait = float(poll_wait_seconds)
        self._max_retries = max(0, int(max_num_load_retries))
        self._retry_interval = max(0.0, float(load_retry_interval_s))
        self._warmup = bool(enable_warmup)
        self._warmup_iterations = max(1, int(warmup_iterations))
        self._allow_unavailable_labels = bool(allow_version_labels_for_unavailable_models)
        self._loader: Loader = loader or load_servable
        self._executor = ThreadPoolExecutor(max_workers=max(1, load_threads), thread_name_prefix="serving-load")
        self._unload_executor = (
            ThreadPoolExecutor(max_workers=unload_threads, thread_name_prefix="serving-unload")
            if unload_threads > 0 else None
        )
        self._wake = threading.Event()
        self._poll_requested = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[str, int, State, ServingError | None], None]] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> ServableManager:
        """Start polling and loading in the background (returns at once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="serving-manager", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling; drop every loaded version."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._unload_executor is not None:
            self._unload_executor.shutdown(wait=False)
        with self._cond:
            for model in self._models.values():
                for rec in model.versions.values():
                    if rec.state == State.AVAILABLE:
                        rec.state = State.END
                        rec.servable = None
                        rec.in_manager = False
            self._cond.notify_all()

    def add_listener(self, fn: Callable[[str, int, State, ServingError | None], None]) -> None:
        """Call ``fn(model, version, state, error)`` on every state change (e.g. for metrics)."""
        self._listeners.append(fn)

    def poll_now(self) -> None:
        """Ask the manager thread to poll the file system at once."""
        self._poll_requested.set()
        self._wake.set()

    def wait_until_ready(self, timeout: float | None = None) -> dict[str, str]:
        """Block until every model has an AVAILABLE version or all its aspired versions ended.

        Returns ``{model: problem}`` for models that did not become available (empty when all
        did); on timeout the unsettled models are reported too.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                unsettled, failed = self._readiness()
                if not unsettled:
                    return failed
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    failed.update({name: "did not become available in time" for name in unsettled})
                    return failed
                self._cond.wait(timeout=0.5 if remaining is None else min(0.5, remaining))

    def readiness(self) -> tuple[list[str], dict[str, str]]:
        """(models still loading, {model: error} for models whose aspired versions all failed)."""
        with self._lock:
            return self._readiness()

    def wait_for_change(self, timeout: float) -> None:
        """Block until some version changes state (or ``timeout`` seconds pass)."""
        with self._cond:
            self._cond.wait(timeout=timeout)

    def _readiness(self) -> tuple[list[str], dict[str, str]]:
        unsettled: list[str] = []
        failed: dict[str, str] = {}
        for name, model in self._models.items():
            if model.removed:
                continue
            recs = [r for r in model.versions.values() if r.in_manager]
            if any(r.state == State.AVAILABLE for r in recs):
                continue
            aspired = [r for r in recs if r.aspired]
            if model.polled and aspired and all(r.state == State.END for r in aspired):
                errors = "; ".join(
                    f"version {r.version}: {r.error.status_string() if r.error else 'ended'}" for r in aspired
                )
                failed[name] = errors
                continue
            unsettled.append(name)
        return unsettled, failed

    def reload_config(self, models: Iterable[ModelConfig]) -> None:
        """Apply a new model list: new models load, dropped models unload, others update."""
        new = {cfg.name: cfg for cfg in models}
        with self._cond:
            for name, cfg in new.items():
                model = self._models.get(name)
                if model is None:
                    self._models[name] = _Model(config=cfg)
                else:
                    model.config = cfg
                    model.removed = False
            for name, model in self._models.items():
                if name not in new and not model.removed:
                    model.removed = True
                    for rec in model.versions.values():
                        rec.aspired = False
                    model.labels.clear()
        self.poll_now()

    # ------------------------------------------------------------------ queries

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(n for n, m in self._models.items() if not m.removed)

    def model_config(self, name: str) -> ModelConfig | None:
        with self._lock:
            model = self._models.get(name)
            return None if model is None or model.removed else model.config

    def resolve_label(self, name: str, label: str) -> int:
        """The version a label names (TF Serving ServerCore::GetModelVersionForLabel)."""
        with self._lock:
            model = self._models.get(name)
            if model is not None and not model.removed:
                if label in model.labels:
                    return model.labels[label]
                if label in model.config.version_labels:
                    version = model.config.version_labels[label]
                    raise ServingError(
                        Code.FAILED_PRECONDITION,
                        f"Request to assign label to version {version} of model {name}, "
                        "which is not currently available for inference",
                    )
        raise invalid_argument(f"Unrecognized servable version label: {label}")

    def get_servable(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable for (name, version | label | latest) or ServingError NOT_FOUND."""
        if label is not None:
            version = self.resolve_label(name, label)
        with self._lock:
            model = self._models.get(name)
            if version is None:
                best = None
                if model is not None:
                    for rec in model.versions.values():
                        if rec.state == State.AVAILABLE and rec.servable is not None:
                            if best is None or rec.version > best.version:
                                best = rec
                if best is None:
                    raise not_found(f"Servable not found for request: Latest({name})")
                return best.servable
            rec = model.versions.get(int(version)) if model is not None else None
            if rec is None or rec.state != State.AVAILABLE or rec.servable is None:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            return rec.servable

    def model_status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """GetModelStatus: every known version (newest first), or one version."""
        with self._lock:
            model = self._models.get(name)
            recs = model.versions if model is not None else {}
            if version is not None:
                rec = recs.get(int(version))
                if rec is None:
                    raise not_found(f"Could not find version {version} of model {name}")
                return [self._status(rec)]
            if not recs:
                raise not_found(f"Could not find any versions of model {name}")
            return [self._status(recs[v]) for v in sorted(recs, reverse=True)]

    @staticmethod
    def _status(rec: _Version) -> VersionStatus:
        if rec.error is not None and rec.state == State.END:
            return VersionStatus(rec.version, rec.state, rec.error.code, rec.error.message)
        return VersionStatus(rec.version, rec.state)

    # ------------------------------------------------------------------ manager thread

    def _run(self) -> None:
        next_poll = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if self._poll_requested.is_set() or (self._poll_wait >= 0 and now >= next_poll):
                self._poll_requested.clear()
                try:
                    self._poll_filesystem()
                except Exception:  # keep the manager alive whatever a poll hits
                    log.exception("file-system poll failed")
                next_poll = now + self._poll_wait if self._poll_wait > 0 else float("inf")
            try:
                wake_at = self._reconcile()
            except Exception:
                log.exception("reconcile failed")
                wake_at = time.monotonic() + 1.0
            timeout = min(next_poll, wake_at) - time.monotonic()
            self._wake.wait(timeout=max(0.01, min(timeout, 3600.0)))
            self._wake.clear()

    def _scan(self, cfg: ModelConfig) -> dict[int, str] | None:
        base = cfg.base_path
        try:
            entries = list(os.scandir(base))
        except OSError as exc:
            log.error("File system storage path source: cannot list base path %s for model %s: %s",
                      base, cfg.name, exc)
            return None
        found: dict[int, str] = {}
        for entry in sorted(entries, key=lambda e: e.name):
            if not _VERSION_DIR.fullmatch(entry.name):
                continue
            try:
                if not entry.is_dir():
                    continue
            except OSError:
                continue
            version = int(entry.name)
            if version > _MAX_VERSION:
                continue
            if not is_within(entry.path, base):
                log.warning("Ignoring version directory %s of model %s: it resolves outside the base path %s",
                            entry.path, cfg.name, base)
                continue
            if version in found:
                log.warning("Ignoring %s: version %d of model %s is already at %s",
                            entry.path, version, cfg.name, found[version])
                continue
            found[version] = entry.path
        return found

    def _poll_filesystem(self) -> None:
        with self._lock:
            configs = [(m.config, m.removed) for m in self._models.values()]
        scans = {cfg.name: (None if removed else self._scan(cfg)) for cfg, removed in configs}
        with self._cond:
            for name, found in scans.items():
                model = self._models.get(name)
                if model is None or model.removed or found is None:
                    continue
                aspired = model.config.version_policy.select(list(found))
                if not found and not model.warned_empty:
                    log.warning(
                        "No versions of servable %s found under base path %s. Did you forget to name "
                        "your leaf directory as a number (eg. '/1/')?", name, model.config.base_path)
                    model.warned_empty = True
                elif found:
                    model.warned_empty = False
                for v, rec in model.versions.items():
                    rec.aspired = v in aspired and rec.in_manager
                for v in aspired:
                    rec = model.versions.get(v)
                    if rec is None or not rec.in_manager:
                        model.versions[v] = _Version(version=v, path=found[v])
                        self._emit(name, v, State.START, None)
                model.polled = True
            self._cond.notify_all()

    def _reconcile(self) -> float:
        """Apply the availability-preserving policy; start due loads. Returns next wake time."""
        now = time.monotonic()
        wake_at = float("inf")
        to_load: list[tuple[_Model, _Version]] = []
        with self._cond:
            for model in self._models.values():
                specific = model.config.version_policy.versions if model.config.version_policy.kind == "specific" else frozenset()
                # Versions no longer aspired that are not loaded (waiting or failed): drop them.
                for rec in model.versions.values():
                    if rec.in_manager and not rec.aspired and not rec.in_flight and rec.state in (
                        State.START, State.LOADING, State.END
                    ):
                        if rec.state != State.END:
                            rec.state = State.END
                            self._emit(model.config.name, rec.version, State.END, rec.error)
                        rec.in_manager = False
                # Unload unaspired AVAILABLE versions without leaving a gap.
                while True:
                    managed = [r for r in model.versions.values() if r.in_manager]
                    has_aspired = any(r.aspired for r in managed)
                    has_aspired_serving = any(r.aspired and r.state == State.AVAILABLE for r in managed)
                    unaspired_serving = [r for r in managed if not r.aspired and r.state == State.AVAILABLE]
                    if not unaspired_serving:
                        break
                    if not (not has_aspired or has_aspired_serving or len(unaspired_serving) > 1):
                        break
                    victim = min(unaspired_serving, key=lambda r: r.version)
                    if victim.version in specific and not model.removed:
                        break
                    self._unload(model, victim)
                # Loads: highest aspired version first.
                for rec in sorted(model.versions.values(), key=lambda r: -r.version):
                    if not (rec.in_manager and rec.aspired) or rec.in_flight:
                        continue
                    if rec.state == State.START or (rec.state == State.LOADING and rec.retry_at <= now):
                        rec.state = State.LOADING
                        rec.in_flight = True
                        to_load.append((model, rec))
                        self._emit(model.config.name, rec.version, State.LOADING, None)
                    elif rec.state == State.LOADING:
                        wake_at = min(wake_at, rec.retry_at)
                self._update_labels(model)
            self._cond.notify_all()
        for model, rec in to_load:
            try:
                self._executor.submit(self._load, model, rec)
            except RuntimeError:  # executor shut down while stopping
                rec.in_flight = False
        return wake_at

    def _unload(self, model: _Model, rec: _Version) -> None:
        name = model.config.name
        log.info("Unloading servable version {name: %s version: %d}", name, rec.version)
        rec.state = State.UNLOADING
        self._emit(name, rec.version, State.UNLOADING, None)
        # In-flight requests keep their own reference to the Servable; dropping ours is enough.
        # With unload threads, the last reference (and so the model's memory) goes on one of them.
        servable, rec.servable = rec.servable, None
        if self._unload_executor is not None and servable is not None:
            try:
                self._unload_executor.submit(_release, servable)
            except RuntimeError:  # shut down while stopping
                pass
        del servable
        rec.state = State.END
        rec.error = None
        rec.in_manager = False
        self._emit(name, rec.version, State.END, None)

    def _update_labels(self, model: _Model) -> None:
        labels = model.config.version_labels
        for label in list(model.labels):
            if label not in labels:
                del model.labels[label]
        for label, version in labels.items():
            if model.labels.get(label) == version:
                continue
            rec = model.versions.get(version)
            if self._allow_unavailable_labels or (rec is not None and rec.state == State.AVAILABLE):
                model.labels[label] = version

    def _load(self, model: _Model, rec: _Version) -> None:
        name = model.config.name
        error: ServingError | None = None
        servable: Servable | None = None
        log.info("Loading servable version {name: %s version: %d} from %s", name, rec.version, rec.path)
        try:
            servable = self._loader(name, rec.version, rec.path, model.config.base_path)
            if self._warmup:
                run_warmup(servable, model.config.base_path, self._warmup_iterations)
        except BaseException as exc:  # a load failure must never kill the loader thread
            error = from_exception(exc)
            servable = None
        with self._cond:
            rec.in_flight = False
            if self._stop.is_set():
                return
            if error is None:
                rec.state = State.AVAILABLE
                rec.servable = servable
                rec.error = None
                log.info("Successfully loaded servable version {name: %s version: %d}", name, rec.version)
                self._emit(name, rec.version, State.AVAILABLE, None)
            else:
                rec.attempts += 1
                rec.error = error
                if rec.attempts <= self._max_retries and rec.aspired:
                    rec.retry_at = time.monotonic() + self._retry_interval
                    log.warning("Loading servable version {name: %s version: %d} failed (attempt %d): %s; "
                                "retrying in %.1f s", name, rec.version, rec.attempts,
                                error.status_string(), self._retry_interval)
                else:
                    rec.state = State.END
                    log.error("Loading servable version {name: %s version: %d} failed: %s",
                              name, rec.version, error.status_string())
                    self._emit(name, rec.version, State.END, error)
            self._cond.notify_all()
        self._wake.set()

    def _emit(self, name: str, version: int, state: State, error: ServingError | None) -> None:
        notify(self._listeners, name, version, state, error, what="servable state listener")


def _release(servable: Servable) -> None:
    """Runs on an unload thread: drops the manager's last reference to an unloaded version."""
    del servable
