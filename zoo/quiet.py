"""A quiet command line: the log noise of TensorFlow and friends, kept off the terminal.

On a machine without a GPU, importing TensorFlow 2.21 prints, from C++, lines such as::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1796600839.839335   12967 port.cc:153] oneDNN custom operations are on. ...
    I0000 00:00:1796600839.839843   12967 cudart_stub.cc:31] Could not find cuda drivers ...

(twice: two of its shared libraries each hold a copy of absl), and its first device probe adds
``E0000 ... cuda_platform.cc:52] failed call to cuInit: ...``. The import-time lines are written
before absl's logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not reach them. So the zoo's
command line does this, all of it from here:

* :func:`configure` (first thing in ``zoo.cli.main``, before anything imports TensorFlow): sets
  ``TF_CPP_MIN_LOG_LEVEL`` (3 by default: the cuInit line and every later C++ log line below
  FATAL) and ``GRPC_VERBOSITY`` for the level asked for; configures Python logging so that other
  libraries' records (``tensorflow``, ``absl``, ``jax``...) below ERROR are dropped while the
  zoo's own warnings still show; ignores Python warnings (unless ``-W`` / ``PYTHONWARNINGS`` say
  otherwise); and installs an import hook that runs the first ``import tensorflow`` -- whoever
  asks for it: Keras, ``zoo.data``, the server -- inside :func:`native_stderr`.
  ``TF_ENABLE_ONEDNN_OPTS`` is left alone: numerics do not change.
* :func:`native_stderr`: within it, file descriptor 2 is a pipe read by a small helper process
  (this file run as a script, standard library only) that drops native log lines below the level
  and copies everything else -- a traceback, a fatal ``F`` line, a crash's last words -- to the
  real stderr as it comes. A process rather than a thread, so that what a dying process wrote
  still gets out. On leaving, descriptor 2 is restored and the helper drained, so the order of
  what is printed does not change. Library code can use it too, around a call that prints native
  noise (e.g. LiteRT's ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` when an
  interpreter is created): it filters at the level the command line configured, and does nothing
  in a process that did not call :func:`configure`.

The level comes from :func:`level_from` (``--verbose`` means ``info``, else ``ZOO_LOG_LEVEL``):

  ``quiet`` (the default)  the zoo's own warnings and errors; no native log lines except fatal ones
  ``error``                errors from everything (native E lines too, e.g. ``cuInit``)
  ``warning``              warnings too (native W lines, Python warnings, libraries' log records)
  ``info`` / ``debug``     everything: nothing is filtered
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator

# logging and subprocess are imported where they are used: ``zoo --help`` and ``zoo models`` need
# neither, and this module is on every command's start-up path.

__all__ = [
    "ENV_VAR", "LEVELS", "NOISY_IMPORTS", "configure", "forward", "is_noise", "level_from",
    "native_stderr",
]

ENV_VAR = "ZOO_LOG_LEVEL"
LEVELS = ("quiet", "error", "warning", "info", "debug")
DEFAULT = "quiet"
OWN_LOGGERS = ("zoo", "export", "serving", "__main__")  # always shown from WARNING up
NOISY_IMPORTS = ("tensorflow",)  # modules whose first import prints native log lines

# Per level: TF_CPP_MIN_LOG_LEVEL, GRPC_VERBOSITY, the Python logging level, and the lowest native
# severity shown ("I" < "W" < "E" < "F"; None: the native stream is not filtered at all).
_SETTINGS: dict[str, tuple[str, str, str, str | None]] = {
    "quiet": ("3", "ERROR", "WARNING", "F"),
    "error": ("2", "ERROR", "ERROR", "E"),
    "warning": ("1", "ERROR", "WARNING", "W"),
    "info": ("0", "INFO", "INFO", None),
    "debug": ("0", "DEBUG", "DEBUG", None),
}
_RANK = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}

# absl / glog line prefix: severity, MMDD, time, thread id, file:line]  (before absl is
# initialised the date reads 0000 and the time 00:00:<epoch seconds>)
_ABSL = re.compile(rb"([IWEF])\d{4} [\d:.]+ +\d+ [^ \]]+:\d+\]")
# informational lines with no absl prefix: absl's own pre-initialisation notice, the second line of
# TensorFlow's CPU-feature notice, LiteRT's minimal logger
_INFO_LINES = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"To enable the following instructions:",
    b"INFO: ",
)
_LINE_END = re.compile(rb"\r\n|\r|\n")

_configured: str | None = None  # the level configure() set up; None: not configured


def level_from(verbose: bool = False, environ: dict[str, str] | None = None) -> str:
    """The log level asked for: ``ZOO_LOG_LEVEL`` (case-insensitive; unset or empty: ``quiet``),
    at least ``info`` with ``--verbose``. An unknown value raises ``ValueError``."""
    environ = os.environ if environ is None else environ
    level = (environ.get(ENV_VAR) or DEFAULT).strip().lower()
    if level == "warn":
        level = "warning"
    if level not in LEVELS:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(LEVELS)}. Received: {level!r}")
    if verbose and LEVELS.index(level) < LEVELS.index("info"):
        level = "info"
    return level


def _own_or_severe(record) -> bool:
    """A logging filter: the zoo's own records, and other libraries' from ERROR (40) up."""
    if record.levelno >= 40:
        return True
    return any(record.name == own or record.name.startswith(own + ".") for own in OWN_LOGGERS)


def configure(level: str) -> None:
    """Set up this process for ``level`` (one of :data:`LEVELS`) before TensorFlow is imported:
    native log thresholds, Python logging (``name: message`` on stderr), Python warnings, and the
    import hook that quiets the first import of :data:`NOISY_IMPORTS`."""
    global _configured
    tf_cpp, grpc, python_level, lowest = _SETTINGS[level]
    _configured = level
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = tf_cpp
    os.environ.setdefault("GRPC_VERBOSITY", grpc)
    import logging
    import warnings

    root = logging.getLogger()
    before = set(root.handlers)
    logging.basicConfig(level=python_level, format="%(name)s: %(message)s")
    if level == "quiet":
        for handler in set(root.handlers) - before:  # never touch handlers set up by others
            handler.addFilter(_own_or_severe)
    if level in ("quiet", "error") and not sys.warnoptions:
        warnings.simplefilter("ignore")
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietFirstImport)]
    pending = [name for name in NOISY_IMPORTS if name not in sys.modules]
    if lowest is not None and pending:
        sys.meta_path.insert(0, _QuietFirstImport(pending))


class _QuietFirstImport:
    """Finds nothing itself: hands the named modules to the other finders and wraps the loader
    they return so that the module runs inside :func:`native_stderr`; gone once each has run
    (a mere ``importlib.util.find_spec`` runs nothing and does not count)."""

    def __init__(self, names: list[str]) -> None:
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        """The spec the other finders give ``fullname``, its loader wrapped, if it is named."""
        if fullname not in self.names:
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader, self)
                return spec
        return None

    def ran(self, fullname: str) -> None:
        """``fullname`` is being imported: later imports of it need no wrapping."""
        self.names.discard(fullname)
        if not self.names and self in sys.meta_path:
            sys.meta_path.remove(self)


class _QuietLoader:
    """Runs another loader's ``exec_module`` inside :func:`native_stderr`, then puts that loader
    back on the module, so nothing of this wrapper remains after the import."""

    def __init__(self, loader, finder: _QuietFirstImport) -> None:
        self.loader = loader
        self.finder = finder

    def __getattr__(self, name: str):
        if name in ("loader", "finder"):  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def create_module(self, spec):
        """The wrapped loader's module (``None``: the default one)."""
        create = getattr(self.loader, "create_module", None)
        return None if create is None else create(spec)

    def exec_module(self, module) -> None:
        """Run ``module`` with native stderr filtered."""
        self.finder.ran(module.__name__)
        try:
            with native_stderr():
                self.loader.exec_module(module)
        finally:
            module.__loader__ = self.loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self.loader


