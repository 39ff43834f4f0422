"""The mock's HTTP side: routing by path, control-header knobs, stats, and the transport
(chunked writes, pauses, aborts mid-body); the dialect modules build the bytes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import signal
import threading
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from tokenlimit.dev.mockllm import anthropic, gemini, openai, responses
from tokenlimit.dev.mockllm.common import (
    CHUNK_PAUSE_S,
    DEFAULT_COMPLETION_TOKENS,
    DEFAULT_NAME,
    NAME_KEY,
    STATS_KEY,
    Dialect,
    Knobs,
    MockBadRequest,
    completion_text,
    ident,
    json_bytes,
)
from tokenlimit.dev.mockllm.encoding import compress, negotiate_encoding
from tokenlimit.dev.mockllm.errors import error_body

# --------------------------------------------------------------------------- routing

_GEMINI_RE = re.compile(
    r"^/(?:v1|v1beta|v1alpha)/(?:projects/[^/]+/locations/[^/]+/publishers/google/)?"
    r"models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)$"
)
_AZURE_RE = re.compile(r"^/openai/deployments/(?P<dep>[^/]+)/chat/completions$")


def _route(path: str) -> Dialect | None:
    m = _AZURE_RE.match(path)
    if m:
        return Dialect("chat", azure=True, model=m.group("dep"))
    if path.endswith("/chat/completions"):
        return Dialect("chat")
    if path.endswith("/responses"):
        return Dialect("responses")
    if path == "/v1/messages" or path.endswith("/v1/messages"):
        return Dialect("anthropic")
    m = _GEMINI_RE.match(path)
    if m:
        return Dialect(
            "gemini",
            model=m.group("model"),
            gemini_stream=m.group("method") == "streamGenerateContent",
        )
    return None


# --------------------------------------------------------------------------- knobs


def _int_header(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.headers.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise MockBadRequest(f"header {name} must be a non-negative integer, got {raw!r}", name)
    return value


def _request_limit(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        v = body.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
    gen = body.get("generationConfig") or body.get("generation_config")
    if isinstance(gen, dict):
        v = gen.get("maxOutputTokens", gen.get("max_output_tokens"))
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
    return None


def _parse_control(request: web.Request) -> dict[str, Any]:
    """Header knobs that do not depend on the body (validated before it is parsed)."""
    status = _int_header(request, "x-mock-status", 200)
    assert status is not None
    if not 100 <= status <= 599:
        raise MockBadRequest(
            f"header x-mock-status must be 100..599, got {status}", "x-mock-status"
        )
    no_usage_raw = request.headers.get("x-mock-no-usage", "").strip().lower()
    return {
        "status": status,
        "retry_after": request.headers.get("x-mock-retry-after"),
        "delay_ms": _int_header(request, "x-mock-delay-ms", 0),
        "interval_ms": _int_header(request, "x-mock-stream-interval-ms", 0),
        "chunk_bytes": _int_header(request, "x-mock-chunk-bytes", 0),
        "abort_after": _int_header(request, "x-mock-abort-after-bytes", None),
        "no_usage": no_usage_raw not in ("", "0", "false", "no", "off"),
        "prompt": _int_header(request, "x-mock-prompt-tokens", None),
        "completion": _int_header(request, "x-mock-completion-tokens", None),
        "cached": _int_header(request, "x-mock-cached-tokens", 0),
        "cache_creation": _int_header(request, "x-mock-cache-creation-tokens", 0),
    }


def _knobs(ctl: dict[str, Any], raw: bytes, body: dict[str, Any]) -> Knobs:
    limit = _request_limit(body)
    prompt = ctl["prompt"] if ctl["prompt"] is not None else max(1, math.ceil(len(raw) / 4))
    if ctl["completion"] is not None:
        completion = ctl["completion"]
    else:
        completion = limit if limit is not None else DEFAULT_COMPLETION_TOKENS
    return Knobs(
        prompt=prompt,
        completion=completion,
        cached=ctl["cached"],
        cache_creation=ctl["cache_creation"],
        status=ctl["status"],
        retry_after=ctl["retry_after"],
        delay_ms=ctl["delay_ms"],
        interval_ms=ctl["interval_ms"],
        chunk_bytes=ctl["chunk_bytes"],
        no_usage=ctl["no_usage"],
        abort_after=ctl["abort_after"],
        hit_max=limit is not None and completion >= limit,
    )


# --------------------------------------------------------------------------- sending


async def _send(
    request: web.Request,
    status: int,
    headers: dict[str, str],
    writes: Sequence[bytes],
    k: Knobs,
    *,
    stream: bool,
) -> web.StreamResponse:
    body = b"".join(writes)
    if not stream and k.chunk_bytes == 0 and k.abort_after is None:
        return web.Response(status=status, body=body, headers=headers)

    resp = web.StreamResponse(status=status, headers=headers)
    if stream or k.chunk_bytes:
        resp.enable_chunked_encoding()
    else:
        resp.content_length = len(body)
    if k.chunk_bytes:
        n = k.chunk_bytes
        pieces = [body[i : i + n] for i in range(0, len(body), n)]
        pause = max(CHUNK_PAUSE_S, k.interval_ms / 1000)
    else:
        pieces = list(writes) if stream else [body]
        pause = k.interval_ms / 1000

    try:
        await resp.prepare(request)
        sent = 0
        for i, piece in enumerate(pieces):
            if k.abort_after is not None and sent + len(piece) >= k.abort_after:
                piece = piece[: k.abort_after - sent]
                if piece:
                    await resp.write(piece)
                await _abort(request)
                return resp
            if i and pause > 0:
                await asyncio.sleep(pause)
            await resp.write(piece)
            sent += len(piece)
        if k.abort_after is not None:  # N >= body length: drop before the terminator
            await _abort(request)
            return resp
        await resp.write_eof()
    except ConnectionError:
        pass  # the client went away mid-reply; nothing more to do
    return resp


async def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is None:
        return
    # let what was written reach the socket, then close it without a terminating chunk
    for _ in range(200):
        if transport.is_closing() or transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.01)
    transport.abort()


# --------------------------------------------------------------------------- handlers


def _record(request: web.Request, raw: bytes) -> None:
    stats = request.app[STATS_KEY]
    stats["requests"] += 1
    stats["by_path"][request.path] = stats["by_path"].get(request.path, 0) + 1
    body: Any
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        body = raw.decode("utf-8", errors="replace")
    stats["last_request"] = {
        "method": request.method,
        "path": request.path,
        "query": request.query_string,
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "body": body,
    }


def _count_status(request: web.Request, status: int) -> None:
    by_status = request.app[STATS_KEY]["by_status"]
    by_status[str(status)] = by_status.get(str(status), 0) + 1


def _error_response(
    request: web.Request,
    kind: str,
    status: int,
    message: str | None = None,
    param: str | None = None,
    retry_after: str | None = None,
) -> web.Response:
    _count_status(request, status)
    headers = {"Content-Type": "application/json"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    pretty = kind in ("chat", "responses", "gemini")
    return web.Response(
        status=status,
        body=json_bytes(error_body(kind, status, message, param), pretty),
        headers=headers,
    )


async def _llm_handler(request: web.Request) -> web.StreamResponse:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        _record(request, b"")
        return _error_response(request, "chat", 413, "Request body too large for mock-llm.")
    _record(request, raw)

    dialect = _route(request.path)
    if dialect is None:
        return _error_response(
            request, "chat", 404, f"Unknown path {request.path!r} (mock-llm).", None
        )
    if request.method != "POST":
        return _error_response(
            request, dialect.kind, 405, f"Method {request.method} not allowed; use POST."
        )
    try:
        ctl = _parse_control(request)
    except MockBadRequest as e:
        return _error_response(request, dialect.kind, 400, e.message, e.param)

    if ctl["delay_ms"]:
        await asyncio.sleep(ctl["delay_ms"] / 1000)
    if ctl["status"] >= 400:  # a forced error wins over body validation
        return _error_response(request, dialect.kind, ctl["status"], None, None, ctl["retry_after"])

    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        return _error_response(
            request,
            dialect.kind,
            400,
            f"We could not parse the JSON body of your request. ({e})",
            None,
            ctl["retry_after"],
        )
    if not isinstance(parsed, dict):
        return _error_response(
            request,
            dialect.kind,
            400,
            f"Invalid request body: expected a JSON object, got {type(parsed).__name__}.",
            None,
            ctl["retry_after"],
        )
    k = _knobs(ctl, raw, parsed)

    headers: dict[str, str] = {}
    if k.retry_after is not None:
        headers["Retry-After"] = k.retry_after
    stream = False
    writes: list[bytes]
    if dialect.kind == "chat":
        cid = ident("chatcmpl-", request.path, raw)
        stream = parsed.get("stream") is True
        if stream:
            writes = openai.chat_stream(dialect, k, parsed, cid)
        else:
            writes = [json_bytes(openai.chat_json(dialect, k, parsed, cid), not dialect.azure)]
    elif dialect.kind == "responses":
        rid = ident("resp_", request.path, raw, 48)
        mid = ident("msg_", request.path + "#m", raw, 48)
        stream = parsed.get("stream") is True
        if stream:
            writes = responses.stream(k, parsed, rid, mid)
        else:
            writes = [json_bytes(responses.response_obj(k, parsed, rid, mid, done=True), True)]
    elif dialect.kind == "anthropic":
        mid = ident("msg_01", request.path, raw)
        stream = parsed.get("stream") is True
        if stream:
            writes = anthropic.stream(k, parsed, mid)
        else:
            writes = [json_bytes(anthropic.message_json(k, parsed, mid), False)]
    else:
        rid = ident("", request.path, raw, 22)
        if dialect.gemini_stream:
            stream = True
            sse = request.query.get("alt") == "sse"
            writes = gemini.stream(dialect, k, rid, sse)
            if not sse:
                headers["Content-Type"] = "application/json; charset=UTF-8"
        else:
            chunk = gemini.chunk(dialect, k, completion_text(k.completion), True, True, rid)
            writes = [json_bytes(chunk, True)]

    if stream:
        headers.setdefault("Content-Type", "text/event-stream; charset=utf-8")
        headers["Cache-Control"] = "no-cache"
    else:
        headers["Content-Type"] = "application/json"
    if request.headers.get("x-mock-compress", "").strip().lower() in ("1", "true", "yes"):
        encoding = negotiate_encoding(request.headers.get("accept-encoding", ""))
        if encoding is not None:
            # As an upstream does when the request allows it: the whole reply, one coding.
            writes = [compress(b"".join(writes), encoding)]
            headers["Content-Encoding"] = encoding
    _count_status(request, k.status)
    return await _send(request, k.status, headers, writes, k, stream=stream)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "name": request.app[NAME_KEY]})


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS_KEY])


async def _reset(request: web.Request) -> web.Response:
    request.app[STATS_KEY].update(_fresh_stats(request.app[NAME_KEY]))
    return web.json_response({"reset": True})


def _fresh_stats(name: str) -> dict[str, Any]:
    return {"name": name, "requests": 0, "by_path": {}, "by_status": {}, "last_request": None}


def make_app(name: str = DEFAULT_NAME) -> web.Application:
    """The mock upstream as an aiohttp application."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[NAME_KEY] = name
    app[STATS_KEY] = _fresh_stats(name)

    async def tag(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-mock-upstream"] = name

    app.on_response_prepare.append(tag)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/mock/stats", _stats)
    app.router.add_post("/mock/reset", _reset)
    app.router.add_route("*", "/{tail:.*}", _llm_handler)
    return app


# --------------------------------------------------------------------------- running


async def start(host: str = "127.0.0.1", port: int = 0, name: str = DEFAULT_NAME) -> web.AppRunner:
    """Start serving in the running event loop; ``await runner.cleanup()`` stops it."""
    runner = web.AppRunner(make_app(name), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner


def runner_url(runner: web.AppRunner) -> str:
    """``http://host:port`` of the first socket a runner from :func:`start` listens on."""
    addr = runner.addresses[0]
    host, port = addr[0], addr[1]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def _serve_forever(host: str, port: int, name: str) -> None:
    runner = await start(host, port, name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        print(f"mock-llm listening on {runner_url(runner)}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def run(host: str = "127.0.0.1", port: int = 8000, name: str = DEFAULT_NAME) -> None:
    """Serve until SIGINT or SIGTERM (blocking)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(host, port, name))


class RunningMock:
    """A mock served from a background thread (for synchronous code and tests)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, name: str = DEFAULT_NAME) -> None:
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._thread = threading.Thread(
            target=self._main, args=(host, port), name=f"mock-llm-{name}", daemon=True
        )
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"mock-llm failed to start: {self._error}") from self._error
        if not self.url:
            raise RuntimeError("mock-llm did not start within 10 s")

    def _main(self, host: str, port: int) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = self._loop.run_until_complete(start(host, port, self.name))
            self.url = runner_url(self._runner)
        except BaseException as e:  # reported to the starting thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> RunningMock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_in_thread(
    host: str = "127.0.0.1", port: int = 0, name: str = DEFAULT_NAME
) -> RunningMock:
    """Serve from a daemon thread; returns a handle with ``.url``, ``.port``, ``.stop()``."""
    return RunningMock(host, port, name)
