"""Stopping a request's model work mid-run, with TensorFlow's own cancellation.

A front end makes one :class:`Cancellation` per request and runs the request's work inside
``with scope(token):``.  :meth:`serving.servable.Servable.run` then calls the signature through
:func:`call`, which gives the call a ``CancellationManager`` registered with the token.  When
``token.cancel(error)`` runs (the REST timeout, a gRPC deadline or client cancel, an SSE client
that went away), every call in flight gets ``StartCancel()``: the TensorFlow runtime aborts the
graph at its next step, a ``while_loop`` included ("Loop execution was cancelled"; checked on
TF 2.21 with a loop of 2e9 steps, stopped within a millisecond), so a ``generate`` call stops at
its next decoding step and its worker thread is free at once.  The call raises the token's
error (DEADLINE_EXCEEDED or CANCELLED), and a call made after the cancel raises it without
running.

TensorFlow's ``CancellationManager.get_cancelable_function`` hands the manager to the runtime
through one module-level variable (``tensorflow.python.eager.cancellation._active_context``,
read by ``context.call_function``), which concurrent requests on several threads would
overwrite.  :func:`call` therefore replaces ``tensorflow.python.eager.cancellation.context``
once with a per-thread lookup that falls back to TensorFlow's variable: the only patch of a
TensorFlow module in the server.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .errors import Code, ServingError

__all__ = ["Cancellation", "call", "current", "deadline_exceeded", "scope"]

log = logging.getLogger("serving")

_local = threading.local()  # .token: the request's Cancellation; .manager: the TF call's manager
_patch_lock = threading.Lock()
_patched = False


class Cancellation:
    """The cancel switch of one request: ``cancel(error)`` once, callbacks run, calls stop.

    Thread-safe; the first ``cancel`` wins and later ones are ignored.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error: ServingError | None = None
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next_key = 0

    @property
    def error(self) -> ServingError | None:
        """The error the request's calls raise once it is cancelled (None: not cancelled)."""
        return self._error

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` ran."""
        return self._error is not None

    def cancel(self, error: ServingError) -> bool:
        """Cancel with ``error`` (e.g. DEADLINE_EXCEEDED); False when it was cancelled already."""
        with self._lock:
            if self._error is not None:
                return False
            self._error = error
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one failing callback must not keep the others from running
                log.exception("cancellation callback failed")
        return True

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` at the cancel (now, when already cancelled); returns its remover."""
        with self._lock:
            if self._error is None:
                key = self._next_key
                self._next_key += 1
                self._callbacks[key] = callback

                def remove() -> None:
                    with self._lock:
                        self._callbacks.pop(key, None)

                return remove
        callback()
        return lambda: None

    def check(self) -> None:
        """Raise the cancel error when cancelled."""
        if self._error is not None:
            raise self._error


def deadline_exceeded(message: str) -> ServingError:
    """DEADLINE_EXCEEDED with ``message``."""
    return ServingError(Code.DEADLINE_EXCEEDED, message)


@contextlib.contextmanager
def scope(token: Cancellation | None) -> Iterator[Cancellation | None]:
    """Make ``token`` the current thread's cancellation while the block runs (None: none)."""
    previous = getattr(_local, "token", None)
    _local.token = token
    try:
        yield token
    finally:
        _local.token = previous


def current() -> Cancellation | None:
    """The current thread's cancellation (None outside any :func:`scope`)."""
    return getattr(_local, "token", None)


def _install_thread_lookup() -> None:
    global _patched
    with _patch_lock:
        if _patched:
            return
        from tensorflow.python.eager import cancellation as tf_cancellation

        shared = tf_cancellation.context

        def per_thread_context():
            manager = getattr(_local, "manager", None)
            return manager if manager is not None else shared()

        tf_cancellation.context = per_thread_context
        _patched = True


def call(fn: Callable[..., Any], feeds: Mapping[str, Any]) -> Any:
    """``fn(**feeds)``, stopped by the current :func:`scope`'s token (a plain call outside one).

    Raises the token's error when it is cancelled before or during the call.
    """
    token = current()
    if token is None:
        return fn(**feeds)
    token.check()
    _install_thread_lookup()
    import tensorflow as tf
    from tensorflow.python.eager import cancellation as tf_cancellation

    manager = tf_cancellation.CancellationManager()
    remove = token.on_cancel(manager.start_cancel)
    previous = getattr(_local, "manager", None)
    _local.manager = manager
    try:
        return fn(**feeds)
    except tf.errors.CancelledError:
        if token.error is not None:
            raise token.error from None
        raise
    finally:
        _local.manager = previous
        remove()
