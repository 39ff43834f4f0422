"""The module server over a real local socket: the built .wasm files and their sha256."""

from __future__ import annotations

import base64
import hashlib
import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest
from tokenlimit import wasm
from tokenlimit.operator.module_server import (
    SHA256_HEADER,
    ModuleServer,
    ServedModule,
    load_modules,
    module_url,
)


@pytest.fixture
def server(filter_wasm: Path, higress_wasm: Path) -> Iterator[ModuleServer]:
    running = ModuleServer(load_modules(), host="127.0.0.1", port=0).start()
    try:
        yield running
    finally:
        running.stop()


def get(
    server: ModuleServer, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("name", ["tokenlimit.wasm", "tokenlimit-higress.wasm"])
def test_serves_each_built_module_with_its_sha256(server: ModuleServer, name: str) -> None:
    on_disk = (wasm.WASM_DIR / name).read_bytes()
    digest = hashlib.sha256(on_disk).hexdigest()

    status, headers, body = get(server, f"/filters/{name}")

    assert status == 200 and body == on_disk
    assert headers["Content-Type"] == "application/wasm"
    assert headers[SHA256_HEADER] == digest
    assert (
        headers["Repr-Digest"]
        == f"sha-256=:{base64.b64encode(hashlib.sha256(on_disk).digest()).decode()}:"
    )
    assert headers["ETag"] == f'"{digest}"'

    status, _, body = get(server, f"/filters/{name}.sha256")
    assert (status, body) == (200, f"{digest}  {name}\n".encode())


def test_head_and_conditional_get(server: ModuleServer) -> None:
    status, headers, body = get(server, "/filters/tokenlimit.wasm", method="HEAD")
    assert status == 200 and body == b""
    assert int(headers["Content-Length"]) == (wasm.WASM_DIR / "tokenlimit.wasm").stat().st_size
    status, _, body = get(
        server, "/filters/tokenlimit.wasm", headers={"If-None-Match": headers["ETag"]}
    )
    assert (status, body) == (304, b"")


def test_healthz_and_unknown_paths(server: ModuleServer) -> None:
    assert get(server, "/healthz")[::2] == (200, b"ok\n")
    status, _, body = get(server, "/filters/../../etc/passwd")
    assert status == 404
    assert body == (
        b"not found: /filters/../../etc/passwd (serving /filters/tokenlimit-higress.wasm, "
        b"/filters/tokenlimit.wasm)\n"
    )


def test_the_url_and_sha256_the_operator_renders(server: ModuleServer) -> None:
    module = server.modules["tokenlimit-higress.wasm"]
    url = module_url("http://tokenlimit-operator.tokenlimit-system.svc:8081/", module)
    assert url == (
        "http://tokenlimit-operator.tokenlimit-system.svc:8081/filters/tokenlimit-higress.wasm"
    )
    _, headers, body = get(server, "/filters/tokenlimit-higress.wasm")
    assert hashlib.sha256(body).hexdigest() == module.sha256 == headers[SHA256_HEADER]


def test_a_module_not_built_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, filter_wasm: Path
) -> None:
    (tmp_path / "tokenlimit.wasm").write_bytes(filter_wasm.read_bytes())
    monkeypatch.setattr(wasm, "WASM_DIR", tmp_path)
    assert sorted(load_modules()) == ["tokenlimit.wasm"]
    assert ServedModule.read(tmp_path / "tokenlimit.wasm").sha256 == (
        hashlib.sha256(filter_wasm.read_bytes()).hexdigest()
    )
