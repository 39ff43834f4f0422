"""The built filter modules: they live in this folder (package data), and filter_path(target)
says where, or how to build them when they are missing."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Target = Literal["envoy", "higress"]

# Read at call time (not bound into the functions) so tests can point it elsewhere.
WASM_DIR = Path(__file__).resolve().parent

_FILENAMES: dict[Target, str] = {
    # Stock Envoy, Istio, Envoy Gateway: Redis through proxy_http_call to the bridge.
    "envoy": "tokenlimit.wasm",
    # Higress: Redis through its proxy_redis_* ABI, which stock Envoy lacks ("missing import").
    "higress": "tokenlimit-higress.wasm",
}


class ModuleMissing(FileNotFoundError):
    """The .wasm for a target has not been built into the package."""


def filter_path(target: Target = "envoy") -> Path:
    """The filter module for `target`; raises ModuleMissing (saying how to build it)."""
    if target not in _FILENAMES:
        raise ValueError(f"unknown target {target!r}: expected one of {', '.join(_FILENAMES)}")
    path = WASM_DIR / _FILENAMES[target]
    if not path.is_file():
        raise ModuleMissing(
            f"the {target} filter module is not built: {path} does not exist. "
            "Run `make wasm` in the tokenlimit source tree (it compiles filter/ with Zig "
            "and copies the modules into controlplane/tokenlimit/wasm/), then try again."
        )
    return path
