"""OpenAI's legacy completions API, ``POST /v1/completions``, over a zoo LM export (a zoo extension).

Clients written for vLLM, TGI or llama.cpp servers (or the ``openai`` package with
``base_url="http://host:port/v1"``) work unchanged::

    POST /v1/completions
    {"model": "lm", "prompt": "ROMEO:", "max_tokens": 16, "temperature": 0, "stop": ["\\n\\n"]}

Fields (anything else is a 400 naming the field, in OpenAI's error shape):

* ``model``: a served model name (latest version), ``name:7`` (version 7) or ``name:stable``
  (a version label); an unknown one is a 404, a model that is not a zoo LM export a 400;
* ``prompt``: a string or a list of strings (one choice per prompt, ``index`` in order);
* ``max_tokens`` (default 16, or the bound when that is lower): at most the export's
  ``max_new_tokens`` or ``--max_new_tokens_limit`` (a 400 past it, as on the other routes);
* ``temperature`` (default 1.0; 0 is greedy), ``top_p`` (0 < p <= 1), ``top_k`` (vLLM's
  extension; 0 is off), ``seed`` (the same seed gives the same text; none draws a fresh one);
* ``stop``: a string or up to 4: the text ends before the first one and ``finish_reason`` is
  ``"stop"`` (also when the model emitted its end token; otherwise ``"length"``);
* ``stream`` and ``stream_options.include_usage``: server-sent events, ``data: [DONE]`` last;
* accepted only at their neutral value: ``n`` (1), ``best_of`` (1), ``echo`` (false),
  ``logprobs`` and ``suffix`` (null), ``presence_penalty`` / ``frequency_penalty`` (0),
  ``logit_bias`` (empty); ignored: ``user``.

How it runs: a request without ``stop`` runs the export's ``generate`` signature once for all
its prompts; a streamed request, or one with ``stop``, runs :func:`serving.streaming.stream_events`
(``stream_start`` / ``stream_step``) prompt by prompt, which stops decoding at the first stop
sequence (an export without those signatures runs ``generate`` and the text is cut).  ``usage``
counts tokens: the ``tokenize`` signature's for the prompts, the generated ones (the end token
excluded; up to the stop sequence when decoding stopped there) for the completion.  The work
runs in the REST app's thread pool, within ``--rest_api_timeout_in_ms`` (504 past it, or an
error event in a stream), and a client that disconnects stops the decoding at the next token.
``GET /v1/models`` stays TF Serving's (400 ``Missing model name in request.``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
import uuid
from collections.abc import Iterator

from zoo.export_contract import GENERATE_SIGNATURE, TOKENIZE_SIGNATURE

from .cancellation import Cancellation, deadline_exceeded
from .cancellation import scope as cancellation_scope
from .errors import Code, ServingError
from .predict import RequestLimits, check_sampling_inputs, zoo_export_info
from .streaming import missing_stream_signature, stream_events

__all__ = ["COMPLETIONS_PATH", "CompletionRequest", "OpenAIError", "parse_request", "serve_completions"]

log = logging.getLogger("serving")

COMPLETIONS_PATH = "/v1/completions"
DEFAULT_MAX_TOKENS = 16  # OpenAI's default
MAX_STOP_SEQUENCES = 4
_INT64 = 2**63
_IGNORED = frozenset({"user"})
# field -> its neutral value(s): accepted (and meaning "off"), anything else is refused
_NEUTRAL: dict[str, tuple] = {
    "n": (None, 1),
    "best_of": (None, 1),
    "echo": (None, False),
    "logprobs": (None,),
    "suffix": (None,),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "logit_bias": (None, {}),
}
_FIELDS = frozenset({"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop",
                     "stream", "stream_options"}) | _IGNORED | frozenset(_NEUTRAL)


class OpenAIError(Exception):
    """A refused request, answered as ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.param = param
        self.code = code

    @classmethod
    def from_serving(cls, exc: ServingError, param: str | None = None) -> OpenAIError:
        """The same failure with TF Serving's HTTP status for its canonical code."""
        code = "model_not_found" if exc.code == Code.NOT_FOUND and param == "model" else None
        return cls(exc.http_status, exc.message, param, code)

    def body(self) -> dict:
        """OpenAI's error object (``type`` from the status, as the ``openai`` client expects)."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclasses.dataclass(frozen=True)
class CompletionRequest:
    """A checked ``/v1/completions`` body (``max_tokens`` None: the default)."""

    model: str
    prompts: tuple[str, ...]
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False


# ---------------------------------------------------------------------------------------------
# parsing


def _refuse(param: str, message: str) -> OpenAIError:
    return OpenAIError(400, message, param)


def _number(doc: dict, key: str, default, *, integer: bool = False):
    value = doc.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _refuse(key, f"'{key}' must be a number; got {value!r}")
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise _refuse(key, f"'{key}' must be an integer; got {value!r}")
        return int(value)
    return float(value)


def _prompts(value) -> tuple[str, ...]:
    if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(p, str) for p in value)):
        prompts = (value,) if isinstance(value, str) else tuple(value)
        for prompt in prompts:
            try:
                prompt.encode("utf-8")
            except UnicodeEncodeError:
                raise _refuse("prompt", "'prompt' is not valid Unicode (a lone surrogate)") from None
        return prompts
    if isinstance(value, list) and value and all(isinstance(p, (int, list)) for p in value):
        raise _refuse("prompt", "token-id prompts are not supported: send text")
    raise _refuse("prompt", "'prompt' must be a string or a non-empty list of strings")


def _stops(value) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise _refuse("stop", "'stop' must be a non-empty string or a list of them")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise _refuse("stop", f"'stop' has {len(stops)} sequences; at most {MAX_STOP_SEQUENCES} are allowed")
    return tuple(stops)


def _check_sampling(request: CompletionRequest) -> None:
    """The server's shared checks (:func:`serving.predict.check_sampling_inputs`), field by field
    so that the error names the field."""
    for key in ("temperature", "top_p", "top_k", "seed"):
        try:
            check_sampling_inputs({key: getattr(request, key)})
        except ServingError as exc:
            raise OpenAIError.from_serving(exc, key) from None
    # exact integer bounds (the shared check compares in float64, where 2**63 passes)
    if not request.top_k < 2**31:
        raise _refuse("top_k", f"top_k must fit in int32, got {request.top_k}")
    if request.seed is not None and not -_INT64 <= request.seed < _INT64:
        raise _refuse("seed", f"seed must be an integer within int64, got {request.seed}")


def parse_request(body: bytes) -> CompletionRequest:
    """Check a ``/v1/completions`` JSON body; raises :class:`OpenAIError` (400) naming the field."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise OpenAIError(400, f"The body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise OpenAIError(400, "The body must be a JSON object")
    for key in doc:
        if key not in _FIELDS:
            raise _refuse(key, f"Unsupported parameter: '{key}'")
    for key, neutral in _NEUTRAL.items():
        value = doc.get(key)
        if not any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in neutral):
            raise _refuse(key, f"'{key}' is not supported (only {' or '.join(map(json.dumps, neutral))})")
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise _refuse("model", "'model' must be a non-empty string")
    if "prompt" not in doc:
        raise _refuse("prompt", "'prompt' is required")
    stream = doc.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _refuse("stream", "'stream' must be true or false")
    options = doc.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise _refuse("stream_options", "'stream_options' is only allowed with 'stream': true")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise _refuse("stream_options", "'stream_options' may only hold 'include_usage'")
        include_usage = options.get("include_usage") is True
    max_tokens = _number(doc, "max_tokens", None, integer=True)
    if max_tokens is not None and max_tokens < 0:
        raise _refuse("max_tokens", f"'max_tokens' must be >= 0; got {max_tokens}")
    request = CompletionRequest(
        model=model,
        prompts=_prompts(doc["prompt"]),
        max_tokens=max_tokens,
        temperature=_number(doc, "temperature", 1.0),
        top_p=_number(doc, "top_p", 1.0),
        top_k=_number(doc, "top_k", 0, integer=True),
        seed=_number(doc, "seed", None, integer=True),
        stop=_stops(doc.get("stop")),
        stream=bool(stream),
        include_usage=include_usage,
    )
    _check_sampling(request)
    return request


