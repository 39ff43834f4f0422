"""A local Kubernetes API server that answers with recorded responses (tests/fixtures/kube/).

The apply tests (tests/apply/test_kube_*.py) point the real client (DynamicKube on the official
`kubernetes` package), or a whole operator process, at it and check the requests it saw as
the API server would read them.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tokenlimit.apply.kube import POLICY, ObjectRef

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube"
CHAT = ObjectRef(POLICY, "team-a", "chat")
POLICIES = "/apis/tokenlimit.io/v1alpha1/namespaces/team-a/tokenratelimitpolicies"


def recorded(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def response_of(name: str) -> tuple[int, dict[str, str], bytes]:
    response = recorded(name)["response"]
    body = response["body"]
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return response["status"], response["headers"], data


# --- the real client over HTTP ------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: Any


@dataclass
class RecordedApiServer:
    """Answers each (method, path) with a recorded response; remembers every request.

    Watch requests (GET with watch=true) are routed as method "WATCH".
    """

    routes: dict[tuple[str, str], tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        for path, name in (
            ("/version", "version.json"),
            ("/apis", "apis.json"),
            ("/api/v1", "api-v1.json"),
            ("/apis/coordination.k8s.io/v1", "coordination.k8s.io-v1.json"),
            ("/apis/tokenlimit.io/v1alpha1", "tokenlimit.io-v1alpha1.json"),
        ):
            self.ok("GET", path, (FIXTURES / "discovery" / name).read_bytes())

    def ok(
        self, method: str, path: str, body: bytes, content_type: str = "application/json"
    ) -> None:
        self.routes[(method, path)] = (200, {"Content-Type": content_type}, body)

    def fail(self, method: str, path: str, name: str) -> None:
        self.routes[(method, path)] = response_of(name)


@contextlib.contextmanager
def serving(recorded_server: RecordedApiServer) -> Iterator[str]:
    """The recorded server on a local port; yields its URL. A watch with no recorded stream
    is held open without events, as a real watch on a quiet resource is."""
    closing = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            query = parse_qs(parts.query)
            recorded_server.seen.append(
                Seen(
                    self.command,
                    parts.path,
                    query,
                    self.headers.get("Content-Type", ""),
                    json.loads(raw) if raw else None,
                )
            )
            watching = query.get("watch") == ["true"]
            method = "WATCH" if watching else self.command
            route = recorded_server.routes.get((method, parts.path))
            if route is None and watching:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                closing.wait(float(query["timeoutSeconds"][0]))
                self.wfile.write(b"0\r\n\r\n")
                return
            status, headers, body = route or response_of("not-found-404.json")
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        closing.set()
        httpd.shutdown()
        httpd.server_close()
