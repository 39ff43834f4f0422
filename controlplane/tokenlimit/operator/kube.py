"""The seam between the operator and the Kubernetes API.

`KubeClient` is what the operator needs from the API server and nothing more. `DynamicKube`
implements it on the official client's DynamicClient; `tests/support/fakekube.py`
implements it in memory for tests (as client-go ships a fake clientset beside the real one).

Both speak the API's own shapes: objects are the JSON dicts the server returns, failures are
`ApiError`s built by `api_error` from the server's `Status` body and headers, and watch
streams are parsed line by line by `watch_event`. The fake runs recorded responses through
the same two functions, so the parsing the real client relies on is what the tests exercise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

FIELD_MANAGER = "tokenlimit-operator"
# A retry the server asks for is honoured, up to this much (a misbehaving proxy can send hours).
RETRY_AFTER_MAX_S = 300.0
# How long one request may take before it is abandoned; a watch adds its own timeout to this.
REQUEST_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0

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


class ApiError(Exception):
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
    """What the operator asks of the API server. Expected outcomes are values; others raise."""

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
    ) -> Iterator[WatchEvent]:
        """Changes after `resource_version`, until the server closes the stream (~timeout_s).

        Raises ApiError 410 when that version is too old to watch from.
        """
        ...

    def apply(self, obj: Obj) -> Obj:
        """Server-side apply as FIELD_MANAGER, without forcing conflicts."""
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


# --- the real client ------------------------------------------------------------------------

_MERGE_PATCH = "application/merge-patch+json"


class DynamicKube:
    """KubeClient on `kubernetes.dynamic.DynamicClient` (discovery finds plural and scope)."""

    def __init__(self, api_client: ApiClient, discovery_cache: str | None = None) -> None:
        from kubernetes.dynamic import DynamicClient

        try:
            self._dynamic = DynamicClient(api_client, cache_file=discovery_cache)
        except Exception as exc:
            raise _translate(exc) from None
        self._resources: dict[Kind, Resource] = {}

    def resource(self, kind: Kind) -> Resource:
        found = self._resources.get(kind)
        if found is None:
            from kubernetes.dynamic.exceptions import ResourceNotFoundError

            try:
                discovered = self._dynamic.resources.get(
                    api_version=kind.api_version, kind=kind.kind
                )
            except ResourceNotFoundError:
                raise ApiError(
                    404,
                    "NotFound",
                    f"the server has no {kind.kind} in {kind.api_version}: is its CRD installed?",
                ) from None
            except Exception as exc:
                raise _translate(exc) from None
            found = Resource(kind, discovered.name, bool(discovered.namespaced))
            self._resources[kind] = found
        return found

    def _call(self, method: str, path: str, **params: Any) -> Any:
        params.setdefault("_request_timeout", (CONNECT_TIMEOUT_S, REQUEST_TIMEOUT_S))
        try:
            return self._dynamic.request(method, path, serialize=False, **params)
        except Exception as exc:
            raise _translate(exc) from None

    def _json(self, method: str, path: str, **params: Any) -> Obj:
        response = self._call(method, path, **params)
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()

    def get(self, ref: ObjectRef) -> Obj | None:
        path = self.resource(ref.kind).path(ref.namespace, ref.name)
        try:
            return self._json("get", path)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def list(
        self, kind: Kind, namespace: str | None = None, label_selector: str | None = None
    ) -> ObjectList:
        resource = self.resource(kind)
        document = self._json(
            "get", resource.path(namespace), label_selector=label_selector, limit=500
        )
        items = list(document.get("items") or [])
        while (document.get("metadata") or {}).get("continue"):
            document = self._json(
                "get",
                resource.path(namespace),
                label_selector=label_selector,
                limit=500,
                _continue=document["metadata"]["continue"],
            )
            items.extend(document.get("items") or [])
        return ObjectList(_with_kind(items, kind), str(document["metadata"]["resourceVersion"]))

    def watch(
        self, kind: Kind, namespace: str | None, resource_version: str, timeout_s: float
    ) -> Iterator[WatchEvent]:
        from kubernetes.watch.watch import iter_resp_lines

        seconds = max(1, int(timeout_s))
        response = self._call(
            "get",
            self.resource(kind).path(namespace),
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=seconds,
            # The server ends the stream after timeoutSeconds; the read timeout is a backstop
            # for a connection that died without a FIN.
            _request_timeout=(CONNECT_TIMEOUT_S, seconds + REQUEST_TIMEOUT_S),
        )
        try:
            for line in iter_resp_lines(response):
                event = watch_event(line)
                if event is not None:
                    yield event
        except ApiError:
            raise
        except Exception as exc:
            raise _translate(exc) from None
        finally:
            response.close()
            response.release_conn()

    def apply(self, obj: Obj) -> Obj:
        ref = ref_of(obj)
        return self._json(
            "patch",
            self.resource(ref.kind).path(ref.namespace, ref.name),
            body=obj,
            content_type="application/apply-patch+yaml",
            field_manager=FIELD_MANAGER,
            force_conflicts=False,
        )

    def delete(self, ref: ObjectRef, uid: str | None = None) -> bool:
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self._json("delete", self.resource(ref.kind).path(ref.namespace, ref.name), body=body)
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        return True

    def patch(self, ref: ObjectRef, patch: Obj) -> Obj:
        path = self.resource(ref.kind).path(ref.namespace, ref.name)
        return self._json("patch", path, body=patch, content_type=_MERGE_PATCH)

    def patch_status(self, ref: ObjectRef, status: Obj, resource_version: str) -> Obj:
        path = self.resource(ref.kind).path(ref.namespace, ref.name) + "/status"
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        return self._json(
            "patch", path, body=body, content_type=_MERGE_PATCH, field_manager=FIELD_MANAGER
        )

    def create(self, obj: Obj) -> Obj:
        ref = ref_of(obj)
        path = self.resource(ref.kind).path(ref.namespace)
        return self._json("post", path, body=obj, field_manager=FIELD_MANAGER)

    def replace(self, obj: Obj) -> Obj:
        ref = ref_of(obj)
        path = self.resource(ref.kind).path(ref.namespace, ref.name)
        return self._json("put", path, body=obj, field_manager=FIELD_MANAGER)


def _with_kind(items: list[Obj], kind: Kind) -> list[Obj]:
    # Items of a built-in list (ConfigMapList) carry no apiVersion/kind; custom resources do.
    return [{"apiVersion": kind.api_version, "kind": kind.kind, **item} for item in items]


def _translate(exc: BaseException) -> ApiError:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ApiException) and exc.status:
        headers = dict(exc.headers or {})
        return api_error(int(exc.status), headers, exc.body)
    return unreachable(exc)


def api_client(kubeconfig: str | None = None, context: str | None = None) -> ApiClient:
    """In-cluster credentials when running in a pod (and no kubeconfig given), else kubeconfig."""
    from kubernetes import client, config

    configuration = client.Configuration()
    loaded = False
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=configuration)
            loaded = True
        except config.ConfigException:
            pass
    if not loaded:
        config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    return client.ApiClient(without_hidden_retries(configuration))


def without_hidden_retries(configuration: Any) -> Any:
    """Let the loop, not urllib3, retry refused requests.

    urllib3's default retries a 429 or 503 carrying Retry-After up to three times, sleeping
    inside the request: invisible in the log, deaf to SIGTERM, and a PATCH retried blindly.
    Connection failures are still retried (twice) since nothing reached the server.
    """
    import urllib3

    configuration.retries = urllib3.Retry(
        total=2,
        connect=2,
        read=0,
        redirect=0,
        status=0,
        other=0,
        respect_retry_after_header=False,
        raise_on_status=False,
    )
    return configuration
