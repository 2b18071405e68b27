"""Progress for the zoo's long steps: one line per stage, Keras progress bars, training lines.

Where it goes: **stderr**, always (``sys.stderr`` as it is at the moment of writing, so pytest's
``capsys`` / ``capfd`` see it). A command's result stays alone on stdout: ``zoo eval RUN >
metrics.json`` shows its progress on the terminal and writes clean JSON.

How much (``verbose``, as in Keras):

* ``0``: nothing (the default of every library call);
* ``1``: a line when a stage starts and one when it ends (``exporting SavedModel ...`` /
  ``exporting SavedModel: done in 3.2 s``), live ``keras.utils.Progbar`` bars for loops;
* ``2``: the same lines, and each bar as one line when it finishes (for log files).

Functions that do long work take ``verbose: int | None = None``. ``None`` means "the ambient
level": 0 unless a caller set one for a block with ``verbosity(level)``. The command line sets
1 (0 with ``--quiet``) around each command, so deep steps such as a dataset download show up
under ``zoo train`` without every function in between passing a flag; a library caller passes
``verbose=1`` to the function it calls (which sets the ambient level for its own work).

    with stage("exporting SavedModel", verbose=1):
        ...                                    # exporting SavedModel ...
                                               # exporting SavedModel: done in 3.2 s
    for batch in track(batches, "evaluating", total=len(batches)):
        ...                                    # evaluating
                                               # 12/40 ━━━━━━━━━━━━━━━━━━━━ 3s 91ms/step

Training prints its own lines over the global step (``zoo.fitting``: ``step 1200/2000  loss
1.2340  12,345 tok/s  ETA 1m20s``), formatted by ``step_line`` here. This module imports only
the standard library (Keras when a bar is first shown), so any layer of the zoo may use it.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = [
    "Bar",
    "Stage",
    "echo",
    "format_duration",
    "level",
    "stage",
    "step_line",
    "stream",
    "track",
    "verbosity",
]

_T = TypeVar("_T")
_LEVEL: contextvars.ContextVar[int] = contextvars.ContextVar("zoo_progress_level", default=0)


def level(verbose: int | None = None) -> int:
    """``verbose`` as an int, or the ambient level (``verbosity``) when it is ``None``."""
    return _LEVEL.get() if verbose is None else int(verbose)


@contextlib.contextmanager
def verbosity(verbose: int | None) -> Iterator[int]:
    """Make ``verbose`` the ambient level inside the block (``None``: leave it as it is);
    yields the level in force."""
    if verbose is None:
        yield _LEVEL.get()
        return
    token = _LEVEL.set(int(verbose))
    try:
        yield int(verbose)
    finally:
        _LEVEL.reset(token)


def stream():
    """Where progress is written: the current ``sys.stderr``."""
    return sys.stderr


def _write(text: str) -> None:
    out = stream()
    out.write(text)
    out.flush()


def echo(message: str, verbose: int | None = None) -> None:
    """Write ``message`` as one line when the level is 1 or more."""
    if level(verbose) > 0:
        _write(message + "\n")


def format_duration(seconds: float) -> str:
    """``45s``, ``1m20s``, ``2h05m``: a duration for ETAs and totals."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Stage:
    """A running ``stage``: ``detail`` (set inside the block) is added to its closing line,
    ``seconds`` is its duration once it has ended."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.detail = ""
        self.seconds: float | None = None


@contextlib.contextmanager
def stage(label: str, verbose: int | None = None) -> Iterator[Stage]:
    """One line when the block starts (``label ...``) and one when it ends (``label: done in
    3.2 s``, plus ``(detail)`` when the block set ``Stage.detail``); nothing at level 0. A block
    that raises prints no closing line (the error says what happened)."""
    on = level(verbose) > 0
    current = Stage(label)
    if on:
        _write(f"{label} ...\n")
    started = time.perf_counter()
    yield current
    current.seconds = time.perf_counter() - started
    if on:
        detail = f" ({current.detail})" if current.detail else ""
        _write(f"{label}: done in {current.seconds:.1f} s{detail}\n")


class Bar:
    """A thin wrapper of ``keras.utils.Progbar`` that writes to stderr under a label line.

    ``total`` may be ``None`` (unknown). ``update(current, values)`` / ``add(n, values)`` as
    Progbar's, except that ``values`` are shown as given (not averaged over steps);
    ``close()`` finishes the bar (a context manager closes it too). At level 0 it does nothing
    and Keras is not imported.
    """

    def __init__(self, total: int | None, label: str, verbose: int | None = None,
                 unit: str = "step") -> None:
        self.total = total
        self.label = label
        self.level = level(verbose)
        self.current = 0
        self._values: list[tuple[str, Any]] = []
        self._bar = None
        self._closed = False
        if self.level > 0:
            import keras

            _write(f"{label}\n")
            with contextlib.redirect_stdout(stream()):  # Progbar looks at stdout to draw
                self._bar = keras.utils.Progbar(total, verbose=min(self.level, 2),
                                                stateless_metrics=set(), unit_name=unit)

    def update(self, current: int, values: list[tuple[str, Any]] | None = None) -> None:
        """Set the count done to ``current`` (``values``: ``[(name, value), ...]`` to show)."""
        self.current = int(current)
        if values is not None:
            self._values = list(values)
        if self._bar is not None and not self._closed:
            finished = self.total is not None and self.current >= self.total
            with contextlib.redirect_stdout(stream()):
                self._bar.update(self.current, self._values, finalize=finished)
            self._closed = finished

    def add(self, n: int = 1, values: list[tuple[str, Any]] | None = None) -> None:
        """Count ``n`` more done."""
        self.update(self.current + n, values)

    def close(self) -> None:
        """Finish the bar where it stands (once)."""
        if self._bar is not None and not self._closed:
            self._closed = True
            with contextlib.redirect_stdout(stream()):
                self._bar.update(self.current, self._values, finalize=True)

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        elif self._bar is not None and not self._closed:
            self._closed = True
            _write("\n")  # leave the half-drawn bar on its own line before the error


def track(items: Iterable[_T], label: str, total: int | None = None,
          verbose: int | None = None, unit: str = "step") -> Iterator[_T]:
    """Yield ``items``, advancing a ``Bar`` by one for each (``total``: default ``len(items)``
    when it has one)."""
    if level(verbose) <= 0:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Bar(total, label, verbose, unit) as bar:
        for item in items:
            yield item
            bar.add(1)


def step_line(step: int, total: int, loss: float | None = None,
              tokens_per_second: float | None = None, steps_per_second: float | None = None,
              eta_seconds: float | None = None) -> str:
    """Training's progress line: ``step 1200/2000  loss 1.2340  12,345 tok/s  ETA 1m20s``
    (``steps/s`` instead of ``tok/s`` when the tokens of a step are not known)."""
    parts = [f"step {step}/{total}"]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if tokens_per_second is not None:
        parts.append(f"{tokens_per_second:,.0f} tok/s")
    elif steps_per_second is not None:
        parts.append(f"{steps_per_second:.2f} steps/s")
    if eta_seconds is not None:
        parts.append(f"ETA {format_duration(eta_seconds)}")
    return "  ".join(parts)
