"""The body of a request an upstream in the tests receives: by its `content-length`, or
decoded when it came chunked (how Envoy sends a body whose length it does not know)."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler


def is_chunked(handler: BaseHTTPRequestHandler) -> bool:
    return handler.headers.get("transfer-encoding", "").lower() == "chunked"


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The whole body (none without a length); a chunked one decoded, its trailers skipped.
    ValueError when the connection closes mid-body (a chunk size line that never came)."""
    if not is_chunked(handler):
        return handler.rfile.read(int(handler.headers.get("content-length") or 0))
    chunks: list[bytes] = []
    while size := int(handler.rfile.readline().split(b";")[0].strip(), 16):
        chunks.append(handler.rfile.read(size))
        handler.rfile.readline()
    while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
        pass  # trailers
    return b"".join(chunks)
