"""Serves the built filter modules over HTTP, for gateways that fetch a WasmPlugin's `url`.

    GET /filters/tokenlimit.wasm            the module (Envoy, Istio)
    GET /filters/tokenlimit-higress.wasm    the module (Higress)
    GET /filters/<name>.wasm.sha256         "<hex>  <name>.wasm\\n" (sha256sum's format)
    GET /healthz                            "ok"

A module response carries its sha256 three ways: `X-Tokenlimit-Sha256: <hex>` (the form
WasmPlugin.sha256 takes), `Repr-Digest: sha-256=:<base64>:` (RFC 9530) and a strong ETag;
`If-None-Match` with that ETag answers 304. The bytes are read once at start-up, so what is
served always matches the sha256 the operator writes into the rendered objects.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

from tokenlimit.wasm import ModuleMissing, Target, filter_path

log = logging.getLogger("tokenlimit.operator")

PREFIX = "/filters/"
SHA256_HEADER = "X-Tokenlimit-Sha256"
TARGETS: tuple[Target, ...] = ("envoy", "higress")


@dataclass(frozen=True)
class ServedModule:
    name: str  # file name: tokenlimit.wasm
    data: bytes
    sha256: str  # hex

    @classmethod
    def read(cls, path: Path) -> ServedModule:
        data = path.read_bytes()
        return cls(path.name, data, hashlib.sha256(data).hexdigest())

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'

    @property
    def repr_digest(self) -> str:
        return f"sha-256=:{base64.b64encode(bytes.fromhex(self.sha256)).decode()}:"


def load_modules(targets: tuple[Target, ...] = TARGETS) -> dict[str, ServedModule]:
    """The built modules by file name; a target not built is left out (and logged)."""
    modules: dict[str, ServedModule] = {}
    for target in targets:
        try:
            module = ServedModule.read(filter_path(target))
        except ModuleMissing as exc:
            log.warning("not serving the %s module: %s", target, exc)
            continue
        modules[module.name] = module
    return modules


def module_url(base: str, module: ServedModule) -> str:
    return f"{base.rstrip('/')}{PREFIX}{module.name}"


class _Handler(BaseHTTPRequestHandler):
    modules: ClassVar[dict[str, ServedModule]] = {}
    server_version = "tokenlimit-module-server"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8", body)
            return
        name = path[len(PREFIX) :] if path.startswith(PREFIX) else ""
        if name.endswith(".sha256") and name[: -len(".sha256")] in self.modules:
            named = self.modules[name[: -len(".sha256")]]
            text = f"{named.sha256}  {named.name}\n".encode()
            self._send(HTTPStatus.OK, text, "text/plain; charset=utf-8", body)
            return
        module = self.modules.get(name)
        if module is None:
            known = ", ".join(PREFIX + n for n in sorted(self.modules)) or "none built"
            message = f"not found: {path} (serving {known})\n".encode()
            self._send(HTTPStatus.NOT_FOUND, message, "text/plain; charset=utf-8", body)
            return
        headers = {
            SHA256_HEADER: module.sha256,
            "Repr-Digest": module.repr_digest,
            "ETag": module.etag,
            "Cache-Control": "no-cache",  # revalidate: a new operator image serves new bytes
        }
        if self.headers.get("If-None-Match") == module.etag:
            self._send(HTTPStatus.NOT_MODIFIED, b"", None, False, headers)
            return
        self._send(HTTPStatus.OK, module.data, "application/wasm", body, headers)

    def _send(
        self,
        code: HTTPStatus,
        data: bytes,
        content_type: str | None,
        body: bool,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(code)
        if content_type:
            self.send_header("Content-Type", content_type)
        if code != HTTPStatus.NOT_MODIFIED:
            self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body and data:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("module server: %s %s", self.address_string(), format % args)


class ModuleServer:
    """A threaded HTTP server for `modules`, started in the background."""

    def __init__(self, modules: dict[str, ServedModule], host: str = "0.0.0.0", port: int = 8081):
        handler = type("Handler", (_Handler,), {"modules": dict(modules)})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.modules = modules
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> ModuleServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.1,), name="module-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
