"""JSON reading and writing with the behaviour of TF Serving's rapidjson code.

* ``parse_json`` accepts what rapidjson with ``kParseNanAndInfFlag`` accepts (``NaN``,
  ``Infinity``, ``-Infinity``), ignores bytes after the root value, reports errors as
  ``JSON Parse error: <rapidjson message> at offset: N``, and survives any nesting depth: the C
  parser is tried first and, when it runs out of recursion, an iterative parser takes over (up
  to ``MAX_JSON_DEPTH`` levels, beyond which the request is rejected with 400).
* ``format_float`` writes numbers like TF Serving's ``WriteDecimal`` (shortest of ``%.6g`` that
  round-trips, else full precision; ``.0`` on whole numbers; bare ``NaN``/``Infinity``).
* ``value_to_string`` prints a JSON value for error messages (rapidjson PrettyWriter layout).
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import math

import numpy as np

from .errors import invalid_argument

__all__ = [
    "MAX_JSON_DEPTH",
    "encode_text",
    "format_float",
    "format_floats",
    "json_string",
    "json_type_name",
    "parse_json",
    "value_to_string",
]

MAX_JSON_DEPTH = 1_000_000
_MAX_MESSAGE_VALUE_CHARS = 4096
_WS = " \t\n\r"
_NUMBER = json.scanner.NUMBER_RE
_decoder = json.JSONDecoder()


class _SyntaxError(Exception):
    def __init__(self, message: str, pos: int):
        super().__init__(message)
        self.message = message
        self.pos = pos


def _byte_offset(text: str, pos: int) -> int:
    return len(text[:pos].encode("utf-8", "surrogateescape"))


def _error(text: str, message: str, pos: int):
    return invalid_argument(f"JSON Parse error: {message} at offset: {_byte_offset(text, pos)}")


def _innermost_container(text: str, pos: int) -> str:
    """'{' or '[': the innermost container open at ``pos`` (only used to word an error)."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else "["


# Python's json error (by prefix) -> RapidJSON's text; the two that depend on the container are
# (message inside an object, message inside an array).
_RAPIDJSON_MESSAGES: tuple[tuple[str, str | tuple[str, str]], ...] = (
    ("Expecting value", "Invalid value."),
    ("Expecting property name", "Missing a name for object member."),
    ("Expecting ':'", "Missing a colon after a name of object member."),
    ("Expecting ',' delimiter",
     ("Missing a comma or '}' after an object member.", "Missing a comma or ']' after an array element.")),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid \\uXXXX", "Incorrect hex digit after \\u escape in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
    ("Invalid control character", "Invalid encoding in string."),
    ("Illegal trailing comma", ("Missing a name for object member.", "Invalid value.")),
)


def _rapidjson_message(text: str, exc: json.JSONDecodeError) -> str:
    """RapidJSON's message (what TF Serving reports) for a Python json parse error."""
    msg = exc.msg
    for prefix, answer in _RAPIDJSON_MESSAGES:
        if msg.startswith(prefix):
            if isinstance(answer, str):
                return answer
            in_object, in_array = answer
            return in_object if _innermost_container(text, exc.pos) == "{" else in_array
    return msg + "."


def _skip_ws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in _WS:
        pos += 1
    return pos


def parse_json(body: bytes | str):
    """Parse a request body the way TF Serving's ParseJson does (see module doc).

    Raises ServingError INVALID_ARGUMENT with TF Serving's message on any error.
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    text = body if isinstance(body, str) else body.decode("utf-8", "surrogateescape")
    start = _skip_ws(text, 0)
    if start >= len(text):
        raise _error(text, "The document is empty.", start)
    try:
        value, _end = _decoder.raw_decode(text, start)
        return value
    except json.JSONDecodeError as exc:
        raise _error(text, _rapidjson_message(text, exc), exc.pos) from None
    except RecursionError:
        pass
    except ValueError:  # an integer with more digits than Python converts
        raise _error(text, "Number too big to be stored in double.", start) from None
    try:
        return _parse_iterative(text, start)
    except _SyntaxError as exc:
        raise _error(text, exc.message, exc.pos) from None
    except ValueError:
        raise _error(text, "Number too big to be stored in double.", start) from None


_LITERALS = (
    ("true", True),
    ("false", False),
    ("null", None),
    ("NaN", math.nan),
    ("Infinity", math.inf),
    ("-Infinity", -math.inf),
)


def _parse_scalar(text: str, pos: int):
    ch = text[pos] if pos < len(text) else ""
    if ch == '"':
        try:
            return json.decoder.scanstring(text, pos + 1)
        except json.JSONDecodeError as exc:
            raise _SyntaxError(_rapidjson_message(text, exc), exc.pos) from None
    m = _NUMBER.match(text, pos)
    if m is not None:
        integer, frac, exp = m.groups()
        if frac or exp:
            return float(integer + (frac or "") + (exp or "")), m.end()
        return int(integer), m.end()
    for token, value in _LITERALS:
        if text.startswith(token, pos):
            return value, pos + len(token)
    raise _SyntaxError("Invalid value.", pos)


def _parse_iterative(text: str, pos: int):
    """A JSON parser with an explicit stack, for documents nested deeper than Python recurses."""
    n = len(text)
    stack: list[list] = []  # frames: [container, pending_key]
    while True:
        pos = _skip_ws(text, pos)
        ch = text[pos] if pos < n else ""
        if ch == "{" or ch == "[":
            pos = _skip_ws(text, pos + 1)
            close = "}" if ch == "{" else "]"
            if pos < n and text[pos] == close:
                value = {} if ch == "{" else []
                pos += 1
            else:
                if len(stack) >= MAX_JSON_DEPTH:
                    raise _SyntaxError(f"Nesting deeper than {MAX_JSON_DEPTH} levels.", pos)
                if ch == "{":
                    key, pos = _parse_key(text, pos)
                    stack.append([{}, key])
                else:
                    stack.append([[], None])
                continue
        else:
            value, pos = _parse_scalar(text, pos)
        # A value is complete: attach it and close finished containers.
        while True:
            if not stack:
                return value
            container, key = stack[-1]
            pos = _skip_ws(text, pos)
            ch = text[pos] if pos < n else ""
            if isinstance(container, list):
                container.append(value)
                if ch == ",":
                    pos += 1
                    break
                if ch == "]":
                    pos += 1
                    value = stack.pop()[0]
                    continue
                raise _SyntaxError("Missing a comma or ']' after an array element.", pos)
            container[key] = value
            if ch == ",":
                key, pos = _parse_key(text, _skip_ws(text, pos + 1))
                stack[-1][1] = key
                break
            if ch == "}":
                pos += 1
                value = stack.pop()[0]
                continue
            raise _SyntaxError("Missing a comma or '}' after an object member.", pos)


def _parse_key(text: str, pos: int) -> tuple[str, int]:
    if pos >= len(text) or text[pos] != '"':
        raise _SyntaxError("Missing a name for object member.", pos)
    try:
        key, pos = json.decoder.scanstring(text, pos + 1)
    except json.JSONDecodeError as exc:
        raise _SyntaxError(_rapidjson_message(text, exc), exc.pos) from None
    pos = _skip_ws(text, pos)
    if pos >= len(text) or text[pos] != ":":
        raise _SyntaxError("Missing a colon after a name of object member.", pos)
    return key, pos + 1


# ---------------------------------------------------------------------------------------------
# writing


def json_type_name(value) -> str:
    """rapidjson's type names used in TF Serving messages."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def format_float(value: float, single: bool = False) -> str:
    """TF Serving's WriteDecimal for one float (``single`` for float32/float16 values)."""
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "-Infinity" if v < 0 else "Infinity"
    s = f"{v:.6g}"
    if single:
        if np.float32(float(s)) != np.float32(v):
            s = f"{v:.9g}"
    elif float(s) != v:
        s = f"{v:.17g}"
    if "." not in s and "e" not in s:
        s += ".0"
    return s


def format_floats(arr: np.ndarray) -> list[str]:
    """``format_float`` over an array, vectorized for the round-trip check."""
    flat = np.asarray(arr).reshape(-1)
    single = flat.dtype.itemsize <= 4
    work = flat.astype(np.float32 if single else np.float64)
    values = work.astype(np.float64).tolist()
    short = [f"{v:.6g}" for v in values]
    finite = np.isfinite(work)
    with np.errstate(all="ignore"):
        parsed = np.array([float(s) for s in short], dtype=np.float64)
        if single:
            same = parsed.astype(np.float32) == work
        else:
            same = parsed == work
    out: list[str] = []
    for i, s in enumerate(short):
        if not finite[i]:
            v = values[i]
            out.append("NaN" if math.isnan(v) else ("-Infinity" if v < 0 else "Infinity"))
            continue
        if not same[i]:
            s = format(values[i], ".9g" if single else ".17g")
        if "." not in s and "e" not in s:
            s += ".0"
        out.append(s)
    return out


def json_string(text: str) -> str:
    """A JSON string literal (non-ASCII kept as is, like rapidjson's writer)."""
    return json.dumps(text, ensure_ascii=False)


def encode_text(text: str) -> bytes:
    """UTF-8 bytes of a response; bytes that arrived invalid are written back unchanged."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return text.encode("utf-8", "replace")


def value_to_string(value, top: bool = True) -> str:
    """JsonValueToString: a value as TF Serving quotes it in error messages (PrettyWriter)."""
    if isinstance(value, float) and top:
        return format_float(value)
    try:
        text = json.dumps(value, indent=4, ensure_ascii=False, allow_nan=True)
    except RecursionError:
        return f"<{json_type_name(value)} nested too deeply to print>"
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > _MAX_MESSAGE_VALUE_CHARS:
        text = text[:_MAX_MESSAGE_VALUE_CHARS] + "...TRUNCATED"
    return text
