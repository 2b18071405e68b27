"""Canonical status codes and the error type every front end of the server maps to its protocol.

TF Serving reports every failure as a ``tensorflow::Status`` (an absl canonical code plus a
message).  The REST front end turns the code into an HTTP status with TF Serving's table
(``http_server.cc`` ``ToHTTPStatusCode``); a gRPC front end passes the code through unchanged.
Keeping one exception type with the canonical code lets both front ends share the core.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """absl / gRPC canonical status codes (same numbers as ``grpc.StatusCode``)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# TF Serving's model_servers/http_server.cc ToHTTPStatusCode.
_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


def http_status(code: Code) -> int:
    """The HTTP status TF Serving's REST API answers for a canonical code."""
    return _HTTP_STATUS.get(Code(code), 500)


class ServingError(Exception):
    """A failure with a canonical code and TF Serving's message text."""

    def __init__(self, code: Code, message: str):
        super().__init__(message)
        self.code = Code(code)
        self.message = message

    @property
    def http_status(self) -> int:
        return http_status(self.code)

    def status_string(self) -> str:
        """absl ``Status::ToString()``: ``INVALID_ARGUMENT: message``."""
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"


def invalid_argument(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(Code.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(Code.FAILED_PRECONDITION, message)


def from_exception(exc: BaseException) -> ServingError:
    """Map any exception raised while loading or running a model to a ServingError.

    TensorFlow's ``OpError`` carries a canonical code already; anything else is UNKNOWN
    (what TF Serving reports for an error without a code).
    """
    if isinstance(exc, ServingError):
        return exc
    try:
        import tensorflow as tf

        if isinstance(exc, tf.errors.OpError):
            message = exc.message or str(exc)
            try:
                return ServingError(Code(int(exc.error_code)), message)
            except ValueError:
                return ServingError(Code.UNKNOWN, message)
    except ImportError:  # pragma: no cover - tensorflow is a hard dependency
        pass
    text = str(exc) or type(exc).__name__
    return ServingError(Code.UNKNOWN, text)
