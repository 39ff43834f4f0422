"""Content codings for the mock's ``x-mock-compress: 1`` knob: the reply is compressed as a
real upstream compresses it whenever the request's Accept-Encoding allows (gzip, deflate, br,
zstd), so the gateway's handling of encoded answers can be tested end to end."""

from __future__ import annotations

import gzip
import zlib

# The codings the mock can send, in its order of preference.
ENCODINGS = ("zstd", "br", "gzip", "deflate")


def negotiate_encoding(accept_encoding: str) -> str | None:
    """The coding an upstream would pick for this Accept-Encoding (None: identity). Quality
    values of 0 refuse a coding; otherwise the mock's own preference decides."""
    accepted: set[str] = set()
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        q = params.strip().removeprefix("q=").strip() if params.strip().startswith("q=") else "1"
        try:
            quality = float(q)
        except ValueError:
            quality = 1.0
        if name and quality > 0:
            accepted.add(name.strip().lower())
    for encoding in ENCODINGS:
        if encoding in accepted or "*" in accepted:
            return encoding
    return None


def compress(body: bytes, encoding: str) -> bytes:
    """`body` in one content coding (RFC 9110 names; deflate is the zlib format)."""
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    if encoding == "br":
        import brotli  # type: ignore[import-untyped]  # optional, dev only

        return bytes(brotli.compress(body))
    if encoding == "zstd":
        import zstandard  # optional, dev only

        return zstandard.ZstdCompressor().compress(body)
    raise ValueError(f"unknown content coding {encoding!r}")
