"""A rule's response cache (issue 15): `cache: {ttl_seconds, scope, max_entry_bytes}`.

The filter answers a repeated request from the cache, before the budget, at 0 tokens
(docs/cache.md). The same checks are made by filter/src/config/parse_cache.zig; the vectors in
contract/config.json ("cache: ...") pin the two halves equal. In a policy the fields are
camelCase (`ttlSeconds`, `maxEntryBytes`), in the filter config snake_case.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, WrapValidator

from tokenlimit.model._checks import an_object as _object
from tokenlimit.model._checks import int_in as _int_in
from tokenlimit.model._checks import one_of as _one_of
from tokenlimit.model._spelling import Model as _Model
from tokenlimit.model.fields import Present
from tokenlimit.model.fields import enum as _enum
from tokenlimit.model.limits import CACHE_ENTRY_BYTES_MAX, CACHE_TTL_SECONDS_MAX

__all__ = ["CACHE_SCOPES", "CacheConfig", "OptCache"]

# key: one caller's answers are served to that caller only; rule: to every caller of the rule.
CACHE_SCOPES = ("key", "rule")


_OptScope = Annotated[Annotated[str, _enum(CACHE_SCOPES), _one_of(CACHE_SCOPES)] | None, Present]


class CacheConfig(_Model):
    """Exact response cache for a rule: a repeated request is answered by the gateway."""

    ttl_seconds: Annotated[
        Annotated[
            int,
            Field(ge=0, le=CACHE_TTL_SECONDS_MAX),
            _int_in(0, CACHE_TTL_SECONDS_MAX),
        ]
        | None,
        Present,
    ] = None
    """How long an answer is served from the cache; 0 or absent: no caching."""
    scope: _OptScope = None
    """key (default): answers go only to the caller that asked; rule: shared by every caller
    of the rule (opt in: one caller's answer is served to another)."""
    max_entry_bytes: Annotated[
        Annotated[
            int,
            Field(ge=1, le=CACHE_ENTRY_BYTES_MAX),
            _int_in(1, CACHE_ENTRY_BYTES_MAX),
        ]
        | None,
        Present,
    ] = None
    """Answers larger than this are not stored (default 262144)."""


OptCache = Annotated[Annotated[CacheConfig, WrapValidator(_object)] | None, Present]
