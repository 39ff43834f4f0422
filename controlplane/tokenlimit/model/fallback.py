"""A route's fallback chain, as pydantic models (camelCase, like a TokenRateLimitPolicy spec).

    fallback:
      routes:
        - name: chat
          primary:   {name: openai,   provider: openai,            url: https://api.openai.com}
          fallbacks:
            - {name: deepseek, provider: openai-compatible, url: https://api.deepseek.com,
               model: deepseek-chat}
          retriableStatusCodes: [429, 500, 502, 503, 504]
          backOff: {baseIntervalMs: 250, maxIntervalMs: 2000}
          retryAfter: {honor: true, maxIntervalMs: 5000}
          perTryTimeoutMs: 30000

Standalone: `parse_fallback(data)` validates a `fallback` object and raises
`tokenlimit.model.ConfigInvalid` whose problems name the field (`routes[0].fallbacks[1].url`).
Embedded: `FallbackSpec` is `PolicySpec.fallback`; its errors use the project's error type, so
`tokenlimit.model.problems` reports them like every other field.

This module imports nothing from the renderers (the upstream URL type is
tokenlimit.model.upstream): the model is the bottom of the pipeline model ▸ render ▸ apply.

What the fields mean on the wire is in docs/fallback.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WrapValidator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from tokenlimit.model._checks import an_object as _object
from tokenlimit.model._checks import array as _array
from tokenlimit.model._checks import int_in as _int_in
from tokenlimit.model._checks import one_of as _one_of
from tokenlimit.model._checks import refusal as _error
from tokenlimit.model._checks import show
from tokenlimit.model._spelling import Loc
from tokenlimit.model.problems import ConfigInvalid, problems
from tokenlimit.model.upstream import Upstream

# --- limits ----------------------------------------------------------------------------------

NAME_CHARS_MAX = 40  # cluster names are built from route and upstream names
FALLBACKS_MAX = 8
ROUTES_MAX = 64
MODEL_BYTES_MAX = 128  # what the filter's model_rewrite accepts
NUM_RETRIES_MAX = 16
INTERVAL_MS_MAX = 300_000
ROUTE_TIMEOUT_S = 300  # tokenlimit.render.envoy.ROUTE_TIMEOUT_S (a test pins the two equal)
TIMEOUT_MS_MAX = ROUTE_TIMEOUT_S * 1000
BUFFER_BYTES_MIN = 64 * 1024
BUFFER_BYTES_MAX = 64 * 1024 * 1024
HIGRESS_ROUTE_CHARS_MAX = 317  # namespace (63) + '/' + name (253)

DEFAULT_RETRIABLE = (429, 500, 502, 503, 504)
DEFAULT_BASE_INTERVAL_MS = 250
DEFAULT_MAX_INTERVAL_MS = 2000
DEFAULT_RETRY_AFTER_MAX_MS = 5000
# Envoy buffers a request body it may have to send again; beyond this the request is sent
# once (no retry, no fallback). The listener's default is 1 MiB; long prompts are larger.
DEFAULT_BUFFER_BYTES = 8 * 1024 * 1024

MODES = ("auto", "forced", "off")
Mode = Literal["auto", "forced", "off"]

# Envoy forwards the request as it is: every upstream of a route must accept the same request
# (path and body shape). Providers are grouped by the API they accept.
PROVIDERS = {
    "openai": "openai",
    "openai-compatible": "openai",  # DeepSeek, Qwen/DashScope compatible mode, vLLM, Ollama...
    "azure-openai": "azure-openai",  # deployment in the path
    "anthropic": "anthropic",
    "gemini": "gemini",  # model in the path
}
_MODEL_IN_BODY = ("openai", "anthropic")  # API families whose request body names the model

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
# The header each API family reads its key from, and how the value is written.
CREDENTIAL_HEADERS = {
    "openai": ("authorization", "Bearer {}"),
    "azure-openai": ("api-key", "{}"),
    "anthropic": ("x-api-key", "{}"),
    "gemini": ("x-goog-api-key", "{}"),
}
_HIGRESS_ROUTE = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def _ratio(low_open: bool) -> WrapValidator:
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        ok = type(value) in (int, float) and (0 < value <= 1 if low_open else 0 <= value < 1)
        if not ok:
            bounds = "greater than 0 and at most 1" if low_open else "from 0 to less than 1"
            raise _error(f"must be a number {bounds}, got {show(value)}")
        return handler(float(value))

    return WrapValidator(check)


def _name(value: Any, handler: Callable[[Any], Any]) -> Any:
    if not isinstance(value, str) or not (_NAME.fullmatch(value) and len(value) <= NAME_CHARS_MAX):
        raise _error(
            f"must be 1 to {NAME_CHARS_MAX} lowercase letters, digits or '-' (starting and "
            f"ending with a letter or digit), got {show(value)}"
        )
    return handler(value)


def _url(value: Any, handler: Callable[[Any], Any]) -> Any:
    if not isinstance(value, str):
        raise _error(f"must be a string, got {show(value)}")
    try:
        Upstream.parse(value)
    except ValueError as exc:
        raise _error(str(exc)) from None
    return handler(value)


def _env_name(value: Any, handler: Callable[[Any], Any]) -> Any:
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        raise _error(
            "must name an environment variable (A-Z, 0-9 and _, not starting with a digit, "
            f"at most 128 characters), got {show(value)}"
        )
    return handler(value)


def _model_name(value: Any, handler: Callable[[Any], Any]) -> Any:
    if not isinstance(value, str) or not value:
        raise _error(f"must be a non-empty string, got {show(value)}")
    if len(value.encode()) > MODEL_BYTES_MAX:
        raise _error(f"must be at most {MODEL_BYTES_MAX} bytes, got {len(value.encode())}")
    if any(c < " " or c >= "\x7f" or c in '"\\' for c in value):
        raise _error(f"must be printable ASCII without quotes or backslashes, got {show(value)}")
    return handler(value)


def _higress_route(value: Any, handler: Callable[[Any], Any]) -> Any:
    if not isinstance(value, str) or not (
        _HIGRESS_ROUTE.fullmatch(value) and len(value) <= HIGRESS_ROUTE_CHARS_MAX
    ):
        raise _error(
            "must be a Higress route name as its matchRules name it: namespace/name, or the "
            f"bare name of a route in Higress's own namespace, got {show(value)}"
        )
    return handler(value)


def _codes(value: Any, handler: Callable[[Any], Any]) -> Any:
    if not isinstance(value, list) or not value:
        raise _error(f"must be a non-empty array of status codes, got {show(value)}")
    for index, code in enumerate(value):
        if type(code) is not int or not 400 <= code <= 599:
            raise _error(f"must be a status code from 400 to 599, got {show(code)}", (index,))
        if code in value[:index]:
            raise _error(f"{code} is listed twice", (index,))
    return handler(value)


Name = Annotated[str, Field(min_length=1, max_length=NAME_CHARS_MAX), WrapValidator(_name)]
ModelName = Annotated[
    str, Field(min_length=1, max_length=MODEL_BYTES_MAX), WrapValidator(_model_name)
]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        validate_by_alias=True,
        validate_by_name=False,
        use_attribute_docstrings=True,
    )


class FallbackUpstream(_Model):
    """One upstream of a route: where it is, what it speaks, which model to ask it for."""

    name: Name
    """Names the upstream in toggles (`--to NAME`), cluster names and stats."""
    provider: Annotated[str, _one_of(PROVIDERS)] = "openai"
    """The API the upstream speaks: openai, openai-compatible, azure-openai, anthropic, gemini.
    Every upstream of a route must accept the same request (same API family)."""
    url: Annotated[str, WrapValidator(_url)]
    """`http(s)://host[:port]`; requests keep their own path."""
    model: ModelName | None = None
    """The model to request here. The request body's top-level `model` is rewritten for this
    upstream only. Unset: the client's model is sent unchanged."""
    api_key_env: Annotated[str, WrapValidator(_env_name)] | None = None
    """The gateway's own key for this upstream, by reference: the name of an environment
    variable of the Envoy process. Sent in the header the provider reads (`authorization:
    Bearer`, `api-key`, `x-api-key`, `x-goog-api-key`), replacing the client's. Unset: the
    client's credentials go through unchanged."""

    @property
    def credential_header(self) -> tuple[str, str] | None:
        """(header, Envoy value with %ENVIRONMENT(...)%) carrying this upstream's key."""
        if self.api_key_env is None:
            return None
        name, template = CREDENTIAL_HEADERS[self.family]
        return name, template.format(f"%ENVIRONMENT({self.api_key_env})%")

    @property
    def needs_listener(self) -> bool:
        """Whether requests reach it through its own internal listener (its own filters and
        headers: per-member settings do not apply behind an aggregate cluster)."""
        return self.model is not None or self.api_key_env is not None

    @property
    def upstream(self) -> Upstream:
        return Upstream.parse(self.url)

    @property
    def family(self) -> str:
        return PROVIDERS[self.provider]


