"""A client for the mock LLM in tests: one call, SSE events, raw HTTP/1.1 chunks as framed."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from tokenlimit.dev.mockllm import RunningMock


class Reply:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    m: RunningMock,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> Reply:
    data: bytes | None
    if body is None:
        data = None
    elif isinstance(body, bytes):
        data = body
    else:
        data = json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=10)
    try:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return Reply(r.status, r.headers, r.read())
    finally:
        conn.close()


def sse_events(body: bytes) -> list[tuple[str | None, str]]:
    """(event, data) pairs of an SSE body (LF or CRLF line endings)."""
    text = body.decode().replace("\r\n", "\n")
    out: list[tuple[str | None, str]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        out.append((event, "\n".join(data)))
    return out


def raw_chunks(
    m: RunningMock, path: str, body: dict[str, Any], headers: dict[str, str]
) -> list[bytes]:
    """Send one request over a raw socket and return the HTTP/1.1 body chunks as framed."""
    payload = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", "Host: mock", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head += ["Content-Type: application/json", f"Content-Length: {len(payload)}", "", ""]
    with socket.create_connection(("127.0.0.1", m.port), timeout=10) as s:
        s.sendall("\r\n".join(head).encode() + payload)
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    headers_end = buf.index(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in buf[:headers_end].lower()
    rest = buf[headers_end + 4 :]
    chunks: list[bytes] = []
    while True:
        line_end = rest.index(b"\r\n")
        size = int(rest[:line_end], 16)
        if size == 0:
            return chunks
        chunks.append(rest[line_end + 2 : line_end + 2 + size])
        rest = rest[line_end + 2 + size + 2 :]


H = {"x-mock-prompt-tokens": "120", "x-mock-completion-tokens": "7", "x-mock-cached-tokens": "30"}
