"""The real client (DynamicKube on the official `kubernetes` package) talking HTTP to a local
server that answers with recorded responses: the requests it sends are checked as the API
server would read them.
"""

from __future__ import annotations

import json

import pytest
from support.recorded_kube import CHAT, FIXTURES, POLICIES, RecordedApiServer, Seen, recorded
from tokenlimit.apply.kube import (
    CONFIG_MAP,
    LEASE,
    POLICY,
    ApiError,
    Kind,
    KindNotServed,
    ObjectRef,
)
from tokenlimit.apply.kube_client import DynamicKube, without_hidden_retries

pytestmark = pytest.mark.usefixtures("_discovery_cache_in_tmp")


# --- the real client over HTTP ------------------------------------------------------------


def last(server: RecordedApiServer) -> Seen:
    return server.seen[-1]


def test_get_reads_a_recorded_policy_and_404_is_none(
    api: tuple[RecordedApiServer, DynamicKube],
) -> None:
    server, kube = api
    server.ok("GET", f"{POLICIES}/chat", (FIXTURES / "policy.json").read_bytes())
    policy = kube.get(CHAT)
    assert (
        policy is not None
        and policy["metadata"]["uid"] == recorded("policy.json")["metadata"]["uid"]
    )
    assert kube.get(ObjectRef(POLICY, "team-a", "gone")) is None
    assert last(server).path == f"{POLICIES}/gone"


def test_list_pages_and_fills_in_kinds(api: tuple[RecordedApiServer, DynamicKube]) -> None:
    server, kube = api
    server.ok("GET", POLICIES, (FIXTURES / "policy-list.json").read_bytes())
    listed = kube.list(POLICY, "team-a", "tokenlimit.io/policy-uid=abc")
    assert listed.resource_version == "48250"
    assert [i["metadata"]["name"] for i in listed.items] == ["chat"]
    assert last(server).query == {
        "labelSelector": ["tokenlimit.io/policy-uid=abc"],
        "limit": ["500"],
    }
    server.ok(
        "GET",
        "/api/v1/configmaps",
        json.dumps(
            {
                "kind": "ConfigMapList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": "48251"},
                "items": [{"metadata": {"name": "x", "namespace": "team-a"}, "data": {}}],
            }
        ).encode(),
    )
    (item,) = kube.list(CONFIG_MAP).items
    assert (item["apiVersion"], item["kind"]) == ("v1", "ConfigMap")


def test_apply_is_server_side_apply_without_force(
    api: tuple[RecordedApiServer, DynamicKube],
) -> None:
    server, kube = api
    path = "/api/v1/namespaces/team-a/configmaps/chat-tokenlimit-ecds"
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "chat-tokenlimit-ecds", "namespace": "team-a"},
        "data": {"k": "v"},
    }
    server.ok("PATCH", path, json.dumps(obj).encode())
    assert kube.apply(obj)["data"] == {"k": "v"}
    request = last(server)
    assert (request.method, request.path) == ("PATCH", path)
    assert request.content_type == "application/apply-patch+yaml"
    assert request.query == {"fieldManager": ["tokenlimit-operator"], "force": ["false"]}
    assert request.body == obj


def test_apply_refused_422_and_conflict_409_are_api_errors(
    api: tuple[RecordedApiServer, DynamicKube],
) -> None:
    server, kube = api
    path = "/api/v1/namespaces/team-a/configmaps/x"
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "team-a"},
    }
    server.fail("PATCH", path, "invalid-422.json")
    with pytest.raises(ApiError) as raised:
        kube.apply(obj)
    assert (raised.value.status, raised.value.reason) == (422, "Invalid")
    assert [c["field"] for c in raised.value.causes] == ["spec.phase"]
    server.fail("PATCH", path, "apply-conflict-409.json")
    with pytest.raises(ApiError) as raised:
        kube.apply(obj)
    assert raised.value.conflict


