"""tokenlimit bridge: RESP over HTTP to Redis, for stock Envoy.

Why it exists: stock Envoy's proxy-wasm ABI has no Redis client (Higress adds
``proxy_redis_*``; Envoy does not), but every filter can make ``proxy_http_call``. The
``tokenlimit.wasm`` filter therefore sends its Redis commands, already encoded as RESP, in an
HTTP body to this service, which forwards them to Redis and returns Redis' reply bytes
untouched. The filter keeps one RESP codec for both transports, and the bridge stays a dumb,
fast, bounded pipe with a command allowlist (DESIGN.md §2).

Protocol (the filter depends on this exactly)
---------------------------------------------
``POST /v1/resp``
    Body: one or more RESP arrays of bulk strings (a pipeline), at most 64 commands and
    1 MiB; each command at most 1024 arguments of at most 512 KiB (see
    :func:`tokenlimit.bridge.resp.split_commands`; inline commands are refused). Every command is
    validated before anything is sent; the whole body then goes to Redis as one pipeline on one
    pooled connection. Allowed commands (case-insensitive): ``EVALSHA``, ``EVAL``,
    ``SCRIPT LOAD``, ``SCRIPT EXISTS``, ``PING``, ``TIME``.

    ``200``, ``content-type: application/x-redis-resp``: the RESP replies concatenated in
    order, byte for byte as Redis sent them. Redis error replies (``-NOSCRIPT ...``,
    ``-ERR ...``) are replies, so they are passed through inside the 200.

    Otherwise a one-line ``text/plain`` body and ``x-tokenlimit-bridge-error``:

    ====  =========================  ========================================================
    401   ``unauthorized``           ``authorization: Bearer <token>`` is missing or wrong
                                     (constant-time compare)
    403   ``script-not-allowed``     EVAL/EVALSHA/SCRIPT LOAD of a script that is not one of
                                     tokenlimit's (contract/*.lua); nothing was sent
    408   ``bad-request``            the body did not arrive within ``--read-timeout-ms``
    503   ``bridge-full``            ``--max-connections`` are open; answered before reading
    403   ``command-not-allowed``    some command is not in the allowlist; the body names it;
                                     nothing was sent to Redis
    400   ``bad-request``            malformed RESP, more than 64 commands, a bound exceeded,
                                     or a bad ``x-tokenlimit-timeout-ms``
    413   ``bad-request``            body larger than 1 MiB
    503   ``redis-unreachable``      connect refused, DNS failure, host down (connect did not
                                     complete in time)
    503   ``redis-auth-failed``      WRONGPASS / NOAUTH / invalid password (on connect or in a
                                     reply); answered at once, never after a hang
    503   ``redis-timeout``          no complete reply within the deadline
    503   ``redis-error``            anything else (connection reset mid-reply, bad SELECT...)
    ====  =========================  ========================================================

    The 503 body is one line of details (never the password).

    Deadline: ``--timeout-ms`` (default 500) covers getting a connection, sending and reading
    every reply; a request header ``x-tokenlimit-timeout-ms: N`` lowers it for that request
    (never raises it). A caller never waits longer than the deadline plus scheduling slack.
    After a failed connect, new connects back off (25 ms doubling to 1 s) and callers get the
    last connect error at once instead of waiting, so an outage costs the filter nothing.

``GET /healthz``  200 while the process runs.
``GET /readyz``   200 when a Redis ``PING`` through the pool succeeds within the timeout, else
                  503 with the same ``x-tokenlimit-bridge-error`` values.
``GET /metrics``  Prometheus text: ``tokenlimit_bridge_requests_total{outcome}``,
                  ``tokenlimit_bridge_commands_total{command}``,
                  ``tokenlimit_bridge_request_seconds`` (histogram, /v1/resp only) and
                  ``tokenlimit_bridge_pool_connections{state="idle|busy"}``.
``/healthz``, ``/readyz`` and ``/metrics`` need no token (probes and scrapers).

Security (docs/threat-model.md): ``EVAL``, ``EVALSHA`` and ``SCRIPT LOAD`` run only scripts
the bridge knows by SHA-1 -- tokenlimit's own, contract/*.lua -- anything else is ``403
script-not-allowed`` and nothing is sent. A token is required (``--insecure`` runs without
one, on loopback only). Connections are capped (``--max-connections``, 512; past it ``503
bridge-full`` at once) and each request head and body must arrive within
``--read-timeout-ms`` (5000), so held half-requests cannot exhaust descriptors (guard.py).
Secrets are taken by reference only: ``--token-file`` or ``TOKENLIMIT_BRIDGE_TOKEN``,
``--redis-password-file`` or ``TOKENLIMIT_REDIS_PASSWORD``; a password in ``--redis`` is
refused (``ps`` would show it).

Connections: :mod:`tokenlimit.bridge.pool` (pipelined, lazily opened, never reused after a
fault); metrics: :mod:`tokenlimit.bridge.metrics`; RESP bounds: :mod:`tokenlimit.bridge.resp`.

Run (``python -m tokenlimit.bridge`` takes the same options)::

    tokenlimit bridge --redis redis://[user[:password]@]host:port[/db] --listen PORT \\
        [--host 127.0.0.1] [--token-file F | --insecure] [--redis-password-file F] \\
        [--pool-size 8] [--timeout-ms 500] [--max-connections 512] [--read-timeout-ms 5000]

It prints ``tokenlimit bridge listening on http://HOST:PORT → redis HOST:PORT/DB`` (flushed)
once it accepts connections and stops cleanly on SIGINT / SIGTERM. In-process:
``bridge = await start(BridgeConfig(...))`` (``.url``, ``.port``, ``await bridge.stop()``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import time
from collections.abc import Sequence

from tokenlimit.bridge.config import BridgeConfig
from tokenlimit.bridge.connection import Outcome, RedisFault, error_text
from tokenlimit.bridge.guard import (
    ConnectionGuard,
    Registry,
    Scripts,
    contract_scripts,
    ensure_descriptors,
)
from tokenlimit.bridge.http import Answer, HttpConnection, Request, Result, text
from tokenlimit.bridge.metrics import CONTENT_TYPE, Metrics
from tokenlimit.bridge.pool import RedisPool
from tokenlimit.bridge.resp import ProtocolError, encode_command
from tokenlimit.bridge.scan import scan_commands

log = logging.getLogger("tokenlimit.bridge")

RESP_CONTENT_TYPE = "application/x-redis-resp"
ERROR_HEADER = "x-tokenlimit-bridge-error"
TIMEOUT_HEADER = "x-tokenlimit-timeout-ms"

# Allowed commands -> metric label. SCRIPT is allowed only with these subcommands.
_COMMANDS = {b"EVALSHA": "evalsha", b"EVAL": "eval", b"PING": "ping", b"TIME": "time"}
_SCRIPT_SUBCOMMANDS = {b"LOAD": "script_load", b"EXISTS": "script_exists"}
_RESP_TYPE = RESP_CONTENT_TYPE.encode("ascii")
_METRICS_TYPE = CONTENT_TYPE.encode("ascii")


def command_label(command: Sequence[bytes]) -> str | None:
    """The metric label of an allowed command, or None if it is not allowed."""
    name = command[0]
    if len(name) > 16:
        return None
    name = name.upper()
    label = _COMMANDS.get(name)
    if label is None and name == b"SCRIPT" and len(command) > 1 and len(command[1]) <= 16:
        label = _SCRIPT_SUBCOMMANDS.get(command[1].upper())
    return label


def _command_name(command: Sequence[bytes]) -> str:
    words = command[:2] if command[0].upper() == b"SCRIPT" else command[:1]
    text = " ".join(w.decode("utf-8", "backslashreplace") for w in words)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text[:64] + ("..." if len(text) > 64 else "")


def _path_text(path: bytes) -> str:
    return path.decode("utf-8", "replace")


class Bridge:
    """A running bridge: HTTP server plus Redis pool. Create with :func:`start`."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.target = config.target()
        self.timeout = config.timeout_ms / 1000
        self.max_body = config.max_body
        self.pool = RedisPool(
            self.target, config.pool_size, self.timeout, config.reconnect_max_ms / 1000
        )
        self.metrics = Metrics(self.pool.counts)
        self._auth = None if config.token is None else b"Bearer " + config.token.encode("utf-8")
        self._server: asyncio.Server | None = None
        self._guard: ConnectionGuard | None = None  # set once serving
        self.scripts = Scripts((*contract_scripts(), *config.extra_scripts))
        self.host = config.host
        self.port = config.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def banner(self) -> str:
        return f"tokenlimit bridge listening on {self.url} → redis {self.target.describe()}"

    def _connection(self, registry: Registry) -> HttpConnection:
        return HttpConnection(self, registry, self.config.read_timeout_ms / 1000)  # type: ignore[arg-type]

    async def _start(self) -> None:
        # The HTTP protocol (http.py) behind the connection cap (guard.py).
        self._guard = ConnectionGuard(self._connection, self.config.max_connections)
        self._server = await asyncio.get_running_loop().create_server(
            self._guard, self.config.host, self.config.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.pool.warm_up()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for transport in list(self._guard.open if self._guard else ()):
                transport.close()
            self._server = None
            await asyncio.sleep(0)  # let the transports' connection_lost run
        await self.pool.close()

    async def __aenter__(self) -> Bridge:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # ---- the HTTP handler (tokenlimit.bridge.http.Handler)

    def head(self, request: Request) -> Answer | None:
        """Refusals that need no body: a bad token, a bad timeout header, a body too large."""
        if request.path != b"/v1/resp" or request.method != b"POST":
            return None
        start = request.started
        if self._auth is not None:
            given = request.headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self._auth):
                return self._refuse(
                    start, 401, "unauthorized", "unauthorized", "missing or wrong bearer token"
                )
        if self._timeout(request) is None:
            return self._refuse(
                start,
                400,
                "bad-request",
                "bad_request",
                f"{TIMEOUT_HEADER} must be a positive integer of milliseconds",
            )
        raw_length = request.headers.get(b"content-length")
        if raw_length is not None and raw_length.isdigit() and int(raw_length) > self.max_body:
            return self._refuse(
                start,
                413,
                "bad-request",
                "bad_request",
                f"body of {int(raw_length)} bytes (at most {self.max_body})",
                close=True,
            )
        return None

    def body_too_large(self, request: Request) -> Answer:
        return self._refuse(
            request.started,
            413,
            "bad-request",
            "bad_request",
            f"body larger than {self.max_body} bytes",
            close=True,
        )

    def body_too_slow(self, request: Request) -> Answer:
        return self._refuse(
            request.started, 408, "bad-request", "bad_request", "the body did not arrive in time"
        )

    def handle(self, request: Request) -> Result:
        path, method = request.path, request.method
        if path == b"/v1/resp":
            if method != b"POST":
                return text(405, "use POST for /v1/resp", "bad-request")
            return self._resp(request)
        if method not in (b"GET", b"HEAD"):
            return text(405, f"use GET for {_path_text(path)}")
        if path == b"/healthz":
            return text(200, "ok")
        if path == b"/readyz":
            return self._readyz()
        if path == b"/metrics":
            return Answer(200, self.metrics.render(), _METRICS_TYPE)
        return text(404, f"not found: {_path_text(path)}")

    def _timeout(self, request: Request) -> float | None:
        """This request's deadline in seconds, or None if its timeout header is bad."""
        raw = request.headers.get(TIMEOUT_HEADER.encode())
        if raw is None:
            return self.timeout
        if not raw.isdigit() or int(raw) < 1:
            return None
        return min(self.timeout, int(raw) / 1000)

    def _refuse(
        self, start: float, status: int, error: str, outcome: str, message: str, close: bool = False
    ) -> Answer:
        self.metrics.observe(outcome, time.perf_counter() - start)
        return text(status, message, error, close)

    def _resp(self, request: Request) -> Result:
        """Checks the body (scan.py) and the allowlist at once; a call that goes to Redis is
        answered through a future (a coroutine only while no connection is open)."""
        start = request.started
        body = request.body
        try:
            heads = scan_commands(body, max_commands=self.config.max_commands)
        except ProtocolError as e:
            return self._refuse(start, 400, "bad-request", "bad_request", f"bad RESP: {e}")
        labels: list[str] = []
        for head in heads:
            label = command_label(head)
            if label is None:
                return self._refuse(
                    start,
                    403,
                    "command-not-allowed",
                    "forbidden",
                    f"command not allowed: {_command_name(head)}",
                )
            refusal = self.scripts.refusal(head)
            if refusal is not None:
                return self._refuse(start, 403, "script-not-allowed", "forbidden", refusal)
            labels.append(label)
        timeout = self._timeout(request)
        assert timeout is not None  # head() refused a bad header
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

        def done(outcome: Outcome) -> None:
            answer.set_result(self._answer(outcome, labels, start))

        if self.pool.submit(body, len(labels), timeout, done):
            return answer  # a connection was at hand: no task (pool.submit says why)
        return self._forward(body, labels, timeout, start)

    def _answer(self, outcome: Outcome, labels: list[str], start: float) -> Answer:
        if isinstance(outcome, RedisFault):
            return self._refuse(start, 503, outcome.code, outcome.outcome, outcome.detail)
        self.metrics.forwarded(labels)
        self.metrics.observe("ok", time.perf_counter() - start)
        return Answer(200, outcome[0] if len(outcome) == 1 else b"".join(outcome), _RESP_TYPE)

    async def _forward(
        self, body: bytes, labels: list[str], timeout: float, start: float
    ) -> Answer:
        try:
            replies = await self.pool.execute(body, len(labels), timeout)
        except RedisFault as fault:
            return self._answer(fault, labels, start)
        return self._answer(replies, labels, start)

    async def _readyz(self) -> Answer:
        try:
            replies = await self.pool.execute(encode_command("PING"), 1, self.timeout)
        except RedisFault as fault:
            return text(503, fault.detail, fault.code)
        if replies[0].startswith(b"-"):
            return text(503, f"PING: {error_text(replies[0])}", "redis-error")
        return text(200, "ready")


async def start(config: BridgeConfig) -> Bridge:
    """Starts serving on the running loop; returns once the port accepts connections."""
    bridge = Bridge(config)
    await bridge._start()
    return bridge


async def _serve(config: BridgeConfig) -> None:
    bridge = await start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    banner = bridge.banner()
    try:
        print(banner, flush=True)
    except UnicodeEncodeError:
        print(banner.replace("→", "->"), flush=True)
    try:
        await stop.wait()
    finally:
        await bridge.stop()


def run(config: BridgeConfig) -> None:
    """Serves until SIGINT or SIGTERM, then stops cleanly."""
    if not logging.getLogger().handlers and not log.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
    if config.token is None:
        log.warning(
            "--insecure: no token; any process on this machine may call the bridge on %s:%s",
            config.host,
            config.port,
        )
    ensure_descriptors(config.max_connections)
    try:
        import uvloop  # the event loop in C (libuv): about half the loop's cost per call
    except ImportError:  # a platform without uvloop wheels: the same bridge, slower
        asyncio.run(_serve(config))
    else:
        uvloop.run(_serve(config))
