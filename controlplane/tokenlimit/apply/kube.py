"""The one Kubernetes client seam: what `push` and the operator ask of the API server.

`KubeClient` is the Protocol; `tokenlimit.apply.kube_client.DynamicKube` implements it on the
official client's DynamicClient (and `connect` loads credentials for it);
`tests/support/fakekube.py` implements it in memory for tests (as client-go ships a fake
clientset beside the real one).

Both speak the API's own shapes: objects are the JSON dicts the server returns, failures are
`ApiError`s built by `api_error` from the server's `Status` body and headers, and watch
streams are parsed line by line by `watch_event`. The fake runs recorded responses through
the same two functions, so the parsing the real client relies on is what the tests exercise.

One error family: `KubeError`, with `ApiError` (a refused or unsent request), `KindNotServed`
(discovery has no such kind: a CRD or gateway not installed), `NoCredentials` and
`SecretMissing`. Callers put their own hint on the message (push names `--context`, the
operator `--kubeconfig`).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

FIELD_MANAGER = "tokenlimit-operator"  # the operator's; `push` applies as "tokenlimit"
# A retry the server asks for is honoured, up to this much (a misbehaving proxy can send hours).
RETRY_AFTER_MAX_S = 300.0

Obj = dict[str, Any]


@dataclass(frozen=True, order=True)
class Kind:
    """An API kind as objects spell it: `apiVersion` and `kind`."""

    api_version: str
    kind: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def __str__(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


POLICY = Kind("tokenlimit.io/v1alpha1", "TokenRateLimitPolicy")
LEASE = Kind("coordination.k8s.io/v1", "Lease")
CONFIG_MAP = Kind("v1", "ConfigMap")
SECRET = Kind("v1", "Secret")


def kind_of(obj: Mapping[str, Any]) -> Kind:
    return Kind(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Which object: kind, namespace (None for cluster-scoped) and name."""

    kind: Kind
    namespace: str | None
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind.kind} {where}"


def ref_of(obj: Mapping[str, Any]) -> ObjectRef:
    meta = obj.get("metadata") or {}
    return ObjectRef(kind_of(obj), meta.get("namespace"), str(meta.get("name", "")))


# --- errors ---------------------------------------------------------------------------------

# Statuses worth retrying as they are: the request may succeed unchanged later.
_TRANSIENT = frozenset({0, 429, 500, 502, 503, 504})


class KubeError(Exception):
    """Anything the Kubernetes client could not do; the message says what and why."""


class NoCredentials(KubeError):
    """Neither a kubeconfig nor a pod's service account gave credentials."""


class SecretMissing(KubeError):
    """A Secret, or its key, that a policy refers to is not there (or not text)."""


class ApiError(KubeError):
    """A request the API server refused, or could not be sent (status 0)."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        retry_after_s: float | None = None,
        causes: tuple[Mapping[str, Any], ...] = (),
    ) -> None:
        self.status = status
        self.reason = reason  # Status.reason: Conflict, Invalid, Expired, TooManyRequests, ...
        self.message = message
        self.retry_after_s = retry_after_s
        self.causes = causes
        super().__init__(str(self))

    def __str__(self) -> str:
        code = str(self.status) if self.status else "unreachable"
        return f"{code} {self.reason}: {self.message}" if self.reason else f"{code}: {self.message}"

    @property
    def gone(self) -> bool:
        """The resourceVersion is too old (watch history compacted): list again."""
        return self.status == 410

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def transient(self) -> bool:
        return self.status in _TRANSIENT


class KindNotServed(ApiError):
    """Discovery has no such kind: its CRD (or the gateway that brings it) is not installed."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        message = f"the server has no {kind.kind} in {kind.api_version}: is its CRD installed?"
        super().__init__(404, "NotFound", message)


def unreachable(exc: BaseException) -> ApiError:
    """A request that got no HTTP answer (refused, reset, timed out)."""
    return ApiError(0, type(exc).__name__, str(exc) or repr(exc))