def test_patch_status_is_a_merge_patch_with_a_resource_version(
    api: tuple[RecordedApiServer, DynamicKube],
) -> None:
    server, kube = api
    server.fail("PATCH", f"{POLICIES}/chat/status", "conflict-409.json")
    with pytest.raises(ApiError) as raised:
        kube.patch_status(CHAT, {"observedGeneration": 2}, "48213")
    assert raised.value.conflict
    request = last(server)
    assert request.content_type == "application/merge-patch+json"
    assert request.body == {
        "metadata": {"resourceVersion": "48213"},
        "status": {"observedGeneration": 2},
    }


def test_429_from_the_server_carries_retry_after(
    api: tuple[RecordedApiServer, DynamicKube],
) -> None:
    server, kube = api
    server.fail("GET", f"{POLICIES}/chat", "too-many-requests-429.json")
    with pytest.raises(ApiError) as raised:
        kube.get(CHAT)
    assert (raised.value.status, raised.value.retry_after_s) == (429, 1.0)
    # Once: the loop waits and retries (logged, interruptible), not urllib3 inside the call.
    assert [s.path for s in server.seen].count(f"{POLICIES}/chat") == 1


def test_delete_with_uid_precondition_and_404_as_false(
    api: tuple[RecordedApiServer, DynamicKube],
) -> None:
    server, kube = api
    server.ok(
        "DELETE",
        "/api/v1/namespaces/team-a/configmaps/old",
        b'{"kind":"Status","status":"Success"}',
    )
    assert kube.delete(ObjectRef(CONFIG_MAP, "team-a", "old"), uid="u-1") is True
    assert last(server).body == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "propagationPolicy": "Background",
        "preconditions": {"uid": "u-1"},
    }
    assert kube.delete(ObjectRef(CONFIG_MAP, "team-a", "missing")) is False


def test_watch_streams_recorded_events_and_raises_410(
    api: tuple[RecordedApiServer, DynamicKube],
) -> None:
    server, kube = api
    server.ok("WATCH", POLICIES, (FIXTURES / "watch-policies.jsonl").read_bytes())
    seen: list[tuple[str, str | None]] = []
    with pytest.raises(ApiError) as raised:
        for event in kube.watch(POLICY, "team-a", "48250", timeout_s=120):
            seen.append((event.type, event.resource_version))
    assert raised.value.gone
    assert [t for t, _ in seen] == ["MODIFIED", "MODIFIED", "ADDED", "BOOKMARK", "DELETED"]
    assert last(server).query == {
        "watch": ["true"],
        "resourceVersion": ["48250"],
        "timeoutSeconds": ["120"],
        "allowWatchBookmarks": ["true"],
    }


def test_leases_create_and_replace(api: tuple[RecordedApiServer, DynamicKube]) -> None:
    server, kube = api
    lease = recorded("lease.json")
    base = "/apis/coordination.k8s.io/v1/namespaces/tokenlimit-system/leases"
    server.ok("PUT", f"{base}/tokenlimit-operator", json.dumps(lease).encode())
    server.ok("POST", base, json.dumps(lease).encode())
    assert kube.replace(lease)["spec"]["leaseTransitions"] == 2
    assert last(server).body["metadata"]["resourceVersion"] == "48100"
    kube.create(lease)
    assert (last(server).method, last(server).path) == ("POST", base)


def test_a_kind_the_server_does_not_have(api: tuple[RecordedApiServer, DynamicKube]) -> None:
    _, kube = api
    with pytest.raises(KindNotServed, match="is its CRD installed"):
        kube.get(ObjectRef(Kind("extensions.higress.io/v1alpha1", "WasmPlugin"), "ns", "x"))
    assert kube.resource(LEASE).plural == "leases"


def test_an_unreachable_server_is_status_0() -> None:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard port: nothing listens
    without_hidden_retries(configuration)
    with pytest.raises(ApiError) as raised:
        DynamicKube(client.ApiClient(configuration))
    assert raised.value.status == 0 and raised.value.transient