# ---------------------------------------------------------------------------------------------
# the model


@dataclasses.dataclass(frozen=True)
class _Job:
    """A request resolved against its servable: what the decoding functions need."""

    request: CompletionRequest
    servable: object
    max_tokens: int
    settings: dict  # temperature, top_k, top_p, seed (as stream_events wants them)


def _split_model(model: str) -> tuple[str, int | None, str | None]:
    """``name`` / ``name:version`` / ``name:label`` (a served name has no ':')."""
    name, colon, tail = model.rpartition(":")
    if not colon or not name:
        return model, None, None
    if tail.isdigit() and int(tail) < _INT64:
        return name, int(tail), None
    return name, None, tail


def _resolve(manager, limits: RequestLimits | None, request: CompletionRequest) -> _Job:
    name, version, label = _split_model(request.model)
    try:
        servable = manager.get_servable(name, version, label)
    except ServingError as exc:
        if exc.code == Code.NOT_FOUND:
            exc = ServingError(Code.NOT_FOUND, f"The model '{request.model}' does not exist ({exc.message})")
        raise OpenAIError.from_serving(exc, "model") from None
    if zoo_export_info(servable) is None or any(
            servable.signature(key) is None for key in (GENERATE_SIGNATURE, TOKENIZE_SIGNATURE)):
        raise _refuse("model", f"The model '{request.model}' is not a zoo language-model export "
                               "(assets.extra/zoo_export.json and a 'generate' signature)")
    bound = (limits or RequestLimits()).new_tokens_limit(servable)
    max_tokens = request.max_tokens
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS if bound is None else min(DEFAULT_MAX_TOKENS, bound)
    elif bound is not None and max_tokens > bound:
        raise _refuse("max_tokens", f"max_tokens is {max_tokens}; the limit is {bound} (--max_new_tokens_limit, "
                                    "default: the export's max_new_tokens)")
    if limits is not None:
        _check_limits(limits, servable, request.prompts, max_tokens)
    seed = request.seed
    if seed is None:
        seed = secrets.randbelow(_INT64) if request.temperature > 0 else 0
    settings = {"temperature": request.temperature, "top_k": request.top_k, "top_p": request.top_p, "seed": seed}
    return _Job(request, servable, max_tokens, settings)