class BackOff(_Model):
    """Exponential back-off between attempts (Envoy adds full jitter)."""

    base_interval_ms: Annotated[int, _int_in(1, INTERVAL_MS_MAX)] = DEFAULT_BASE_INTERVAL_MS
    """First back-off interval; attempt n waits a random time up to (2^n - 1) times this."""
    max_interval_ms: Annotated[int, _int_in(1, INTERVAL_MS_MAX)] = DEFAULT_MAX_INTERVAL_MS
    """Cap on any back-off interval."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_interval_ms < self.base_interval_ms:
            raise _error(
                f"must be at least baseIntervalMs ({self.base_interval_ms}), got "
                f"{self.max_interval_ms}",
                ("maxIntervalMs",),
            )
        return self


class RetryAfter(_Model):
    """Honour the upstream's `Retry-After` (seconds) before the next attempt."""

    honor: bool = True
    """Wait what the upstream asks (plus up to 50% jitter) instead of the exponential back-off."""
    max_interval_ms: Annotated[int, _int_in(1000, INTERVAL_MS_MAX)] = DEFAULT_RETRY_AFTER_MAX_MS
    """A `Retry-After` longer than this is ignored and the exponential back-off applies: the
    next attempt goes to the next upstream at once rather than waiting for this one."""


class AutoSwitch(_Model):
    """Automatic forced fallback: watch the primary's 429/5xx ratio and switch with hysteresis."""

    enter_ratio: Annotated[float, _ratio(low_open=True)] = 0.5
    """Switch to forced fallback when (429 + 5xx + resets) / attempts at the primary reaches
    this over the window."""
    exit_ratio: Annotated[float, _ratio(low_open=False)] = 0.1
    """Switch back once the ratio measured on probe traffic is at most this."""
    min_requests: Annotated[int, _int_in(1, 1_000_000)] = 10
    """Attempts at the primary a window needs before its ratio counts."""
    window_s: Annotated[int, _int_in(5, 3600)] = 60
    """How far back the ratio looks."""
    hold_s: Annotated[int, _int_in(0, 86_400)] = 120
    """Minimum time between two switches of this route."""
    probe_percent: Annotated[int, _int_in(0, 50)] = 5
    """While forced by the watcher, this share of requests still starts at the primary (and
    falls back on failure), so recovery can be measured. 0: none; the route returns to
    automatic after holdS without a measurement."""
    interval_s: Annotated[int, _int_in(1, 300)] = 5
    """How often Envoy's stats are read."""

    @model_validator(mode="after")
    def _hysteresis(self) -> Self:
        if self.exit_ratio >= self.enter_ratio:
            raise _error(
                f"must be below enterRatio ({self.enter_ratio:g}) or the route would switch "
                f"back and forth, got {self.exit_ratio:g}",
                ("exitRatio",),
            )
        if self.interval_s >= self.window_s:
            raise _error(
                f"must be shorter than windowS ({self.window_s}), got {self.interval_s}",
                ("intervalS",),
            )
        return self


