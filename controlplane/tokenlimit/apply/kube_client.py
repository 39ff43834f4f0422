"""The real `KubeClient`: `DynamicKube` on the official client, and `connect` to build it.

`kubernetes.dynamic.DynamicClient` finds each kind's plural and scope by discovery and sends
the requests; `kubernetes.watch.Watch` reads watch streams. What is written here is only the
mapping to the seam's shapes: raw JSON dicts in and out (no model classes), every failure
translated into the `tokenlimit.apply.kube` error family.

The `kubernetes` package is imported inside the functions, so a command that never talks to
a cluster (`tokenlimit validate`, `--help`) does not pay for importing it.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from tokenlimit.apply.kube import (
    FIELD_MANAGER,
    ApiError,
    Kind,
    KindNotServed,
    NoCredentials,
    Obj,
    ObjectList,
    ObjectRef,
    Resource,
    WatchEvent,
    api_error,
    ref_of,
    unreachable,
    watch_event,
)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

# How long one request may take before it is abandoned; a watch adds its own timeout to this.
REQUEST_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
_MERGE_PATCH = "application/merge-patch+json"
_APPLY_PATCH = "application/apply-patch+yaml"


def connect(
    kubeconfig: str | None = None, context: str | None = None, *, in_cluster_first: bool = False
) -> DynamicKube:
    """A client for the cluster the credentials name (discovery is read once, here).

    The operator runs in a pod: `in_cluster_first` uses the service account unless a
    kubeconfig is given. `push` runs on a laptop or in CI: the kubeconfig (`$KUBECONFIG`,
    `~/.kube/config`, `context` picks one) first, then a pod's service account.
    """
    return DynamicKube(api_client(kubeconfig, context, in_cluster_first=in_cluster_first))


def api_client(
    kubeconfig: str | None = None, context: str | None = None, *, in_cluster_first: bool = False
) -> ApiClient:
    """The credentials (see `connect`), with urllib3's hidden retries switched off."""
    from kubernetes import client, config

    configuration = client.Configuration()
    explicit = kubeconfig is not None or context is not None

    def in_cluster() -> bool:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            return False
        return True

    if not (in_cluster_first and not explicit and in_cluster()):
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        except (config.ConfigException, OSError) as exc:
            if explicit or in_cluster_first or not in_cluster():
                raise NoCredentials(f"no Kubernetes credentials: {exc}") from None
    return client.ApiClient(without_hidden_retries(configuration))


def without_hidden_retries(configuration: Any) -> Any:
    """Let the caller, not urllib3, retry refused requests.

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


class DynamicKube:
    """KubeClient on `kubernetes.dynamic.DynamicClient` (discovery finds plural and scope)."""

    def __init__(self, api_client: ApiClient, discovery_cache: str | None = None) -> None:
        from kubernetes.dynamic import DynamicClient

        try:
            self._dynamic = DynamicClient(api_client, cache_file=discovery_cache)  # type: ignore[no-untyped-call]
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
                raise KindNotServed(kind) from None
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
            document: Obj = json.loads(response.data)
        finally:
            response.release_conn()
        return document

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
        path = self.resource(kind).path(namespace)
        document = self._json("get", path, label_selector=label_selector, limit=500)
        items = list(document.get("items") or [])
        while (document.get("metadata") or {}).get("continue"):
            document = self._json(
                "get",
                path,
                label_selector=label_selector,
                limit=500,
                _continue=document["metadata"]["continue"],
            )
            items.extend(document.get("items") or [])
        return ObjectList(_with_kind(items, kind), str(document["metadata"]["resourceVersion"]))

    def watch(
        self, kind: Kind, namespace: str | None, resource_version: str, timeout_s: float
    ) -> Generator[WatchEvent, None, None]:
        """The stream through `kubernetes.watch.Watch`, which reads and splits the lines.

        Watch yields dicts ("object" as the JSON the server sent: `return_type="object"`) and
        raises an ERROR event (410 Expired) as an ApiException; with `timeout_seconds` given
        it never re-watches on its own, so the caller's loop decides what follows.
        """
        from kubernetes.watch import Watch

        seconds = max(1, int(timeout_s))
        path = self.resource(kind).path(namespace)

        def request(**params: Any) -> Any:
            return self._call("get", path, **params)

        watcher = Watch(return_type="object")  # type: ignore[no-untyped-call]
        stream = watcher.stream(  # type: ignore[no-untyped-call]
            request,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=seconds,
            # The server ends the stream after timeoutSeconds; the read timeout is a backstop
            # for a connection that died without a FIN.
            _request_timeout=(CONNECT_TIMEOUT_S, seconds + REQUEST_TIMEOUT_S),
        )
        try:
            for event in stream:
                parsed = watch_event(
                    json.dumps({"type": event["type"], "object": event["raw_object"]})
                )
                if parsed is not None:
                    yield parsed
        except ApiError:
            raise
        except Exception as exc:
            raise _translate(exc) from None
        finally:
            watcher.stop()  # type: ignore[no-untyped-call]
            stream.close()

    def apply(
        self,
        obj: Obj,
        *,
        field_manager: str = FIELD_MANAGER,
        dry_run: bool = False,
        force: bool = False,
    ) -> Obj:
        ref = ref_of(obj)
        return self._json(
            "patch",
            self.resource(ref.kind).path(ref.namespace, ref.name),
            body=obj,
            content_type=_APPLY_PATCH,
            field_manager=field_manager,
            force_conflicts=force,
            dry_run="All" if dry_run else None,
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
        if exc.body is None and exc.reason and ": " in exc.reason:
            # Watch raises a stream's ERROR event as ApiException(reason="<reason>: <message>").
            reason, _, message = str(exc.reason).partition(": ")
            return ApiError(int(exc.status), reason, message)
        return api_error(int(exc.status), dict(exc.headers or {}), exc.body)
    return unreachable(exc)