def _check_limits(limits: RequestLimits, servable, prompts: tuple[str, ...], max_tokens: int) -> None:
    """The server's request limits (--max_batch_rows, --max_tokens_per_request, --max_prompt_bytes)."""
    checks = [("prompt", lambda: limits.check_work(servable, len(prompts), None)),
              ("max_tokens", lambda: limits.check_work(servable, len(prompts), max_tokens))]
    checks += [("prompt", lambda p=p: limits.check_prompt("prompt", p)) for p in prompts]
    for param, check in checks:
        try:
            check()
        except ServingError as exc:
            raise OpenAIError.from_serving(exc, param) from None


def _prompt_tokens(job: _Job) -> list[int]:
    """The prompts' token counts from the export's ``tokenize`` signature."""
    import tensorflow as tf

    texts = tf.constant([p.encode("utf-8") for p in job.request.prompts], tf.string)
    out = job.servable.run(TOKENIZE_SIGNATURE, {"text": texts})
    return [int(n) for n in out["num_tokens"].numpy().reshape(-1)]


def _generate(job: _Job, prompts: tuple[str, ...]) -> list[tuple[str, int]]:
    """``(text, num_tokens)`` per prompt from one call of the ``generate`` signature."""
    import tensorflow as tf

    n = len(prompts)
    s = job.settings
    out = job.servable.run(GENERATE_SIGNATURE, {
        "prompt": tf.constant([p.encode("utf-8") for p in prompts], tf.string),
        "max_new_tokens": tf.fill([n], tf.constant(job.max_tokens, tf.int32)),
        "temperature": tf.fill([n], tf.constant(s["temperature"], tf.float32)),
        "top_k": tf.fill([n], tf.constant(s["top_k"], tf.int32)),
        "top_p": tf.fill([n], tf.constant(s["top_p"], tf.float32)),
        "seed": tf.fill([n], tf.constant(s["seed"], tf.int64)),
    })
    texts = [bytes(t).decode("utf-8", errors="replace") for t in out["text"].numpy().reshape(-1)]
    counts = [int(c) for c in out["num_tokens"].numpy().reshape(-1)]
    return list(zip(texts, counts, strict=True))


def _first_stop(text: str, stops: tuple[str, ...]) -> int:
    """Where the earliest stop sequence starts in ``text`` (-1: none)."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else -1


def _partial_stop(text: str, stops: tuple[str, ...]) -> int:
    """The length of the longest end of ``text`` that may begin a stop sequence (held back)."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


