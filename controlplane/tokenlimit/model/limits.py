"""The config bounds and shared names, read from contract/limits.json.

The filter (filter/build.zig hands the same file to config.zig) and this model enforce the same
bounds because both read them from that one file: no bound is written a second time here. The
package reaches the repository's contract/ folder through the link tokenlimit/contract, which
the wheel ships as package data.

A missing or mistyped entry fails the import with the entry's name: a model with a silently
defaulted bound would disagree with the filter.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

from pydantic import BaseModel, ConfigDict, ValidationError


class Limits(BaseModel):
    """contract/limits.json. Entries this model does not enforce (`_comment`) are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    config_bytes_max: int
    rule_name_bytes_max: int
    rule_items_max: int
    limit_keys_max: int
    key_bytes_max: int
    source_name_bytes_max: int
    route_rules_max: int
    rejected_msg_bytes_max: int
    rejected_code_min: int
    rejected_code_max: int
    rejected_code_default: int
    rejected_msg_default: str
    limit_max: int
    weight_max: int
    default_output_tokens_max: int
    port_max: int
    redis_service_name_bytes_max: int
    redis_credential_bytes_max: int
    redis_timeout_ms_max: int
    redis_database_max: int
    local_counters_max: int  # the filter's local store table; nothing in a config to bound
    model_bytes_max: int
    wait_ms_max: int  # near the limit (issue 13): when_exhausted.max_wait_ms
    wait_queued_max: int  # when_exhausted.max_queued
    bridge_cluster: str
    bridge_token_env: str
    # labelled metrics (issue 16): distinct `model` label values per worker VM (the filter's)
    metrics_models_max: int
    # Response cache (issue 15): `cache` rule field bounds, and the local store's size.
    cache_ttl_seconds_max: int
    cache_entry_bytes_max: int
    cache_entry_bytes_default: int
    cache_local_bytes_max: int  # the filter's local cache ring; nothing in a config to bound
    # Leases for hot keys (issue 17): the largest `lease.fraction`, in thousandths.
    lease_fraction_milli_max: int


def load_limits() -> Limits:
    """contract/limits.json as shipped in the package; RuntimeError names a bad entry."""
    text = (files("tokenlimit") / "contract" / "limits.json").read_text(encoding="utf-8")
    try:
        return Limits.model_validate_json(text)
    except ValidationError as exc:
        raise RuntimeError(f"contract/limits.json does not fit the model: {exc}") from None


LIMITS: Final = load_limits()

CONFIG_BYTES_MAX: Final = LIMITS.config_bytes_max  # the filter refuses larger JSON documents
# The filter counts bytes; rule names are ASCII only, so this is also their length in characters.
RULE_NAME_BYTES_MAX: Final = LIMITS.rule_name_bytes_max
RULE_ITEMS_MAX: Final = LIMITS.rule_items_max
LIMIT_KEYS_MAX: Final = LIMITS.limit_keys_max
KEY_BYTES_MAX: Final = LIMITS.key_bytes_max
SOURCE_NAME_BYTES_MAX: Final = LIMITS.source_name_bytes_max  # the value of a limit_by_* field
ROUTE_RULES_MAX: Final = LIMITS.route_rules_max
REJECTED_MSG_BYTES_MAX: Final = LIMITS.rejected_msg_bytes_max
REJECTED_CODE_MIN: Final = LIMITS.rejected_code_min
REJECTED_CODE_MAX: Final = LIMITS.rejected_code_max
REJECTED_CODE_DEFAULT: Final = LIMITS.rejected_code_default
REJECTED_MSG_DEFAULT: Final = LIMITS.rejected_msg_default
LIMIT_MAX: Final = LIMITS.limit_max
WEIGHT_MAX: Final = LIMITS.weight_max
DEFAULT_OUTPUT_TOKENS_MAX: Final = LIMITS.default_output_tokens_max
PORT_MAX: Final = LIMITS.port_max
REDIS_SERVICE_NAME_BYTES_MAX: Final = LIMITS.redis_service_name_bytes_max
REDIS_CREDENTIAL_BYTES_MAX: Final = LIMITS.redis_credential_bytes_max
REDIS_TIMEOUT_MS_MAX: Final = LIMITS.redis_timeout_ms_max
# A request's model longer than this is refused (400), never truncated (that would merge budgets).
MODEL_BYTES_MAX: Final = LIMITS.model_bytes_max
REDIS_DATABASE_MAX: Final = LIMITS.redis_database_max
BRIDGE_CLUSTER: Final = LIMITS.bridge_cluster  # the Envoy cluster render.envoy adds for the bridge
BRIDGE_TOKEN_ENV: Final = LIMITS.bridge_token_env  # the bridge's bearer token, in Envoy's env
# Response cache (issue 15): a rule's `cache` bounds (filter/src/config/parse_cache.zig).
CACHE_TTL_SECONDS_MAX: Final = LIMITS.cache_ttl_seconds_max
CACHE_ENTRY_BYTES_MAX: Final = LIMITS.cache_entry_bytes_max
CACHE_ENTRY_BYTES_DEFAULT: Final = LIMITS.cache_entry_bytes_default
# Near the limit (issue 13): the longest hold and the most requests one worker holds.
WAIT_MS_MAX: Final = LIMITS.wait_ms_max
WAIT_QUEUED_MAX: Final = LIMITS.wait_queued_max
# Leases for hot keys (issue 17): the largest `lease.fraction` (tokenlimit.model.lease).
LEASE_FRACTION_MILLI_MAX: Final = LIMITS.lease_fraction_milli_max
