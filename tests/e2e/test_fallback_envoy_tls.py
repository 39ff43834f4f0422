"""Fallback in real Envoy to https upstreams: TLS behind the aggregate cluster and the rewrite."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from support.fallback_gateway import (
    Envoy,
    Upstream,
    fallback_bootstrap,
    fallback_spec,
    host_header,
    limiter_config,
    post,
)
from support.require import require_binary
from tokenlimit.dev.process import free_port
from tokenlimit.fallback import toggles
from tokenlimit.render.envoy import EcdsFilter, EnvoyOptions, ecds_resource, to_yaml

pytestmark = pytest.mark.usefixtures("healthy")


# --- TLS upstreams -------------------------------------------------------------------------------


def make_certificates(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA and a server certificate for `localhost` (openssl)."""
    openssl = require_binary("openssl", "install OpenSSL (apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = [
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "2",
         "-subj", "/CN=tokenlimit test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
         "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext],
    ]  # fmt: skip
    for argv in run:
        subprocess.run([str(a) for a in argv], check=True, capture_output=True, timeout=30)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)
    return ca_crt, context


def test_tls_upstreams_through_the_chain_and_the_rewrite_listener(work: Path, wasm: str) -> None:
    """https upstreams: the member clusters' TLS (SNI, CA, SAN) holds behind the aggregate
    cluster, and the rewritten upstream's TLS behind its internal listener."""
    ca, context = make_certificates(work / "tls")
    primary, backup = Upstream("tls-primary", context), Upstream("tls-backup", context)
    base = work / "tls-gateway"
    spec = fallback_spec(primary, backup)
    ecds = base / "ecds" / "tokenlimit-ecds.yaml"
    rds = base / "rds" / "routes.yaml"
    toggles.write_atomic(ecds, to_yaml(ecds_resource(limiter_config(), wasm)))
    options = EnvoyOptions(
        upstream=spec.routes[0].primary.upstream,
        filter=EcdsFilter(str(ecds)),
        listen_port=free_port(),
        admin_port=free_port(),
        upstream_ca_file=str(ca),
    )
    toggles.init_state(base / "state.json", spec, rds)
    envoy = Envoy(
        base,
        fallback_bootstrap(options, spec, str(rds), wasm),
        options.listen_port,
        options.admin_port,
    )
    envoy.start()
    try:
        assert post(envoy, "tls-1", model="gpt-4o").upstream == "tls-primary"
        primary.fail(429)
        reply = post(envoy, "tls-2", model="gpt-4o", prompt=3, completion=4)
        assert reply.status == 200 and reply.upstream == "tls-backup", reply
        seen = backup.stats()["last_request"]
        assert seen["body"]["model"] == "backup-model"
        assert host_header(seen) == f"localhost:{backup.port}"
        assert envoy.counter("cluster.fallback_chat_backup_direct.ssl.handshake") >= 1
        assert envoy.counter("cluster.fallback_chat_primary.ssl.handshake") >= 1
    finally:
        envoy.stop()
        primary.stop()
        backup.stop()