def _finish(num_tokens: int, max_tokens: int) -> str:
    return "stop" if num_tokens < max_tokens else "length"


def _pieces(job: _Job, prompt: str, token: Cancellation) -> Iterator[tuple[str, str | None, int]]:
    """One prompt's completion as ``(text piece, finish_reason or None, tokens so far)``; the
    last piece carries the finish reason.  Decodes token by token when the export streams."""
    stops = job.request.stop
    if missing_stream_signature(job.servable) is not None:
        ((text, count),) = _generate(job, (prompt,))
        cut = _first_stop(text, stops)
        yield (text, _finish(count, job.max_tokens), count) if cut < 0 else (text[:cut], "stop", count)
        return
    request = {"prompt": prompt, "max_new_tokens": job.max_tokens, **job.settings}
    events = stream_events(job.servable, request, cancel=token)
    text, sent, count = "", 0, 0
    try:
        for event, data in events:
            token.check()  # the client left, or the time is up
            if event == "done":
                count = int(data["num_tokens"])
                break
            count += "token_id" in data
            text += data["text"]
            cut = _first_stop(text, stops)
            if cut >= 0:  # stop decoding here: the rest is never computed
                yield text[sent:cut], "stop", count
                return
            safe = len(text) - _partial_stop(text, stops)
            if safe > sent:
                yield text[sent:safe], None, count
                sent = safe
    finally:
        events.close()
    yield text[sent:], _finish(count, job.max_tokens), count


def complete(job: _Job, token: Cancellation) -> tuple[list[dict], dict]:
    """The non-streamed answer's ``choices`` and ``usage`` (model calls stop once ``token`` is
    cancelled)."""
    prompts = job.request.prompts
    if job.request.stop and missing_stream_signature(job.servable) is None:
        results = []
        for prompt in prompts:
            pieces = list(_pieces(job, prompt, token))
            results.append(("".join(p for p, _, _ in pieces), pieces[-1][1], pieces[-1][2]))
    else:
        results = []
        for text, count in _generate(job, prompts):
            cut = _first_stop(text, job.request.stop)
            reason = _finish(count, job.max_tokens) if cut < 0 else "stop"
            results.append((text if cut < 0 else text[:cut], reason, count))
    choices = [{"text": text, "index": i, "logprobs": None, "finish_reason": reason}
               for i, (text, reason, _) in enumerate(results)]
    return choices, _usage(sum(_prompt_tokens(job)), sum(count for _, _, count in results))


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


# ---------------------------------------------------------------------------------------------
# HTTP (ASGI side)


def _json(doc: dict) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def _sse(doc: dict | str) -> bytes:
    return b"data: " + (doc.encode() if isinstance(doc, str) else _json(doc)) + b"\n\n"


async def _read_body(scope, receive, limit: int) -> bytes | None:
    """The request body (None: the client left); over ``limit`` bytes raises OpenAIError 400."""
    too_large = OpenAIError(400, f"The request body is larger than the limit of {limit} bytes "
                                 "(--max_request_bytes)")
    for key, value in scope.get("headers", []):
        if key.lower() == b"content-length" and value.strip().isdigit() and int(value) > limit:
            raise too_large
    chunks, total = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _as_openai_error(exc: Exception) -> OpenAIError:
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, ServingError):
        return OpenAIError.from_serving(exc)
    log.exception("/v1/completions failed")
    return OpenAIError(500, f"Internal error: {type(exc).__name__}: {exc}")


