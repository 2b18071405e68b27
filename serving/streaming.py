"""Token streaming over Server-Sent Events (beyond TF Serving's API).

Route (case-insensitive, like the /v1 API; name and label URL-decoded)::

    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:generate_stream
    {"prompt": "ROMEO:", "max_new_tokens": 32, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}

Only ``prompt`` is required.  The servable must have the LM export's streaming signatures
(``export.saved_model(..., streaming=True)``): ``stream_start`` runs the prompt and picks the
first token, then ``stream_step`` feeds one token and picks the next, the model's cache passing
from call to call as tensors that never leave the process (flat cost per token).  Settings and
``seed`` mean what they mean for the ``generate`` signature, so with the same seed the streamed
tokens are exactly ``generate``'s; ``max_new_tokens`` is clamped to ``[0, M]`` (the export's
``max_new_tokens``); a missing one means ``M``.  The server's limits apply
(:class:`serving.predict.RequestLimits`): a ``prompt`` over ``--max_prompt_bytes`` or a
``max_new_tokens`` over ``--max_new_tokens_limit`` (default ``M``), one over
``--max_tokens_per_request``, or a sampling setting out of range (NaN, inf or negative
``temperature``, ``top_p`` outside ``(0, 1]``, negative ``top_k``:
:func:`serving.predict.check_sampling_inputs`) is a 400.  The same decoding
loop (:func:`stream_events`) serves gRPC's ``zoo.serving.GenerationService/GenerateStream``
(:mod:`serving.grpc_streaming`).

Answer: ``200`` with ``Content-Type: text/event-stream``, one event per token as soon as it is
chosen::

    data: {"text": "<new text>", "token_id": 17}

then ``event: done`` with ``data: {"text": "<the whole continuation>", "num_tokens": N}``.
``text`` of a token event is the growth of the detokenized continuation, so the events' texts
concatenate to the continuation even when a character spans several tokens (a byte-level
SentencePiece piece): text that still ends in an incomplete character (U+FFFD) is held back
until it completes or the stream ends (the ``done`` event then carries what was held back in a
last token-less ``data`` event first).  Errors found before the first byte is sent are answered
as the /v1 API answers them (``{"error": ...}`` with TF Serving's HTTP status); an error in the
middle of a stream is an ``event: error`` with ``data: {"error": ...}``.  A client that
disconnects cancels the model call in progress (:mod:`serving.cancellation`) and ends the
decoding.  A stream has no time limit (``--rest_api_timeout_in_ms`` bounds /v1 calls only).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

from zoo.export_contract import (
    DETOKENIZE_SIGNATURE,
    STREAM_REQUIRED_SIGNATURES,
    STREAM_START_SIGNATURE,
    STREAM_STEP_SIGNATURE,
)

from .cancellation import Cancellation
from .cancellation import scope as cancellation_scope
from .errors import Code, ServingError, from_exception, invalid_argument
from .json_util import encode_text
from .predict import check_sampling_inputs
from .tensors import error_json

__all__ = ["STREAM_ROUTE", "StreamingRoute", "TextDeltas", "check_limits", "install", "missing_stream_signature",
           "stream_events"]

log = logging.getLogger("serving")

STREAM_ROUTE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:generate_stream", re.IGNORECASE
)
_INT64_MAX = 2**63 - 1
_REPLACEMENT = "\ufffd"


class TextDeltas:
    """Turns successive detokenized prefixes into text deltas that concatenate to the last one."""

    def __init__(self):
        self.sent = ""

    def update(self, text: str) -> str:
        """The new stable text since the last call (may be empty)."""
        stable = text.rstrip(_REPLACEMENT)
        if not stable.startswith(self.sent) or len(stable) <= len(self.sent):
            return ""
        delta = stable[len(self.sent):]
        self.sent = stable
        return delta

    def finish(self, text: str) -> str:
        """What is left to send of the final text (empty when already sent)."""
        if text.startswith(self.sent):
            delta = text[len(self.sent):]
            self.sent = text
            return delta
        return ""


def _event(data: dict, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(data, ensure_ascii=False) + "\n\n").encode("utf-8")


def _parse_body(body: bytes) -> dict:
    try:
        doc = json.loads(body.decode("utf-8")) if body.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid_argument(f"JSON Parse error: {exc}") from None
    except RecursionError:
        raise invalid_argument("JSON value is nested too deeply") from None
    if doc is None:
        raise invalid_argument("JSON Parse error: The document is empty")
    if not isinstance(doc, dict):
        raise invalid_argument("JSON Parse error: Is not object")
    prompt = doc.get("prompt")
    if not isinstance(prompt, str):
        raise invalid_argument("Missing 'prompt' key or it is not a string")
    out = {"prompt": prompt}

    def number(key, kind, default):
        value = doc.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid_argument(f"'{key}' must be a number")
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise invalid_argument(f"'{key}' must be an integer")
            return int(value)
        if not math.isfinite(value):
            raise invalid_argument(f"'{key}' must be finite")
        return float(value)

    out["max_new_tokens"] = number("max_new_tokens", int, None)
    out["temperature"] = number("temperature", float, 0.0)
    out["top_k"] = number("top_k", int, 0)
    out["top_p"] = number("top_p", float, 1.0)
    out["seed"] = number("seed", int, 0)
    if not -(2**63) <= out["seed"] <= _INT64_MAX:
        raise invalid_argument("'seed' must fit in int64")
    if not -(2**31) <= out["top_k"] < 2**31:
        raise invalid_argument("'top_k' must fit in int32")
    return out


def missing_stream_signature(servable) -> str | None:
    """The first of the streaming signatures the servable lacks (None: it can stream)."""
    for key in STREAM_REQUIRED_SIGNATURES:
        if servable.signature(key) is None:
            return key
    return None


def check_limits(servable, request: dict, limits) -> None:
    """Check a parsed stream request's sampling settings, then apply
    :class:`serving.predict.RequestLimits` to it (in place); all before any model work."""
    check_sampling_inputs(request)
    if limits is None:
        return
    new_tokens = limits.export_new_tokens(servable)
    if request.get("max_new_tokens") is not None:
        request["max_new_tokens"] = new_tokens = limits.check_new_tokens(
            request["max_new_tokens"], limits.new_tokens_limit(servable))
    limits.check_work(servable, 1, new_tokens)
    limits.check_prompt("prompt", request["prompt"])


def stream_events(servable, request: dict, cancel: Cancellation | None = None):
    """The decoding loop shared by the SSE route and gRPC ``GenerateStream``.

    ``request`` holds ``prompt`` (str), ``max_new_tokens`` (int or None: the export's bound),
    ``temperature``, ``top_k``, ``top_p`` and ``seed``.  Yields ``(event, data)`` lazily, one
    model step per token: ``(None, {"text": delta, "token_id": id})`` per token, then maybe
    ``(None, {"text": rest})`` (text held back as an incomplete character), then
    ``("done", {"text": continuation, "num_tokens": n})``.  Once ``cancel`` is cancelled the
    model call in progress stops and the next step raises its error.
    """
    import tensorflow as tf

    def run(key: str, feeds: dict):
        with cancellation_scope(cancel):
            return servable.run(key, feeds)

    settings = {
        "temperature": tf.constant([request["temperature"]], tf.float32),
        "top_k": tf.constant([request["top_k"]], tf.int32),
        "top_p": tf.constant([request["top_p"]], tf.float32),
        "seed": tf.constant([request["seed"]], tf.int64),
    }
    prompt = tf.constant([request["prompt"].encode("utf-8")])
    out = run(STREAM_START_SIGNATURE, {"prompt": prompt, **settings})
    budget = int(out["budget"].numpy()[0])
    wanted = request["max_new_tokens"]
    limit = budget if wanted is None else max(0, min(wanted, budget))
    ids: list[int] = []
    deltas = TextDeltas()
    text = ""
    while len(ids) < limit and not bool(out["done"].numpy()[0]):
        token = int(out["token_id"].numpy()[0])
        ids.append(token)
        decoded = run(DETOKENIZE_SIGNATURE, {"token_ids": tf.constant([ids], tf.int32)})["text"]
        text = bytes(decoded.numpy()[0]).decode("utf-8", errors="replace")
        yield None, {"text": deltas.update(text), "token_id": token}
        if len(ids) >= limit:
            break
        cache = {key: value for key, value in out.items() if key.startswith("cache_")}
        out = run(STREAM_STEP_SIGNATURE,
                  {"token_id": out["token_id"], "position": out["position"], **settings, **cache})
    rest = deltas.finish(text)
    if rest:
        yield None, {"text": rest}
    yield "done", {"text": text, "num_tokens": len(ids)}


class StreamingRoute:
    """The ``:generate_stream`` handler for :class:`serving.rest.RestApp`."""

    def __init__(self, manager, app=None, *, num_threads: int = 4, limits=None):
        self.manager = manager
        self.app = app
        self.limits = limits if limits is not None else getattr(app, "limits", None)
        self._executor = ThreadPoolExecutor(max_workers=max(1, num_threads), thread_name_prefix="serving-stream")

    def close(self) -> None:
        """Stop the worker threads (running streams are not waited for)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------- decoding (worker thread)

    def prepare(self, match: re.Match, body: bytes):
        """Parse and check a request: (model name, servable, stream request dict)."""
        name = unquote(match.group(1))
        version = None
        if match.group(2):
            version = int(match.group(2))
            if version > _INT64_MAX:
                raise invalid_argument(f"Failed to convert version: {match.group(2)} to numeric.")
        label = unquote(match.group(3)) if match.group(3) else None
        request = _parse_body(body)
        servable = self.manager.get_servable(name, version, label)
        key = missing_stream_signature(servable)
        if key is not None:
            raise invalid_argument(
                f'Serving signature name: "{key}" not found in signature def (export the model '
                "with export.saved_model(..., streaming=True) to stream)"
            )
        check_limits(servable, request, self.limits)
        return name, servable, request

    def generate(self, servable, request: dict, emit, cancelled: threading.Event,
                 cancel: Cancellation | None = None) -> None:
        """Run the decoding loop, calling ``emit(bytes)`` for every event; ``cancel`` stops it."""
        events = stream_events(servable, request, cancel)
        try:
            for event, data in events:
                if cancelled.is_set():
                    return
                emit(_event(data, event))
        finally:
            events.close()

    # ---------------------------------------------------------------- ASGI side

    async def __call__(self, scope, receive, send, match: re.Match, body: bytes) -> int:
        """Answer one request; returns the HTTP status sent (for metrics)."""
        loop = asyncio.get_running_loop()
        try:
            name, servable, request = await loop.run_in_executor(self._executor, self.prepare, match, body)
        except ServingError as exc:
            await _send_json(send, exc.http_status, error_json(exc.message))
            return exc.http_status
        except Exception as exc:
            log.exception("generate_stream failed")
            error = from_exception(exc)
            await _send_json(send, 500, error_json(f"Internal error: {error.message}"))
            return 500
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        token = Cancellation()
        failure: dict = {}

        def client_gone() -> None:
            cancelled.set()
            token.cancel(ServingError(Code.CANCELLED, "the client closed the stream"))

        def emit(chunk: bytes) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)

        def work() -> None:
            try:
                self.generate(servable, request, emit, cancelled, token)
            except Exception as exc:  # reported as an SSE error event
                error = from_exception(exc)
                failure["error"] = error
                if not isinstance(exc, ServingError):
                    log.exception("generate_stream failed")
                emit(_event({"error": error.message}, event="error"))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    client_gone()
                    return

        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
            ],
        })
        watcher = asyncio.ensure_future(watch_disconnect())
        future = loop.run_in_executor(self._executor, work)
        try:
            while True:
                chunk = await queue.get()
                if chunk is None:
                    break
                if cancelled.is_set():
                    continue
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not cancelled.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:  # the client went away while we were sending
            client_gone()
        finally:
            watcher.cancel()
            await asyncio.wait([future], timeout=60)
        error = failure.get("error")
        if cancelled.is_set():
            return 499
        return error.http_status if error is not None else 200


async def _send_json(send, status: int, text: str) -> None:
    body = encode_text(text)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


def install(app, manager, *, num_threads: int = 4, limits=None) -> StreamingRoute:
    """Serve ``:generate_stream`` on a :class:`serving.rest.RestApp`; records go to its observers.

    ``limits`` (a :class:`serving.predict.RequestLimits`) defaults to ``app.limits``."""
    route = StreamingRoute(manager, app, num_threads=num_threads, limits=limits)

    async def handler(scope, receive, send, match, body):
        started = time.monotonic()
        status = await route(scope, receive, send, match, body)
        app.record("generate_stream", unquote(match.group(1)), status, time.monotonic() - started)

    app.add_stream_route(STREAM_ROUTE, handler)
    return route

