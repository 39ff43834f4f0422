"""The client seam: recorded API responses parsed, and the real client (DynamicKube on the
official `kubernetes` package) talking HTTP to a local server that answers with those
recorded responses — the requests it sends are checked as the API server would read them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from tokenlimit.apply.kube import (
    CONFIG_MAP,
    LEASE,
    POLICY,
    ApiError,
    Kind,
    KindNotServed,
    ObjectRef,
    Resource,
    api_error,
    watch_event,
)
from tokenlimit.apply.kube_client import DynamicKube, without_hidden_retries

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube"
CHAT = ObjectRef(POLICY, "team-a", "chat")
POLICIES = "/apis/tokenlimit.io/v1alpha1/namespaces/team-a/tokenratelimitpolicies"


def recorded(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def response_of(name: str) -> tuple[int, dict[str, str], bytes]:
    response = recorded(name)["response"]
    body = response["body"]
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return response["status"], response["headers"], data


def parsed(name: str) -> ApiError:
    return api_error(*response_of(name))


# --- recorded responses, parsed ----------------------------------------------------------


def test_status_conflict() -> None:
    error = parsed("conflict-409.json")
    assert (error.status, error.reason, error.conflict, error.transient) == (
        409,
        "Conflict",
        True,
        False,
    )
    assert error.message.startswith(
        'Operation cannot be fulfilled on tokenratelimitpolicies.tokenlimit.io "chat": '
    )
    assert error.retry_after_s is None


def test_apply_conflict_keeps_its_causes() -> None:
    error = parsed("apply-conflict-409.json")
    assert error.status == 409 and error.reason == "Conflict"
    assert [c["field"] for c in error.causes] == [".spec.priority"]


def test_invalid_names_the_field() -> None:
    error = parsed("invalid-422.json")
    assert (error.status, error.reason) == (422, "Invalid")
    assert [c["field"] for c in error.causes] == ["spec.phase"]
    assert str(error).startswith('422 Invalid: WasmPlugin.extensions.higress.io "tokenlimit-')


def test_internal_error_is_transient() -> None:
    error = parsed("internal-500.json")
    assert (error.status, error.reason, error.transient) == (500, "InternalError", True)
    assert "failed calling webhook" in error.message


def test_plain_text_429_with_retry_after() -> None:
    error = parsed("too-many-requests-429.json")
    assert (error.status, error.reason, error.transient) == (429, "TooManyRequests", True)
    assert error.message == "Too many requests, please try again later."
    assert error.retry_after_s == 1.0


def test_not_found() -> None:
    error = parsed("not-found-404.json")
    assert (
        error.not_found and error.message == 'tokenratelimitpolicies.tokenlimit.io "gone" not found'
    )


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"Retry-After": "7"}, b"", 7.0),
        ({"retry-after": "3"}, b"", 3.0),  # header names are case-insensitive
        ({}, json.dumps({"kind": "Status", "details": {"retryAfterSeconds": 4}}).encode(), 4.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, b"", None),  # not sent by the server
        ({"Retry-After": "86400"}, b"", 300.0),  # honoured up to a bound
        ({"Retry-After": "-1"}, b"", None),
    ],
)
def test_retry_after(headers: dict[str, str], body: bytes, expected: float | None) -> None:
    assert api_error(429, headers, body).retry_after_s == expected


def test_a_body_that_is_neither_status_nor_text() -> None:
    error = api_error(502, {}, b"")
    assert (error.status, error.message, error.transient) == (502, "HTTP 502 without a body", True)


def test_recorded_watch_stream() -> None:
    lines = (FIXTURES / "watch-policies.jsonl").read_text().splitlines()
    events = [watch_event(line) for line in lines[:-1]]
    assert [(e.type, e.resource_version) for e in events if e is not None] == [
        ("MODIFIED", "48260"),
        ("MODIFIED", "48261"),
        ("ADDED", "48270"),
        ("BOOKMARK", "48300"),
        ("DELETED", "48310"),
    ]
    with pytest.raises(ApiError) as raised:
        watch_event(lines[-1])
    assert raised.value.gone and raised.value.reason == "Expired"
    assert raised.value.message == "too old resource version: 48250 (48312)"


def test_watch_lines_that_are_not_events() -> None:
    assert watch_event(b"\n") is None
    with pytest.raises(ApiError, match="not a watch event"):
        watch_event("{}")
    with pytest.raises(ApiError, match="unknown watch event type 'RESYNC'"):
        watch_event('{"type": "RESYNC", "object": {}}')


def test_resource_paths() -> None:
    policies = Resource(POLICY, "tokenratelimitpolicies", True)
    assert policies.path("team-a", "chat") == f"{POLICIES}/chat"
    assert policies.path(None) == "/apis/tokenlimit.io/v1alpha1/tokenratelimitpolicies"
    assert Resource(CONFIG_MAP, "configmaps", True).path("ns") == "/api/v1/namespaces/ns/configmaps"


# --- the real client over HTTP ------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: Any


@dataclass
class RecordedApiServer:
    """Answers each (method, path) with a recorded response; remembers every request.

    Watch requests (GET with watch=true) are routed as method "WATCH".
    """

    routes: dict[tuple[str, str], tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        for path, name in (
            ("/version", "version.json"),
            ("/apis", "apis.json"),
            ("/api/v1", "api-v1.json"),
            ("/apis/coordination.k8s.io/v1", "coordination.k8s.io-v1.json"),
            ("/apis/tokenlimit.io/v1alpha1", "tokenlimit.io-v1alpha1.json"),
        ):
            self.ok("GET", path, (FIXTURES / "discovery" / name).read_bytes())

    def ok(self, method: str, path: str, body: bytes, content_type: str = "application/json"):
        self.routes[(method, path)] = (200, {"Content-Type": content_type}, body)

    def fail(self, method: str, path: str, name: str) -> None:
        self.routes[(method, path)] = response_of(name)


@contextlib.contextmanager
def serving(recorded_server: RecordedApiServer) -> Iterator[str]:
    """The recorded server on a local port; yields its URL. A watch with no recorded stream
    is held open without events, as a real watch on a quiet resource is."""
    closing = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            query = parse_qs(parts.query)
            recorded_server.seen.append(
                Seen(
                    self.command,
                    parts.path,
                    query,
                    self.headers.get("Content-Type", ""),
                    json.loads(raw) if raw else None,
                )
            )
            watching = query.get("watch") == ["true"]
            method = "WATCH" if watching else self.command
            route = recorded_server.routes.get((method, parts.path))
            if route is None and watching:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                closing.wait(float(query["timeoutSeconds"][0]))
                self.wfile.write(b"0\r\n\r\n")
                return
            status, headers, body = route or response_of("not-found-404.json")
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        closing.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def api() -> Iterator[tuple[RecordedApiServer, DynamicKube]]:
    from kubernetes import client

    recorded_server = RecordedApiServer()
    with serving(recorded_server) as url:
        configuration = client.Configuration()
        configuration.host = url
        without_hidden_retries(configuration)
        yield recorded_server, DynamicKube(client.ApiClient(configuration), discovery_cache=None)


@pytest.fixture(autouse=True)
def _discovery_cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The client caches discovery in the temp directory, keyed by server URL.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


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


# --- the operator process against the recorded server -------------------------------------

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: recorded, cluster: {server: "URL"}}]
users: [{name: operator, user: {token: not-checked}}]
contexts: [{name: recorded, context: {cluster: recorded, user: operator}}]
current-context: recorded
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_the_operator_process_reconciles_then_stops_on_sigterm(
    tmp_path: Path, filter_wasm: Path
) -> None:
    server = RecordedApiServer()
    server.ok(
        "GET",
        "/apis/tokenlimit.io/v1alpha1/tokenratelimitpolicies",
        (FIXTURES / "policy-list.json").read_bytes(),
    )
    server.ok("GET", f"{POLICIES}/chat", (FIXTURES / "policy.json").read_bytes())
    server.ok(
        "GET",
        "/api/v1/configmaps",
        b'{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"48251"},"items":[]}',
    )
    config_map = "/api/v1/namespaces/team-a/configmaps/chat-tokenlimit-ecds"
    server.ok("PATCH", config_map, b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}')
    server.ok("PATCH", f"{POLICIES}/chat/status", (FIXTURES / "policy.json").read_bytes())
    module_port = free_port()
    with serving(server) as url:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG.replace("URL", url))
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from tokenlimit.operator.command import operator_command; operator_command()",
                "--gateway=envoy",
                f"--kubeconfig={kubeconfig}",
                f"--module-port={module_port}",
            ],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )
        try:
            wait_for(
                lambda: any(s.path.endswith("/chat/status") for s in server.seen),
                "the status write",
            )
            wait_for(lambda: server.seen[-1].query.get("watch") == ["true"], "the watch")
            with urllib.request.urlopen(f"http://127.0.0.1:{module_port}/healthz") as answer:
                assert answer.read() == b"ok\n"
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, stderr
    lines = [line.split(" ", 2)[2] for line in stderr.splitlines()]
    assert lines == [
        f"serving tokenlimit-higress.wasm, tokenlimit.wasm on :{module_port}",
        "watching TokenRateLimitPolicy.tokenlimit.io in all namespaces",
        "listed 1 policy at resourceVersion 48250",
        "team-a/chat generation 2: programmed (applied 1, deleted 0, status written)",
        "SIGTERM: stopping",
        "stopped",
    ]
    apply, status = [s for s in server.seen if s.method == "PATCH"]
    assert apply.query == {"fieldManager": ["tokenlimit-operator"], "force": ["false"]}
    assert apply.body["metadata"]["ownerReferences"][0]["name"] == "chat"
    assert status.body["status"]["conditions"][1]["reason"] == "Programmed"


LEASES = "/apis/coordination.k8s.io/v1/namespaces/tokenlimit-system/leases"


def operator_process(url: str, tmp_path: Path, *flags: str) -> subprocess.Popen[str]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.replace("URL", url))
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tokenlimit.operator.command import operator_command; operator_command()",
            "--gateway=envoy",
            f"--kubeconfig={kubeconfig}",
            "--module-port=0",
            *flags,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )


def stop(process: subprocess.Popen[str]) -> list[str]:
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    return [line.split(" ", 2)[2] for line in stderr.splitlines()]


def test_the_operator_leads_before_it_reconciles(tmp_path: Path) -> None:
    server = RecordedApiServer()
    server.ok("POST", LEASES, (FIXTURES / "lease.json").read_bytes())
    server.ok(
        "GET",
        "/apis/tokenlimit.io/v1alpha1/tokenratelimitpolicies",
        b'{"kind":"TokenRateLimitPolicyList","apiVersion":"tokenlimit.io/v1alpha1",'
        b'"metadata":{"resourceVersion":"48250"},"items":[]}',
    )
    with serving(server) as url:
        process = operator_process(
            url, tmp_path, "--leader-elect", "--leader-elect-namespace=tokenlimit-system"
        )
        # Not seen[-1]: the Lease is renewed every 2 s beside the watch.
        wait_for(lambda: any(s.query.get("watch") == ["true"] for s in server.seen), "the watch")
        lines = stop(process)
    created = next(s for s in server.seen if s.method == "POST")
    assert created.body["spec"]["leaseDurationSeconds"] == 15
    first_lease = next(i for i, s in enumerate(server.seen) if s.path.startswith(LEASES))
    first_list = next(i for i, s in enumerate(server.seen) if "tokenratelimitpolicies" in s.path)
    assert first_lease < first_list
    assert lines[0].startswith("waiting to lead: Lease tokenlimit-system/tokenlimit-operator as ")
    assert lines[1:] == [
        "leading: holding Lease tokenlimit-system/tokenlimit-operator",
        "watching TokenRateLimitPolicy.tokenlimit.io in all namespaces",
        "listed 0 policies at resourceVersion 48250",
        "SIGTERM: stopping",
        "stopped",
    ]


def test_sigterm_while_waiting_to_lead_exits_at_once(tmp_path: Path) -> None:
    server = RecordedApiServer()
    held = json.loads((FIXTURES / "lease.json").read_text())
    server.ok("GET", f"{LEASES}/tokenlimit-operator", json.dumps(held).encode())
    with serving(server) as url:
        process = operator_process(
            url, tmp_path, "--leader-elect", "--leader-elect-namespace=tokenlimit-system"
        )
        wait_for(lambda: any(s.path.startswith(LEASES) for s in server.seen), "the Lease read")
        started = time.monotonic()
        lines = stop(process)
    assert time.monotonic() - started < 5  # not the 15 s lease nor a retry period's wait
    assert lines[1:] == ["SIGTERM: stopping"]
    assert not any("tokenratelimitpolicies" in s.path for s in server.seen)
    assert not any(s.method in ("POST", "PUT") for s in server.seen)
