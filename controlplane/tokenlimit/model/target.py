"""What a policy attaches to (`spec.targetRef`): Higress routes, an Istio gateway, an Envoy
listener.

`gateway` picks the kind; the other fields belong to one kind each, and the model refuses a
field of another kind (the CRD's CEL rules say the same to `kubectl apply`). The names are
Kubernetes names, so their bounds are Kubernetes' own, not the filter's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Self, TypeVar

from pydantic import ConfigDict, Field, WrapValidator, model_validator

from tokenlimit.model._checks import an_object as _object
from tokenlimit.model._checks import array as _array
from tokenlimit.model._checks import one_of as _one_of
from tokenlimit.model._checks import refusal as _error
from tokenlimit.model._checks import show
from tokenlimit.model._spelling import Model as _Model
from tokenlimit.model._spelling import cel as _cel
from tokenlimit.model._spelling import doc_key as _doc_key
from tokenlimit.model.fields import (
    DNS_LABEL,
    DNS_LABEL_CHARS_MAX,
    DNS_SUBDOMAIN,
    DNS_SUBDOMAIN_CHARS_MAX,
    Present,
    SubdomainName,
    enum,
    matching,
)

GATEWAYS = ("higress", "istio", "envoy")
HIGRESS_SYSTEM_NAMESPACE = "higress-system"
ATTACHMENTS_MAX = 64
LISTENER_NAME_CHARS_MAX = 128
LABELS_MAX = 64
INGRESS_NAME_CHARS_MAX = DNS_LABEL_CHARS_MAX + 1 + DNS_SUBDOMAIN_CHARS_MAX  # namespace/name
DOMAIN_CHARS_MAX = 255
SERVICE_MATCH_CHARS_MAX = DNS_SUBDOMAIN_CHARS_MAX + len(":65535")
_INGRESS_NAME = re.compile(rf"(?:{DNS_LABEL.pattern}/)?{DNS_SUBDOMAIN.pattern}")
_DOMAIN = re.compile(rf"(?:\*\.)?{DNS_SUBDOMAIN.pattern}")
_SERVICE_MATCH = re.compile(rf"{DNS_SUBDOMAIN.pattern}(?::[0-9]{{1,5}})?")
_LISTENER_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_ROUTE_PREFIX = re.compile(r"[A-Za-z0-9_./-]+")
_LABEL_KEY_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def _check_domain(value: Any, handler: Callable[[Any], Any]) -> Any:
    if isinstance(value, str) and value.endswith(".*"):
        raise _error(
            f"the filter matches exact hosts and '*.suffix' patterns only, got {show(value)} "
            "(list each host, or use '*.example.com')"
        )
    return handler(value)


def _check_labels(value: Any, handler: Callable[[Any], Any]) -> Any:
    if not isinstance(value, dict):
        raise _error(f"must be an object of label names to values, got {show(value)}")
    if not 1 <= len(value) <= LABELS_MAX:
        raise _error(f"must hold 1 to {LABELS_MAX} labels, got {len(value)}")
    for key, label in value.items():
        problem = _label_problem(key, label)
        if problem is not None:
            raise _error(problem, (key,) if isinstance(key, str) else ())
    return handler(value)


def _label_problem(key: object, value: object) -> str | None:
    """Why `key: value` is not a Kubernetes label, or None."""
    if not isinstance(key, str):
        return f"label names must be strings, got {show(key)}"
    prefix, slash, name = key.rpartition("/")
    if slash and not (DNS_SUBDOMAIN.fullmatch(prefix) and len(prefix) <= DNS_SUBDOMAIN_CHARS_MAX):
        return f"label prefix must be a DNS subdomain, got {show(prefix)}"
    if not (_LABEL_KEY_NAME.fullmatch(name) and len(name) <= 63):
        return (
            "label name must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending "
            f"with a letter or digit, got {show(name)}"
        )
    if not isinstance(value, str):
        return f"must be a string, got {show(value)}"
    if value and not (_LABEL_KEY_NAME.fullmatch(value) and len(value) <= 63):
        return f"label value must be empty or like a label name, got {show(value)}"
    return None


# Each attachment list: 1 to ATTACHMENTS_MAX strings of one kind, or absent. Per item, the
# schema half (Field) and the check with the project's message; a more specific check last
# (outermost: it runs first).
_Item = TypeVar("_Item")
_Attachments = Annotated[
    Annotated[
        list[_Item],
        Field(min_length=1, max_length=ATTACHMENTS_MAX),
        _array(1, ATTACHMENTS_MAX, "strings"),
    ]
    | None,
    Present,
]
IngressName = Annotated[
    str,
    Field(max_length=INGRESS_NAME_CHARS_MAX, pattern=f"^{_INGRESS_NAME.pattern}$"),
    matching(_INGRESS_NAME, INGRESS_NAME_CHARS_MAX, "a route name: namespace/name or name"),
]
Domain = Annotated[
    str,
    Field(max_length=DOMAIN_CHARS_MAX, pattern=f"^{_DOMAIN.pattern}$"),
    matching(_DOMAIN, DOMAIN_CHARS_MAX, "a host name or *.suffix"),
    WrapValidator(_check_domain),
]
ServiceMatch = Annotated[
    str,
    Field(max_length=SERVICE_MATCH_CHARS_MAX, pattern=f"^{_SERVICE_MATCH.pattern}$"),
    matching(_SERVICE_MATCH, SERVICE_MATCH_CHARS_MAX, "a service host, optionally with :port"),
]
RoutePrefix = Annotated[
    str,
    Field(max_length=INGRESS_NAME_CHARS_MAX, pattern=f"^{_ROUTE_PREFIX.pattern}$"),
    matching(
        _ROUTE_PREFIX,
        INGRESS_NAME_CHARS_MAX,
        "the start of a route name: letters, digits, '-', '_', '.' or '/'",
    ),
]
Ingresses = _Attachments[IngressName]
Domains = _Attachments[Domain]
Services = _Attachments[ServiceMatch]
RoutePrefixes = _Attachments[RoutePrefix]


class LabelSelector(_Model):
    """Istio workload selector: pods (gateways) carrying all of these labels."""

    match_labels: Annotated[
        dict[str, str],
        Field(min_length=1, max_length=LABELS_MAX),
        WrapValidator(_check_labels),
    ]
    """Labels of the gateway pods, e.g. `istio: ingressgateway`."""


class GatewayRef(_Model):
    """A Kubernetes Gateway API `Gateway` in the policy's namespace."""

    name: SubdomainName
    """Name of the Gateway (gateway.networking.k8s.io) to attach to."""