class HigressRoutes(_Model):
    """Higress: the route names the limiter's matchRules must list for this fallback chain."""

    route: Annotated[str, WrapValidator(_higress_route)]
    """The primary route (an AI route `foo` is the Ingress `ai-route-foo.internal`)."""
    fallback_routes: (
        Annotated[
            list[Annotated[str, WrapValidator(_higress_route)]],
            Field(min_length=1, max_length=FALLBACKS_MAX),
            _array(1, FALLBACKS_MAX, "route names"),
        ]
        | None
    ) = None
    """The routes Higress sends fallback requests through. Default: the console's naming,
    `ai-route-foo.internal` → `ai-route-foo.fallback.internal`."""

    @property
    def all_fallback_routes(self) -> list[str]:
        return list(self.fallback_routes or [higress_fallback_route(self.route)])


def higress_fallback_route(route: str) -> str:
    """The fallback route Higress's console creates for an AI route.

    `ai-route-foo.internal` → `ai-route-foo.fallback.internal` (higress-console
    AiRouteServiceImpl: buildFallbackRouteResourceName)."""
    base = route.removesuffix(".internal")
    return f"{base}.fallback.internal"


class FallbackRoute(_Model):
    """One route: its primary upstream, the fallbacks in priority order, and how to move on."""

    name: Name
    """The route's name (toggles, cluster names: `fallback_<route>_<upstream>`)."""
    path_prefix: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^/[\x21-\x7e]*$")] = (
        "/"
    )
    """Standalone Envoy: requests whose path starts with this take the route."""
    primary: Annotated[FallbackUpstream, WrapValidator(_object)]
    """Where requests go first."""
    fallbacks: Annotated[
        list[Annotated[FallbackUpstream, WrapValidator(_object)]],
        Field(min_length=1, max_length=FALLBACKS_MAX),
        _array(1, FALLBACKS_MAX, "upstreams"),
    ]
    """Where a failed attempt goes next, in priority order."""
    retriable_status_codes: Annotated[list[int], WrapValidator(_codes)] = Field(
        default_factory=lambda: list(DEFAULT_RETRIABLE)
    )
    """Upstream statuses that move a request to the next upstream (resets, connect failures
    and per-try timeouts always do). The limiter's own rejection never does."""
    num_retries: Annotated[int, _int_in(1, NUM_RETRIES_MAX)] | None = None
    """Attempts after the first. Default: one per fallback (each upstream tried once); more
    start over at the primary."""
    per_try_timeout_ms: Annotated[int, _int_in(100, TIMEOUT_MS_MAX)] | None = None
    """Give up on an attempt that has not started answering after this long (a stream that
    has started is never cut by it). Default: no per-try limit."""
    back_off: Annotated[BackOff, WrapValidator(_object)] = Field(default_factory=BackOff)
    """Back-off between attempts."""
    retry_after: Annotated[RetryAfter, WrapValidator(_object)] = Field(default_factory=RetryAfter)
    """Honouring the upstream's Retry-After."""
    buffer_bytes: Annotated[int, _int_in(BUFFER_BYTES_MIN, BUFFER_BYTES_MAX)] = DEFAULT_BUFFER_BYTES
    """Largest request body kept for another attempt; a larger request is sent once."""
    mode: Annotated[str, _one_of(MODES)] = "auto"
    """auto: every request starts at the primary and falls back on failure. forced: every
    request starts at `forcedUpstream` (then the rest of the chain). off: the primary only."""
    forced_upstream: Name | None = None
    """forced: where requests start (default: the first fallback)."""
    auto_switch: Annotated[AutoSwitch, WrapValidator(_object)] | None = None
    """Switch to forced fallback on the primary's error rate (tokenlimit fallback auto)."""
    higress: Annotated[HigressRoutes, WrapValidator(_object)] | None = None
    """Higress: the route names behind this chain."""

    @model_validator(mode="after")
    def _chain(self) -> Self:
        seen: dict[str, Loc] = {self.primary.name: ("primary", "name")}
        for index, upstream in enumerate(self.fallbacks):
            if upstream.name in seen:
                where = ".".join(str(p) for p in seen[upstream.name])
                raise _error(
                    f"{upstream.name!r} is already the name of {where}",
                    ("fallbacks", index, "name"),
                )
            seen[upstream.name] = ("fallbacks", index, "name")
            if upstream.family != self.primary.family:
                raise _error(
                    f"{upstream.provider} speaks another API than the primary "
                    f"({self.primary.provider}): Envoy forwards the request unchanged, so every "
                    "upstream of a route must accept the same request (use the provider's "
                    "OpenAI-compatible endpoint, or another route)",
                    ("fallbacks", index, "provider"),
                )
        located: list[tuple[Loc, FallbackUpstream]] = [
            (("primary",), self.primary),
            *((("fallbacks", i), u) for i, u in enumerate(self.fallbacks)),
        ]
        for at, upstream in located:
            if upstream.model is not None and upstream.family not in _MODEL_IN_BODY:
                raise _error(
                    f"{upstream.provider} takes the model from the request path, not the body: "
                    "point url at the deployment or leave model out",
                    (*at, "model"),
                )
        if self.forced_upstream is not None and self.forced_upstream not in seen:
            raise _error(
                f"must name an upstream of this route ({', '.join(seen)}), got "
                f"{show(self.forced_upstream)}",
                ("forcedUpstream",),
            )
        if self.forced_upstream is not None and self.mode != "forced":
            raise _error(
                f"applies to mode: forced, not {self.mode} (remove it or set mode: forced)",
                ("forcedUpstream",),
            )
        return self

    @property
    def upstreams(self) -> list[FallbackUpstream]:
        """Primary first, then the fallbacks in priority order."""
        return [self.primary, *self.fallbacks]

    def upstream(self, name: str) -> FallbackUpstream:
        for upstream in self.upstreams:
            if upstream.name == name:
                return upstream
        raise KeyError(name)

    @property
    def retries(self) -> int:
        return self.num_retries if self.num_retries is not None else len(self.fallbacks)


class FallbackSpec(_Model):
    """The `fallback` object of a policy: one entry per route."""

    routes: Annotated[
        list[Annotated[FallbackRoute, WrapValidator(_object)]],
        Field(min_length=1, max_length=ROUTES_MAX),
        _array(1, ROUTES_MAX, "routes"),
    ]
    """The routes with a fallback chain."""

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names: list[str] = []
        for index, route in enumerate(self.routes):
            if route.name in names:
                raise _error(f"{route.name!r} is listed twice", ("routes", index, "name"))
            names.append(route.name)
        return self

    def route(self, name: str) -> FallbackRoute:
        for route in self.routes:
            if route.name == name:
                return route
        known = ", ".join(r.name for r in self.routes)
        raise KeyError(f"no fallback route {name!r} (routes: {known})")


def parse_fallback(data: object) -> FallbackSpec:
    """Validate a `fallback` object (camelCase); ConfigInvalid names the field."""
    try:
        return FallbackSpec.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise ConfigInvalid(problems(exc, FallbackSpec, "camel")) from None


def fallback_document(spec: FallbackSpec) -> dict[str, Any]:
    """The spec as a document (camelCase, defaults left out): what a policy file holds."""
    return spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
