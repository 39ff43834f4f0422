"""Fixtures for the fallback tests in real Envoy with the real filter (test_fallback_envoy_*.py).

Two gateways run side by side, each started once per test module:

- **naive**: a Higress-like setup rendered in plain Envoy. The limiter is scoped to the primary
  route only (it runs in front of the primary upstream, as Higress's matchRules list the
  primary route but not `<route>.fallback.internal`), and the fallback triggers on 429 —
  which the limiter's own rejection is, from where the fallback decision is made.
- **fixed**: the project's rendering (`render.envoy`): the limiter is the
  listener-level filter before the router, the chain is an aggregate cluster walked by the
  router's retry policy, the route is served through file-based RDS.

`healthy` is not autouse: this folder's other tests run no upstreams, so each fallback module
asks for it with `pytestmark = pytest.mark.usefixtures("healthy")`.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fallback_gateway import (
    BACKUP_KEY,
    BACKUP_KEY_ENV,
    Envoy,
    Upstream,
    fallback_bootstrap,
    fallback_spec,
    limiter_config,
)
from tokenlimit.dev.process import free_port
from tokenlimit.fallback import toggles
from tokenlimit.model import FallbackSpec
from tokenlimit.render.envoy import (
    FILTER_NAME,
    HCM_TYPE,
    ROUTER_TYPE,
    EcdsFilter,
    EnvoyOptions,
    ecds_resource,
    filter_typed_config,
    to_yaml,
)
from tokenlimit.render.envoy.bootstrap import INTERNAL_LISTENER_TYPE
from tokenlimit.render.envoy.clusters import upstream_cluster, upstream_cluster_name

NAIVE_LIMITER_LISTENER = "naive_primary_limiter"


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wasm(filter_wasm: Path) -> str:
    return str(filter_wasm.resolve())


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    primary, backup = Upstream("primary"), Upstream("backup")
    yield primary, backup
    primary.stop()
    backup.stop()


@pytest.fixture
def healthy(upstreams: tuple[Upstream, Upstream]) -> Iterator[None]:
    for upstream in upstreams:
        upstream.heal()
    yield
    for upstream in upstreams:
        upstream.heal()


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="tokenlimit-fallback-e2e-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _options(ecds: Path, spec: FallbackSpec) -> EnvoyOptions:
    return EnvoyOptions(
        upstream=spec.routes[0].primary.upstream,
        filter=EcdsFilter(str(ecds)),
        listen_port=free_port(),
        admin_port=free_port(),
    )


@pytest.fixture(scope="module")
def fixed(
    work: Path, wasm: str, upstreams: tuple[Upstream, Upstream]
) -> Iterator[tuple[Envoy, Path]]:
    """The project's rendering; yields the gateway and its toggles' state file."""
    spec = fallback_spec(*upstreams)
    base = work / "fixed"
    ecds = base / "ecds" / "tokenlimit-ecds.yaml"
    rds = base / "rds" / "routes.yaml"
    state = base / "tokenlimit-fallback.json"
    toggles.write_atomic(ecds, to_yaml(ecds_resource(limiter_config(), wasm)))
    options = _options(ecds, spec)
    envoy = Envoy(
        base,
        fallback_bootstrap(options, spec, str(rds), wasm),
        options.listen_port,
        options.admin_port,
        env={BACKUP_KEY_ENV: BACKUP_KEY},
    )
    toggles.init_state(state, spec, rds, admin_url=envoy.admin_url)
    envoy.start()
    yield envoy, state
    envoy.stop()


@pytest.fixture(scope="module")
def naive(work: Path, wasm: str, upstreams: tuple[Upstream, Upstream]) -> Iterator[Envoy]:
    """Higress-like: the limiter guards the primary route only, fallback on 429/5xx."""
    spec = fallback_spec(*upstreams)
    base = work / "naive"
    ecds = base / "ecds" / "tokenlimit-ecds.yaml"
    rds = base / "rds" / "routes.yaml"
    toggles.write_atomic(ecds, to_yaml(ecds_resource(limiter_config(), wasm)))
    options = _options(ecds, spec)
    document = naive_bootstrap(fallback_bootstrap(options, spec, str(rds), wasm), spec, wasm)
    toggles.init_state(base / "state.json", spec, rds)
    envoy = Envoy(base, document, options.listen_port, options.admin_port)
    envoy.start()
    yield envoy
    envoy.stop()


def naive_bootstrap(document: dict[str, Any], spec: FallbackSpec, wasm: str) -> dict[str, Any]:
    """The fixed bootstrap with the limiter moved from the listener onto the primary's path.

    The main listener keeps only the router; the chain's primary member becomes an internal
    listener running the limiter in front of the primary. Its rejection is then, for the router
    deciding about the fallback, an upstream 429 — Higress's situation, where the limiter's
    matchRules hold the primary route and its 429 triggers the redirect to the fallback route,
    which no rule covers.
    """
    document = copy.deepcopy(document)
    route = spec.routes[0]
    main = document["static_resources"]["listeners"][0]
    hcm = main["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != FILTER_NAME]
    primary = upstream_cluster_name(route.name, route.primary.name)
    direct = "naive_primary_direct"
    clusters = document["static_resources"]["clusters"]
    for index, cluster in enumerate(clusters):
        if cluster["name"] == primary:
            address = {"envoy_internal_address": {"server_listener_name": NAIVE_LIMITER_LISTENER}}
            member = copy.deepcopy(cluster)
            member["type"] = "STATIC"
            member.pop("dns_lookup_family", None)
            member["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] = (
                address
            )
            clusters[index] = member
    primary_upstream = route.primary.upstream
    clusters.append(upstream_cluster(direct, primary_upstream, hostname=primary_upstream.authority))
    limiter_hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": NAIVE_LIMITER_LISTENER,
        "route_config": {
            "name": NAIVE_LIMITER_LISTENER,
            "virtual_hosts": [
                {
                    "name": "primary",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "route": {
                                "cluster": direct,
                                "timeout": "0s",
                                "auto_host_rewrite": True,
                            },
                        }
                    ],
                }
            ],
        },
        "http_filters": [
            {"name": FILTER_NAME, "typed_config": filter_typed_config(limiter_config(), wasm)},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
        ],
    }
    document["static_resources"]["listeners"].append(
        {
            "name": NAIVE_LIMITER_LISTENER,
            "internal_listener": {},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": limiter_hcm,
                        }
                    ]
                }
            ],
        }
    )
    document["bootstrap_extensions"] = [
        {
            "name": "envoy.bootstrap.internal_listener",
            "typed_config": {"@type": INTERNAL_LISTENER_TYPE},
        }
    ]
    return document