class Exclusions(_Model):
    """Higress: where another policy's rule replaces this one, as a Higress route rule
    (`_rules_`, `matchRules`) replaces the plugin's default config instead of adding to it."""

    ingresses: Ingresses = None
    """Routes (`namespace/name`) this policy skips."""
    domains: Domains = None
    """Request hosts this policy skips."""
    services: Services = None
    """Upstream services this policy skips."""

    @property
    def attachments(self) -> dict[str, list[str]]:
        """By Higress matchRule field: {'ingress': [...], ...}."""
        found = {"ingress": self.ingresses, "domain": self.domains, "service": self.services}
        return {k: list(v) for k, v in found.items() if v}


class TargetRef(_Model):
    """What the policy attaches to. `gateway` picks the kind; the other fields belong to it."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.gateway == 'higress' || "
                "!(has(self.ingresses) || has(self.domains) || has(self.services))",
                "ingresses, domains and services attach to Higress (gateway: higress)",
            ),
            (
                "!has(self.routePrefixes) || (self.gateway == 'higress' && !(has(self.ingresses) "
                "|| has(self.domains) || has(self.services) || has(self.exclude)))",
                "routePrefixes attach to Higress (gateway: higress), without ingresses, domains, "
                "services or exclude",
            ),
            (
                "self.gateway == 'istio' || !(has(self.selector) || has(self.gatewayRef))",
                "selector and gatewayRef attach to Istio (gateway: istio)",
            ),
            (
                "self.gateway != 'istio' || has(self.selector) != has(self.gatewayRef)",
                "gateway: istio needs exactly one of selector or gatewayRef",
            ),
            ("self.gateway == 'envoy' || !has(self.listener)", "listener is for gateway: envoy"),
            (
                "!has(self.exclude) || (self.gateway == 'higress' && "
                "!(has(self.ingresses) || has(self.domains) || has(self.services)))",
                "exclude is for a Higress policy on every route (no ingresses, domains, services)",
            ),
        )
    )

    gateway: Annotated[str, enum(GATEWAYS), _one_of(GATEWAYS)]
    """The gateway kind: higress, istio or envoy (standalone Envoy)."""
    ingresses: Ingresses = None
    """Higress: routes (Ingress names, `namespace/name`) the budget applies to."""
    domains: Domains = None
    """Higress: request hosts (exact, or `*.example.com`) the budget applies to."""
    services: Services = None
    """Higress: upstream services (`llm.ns.svc.cluster.local`, `qwen.dns:443`) it applies to."""
    route_prefixes: RoutePrefixes = None
    """Higress: route-name prefixes the budget applies to (Higress's `_match_route_prefix_`),
    rendered as a `_rules_` entry inside the WasmPlugin's defaultConfig: WasmPlugin matchRules
    have no prefix field. Alone: not with ingresses, domains, services or exclude."""
    selector: Annotated[Annotated[LabelSelector, WrapValidator(_object)] | None, Present] = None
    """Istio: the gateway workloads (pods) that run the filter."""
    gateway_ref: Annotated[Annotated[GatewayRef, WrapValidator(_object)] | None, Present] = None
    """Istio: a Gateway API Gateway in the policy's namespace that runs the filter."""
    listener: Annotated[
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=LISTENER_NAME_CHARS_MAX,
                pattern=f"^{_LISTENER_NAME.pattern}$",
            ),
            matching(
                _LISTENER_NAME,
                LISTENER_NAME_CHARS_MAX,
                f"1 to {LISTENER_NAME_CHARS_MAX} letters, digits, '-', '_' or '.'",
            ),
        ]
        | None,
        Present,
    ] = None
    """Envoy: the listener the filter runs on (default `tokenlimit`)."""
    exclude: Annotated[Annotated[Exclusions, WrapValidator(_object)] | None, Present] = None
    """Higress, a policy on every route: the routes, hosts or services it skips because
    another policy's rule replaces it there (what `tokenlimit import` writes for a Higress
    default config beside route rules)."""

    @model_validator(mode="after")
    def _fields_of_the_gateway(self) -> Self:
        owners = {
            "ingresses": "higress",
            "domains": "higress",
            "services": "higress",
            "selector": "istio",
            "gateway_ref": "istio",
            "listener": "envoy",
            "exclude": "higress",
            "route_prefixes": "higress",
        }
        for name, owner in owners.items():
            if getattr(self, name) is not None and owner != self.gateway:
                raise _error(
                    f"attaches to {owner}, not {self.gateway} (gateway: {self.gateway})",
                    (_doc_key(TargetRef, name, "camel"),),
                )
        if self.exclude is not None and self.attachments:
            raise _error(
                "is for a policy on every route: a policy attached to ingresses, domains or "
                "services already applies nowhere else",
                (_doc_key(TargetRef, "exclude", "camel"),),
            )
        if self.route_prefixes is not None and (self.attachments or self.exclude is not None):
            raise _error(
                "attach on their own: a policy on route prefixes renders as a defaultConfig "
                "rule, which cannot be combined with ingresses, domains, services or exclude",
                (_doc_key(TargetRef, "route_prefixes", "camel"),),
            )
        if self.gateway == "istio" and (self.selector is None) == (self.gateway_ref is None):
            got = "both" if self.selector is not None else "neither"
            raise _error(
                f"gateway: istio needs exactly one of selector or gatewayRef, got {got} "
                "(without one, Istio would run the filter on every workload of the namespace)"
            )
        return self

    @property
    def attachments(self) -> dict[str, list[str]]:
        """Higress attachments by Higress matchRule field: {'ingress': [...], ...}."""
        found = {"ingress": self.ingresses, "domain": self.domains, "service": self.services}
        return {k: list(v) for k, v in found.items() if v}
