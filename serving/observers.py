"""Calling the observers (metrics, tests) that the server's parts report to.

A failing observer must never fail the request, the batch or the load it reports on: its
exception is logged and the next observer is called.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

__all__ = ["notify"]

log = logging.getLogger("serving")


def notify(observers: Iterable[Callable[..., object]], *args: object, what: str) -> None:
    """Call every observer with ``args``; log (as ``"{what} failed"``) and skip any that raises.

    ``observers`` is copied first, so an observer may add or remove observers.
    """
    for observer in list(observers):
        try:
            observer(*args)
        except Exception:
            log.exception("%s failed", what)