class _Exchange:
    """One ``/v1/completions`` request on a :class:`serving.rest.RestApp`.

    ``token`` cancels the request's model work (the call in progress stops at its next step):
    when the client disconnects (CANCELLED, nothing more is sent) or ``--rest_api_timeout_in_ms``
    passes (DEADLINE_EXCEEDED: a 504, or an error event once a stream has started).
    """

    def __init__(self, app, scope, receive, send):
        self.app, self.scope, self.receive, self.send = app, scope, receive, send
        self.loop = asyncio.get_running_loop()
        self.token = Cancellation()
        self.started = time.monotonic()
        self.id = "cmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.model = ""  # the served model's name (metrics)
        self.requested = ""  # the request's 'model', echoed in the answer
        timeout_s = app.timeout_s
        self.timeout = None if timeout_s is None else deadline_exceeded(
            f"The request did not finish within {int(timeout_s * 1000)} ms (--rest_api_timeout_in_ms)")
        self.timer = None if timeout_s is None else self.loop.call_later(timeout_s, self.token.cancel, self.timeout)

    async def run(self) -> int:
        """Answer the request; returns the HTTP status (499: the client left)."""
        watcher = None
        try:
            body = await _read_body(self.scope, self.receive, self.app.max_request_bytes)
            if body is None:
                return 499
            watcher = asyncio.ensure_future(self._watch_disconnect())
            job = await self._in_pool(self._prepare, body)
            if job.request.stream:
                return await self._stream(job)
            choices, usage = await self._in_pool(complete, job, self.token)
            await self._respond(200, _json({**self._head(), "choices": choices, "usage": usage}))
            return 200
        except Exception as exc:
            error = _as_openai_error(exc)
            if error.status == 499:  # the client is gone: nobody to answer
                return 499
            await self._respond(error.status, _json(error.body()))
            return error.status
        finally:
            if watcher is not None:
                watcher.cancel()
            if self.timer is not None:
                self.timer.cancel()

    def _prepare(self, body: bytes) -> _Job:
        request = parse_request(body)
        self.requested = request.model
        self.model = _split_model(request.model)[0]
        return _resolve(self.app.manager, self.app.limits, request)

    def _scoped(self, fn, *args):
        with cancellation_scope(self.token):
            return fn(*args)

    async def _in_pool(self, fn, *args):
        """``fn(*args)`` in the app's thread pool, within the request's cancellation scope."""
        future = self.loop.run_in_executor(self.app._executor, self._scoped, fn, *args)
        if self.timeout is None:
            return await future
        remaining = self.app.timeout_s - (time.monotonic() - self.started)
        try:  # (the timer has cancelled the model call by then)
            return await asyncio.wait_for(future, max(0.0, remaining))
        except asyncio.TimeoutError:
            self.token.cancel(self.timeout)
            raise self.timeout from None

    async def _watch_disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.token.cancel(ServingError(Code.CANCELLED, "The client closed the request"))

    def _head(self) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.requested}

    async def _stream(self, job: _Job) -> int:
        queue: asyncio.Queue = asyncio.Queue()
        usage_field = {"usage": None} if job.request.include_usage else {}

        def emit(chunk: bytes | None) -> None:
            self.loop.call_soon_threadsafe(queue.put_nowait, chunk)

        def work() -> None:
            try:
                completion_tokens = 0
                for index, prompt in enumerate(job.request.prompts):
                    for piece, reason, count in _pieces(job, prompt, self.token):
                        if reason is not None:
                            completion_tokens += count
                        if piece or reason:
                            choice = {"text": piece, "index": index, "logprobs": None, "finish_reason": reason}
                            emit(_sse({**self._head(), "choices": [choice], **usage_field}))
                if job.request.include_usage:
                    usage = _usage(sum(_prompt_tokens(job)), completion_tokens)
                    emit(_sse({**self._head(), "choices": [], "usage": usage}))
            except Exception as exc:  # an error event: the openai client raises it
                emit(_sse(_as_openai_error(exc).body()))
            finally:
                emit(_sse("[DONE]"))
                emit(None)

        await self.send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"), *self.app._cors()]})
        future = self.loop.run_in_executor(self.app._executor, self._scoped, work)
        gone = False
        try:
            while (chunk := await queue.get()) is not None:
                gone = self.token.cancelled and self.token.error is not self.timeout
                if not gone:
                    await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not gone:
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:  # the client went away while we were sending
            self.token.cancel(ServingError(Code.CANCELLED, "The client closed the request"))
            gone = True
        finally:
            await asyncio.wait([future], timeout=60)
        if gone:
            return 499
        return 504 if self.token.error is self.timeout else 200

    async def _respond(self, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"application/json"), *self.app._cors(),
                   (b"content-length", str(len(body)).encode("ascii"))]
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})


async def serve_completions(app, scope, receive, send) -> None:
    """Answer ``POST /v1/completions`` for ``app`` (a :class:`serving.rest.RestApp`: its manager,
    limits, thread pool, timeout and body limit); the request is recorded as api ``completions``."""
    exchange = _Exchange(app, scope, receive, send)
    status = await exchange.run()
    app.record("completions", exchange.model, status, time.monotonic() - exchange.started)