def api_error(status: int, headers: Mapping[str, str], body: bytes | str | None) -> ApiError:
    """The error for one HTTP answer outside 2xx.

    The API server's handlers answer with a `Status` object (meta/v1: status, message, reason,
    details{causes, retryAfterSeconds}, code). Filters in front of them do not: the max-in-flight
    and priority-and-fairness filters answer 429 with a plain-text body and a `Retry-After`
    header. Both shapes are accepted; the header wins over `details.retryAfterSeconds`.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    document = _json_object(text)
    retry_after = _retry_after(headers)
    if document is not None and document.get("kind") == "Status":
        details = document.get("details") or {}
        if retry_after is None and details.get("retryAfterSeconds"):
            retry_after = float(details["retryAfterSeconds"])
        causes = tuple(c for c in details.get("causes") or () if isinstance(c, Mapping))
        return ApiError(
            int(document.get("code") or status),
            str(document.get("reason") or ""),
            str(document.get("message") or text.strip()),
            _bounded(retry_after),
            causes,
        )
    message = text.strip() or f"HTTP {status} without a body"
    return ApiError(status, _HTTP_REASONS.get(status, ""), message, _bounded(retry_after))


_HTTP_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Gone",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    # The API server sends whole seconds. An HTTP-date form is not used by it and is ignored.
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                seconds = float(value)
            except ValueError:
                return None
            return seconds if math.isfinite(seconds) and seconds >= 0 else None
    return None


def _bounded(seconds: float | None) -> float | None:
    return None if seconds is None else min(seconds, RETRY_AFTER_MAX_S)


# --- watch streams --------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchEvent:
    """One line of a watch stream: ADDED, MODIFIED, DELETED or BOOKMARK, and the object."""

    type: str
    object: Obj

    @property
    def resource_version(self) -> str | None:
        version = (self.object.get("metadata") or {}).get("resourceVersion")
        return str(version) if version else None


WATCH_TYPES = ("ADDED", "MODIFIED", "DELETED", "BOOKMARK")


def watch_event(line: bytes | str) -> WatchEvent | None:
    """Parse one line of a watch stream (None for a blank keep-alive line).

    An `ERROR` event carries a `Status` (410 Expired when the resourceVersion is too old); it is
    raised as the ApiError it stands for, exactly like a failed request.
    """
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    if not text.strip():
        return None
    document = _json_object(text)
    if document is None or not isinstance(document.get("object"), dict):
        raise ApiError(0, "BadWatchEvent", f"not a watch event: {text[:200]!r}")
    kind = document.get("type")
    if kind == "ERROR":
        status = document["object"]
        raise api_error(int(status.get("code") or 500), {}, json.dumps(status))
    if kind not in WATCH_TYPES:
        raise ApiError(0, "BadWatchEvent", f"unknown watch event type {kind!r}")
    return WatchEvent(str(kind), document["object"])


@dataclass(frozen=True)
class ObjectList:
    items: list[Obj]
    resource_version: str = ""


@dataclass(frozen=True)
class Resource:
    """How to reach a kind over HTTP (found by discovery)."""

    kind: Kind
    plural: str
    namespaced: bool
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        group_version = self.kind.api_version
        base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
        if self.namespaced and namespace:
            base = f"{base}/namespaces/{namespace}"
        base = f"{base}/{self.plural}"
        return f"{base}/{name}" if name else base


# --- the seam -------------------------------------------------------------------------------


class KubeClient(Protocol):
    """What push and the operator ask of the API server. Expected outcomes are values (a
    missing object is None); everything else raises a KubeError."""

    def get(self, ref: ObjectRef) -> Obj | None:
        """The object, or None when it does not exist (404)."""
        ...

    def list(
        self, kind: Kind, namespace: str | None = None, label_selector: str | None = None
    ) -> ObjectList:
        """Every object of `kind` (in `namespace`, or all), with the list's resourceVersion."""
        ...

    def watch(
        self, kind: Kind, namespace: str | None, resource_version: str, timeout_s: float
    ) -> Generator[WatchEvent, None, None]:
        """Changes after `resource_version`, until the server closes the stream (~timeout_s).

        Raises ApiError 410 when that version is too old to watch from.
        """
        ...

    def apply(
        self,
        obj: Obj,
        *,
        field_manager: str = FIELD_MANAGER,
        dry_run: bool = False,
        force: bool = False,
    ) -> Obj:
        """Server-side apply; `force` takes over fields another manager owns; `dry_run`
        is the server's own (`dryRun=All`): validated and returned, not stored."""
        ...

    def delete(self, ref: ObjectRef, uid: str | None = None) -> bool:
        """Delete (only the object with `uid`, when given); False when it was already gone."""
        ...

    def patch(self, ref: ObjectRef, patch: Obj) -> Obj:
        """A JSON merge patch of the object (used for metadata.finalizers)."""
        ...

    def patch_status(self, ref: ObjectRef, status: Obj, resource_version: str) -> Obj:
        """Replace `.status` through the status subresource; 409 when the object changed."""
        ...

    def create(self, obj: Obj) -> Obj: ...

    def replace(self, obj: Obj) -> Obj:
        """PUT with metadata.resourceVersion: 409 when someone else wrote first."""
        ...


def secret_value(client: KubeClient, namespace: str, name: str, key: str) -> str:
    """`data[key]` of Secret `namespace/name`, decoded as UTF-8 text.

    SecretMissing when the Secret, the key or text is not there; API errors as they are.
    """
    where = f"Secret {namespace}/{name}"
    secret = client.get(ObjectRef(SECRET, namespace, name))
    if secret is None:
        raise SecretMissing(f"{where} not found")
    data = secret.get("data") or {}
    if key not in data:
        keys = ", ".join(sorted(data)) or "none"
        raise SecretMissing(f"{where} has no key {key!r} (keys: {keys})")
    try:
        return base64.b64decode(data[key], validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise SecretMissing(f"{where} key {key!r} is not UTF-8 text") from None
