"""The filter as Envoy configures it: the limiter's Wasm typed_config (inline or through a
file-based ECDS document) and the same module in its upstream model-rewrite role."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tokenlimit.model import FilterConfig, filter_json
from tokenlimit.model.limits import BRIDGE_TOKEN_ENV
from tokenlimit.render.envoy.common import (
    EXTENSION_CONFIG_TYPE,
    FILTER_NAME,
    STRING_VALUE_TYPE,
    WASM_TYPE,
)

BRIDGE_TOKEN_VARIABLE = BRIDGE_TOKEN_ENV  # contract/limits.json: the filter reads it too
# filter/src/http/context.zig reads it: the Envoy running the filter keeps request headers held.
HOLD_REQUEST_HEADERS_VARIABLE = "TOKENLIMIT_HOLD_REQUEST_HEADERS"
REWRITE_FILTER_NAME = "tokenlimit-model-rewrite"
# The rewrite filters of all clusters share one VM (same module, same VM id), apart from the
# limiter's: nothing they do can touch the budgets kept in the limiter's VM.
REWRITE_VM_ID = "tokenlimit-upstream"


@dataclass(frozen=True)
class InlineFilter:
    """The filter config is part of the bootstrap (changing it needs a restart)."""

    typed_config: dict[str, Any]


@dataclass(frozen=True)
class EcdsFilter:
    """The filter config is read from an ECDS file, reloaded when the file is renamed over."""

    path: str


def filter_typed_config(cfg: FilterConfig, wasm_path: str) -> dict[str, Any]:
    """The `envoy.extensions.filters.http.wasm.v3.Wasm` typed_config running the filter."""
    return {
        "@type": WASM_TYPE,
        "config": {
            "name": FILTER_NAME,
            "root_id": FILTER_NAME,
            # One VM id for every config version: a new config reuses the running VM, so the
            # budgets it keeps in shared data survive an ECDS update.
            "vm_config": {
                "vm_id": FILTER_NAME,
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": wasm_path}},
                # The bridge's bearer token reaches the filter from Envoy's own environment,
                # never through this config (unset: the bridge must not require one).
                "environment_variables": {
                    "host_env_keys": [BRIDGE_TOKEN_VARIABLE],
                    # Tells the filter Envoy honours the setting below (it cannot read it).
                    "key_values": {HOLD_REQUEST_HEADERS_VARIABLE: "1"},
                },
            },
            "configuration": {"@type": STRING_VALUE_TYPE, "value": filter_json(cfg)},
            # A paused request-headers phase stays StopIteration: under `reserve` the headers
            # wait while the filter reads the body and decides (else Envoy 1.35+ makes it
            # StopAllIteration, which keeps the body from the filter).
            "allow_on_headers_stop_iteration": True,
        },
    }


def ecds_resource(cfg: FilterConfig, wasm_path: str) -> dict[str, Any]:
    """A file-based ECDS document holding the filter's typed_config."""
    return {
        "resources": [
            {
                "@type": EXTENSION_CONFIG_TYPE,
                "name": FILTER_NAME,
                "typed_config": filter_typed_config(cfg, wasm_path),
            }
        ]
    }


def limiter_http_filter(filter_source: InlineFilter | EcdsFilter) -> dict[str, Any]:
    """The limiter in the listener's HTTP filter chain: its config inline or from ECDS."""
    if isinstance(filter_source, InlineFilter):
        return {"name": FILTER_NAME, "typed_config": filter_source.typed_config}
    return {
        "name": FILTER_NAME,
        "config_discovery": {
            "config_source": {
                "path_config_source": {"path": filter_source.path},
                "resource_api_version": "V3",
            },
            "type_urls": [WASM_TYPE],
        },
    }


def model_rewrite_filter(model: str, wasm_path: str) -> dict[str, Any]:
    """The filter in its upstream role: `{"model_rewrite": model}` and nothing else."""
    configuration = json.dumps({"model_rewrite": model}, separators=(",", ":"))
    return {
        "name": REWRITE_FILTER_NAME,
        "typed_config": {
            "@type": WASM_TYPE,
            "config": {
                "name": REWRITE_FILTER_NAME,
                "root_id": FILTER_NAME,
                "vm_config": {
                    "vm_id": REWRITE_VM_ID,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm_path}},
                },
                "configuration": {"@type": STRING_VALUE_TYPE, "value": configuration},
            },
        },
    }