def is_noise(line: bytes, lowest: str) -> bool:
    """Whether ``line`` (bytes, with or without its line end) is a native log line of a severity
    below ``lowest`` (``"I"``, ``"W"``, ``"E"`` or ``"F"``), to be dropped."""
    line = line.lstrip(b"\r\n")
    match = _ABSL.match(line)
    if match:
        return _RANK[match.group(1)] < _RANK[lowest.encode()]
    return lowest != "I" and line.startswith(_INFO_LINES)


def _maybe_noise(start: bytes) -> bool:
    """Whether an unfinished line that begins with ``start`` may turn out to be noise (it is then
    held back until its end arrives)."""
    if start[:1] in _RANK and (len(start) == 1 or start[1:2].isdigit()):
        return True
    return any(known.startswith(start) or start.startswith(known) for known in _INFO_LINES)


def _write(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def forward(read_fd: int, write_fd: int, lowest: str) -> None:
    """Copy ``read_fd`` to ``write_fd`` until end of file, dropping the lines that
    :func:`is_noise` calls noise. An unfinished line is copied at once unless it may be noise, so
    progress output (``\\r``) and prompts are not held back."""
    held = b""
    passing = False  # the current line was found not to be noise and is partly written already
    while True:
        chunk = os.read(read_fd, 1 << 16)
        if not chunk:
            break
        data, held, start, out = held + chunk, b"", 0, []
        for end in _LINE_END.finditer(data):
            line, start = data[start:end.end()], end.end()
            if passing or not is_noise(line, lowest):
                out.append(line)
            passing = False
        rest = data[start:]
        if rest and (passing or not _maybe_noise(rest)):
            out.append(rest)
            passing = True
        elif rest:
            held = rest
        _write(write_fd, b"".join(out))
    if held and not is_noise(held, lowest):
        _write(write_fd, held)


def _flush_stderr() -> None:
    for stream in {id(s): s for s in (sys.stderr, sys.__stderr__) if s is not None}.values():
        with contextlib.suppress(Exception):
            stream.flush()


@contextlib.contextmanager
def native_stderr(level: str | None = None, drain_timeout: float = 5.0) -> Iterator[None]:
    """Within the block, file descriptor 2 goes through the helper that drops native log lines
    below ``level`` (default: the level :func:`configure` set up; nothing is filtered when it was
    not called, at ``info`` and ``debug``, or where stderr cannot be redirected). On leaving,
    descriptor 2 is restored and the helper given ``drain_timeout`` seconds to copy what is left (a
    child process still holding the pipe keeps it running, copying, until that child ends)."""
    level = _configured if level is None else level
    lowest = None if level is None else _SETTINGS[level][3]
    if lowest is None:
        yield
        return
    _flush_stderr()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    import subprocess

    try:
        read_fd, write_fd = os.pipe()
        try:
            helper = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), lowest],
                stdin=read_fd, stdout=saved, stderr=saved, start_new_session=True,
            )
        finally:
            os.close(read_fd)
    except OSError:
        os.close(saved)
        yield
        return
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        _flush_stderr()
        os.dup2(saved, 2)
        os.close(saved)
        with contextlib.suppress(subprocess.TimeoutExpired):
            helper.wait(timeout=drain_timeout)


def _helper_main(argv: list[str]) -> int:
    """``python -I -S quiet.py LOWEST``: the helper process, stdin to stdout, filtered."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # end with the pipe, not before
        signal.signal(sig, signal.SIG_IGN)
    lowest = argv[0] if argv and argv[0] in ("I", "W", "E", "F") else "F"
    try:
        forward(0, 1, lowest)
    except OSError:  # the terminal went away: nothing left to write to
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_helper_main(sys.argv[1:]))
